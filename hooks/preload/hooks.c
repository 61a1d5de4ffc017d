/*
 * The exported wrappers: the only symbols libcleanroom-preload.so exports.
 *
 * Each one calls the real function (resolved with dlsym(RTLD_NEXT)) and, if
 * the hook is active and this thread is not already inside it, reports
 * through preload.c. errno is saved before any bookkeeping and restored
 * after it, so a wrapper leaves errno exactly as the real call did. Real
 * calls happen outside the guard except where noted, so a fork child or a
 * clone child never inherits a held guard.
 *
 * glibc calls its own functions through hidden aliases (fopen does not go
 * through our open), so nothing is reported twice.
 */
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

extern char **environ;

/* The fortified entry points have no prototype without _FORTIFY_SOURCE. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dirfd, const char *path, int flags);
int __openat64_2(int dirfd, const char *path, int flags);

/* ---- opens ------------------------------------------------------------------ */

static uint16_t open_flags(int oflags)
{
	int acc = oflags & O_ACCMODE;
	uint16_t f = 0;

	if (acc == O_RDONLY || acc == O_RDWR)
		f |= CRW_OPEN_READ;
	if (acc == O_WRONLY || acc == O_RDWR)
		f |= CRW_OPEN_WRITE;
	if (oflags & O_CREAT)
		f |= CRW_OPEN_CREATE;
	if (oflags & O_TRUNC)
		f |= CRW_OPEN_TRUNC;
	return f;
}

/*
 * A successful open of fd: report a regular file outside /proc, /sys and
 * /dev. The path is made absolute before any system call, so a pseudo-file
 * costs nothing and a real one costs one fstat. Called inside the guard.
 */
static void after_open(int dirfd, const char *path, int fd, int oflags)
{
	char buf[CRW_PATH_MAX];
	struct stat st;
	bool writing = false;
	int saved = errno, n;

	if (oflags & O_PATH)
		goto done;
	n = (oflags & __O_TMPFILE) == __O_TMPFILE ? -1 : cr_path_abs(dirfd, path, buf);
	if (n < 0)
		n = cr_path_fd(fd, buf); /* unknown cwd, nameless file, too long */
	if (n < 0 || cr_path_pseudo(buf, (size_t)n))
		goto done;
	if (cr_fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		goto done;
	cr_rec_open(&st, fd, open_flags(oflags), buf, (size_t)n);
	writing = (oflags & O_ACCMODE) != O_RDONLY;
done:
	cr_fd_opened(fd, writing);
	errno = saved;
}

static void after_fopen(const char *path, FILE *f, int oflags)
{
	int fd = fileno(f);

	if (fd < 0)
		return;
	after_open(AT_FDCWD, path, fd, oflags);
	cr_fd_stream(fd, f);
}

/* fopen's mode string as open flags. */
static int mode_flags(const char *m)
{
	int f;

	switch (m ? m[0] : 'r') {
	case 'w': f = O_WRONLY | O_CREAT | O_TRUNC; break;
	case 'a': f = O_WRONLY | O_CREAT | O_APPEND; break;
	default: f = O_RDONLY; break;
	}
	if (m && strchr(m, '+'))
		f = (f & ~O_ACCMODE) | O_RDWR;
	return f;
}

#define MODE_ARG(flags, mode)                                                                      \
	do {                                                                                       \
		if (__OPEN_NEEDS_MODE(flags)) {                                                    \
			va_list ap_;                                                               \
			va_start(ap_, flags);                                                      \
			mode = (mode_t)va_arg(ap_, int);                                           \
			va_end(ap_);                                                               \
		}                                                                                  \
	} while (0)

#define AFTER_OPEN(dirfd, path, fd, flags)                                                         \
	do {                                                                                       \
		if ((fd) >= 0 && cr_enter()) {                                                     \
			after_open(dirfd, path, fd, flags);                                        \
			cr_leave();                                                                \
		}                                                                                  \
	} while (0)

CR_EXPORT int open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	int fd;

	MODE_ARG(flags, mode);
	fd = REAL(open)(path, flags, mode);
	AFTER_OPEN(AT_FDCWD, path, fd, flags);
	return fd;
}

