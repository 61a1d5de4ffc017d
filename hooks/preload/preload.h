/*
 * Internal interface of the preload hook (libcleanroom-preload.so), shared by
 * its four files:
 *
 *   preload.c  state, real functions, the re-entrancy guard, the connection
 *              to the recorder, the ring writer, fd and mapping tracking
 *   path.c     the cwd cache and lexical absolute paths
 *   exec.c     the environment handed to children, program lookup, ELF checks
 *   hooks.c    the exported wrappers (the only symbols the library exports)
 *
 * Rules for everything here: libc only, no malloc, no stdio of our own,
 * errno preserved by every wrapper, and anything called while the guard is
 * held goes straight to the real function. See hooks/README.md.
 */
#ifndef CR_PRELOAD_H
#define CR_PRELOAD_H

/*
 * Every wrapper is defined under its glibc name; with _FILE_OFFSET_BITS=64
 * glibc would rename open to open64 behind our back (and we define both),
 * and _FORTIFY_SOURCE would turn open into an inline. The project builds
 * with the former, so undo both before any system header.
 */
#undef _FILE_OFFSET_BITS
#undef _FORTIFY_SOURCE
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "hooks/wire.h"

#define CR_EXPORT      __attribute__((visibility("default")))
#define CR_TLS_IE      __attribute__((tls_model("initial-exec")))
#define CR_LIKELY(x)   __builtin_expect(!!(x), 1)
#define CR_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* ---- real functions ----------------------------------------------------- */

typedef int (*cr_open_fn)(const char *, int, ...);
typedef int (*cr_openat_fn)(int, const char *, int, ...);

struct cr_real {
	cr_open_fn open, open64;
	cr_openat_fn openat, openat64;
	int (*open_2)(const char *, int);
	int (*open64_2)(const char *, int);
	int (*openat_2)(int, const char *, int);
	int (*openat64_2)(int, const char *, int);
	int (*creat)(const char *, mode_t);
	int (*creat64)(const char *, mode_t);
	FILE *(*fopen)(const char *, const char *);
	FILE *(*fopen64)(const char *, const char *);
	FILE *(*freopen)(const char *, const char *, FILE *);
	FILE *(*freopen64)(const char *, const char *, FILE *);
	FILE *(*tmpfile)(void);
	FILE *(*tmpfile64)(void);
	int (*mkstemp)(char *);
	int (*mkstemp64)(char *);
	int (*mkostemp)(char *, int);
	int (*mkostemp64)(char *, int);
	int (*mkstemps)(char *, int);
	int (*mkstemps64)(char *, int);
	int (*mkostemps)(char *, int, int);
	int (*mkostemps64)(char *, int, int);
	int (*close)(int);
	int (*fclose)(FILE *);
	int (*close_range)(unsigned int, unsigned int, int);
	int (*dup)(int);
	int (*dup2)(int, int);
	int (*dup3)(int, int, int);
	int (*fcntl)(int, int, ...);
	int (*fcntl64)(int, int, ...);
	int (*rename)(const char *, const char *);
	int (*renameat)(int, const char *, int, const char *);
	int (*renameat2)(int, const char *, int, const char *, unsigned int);
	int (*link)(const char *, const char *);
	int (*linkat)(int, const char *, int, const char *, int);
	int (*unlink)(const char *);
	int (*unlinkat)(int, const char *, int);
	int (*truncate)(const char *, off_t);
	int (*truncate64)(const char *, off64_t);
	void *(*mmap)(void *, size_t, int, int, int, off_t);
	void *(*mmap64)(void *, size_t, int, int, int, off64_t);
	int (*munmap)(void *, size_t);
	int (*msync)(void *, size_t, int);
	pid_t (*fork)(void);
	pid_t (*_Fork)(void);
	int (*clone)(int (*)(void *), void *, int, void *, ...);
	int (*execve)(const char *, char *const[], char *const[]);
	int (*execvpe)(const char *, char *const[], char *const[]);
	int (*execveat)(int, const char *, char *const[], char *const[], int);
	int (*fexecve)(int, char *const[], char *const[]);
	int (*posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
	                   const posix_spawnattr_t *, char *const[], char *const[]);
	int (*posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *,
	                    const posix_spawnattr_t *, char *const[], char *const[]);
	int (*system)(const char *);
	FILE *(*popen)(const char *, const char *);
	int (*chdir)(const char *);
	int (*fchdir)(int);
	void (*exit)(int) __attribute__((noreturn));
	void (*_exit)(int) __attribute__((noreturn));
	void (*_Exit)(int) __attribute__((noreturn));
};

extern struct cr_real cr_real;
extern int cr_real_ready;
void cr_real_resolve(void);

/*
 * The real function. Resolved in the constructor and, because other
 * libraries' constructors may run before ours and call open, lazily on the
 * first wrapper call as well (resolution is idempotent).
 */