CR_EXPORT int open64(const char *path, int flags, ...)
{
	mode_t mode = 0;
	int fd;

	MODE_ARG(flags, mode);
	fd = REAL(open64)(path, flags, mode);
	AFTER_OPEN(AT_FDCWD, path, fd, flags);
	return fd;
}

CR_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	int fd;

	MODE_ARG(flags, mode);
	fd = REAL(openat)(dirfd, path, flags, mode);
	AFTER_OPEN(dirfd, path, fd, flags);
	return fd;
}

CR_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	int fd;

	MODE_ARG(flags, mode);
	fd = REAL(openat64)(dirfd, path, flags, mode);
	AFTER_OPEN(dirfd, path, fd, flags);
	return fd;
}

CR_EXPORT int __open_2(const char *path, int flags)
{
	int fd = REAL(open_2)(path, flags);

	AFTER_OPEN(AT_FDCWD, path, fd, flags);
	return fd;
}

CR_EXPORT int __open64_2(const char *path, int flags)
{
	int fd = REAL(open64_2)(path, flags);

	AFTER_OPEN(AT_FDCWD, path, fd, flags);
	return fd;
}

CR_EXPORT int __openat_2(int dirfd, const char *path, int flags)
{
	int fd = REAL(openat_2)(dirfd, path, flags);

	AFTER_OPEN(dirfd, path, fd, flags);
	return fd;
}

CR_EXPORT int __openat64_2(int dirfd, const char *path, int flags)
{
	int fd = REAL(openat64_2)(dirfd, path, flags);

	AFTER_OPEN(dirfd, path, fd, flags);
	return fd;
}

CR_EXPORT int creat(const char *path, mode_t mode)
{
	int fd = REAL(creat)(path, mode);

	AFTER_OPEN(AT_FDCWD, path, fd, O_WRONLY | O_CREAT | O_TRUNC);
	return fd;
}

CR_EXPORT int creat64(const char *path, mode_t mode)
{
	int fd = REAL(creat64)(path, mode);

	AFTER_OPEN(AT_FDCWD, path, fd, O_WRONLY | O_CREAT | O_TRUNC);
	return fd;
}

#define AFTER_FOPEN(path, f, mode)                                                                 \
	do {                                                                                       \
		if ((f) && cr_enter()) {                                                           \
			after_fopen(path, f, mode_flags(mode));                                    \
			cr_leave();                                                                \
		}                                                                                  \
	} while (0)

CR_EXPORT FILE *fopen(const char *path, const char *mode)
{
	FILE *f = REAL(fopen)(path, mode);

	AFTER_FOPEN(path, f, mode);
	return f;
}

CR_EXPORT FILE *fopen64(const char *path, const char *mode)
{
	FILE *f = REAL(fopen64)(path, mode);

	AFTER_FOPEN(path, f, mode);
	return f;
}

/* freopen closes the stream's descriptor first, whatever happens next. */
static void freopen_closing(FILE *stream)
{
	int saved, fd;

	if (!stream || !cr_enter())
		return;
	saved = errno;
	fd = fileno(stream);
	if (fd >= 0)
		cr_fd_closing(fd, stream);
	errno = saved;
	cr_leave();
}

CR_EXPORT FILE *freopen(const char *path, const char *mode, FILE *stream)
{
	FILE *f;

	freopen_closing(stream);
	f = REAL(freopen)(path, mode, stream);
	AFTER_FOPEN(path, f, mode); /* NULL path: named from /proc/self/fd */
	return f;
}

CR_EXPORT FILE *freopen64(const char *path, const char *mode, FILE *stream)
{
	FILE *f;

	freopen_closing(stream);
	f = REAL(freopen64)(path, mode, stream);
	AFTER_FOPEN(path, f, mode);
	return f;
}

/* tmpfile: O_TMPFILE in /tmp, so the name is the kernel's "/tmp/#N (deleted)". */
CR_EXPORT FILE *tmpfile(void)
{
	FILE *f = REAL(tmpfile)();

	AFTER_FOPEN(NULL, f, "w+");
	return f;
}

CR_EXPORT FILE *tmpfile64(void)
{
	FILE *f = REAL(tmpfile64)();

	AFTER_FOPEN(NULL, f, "w+");
	return f;
}

#define MKSTEMP_FLAGS (O_RDWR | O_CREAT | O_EXCL)

CR_EXPORT int mkstemp(char *tmpl)
{
	int fd = REAL(mkstemp)(tmpl);

	AFTER_OPEN(AT_FDCWD, tmpl, fd, MKSTEMP_FLAGS);
	return fd;
}

CR_EXPORT int mkstemp64(char *tmpl)
{
	int fd = REAL(mkstemp64)(tmpl);

	AFTER_OPEN(AT_FDCWD, tmpl, fd, MKSTEMP_FLAGS);
	return fd;
}

CR_EXPORT int mkostemp(char *tmpl, int flags)
{
	int fd = REAL(mkostemp)(tmpl, flags);

	AFTER_OPEN(AT_FDCWD, tmpl, fd, MKSTEMP_FLAGS | flags);
	return fd;
}

CR_EXPORT int mkostemp64(char *tmpl, int flags)
{
	int fd = REAL(mkostemp64)(tmpl, flags);

	AFTER_OPEN(AT_FDCWD, tmpl, fd, MKSTEMP_FLAGS | flags);
	return fd;
}

CR_EXPORT int mkstemps(char *tmpl, int suffixlen)
{
	int fd = REAL(mkstemps)(tmpl, suffixlen);

	AFTER_OPEN(AT_FDCWD, tmpl, fd, MKSTEMP_FLAGS);
	return fd;
}

CR_EXPORT int mkstemps64(char *tmpl, int suffixlen)
{
	int fd = REAL(mkstemps64)(tmpl, suffixlen);

	AFTER_OPEN(AT_FDCWD, tmpl, fd, MKSTEMP_FLAGS);
	return fd;
}

CR_EXPORT int mkostemps(char *tmpl, int suffixlen, int flags)
{
	int fd = REAL(mkostemps)(tmpl, suffixlen, flags);

	AFTER_OPEN(AT_FDCWD, tmpl, fd, MKSTEMP_FLAGS | flags);
	return fd;
}

CR_EXPORT int mkostemps64(char *tmpl, int suffixlen, int flags)
{
	int fd = REAL(mkostemps64)(tmpl, suffixlen, flags);

	AFTER_OPEN(AT_FDCWD, tmpl, fd, MKSTEMP_FLAGS | flags);
	return fd;
}

/* ---- closes and dups ------------------------------------------------------------ */

CR_EXPORT int close(int fd)
{
	int saved;

	if (cr_enter()) {
		saved = errno;
		cr_fd_closing(fd, NULL);
		errno = saved;
		cr_leave();
	}
	return REAL(close)(fd);
}

CR_EXPORT int fclose(FILE *f)
{
	int saved, fd;

	if (f && cr_enter()) {
		saved = errno;
		fd = fileno(f);
		if (fd >= 0)
			cr_fd_closing(fd, f);
		errno = saved;
		cr_leave();
	}
	return REAL(fclose)(f);
}

CR_EXPORT int close_range(unsigned int first, unsigned int last, int flags)
{
	int saved, r;

	if ((flags & CLOSE_RANGE_CLOEXEC) || !cr_enter())
		return REAL(close_range)(first, last, flags);
	saved = errno;
	cr_fd_closing_range(first, last);
	errno = saved;
	r = cr_close_range_around(first, last, flags);
	cr_leave();
	return r;
}

/* dup2/dup3 onto newfd close it first (when oldfd is valid). */
static void dup_target_closing(int oldfd, int newfd)
{
	int saved;

	if (oldfd == newfd || !cr_enter())
		return;
	saved = errno;
	if (REAL(fcntl)(oldfd, F_GETFD) >= 0)
		cr_fd_closing(newfd, NULL);
	errno = saved;
	cr_leave();
}