#define REAL(fn)                                                                                   \
	(*(CR_LIKELY(__atomic_load_n(&cr_real_ready, __ATOMIC_ACQUIRE))                            \
	       ? cr_real.fn                                                                        \
	       : (cr_real_resolve(), cr_real.fn)))

/* ---- the guard ---------------------------------------------------------- */

extern __thread int cr_in_hook CR_TLS_IE;
extern int cr_init_state; /* 0 not yet, 1 running, 2 done */
extern bool cr_active;    /* $CLEANROOM_SOCKET was set at start */
void cr_init(void);

/*
 * Enter the hook: false when the hook must stay out of the way (not active,
 * or already inside the hook on this thread). On true, cr_leave() must
 * follow on every path.
 */
static inline bool cr_enter(void)
{
	if (cr_in_hook)
		return false;
	if (CR_UNLIKELY(__atomic_load_n(&cr_init_state, __ATOMIC_ACQUIRE) != 2))
		cr_init();
	if (!cr_active)
		return false;
	cr_in_hook = 1;
	return true;
}

static inline void cr_leave(void)
{
	cr_in_hook = 0;
}

/* ---- process state and reporting (preload.c) --------------------------- */

/* Values saved at start, immutable afterwards; "NAME=value" strings. */
extern char cr_env_socket[];        /* CLEANROOM_SOCKET=... */
extern char cr_env_run[];           /* CLEANROOM_RUN=... or "" */
extern char cr_env_preload[];       /* CLEANROOM_PRELOAD=... */
extern const char *cr_preload_path; /* the library's path (points into cr_env_preload) */

void cr_child_reset(void);

void cr_rec_open(const struct stat *st, int fd, uint16_t flags, const char *path, size_t n);
void cr_rec_path(uint16_t type, uint16_t flags, const char *path, size_t n);
void cr_rec_two(uint16_t type, uint16_t flags, const char *a, size_t an, const char *b, size_t bn);
void cr_rec_proc(uint16_t type, int64_t arg);
void cr_rec_exec(uint16_t type, uint16_t flags, int64_t child, const char *path, size_t n,
                 char *const argv[]);

/* fd tracking */
void cr_fd_opened(int fd, bool writing);
/* fopen & co: the stream to flush before reporting at exit. */
void cr_fd_stream(int fd, FILE *f);
void cr_fd_dup(int oldfd, int newfd);
bool cr_fd_tracked(int fd);
void cr_fd_closing(int fd, FILE *stream);
void cr_fd_closing_range(unsigned int first, unsigned int last);
int cr_close_range_around(unsigned int first, unsigned int last, int flags);

/* mappings */
void cr_map_added(void *addr, size_t len, int prot, int flags, int fd);
void cr_map_synced(void *addr, size_t len);
void cr_map_removing(void *addr, size_t len);

/* exit */
void cr_exit_status(int status);
void cr_exit_now(int status);

/*
 * fstat as the plain fstat system call. glibc 2.33+ implements fstat as
 * fstatat(fd, "", AT_EMPTY_PATH), which makes the kernel copy and look up
 * an empty path: 80 ns more per call here (493 vs 413 ns), on the one
 * system call every reported open pays. x86-64's struct stat is the
 * kernel's.
 */
int cr_fstat(int fd, struct stat *st);

/* ---- paths (path.c) ------------------------------------------------------ */

void cr_cwd_refresh(void);
/* Absolute, lexically normalised form of path relative to dirfd into out
 * (CRW_PATH_MAX bytes, NUL-terminated). Length, or -1 when unknown/too long. */
int cr_path_abs(int dirfd, const char *path, char *out);
/* The current name of an open descriptor, from /proc/self/fd. */
int cr_path_fd(int fd, char *out);
/* Under /proc, /sys or /dev: never reported. */
bool cr_path_pseudo(const char *path, size_t n);
/* "/proc/self/fd/N" into buf (>= 32 bytes). */
void cr_fd_link(char *buf, int fd);
/* The decimal digits of v into buf; returns their count. */
size_t cr_utoa(char *buf, unsigned long v);

/* ---- exec (exec.c) --------------------------------------------------------- */

#define CR_ENV_MAX        1024 /* environment entries we copy on the stack */
#define CR_LD_PRELOAD_MAX 8192

struct cr_env_fix {
	char *vec[CR_ENV_MAX + 8];
	char ld[CR_LD_PRELOAD_MAX];
};

/* The environment to pass on: envp itself when it already carries the
 * hook, else a fixed copy in fx. *dropped when it could not be fixed. */
char **cr_env_fix(char *const envp[], struct cr_env_fix *fx, bool *dropped);
/* Put the hook's variables back into environ (system, popen). */
void cr_env_ensure(void);
/* Resolve file like execvp (search) or execve. Length into out, or -1. */
int cr_exec_resolve(const char *file, bool search, char *out);
/* CRW_UNOBS_STATIC / CRW_UNOBS_SETUID for executing this file (fd >= 0
 * wins over path); 0 when followable or unknown. */
uint32_t cr_exec_inspect(int fd, const char *path);

#endif