static void after_dup(int oldfd, int newfd)
{
	int saved;

	if (newfd < 0 || !cr_enter())
		return;
	saved = errno;
	cr_fd_dup(oldfd, newfd);
	errno = saved;
	cr_leave();
}

CR_EXPORT int dup(int fd)
{
	int r = REAL(dup)(fd);

	after_dup(fd, r);
	return r;
}

CR_EXPORT int dup2(int oldfd, int newfd)
{
	int r;

	dup_target_closing(oldfd, newfd);
	r = REAL(dup2)(oldfd, newfd);
	after_dup(oldfd, r);
	return r;
}

CR_EXPORT int dup3(int oldfd, int newfd, int flags)
{
	int r;

	dup_target_closing(oldfd, newfd);
	r = REAL(dup3)(oldfd, newfd, flags);
	after_dup(oldfd, r);
	return r;
}

/*
 * fcntl's third argument is an int, a pointer or nothing depending on cmd;
 * like glibc itself, take it as a pointer-sized value and pass it on (on
 * x86-64 every variadic argument occupies one 8-byte slot).
 */
CR_EXPORT int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;
	int r;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	r = REAL(fcntl)(fd, cmd, arg);
	if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
		after_dup(fd, r);
	return r;
}

CR_EXPORT int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	void *arg;
	int r;

	va_start(ap, cmd);
	arg = va_arg(ap, void *);
	va_end(ap);
	r = REAL(fcntl64)(fd, cmd, arg);
	if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)
		after_dup(fd, r);
	return r;
}

/* ---- names ------------------------------------------------------------------------ */

static void after_one(uint16_t type, int dirfd, const char *path)
{
	char buf[CRW_PATH_MAX];
	int saved = errno, n;

	n = cr_path_abs(dirfd, path, buf);
	if (n > 0 && !cr_path_pseudo(buf, (size_t)n))
		cr_rec_path(type, 0, buf, (size_t)n);
	errno = saved;
}

static void after_two(uint16_t type, uint16_t flags, int d1, const char *p1, int d2, const char *p2,
                      bool empty_old)
{
	char a[CRW_PATH_MAX], b[CRW_PATH_MAX];
	int saved = errno, an, bn;

	an = empty_old ? cr_path_fd(d1, a) : cr_path_abs(d1, p1, a);
	bn = cr_path_abs(d2, p2, b);
	if (an > 0 && bn > 0 && !(cr_path_pseudo(a, (size_t)an) && cr_path_pseudo(b, (size_t)bn)))
		cr_rec_two(type, flags, a, (size_t)an, b, (size_t)bn);
	errno = saved;
}

#define AFTER_TWO(r, type, flags, d1, p1, d2, p2, empty)                                           \
	do {                                                                                       \
		if ((r) == 0 && cr_enter()) {                                                      \
			after_two(type, flags, d1, p1, d2, p2, empty);                             \
			cr_leave();                                                                \
		}                                                                                  \
	} while (0)

#define AFTER_ONE(r, type, dirfd, path)                                                            \
	do {                                                                                       \
		if ((r) == 0 && cr_enter()) {                                                      \
			after_one(type, dirfd, path);                                              \
			cr_leave();                                                                \
		}                                                                                  \
	} while (0)

CR_EXPORT int rename(const char *oldpath, const char *newpath)
{
	int r = REAL(rename)(oldpath, newpath);

	AFTER_TWO(r, CRW_REC_RENAME, 0, AT_FDCWD, oldpath, AT_FDCWD, newpath, false);
	return r;
}

CR_EXPORT int renameat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath)
{
	int r = REAL(renameat)(olddirfd, oldpath, newdirfd, newpath);

	AFTER_TWO(r, CRW_REC_RENAME, 0, olddirfd, oldpath, newdirfd, newpath, false);
	return r;
}

/* renameat2's flags (RENAME_NOREPLACE, _EXCHANGE, _WHITEOUT) go in the record's flags. */
CR_EXPORT int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                        unsigned int flags)
{
	int r = REAL(renameat2)(olddirfd, oldpath, newdirfd, newpath, flags);

	AFTER_TWO(r, CRW_REC_RENAME, (uint16_t)flags, olddirfd, oldpath, newdirfd, newpath, false);
	return r;
}

CR_EXPORT int link(const char *oldpath, const char *newpath)
{
	int r = REAL(link)(oldpath, newpath);

	AFTER_TWO(r, CRW_REC_LINK, 0, AT_FDCWD, oldpath, AT_FDCWD, newpath, false);
	return r;
}

CR_EXPORT int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
                     int flags)
{
	int r = REAL(linkat)(olddirfd, oldpath, newdirfd, newpath, flags);

	/* AT_EMPTY_PATH links the file olddirfd itself (an O_TMPFILE made visible). */
	AFTER_TWO(r, CRW_REC_LINK, 0, olddirfd, oldpath, newdirfd, newpath,
	          (flags & AT_EMPTY_PATH) && !*oldpath);
	return r;
}

CR_EXPORT int unlink(const char *path)
{
	int r = REAL(unlink)(path);

	AFTER_ONE(r, CRW_REC_UNLINK, AT_FDCWD, path);
	return r;
}

CR_EXPORT int unlinkat(int dirfd, const char *path, int flags)
{
	int r = REAL(unlinkat)(dirfd, path, flags);

	/* AT_REMOVEDIR is rmdir: a directory carries no data to account for. */
	if (!(flags & AT_REMOVEDIR))
		AFTER_ONE(r, CRW_REC_UNLINK, dirfd, path);
	return r;
}

CR_EXPORT int truncate(const char *path, off_t len)
{
	int r = REAL(truncate)(path, len);

	AFTER_ONE(r, CRW_REC_TRUNCATE, AT_FDCWD, path);
	return r;
}

CR_EXPORT int truncate64(const char *path, off64_t len)
{
	int r = REAL(truncate64)(path, len);

	AFTER_ONE(r, CRW_REC_TRUNCATE, AT_FDCWD, path);
	return r;
}

CR_EXPORT int chdir(const char *path)
{
	int r = REAL(chdir)(path), saved;

	if (r == 0 && cr_enter()) {
		saved = errno;
		cr_cwd_refresh();
		errno = saved;
		cr_leave();
	}
	return r;
}

CR_EXPORT int fchdir(int fd)
{
	int r = REAL(fchdir)(fd), saved;

	if (r == 0 && cr_enter()) {
		saved = errno;
		cr_cwd_refresh();
		errno = saved;
		cr_leave();
	}
	return r;
}

/* ---- mappings ---------------------------------------------------------------------- */

static void after_mmap(void *r, size_t len, int prot, int flags, int fd)
{
	int saved;

	/* malloc maps anonymous memory all the time: cheapest test first. */
	if (r == MAP_FAILED || fd < 0 || (flags & MAP_ANONYMOUS) || !(prot & PROT_WRITE))
		return;
	if (!cr_enter())
		return;
	saved = errno;
	cr_map_added(r, len, prot, flags, fd);
	errno = saved;
	cr_leave();
}

CR_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	void *r = REAL(mmap)(addr, len, prot, flags, fd, off);

	after_mmap(r, len, prot, flags, fd);
	return r;
}

CR_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off64_t off)
{
	void *r = REAL(mmap64)(addr, len, prot, flags, fd, off);

	after_mmap(r, len, prot, flags, fd);
	return r;
}

CR_EXPORT int munmap(void *addr, size_t len)
{
	int saved;

	if (cr_enter()) {
		saved = errno;
		cr_map_removing(addr, len);
		errno = saved;
		cr_leave();
	}
	return REAL(munmap)(addr, len);
}

CR_EXPORT int msync(void *addr, size_t len, int flags)
{
	int r = REAL(msync)(addr, len, flags), saved;

	if (r == 0 && (flags & (MS_SYNC | MS_ASYNC)) && cr_enter()) {
		saved = errno;
		cr_map_synced(addr, len);
		errno = saved;
		cr_leave();
	}
	return r;
}

/* ---- processes ---------------------------------------------------------------------- */

static void after_fork(pid_t pid)
{
	int saved;

	if (pid <= 0 || !cr_enter())
		return;
	saved = errno;
	cr_rec_proc(CRW_REC_FORK, pid);
	errno = saved;
	cr_leave();
}

/* The child is reset by our pthread_atfork handler (registered at start). */
CR_EXPORT pid_t fork(void)
{
	pid_t pid = REAL(fork)();

	after_fork(pid);
	return pid;
}

/*
 * vfork is a fork here: a C wrapper cannot return twice on a shared stack
 * (the child's return would clobber the frame the parent returns through).
 * Programs that use vfork correctly (exec or _exit at once) cannot tell.
 */
CR_EXPORT pid_t vfork(void)
{
	pid_t pid = REAL(fork)();

	after_fork(pid);
	return pid;
}

/* _Fork runs no atfork handlers: reset the child here. */
CR_EXPORT pid_t _Fork(void)
{
	pid_t pid = REAL(_Fork)();

	if (pid == 0)
		cr_child_reset();
	else
		after_fork(pid);
	return pid;
}

struct clone_tramp {
	int (*fn)(void *);
	void *arg;
};

/* A clone child with its own memory: ours is a copy of the parent's state. */
static int clone_child(void *p)
{
	struct clone_tramp t;

	memcpy(&t, p, sizeof(t)); /* the parent's frame, copied with its memory */
	cr_child_reset();
	return t.fn(t.arg);
}

CR_EXPORT int clone(int (*fn)(void *), void *stack, int flags, void *arg, ...)
{
	struct clone_tramp t = {fn, arg};
	pid_t *ptid = NULL, *ctid = NULL;
	void *tls = NULL;
	bool wrap = false;
	va_list ap;
	int r;

	/* The optional arguments are positional: read only those the flags use. */
	va_start(ap, arg);
	if (flags & (CLONE_PARENT_SETTID | CLONE_PIDFD | CLONE_SETTLS | CLONE_CHILD_SETTID |
	             CLONE_CHILD_CLEARTID)) {
		ptid = va_arg(ap, pid_t *);
		if (flags & (CLONE_SETTLS | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID)) {
			tls = va_arg(ap, void *);
			if (flags & (CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID))
				ctid = va_arg(ap, pid_t *);
		}
	}
	va_end(ap);
	/* With CLONE_VM the child shares our state (a thread, or a vfork-like
	 * child that execs at once): leave it alone. */
	if (!(flags & CLONE_VM) && cr_enter()) {
		wrap = true;
		cr_leave();
	}
	r = REAL(clone)(wrap ? clone_child : fn, stack, flags, wrap ? (void *)&t : arg, ptid, tls,
	                ctid);
	if (!(flags & CLONE_THREAD))
		after_fork(r);
	return r;
}

/* ---- exec ------------------------------------------------------------------------ */

enum exec_kind { EXEC_PATH, EXEC_SEARCH, EXEC_FD, EXEC_AT };

/* The program's name as given, when it cannot be resolved. */
static int name_as_given(const char *file, char *out)
{
	size_t n = file ? strnlen(file, CRW_PATH_MAX - 1) : 0;

	memcpy(out, file ? file : "", n);
	out[n] = '\0';
	return (int)n;
}

static int exec_common(enum exec_kind kind, int dirfd, const char *file, char *const argv[],
                       char *const envp[], int atflags)
{
	struct cr_env_fix fx;
	char prog[CRW_PATH_MAX];
	char **env = (char **)envp;
	uint32_t unobs = 0;
	bool dropped;
	int saved, n = -1;

	if (cr_enter()) {
		saved = errno;
		switch (kind) {
		case EXEC_PATH:
		case EXEC_SEARCH:
			n = cr_exec_resolve(file, kind == EXEC_SEARCH, prog);
			if (n >= 0)
				unobs = cr_exec_inspect(-1, prog);
			break;
		case EXEC_FD:
			n = cr_path_fd(dirfd, prog);
			unobs = cr_exec_inspect(dirfd, NULL);
			break;
		case EXEC_AT:
			if ((atflags & AT_EMPTY_PATH) && file && !*file) {
				n = cr_path_fd(dirfd, prog);
				unobs = cr_exec_inspect(dirfd, NULL);
			} else {
				n = cr_path_abs(dirfd, file, prog);
				if (n >= 0)
					unobs = cr_exec_inspect(-1, prog);
			}
			break;
		}
		if (n < 0)
			n = name_as_given(file, prog);
		env = cr_env_fix(envp, &fx, &dropped);
		if (dropped)
			unobs |= CRW_UNOBS_DROPPED;
		if (unobs)
			cr_rec_exec(CRW_REC_UNOBSERVED, (uint16_t)unobs, 0, prog, (size_t)n, argv);
		cr_rec_exec(CRW_REC_EXEC, 0, 0, prog, (size_t)n, argv);
		errno = saved;
		cr_leave();
	}
	switch (kind) {
	case EXEC_PATH: return REAL(execve)(file, argv, env);
	case EXEC_SEARCH: return REAL(execvpe)(file, argv, env);
	case EXEC_FD: return REAL(fexecve)(dirfd, argv, env);
	case EXEC_AT: return REAL(execveat)(dirfd, file, argv, env, atflags);
	}
	return -1;
}

CR_EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
	return exec_common(EXEC_PATH, AT_FDCWD, path, argv, envp, 0);
}

CR_EXPORT int execv(const char *path, char *const argv[])
{
	return exec_common(EXEC_PATH, AT_FDCWD, path, argv, environ, 0);
}

CR_EXPORT int execvp(const char *file, char *const argv[])
{
	return exec_common(EXEC_SEARCH, AT_FDCWD, file, argv, environ, 0);
}

CR_EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
	return exec_common(EXEC_SEARCH, AT_FDCWD, file, argv, envp, 0);
}

CR_EXPORT int execveat(int dirfd, const char *path, char *const argv[], char *const envp[],
                       int flags)
{
	return exec_common(EXEC_AT, dirfd, path, argv, envp, flags);
}

CR_EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
	return exec_common(EXEC_FD, fd, NULL, argv, envp, 0);
}

#define ARGV_STACK 512

/*
 * The argument list of an execl* call as an argv: on the stack when short,
 * else in an anonymous mapping (*mapped bytes; no malloc in the hook).
 * For execle, *envp receives the pointer after the terminating NULL.
 */
static char **collect_args(const char *arg0, va_list ap, char **sv, size_t *mapped, char ***envp)
{
	size_t n = 0, i;
	va_list aq;
	char **v = sv;

	*mapped = 0;
	if (arg0) {
		n = 1;
		va_copy(aq, ap);
		while (va_arg(aq, char *))
			n++;
		va_end(aq);
	}
	if (n + 1 > ARGV_STACK) {
		*mapped = (n + 1) * sizeof(char *);
		v = REAL(mmap)(NULL, *mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		               -1, 0);
		if (v == MAP_FAILED)
			return NULL;
	}
	v[0] = (char *)arg0;
	for (i = 1; i < n; i++)
		v[i] = va_arg(ap, char *);
	if (arg0)
		(void)va_arg(ap, char *); /* the terminating NULL */
	v[n] = NULL;
	if (envp)
		*envp = va_arg(ap, char **);
	return v;
}

static int exec_list_done(int r, char **v, size_t mapped)
{
	int saved = errno;

	if (mapped)
		REAL(munmap)(v, mapped);
	errno = saved;
	return r;
}

CR_EXPORT int execl(const char *path, const char *arg, ...)
{
	char *sv[ARGV_STACK];
	size_t mapped;
	va_list ap;
	char **v;

	va_start(ap, arg);
	v = collect_args(arg, ap, sv, &mapped, NULL);
	va_end(ap);
	if (!v) {
		errno = E2BIG;
		return -1;
	}
	return exec_list_done(exec_common(EXEC_PATH, AT_FDCWD, path, v, environ, 0), v, mapped);
}

CR_EXPORT int execlp(const char *file, const char *arg, ...)
{
	char *sv[ARGV_STACK];
	size_t mapped;
	va_list ap;
	char **v;

	va_start(ap, arg);
	v = collect_args(arg, ap, sv, &mapped, NULL);
	va_end(ap);
	if (!v) {
		errno = E2BIG;
		return -1;
	}
	return exec_list_done(exec_common(EXEC_SEARCH, AT_FDCWD, file, v, environ, 0), v, mapped);
}

CR_EXPORT int execle(const char *path, const char *arg, ...)
{
	char *sv[ARGV_STACK];
	char **envp = NULL;
	size_t mapped;
	va_list ap;
	char **v;

	va_start(ap, arg);
	v = collect_args(arg, ap, sv, &mapped, &envp);
	va_end(ap);
	if (!v) {
		errno = E2BIG;
		return -1;
	}
	return exec_list_done(exec_common(EXEC_PATH, AT_FDCWD, path, v, envp, 0), v, mapped);
}

/* ---- spawn, system, popen ------------------------------------------------------------ */

static int spawn_common(bool search, pid_t *pid, const char *file,
                        const posix_spawn_file_actions_t *fa, const posix_spawnattr_t *attr,
                        char *const argv[], char *const envp[])
{
	struct cr_env_fix fx;
	char prog[CRW_PATH_MAX];
	char **env = (char **)envp;
	uint32_t unobs = 0;
	bool active = false, dropped;
	pid_t child = 0;
	int saved, n = -1, r;

	if (cr_enter()) {
		active = true;
		saved = errno;
		n = cr_exec_resolve(file, search, prog);
		if (n >= 0)
			unobs = cr_exec_inspect(-1, prog);
		else
			n = name_as_given(file, prog);
		env = cr_env_fix(envp, &fx, &dropped);
		if (dropped)
			unobs |= CRW_UNOBS_DROPPED;
		errno = saved;
		cr_leave();
	}
	r = search ? REAL(posix_spawnp)(&child, file, fa, attr, argv, env)
	           : REAL(posix_spawn)(&child, file, fa, attr, argv, env);
	if (r == 0 && pid)
		*pid = child;
	if (r == 0 && active && cr_enter()) {
		saved = errno;
		cr_rec_exec(CRW_REC_SPAWN, 0, child, prog, (size_t)n, argv);
		if (unobs)
			cr_rec_exec(CRW_REC_UNOBSERVED, (uint16_t)unobs, child, prog, (size_t)n,
			            argv);
		errno = saved;
		cr_leave();
	}
	return r;
}

CR_EXPORT int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                          const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	return spawn_common(false, pid, path, fa, attr, argv, envp);
}

CR_EXPORT int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                           const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
	return spawn_common(true, pid, file, fa, attr, argv, envp);
}

/* system and popen run /bin/sh with environ: make sure it still carries the hook. */
static void ensure_environ(void)
{
	int saved;

	if (!cr_enter())
		return;
	saved = errno;
	cr_env_ensure();
	errno = saved;
	cr_leave();
}

CR_EXPORT int system(const char *cmd)
{
	ensure_environ();
	return REAL(system)(cmd);
}

CR_EXPORT FILE *popen(const char *cmd, const char *mode)
{
	ensure_environ();
	return REAL(popen)(cmd, mode);
}

/* ---- exit ----------------------------------------------------------------------------- */

/* The status travels in the EXIT record our destructor writes (after
 * atexit handlers, so files they close are reported first). */
CR_EXPORT void exit(int status)
{
	if (cr_enter()) {
		cr_exit_status(status);
		cr_leave();
	}
	REAL(exit)(status);
	__builtin_unreachable();
}

/* No destructors run after _exit: report now. */
CR_EXPORT void _exit(int status)
{
	if (cr_enter()) {
		cr_exit_now(status);
		cr_leave();
	}
	REAL(_exit)(status);
	__builtin_unreachable();
}

CR_EXPORT void _Exit(int status)
{
	if (cr_enter()) {
		cr_exit_now(status);
		cr_leave();
	}
	REAL(_Exit)(status);
	__builtin_unreachable();
}
