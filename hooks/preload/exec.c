/*
 * What an exec or spawn needs from the hook: an environment that keeps the
 * hook in the child (LD_PRELOAD, CLEANROOM_SOCKET, CLEANROOM_RUN,
 * CLEANROOM_PRELOAD put back when a program dropped them, e.g. `env -i`),
 * the program's path as the exec variant would find it, and whether the
 * loader will run the hook in it at all (static binaries and setuid/setgid
 * programs it will not).
 *
 * The fixed environment lives in the caller's stack frame (struct
 * cr_env_fix, bounded); the original is passed on untouched when it already
 * carries everything, which is the common case.
 */
#include "preload.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

static bool has_prefix(const char *s, const char *p, size_t pn)
{
	return strncmp(s, p, pn) == 0;
}

/* Does the LD_PRELOAD value list lib (separated by ':' or ' ')? */
static bool lists_lib(const char *v, const char *lib)
{
	size_t ln = strlen(lib), tn;
	const char *t;

	while (*v) {
		while (*v == ':' || *v == ' ')
			v++;
		t = v;
		while (*v && *v != ':' && *v != ' ')
			v++;
		tn = (size_t)(v - t);
		if (tn == ln && memcmp(t, lib, ln) == 0)
			return true;
	}
	return false;
}

#define LD   "LD_PRELOAD="
#define LD_N (sizeof(LD) - 1)

/* "LD_PRELOAD=lib[:old]" into buf; false if it does not fit. */
static bool ld_entry(char *buf, size_t cap, const char *old)
{
	size_t ln = strlen(cr_preload_path), on = old ? strlen(old) : 0;

	if (LD_N + ln + 1 + on + 1 > cap)
		return false;
	memcpy(buf, LD, LD_N);
	memcpy(buf + LD_N, cr_preload_path, ln);
	if (on) {
		buf[LD_N + ln] = ':';
		memcpy(buf + LD_N + ln + 1, old, on + 1);
	} else {
		buf[LD_N + ln] = '\0';
	}
	return true;
}

static bool entry_is(const char *e, const char *want)
{
	const char *eq = strchr(want, '=');

	return eq && has_prefix(e, want, (size_t)(eq - want) + 1);
}

char **cr_env_fix(char *const envp[], struct cr_env_fix *fx, bool *dropped)
{
	static char *const empty[] = {NULL};
	const char *ld_old = NULL;
	bool ok_ld = !*cr_preload_path, ok_sock = false;
	bool ok_run = !cr_env_run[0], ok_pre = !cr_env_preload[0];
	size_t n = 0, k = 0, i;

	*dropped = false;
	if (!envp)
		envp = empty; /* the kernel takes NULL as empty */
	for (i = 0; envp[i]; i++) {
		const char *e = envp[i];

		n++;
		if (e[0] == 'L' && has_prefix(e, LD, LD_N)) {
			ld_old = e + LD_N;
			ok_ld = !*cr_preload_path || lists_lib(ld_old, cr_preload_path);
		} else if (e[0] == 'C' && has_prefix(e, "CLEANROOM_", 10)) {
			if (entry_is(e, cr_env_socket))
				ok_sock = strcmp(e, cr_env_socket) == 0;
			else if (cr_env_run[0] && entry_is(e, cr_env_run))
				ok_run = strcmp(e, cr_env_run) == 0;
			else if (cr_env_preload[0] && entry_is(e, cr_env_preload))
				ok_pre = strcmp(e, cr_env_preload) == 0;
		}
	}
	if (ok_ld && ok_sock && ok_run && ok_pre)
		return (char **)envp;
	if (n + 5 > CR_ENV_MAX ||
	    (!ok_ld && !ld_entry(fx->ld, sizeof(fx->ld), ld_old && *ld_old ? ld_old : NULL))) {
		*dropped = true;
		return (char **)envp;
	}
	for (i = 0; envp[i]; i++) {
		const char *e = envp[i];

		if ((!ok_ld && has_prefix(e, LD, LD_N)) || entry_is(e, cr_env_socket) ||
		    (cr_env_run[0] && entry_is(e, cr_env_run)) ||
		    (cr_env_preload[0] && entry_is(e, cr_env_preload)))
			continue; /* replaced below (duplicates go too) */
		fx->vec[k++] = (char *)e;
	}
	if (!ok_ld)
		fx->vec[k++] = fx->ld;
	fx->vec[k++] = cr_env_socket;
	if (cr_env_run[0])
		fx->vec[k++] = cr_env_run;
	if (cr_env_preload[0])
		fx->vec[k++] = cr_env_preload;
	fx->vec[k] = NULL;
	return fx->vec;
}

void cr_env_ensure(void)
{
	/* putenv keeps the pointer: these must outlive the call. */
	static char ld_buf[CR_LD_PRELOAD_MAX];
	const char *v;

	v = getenv("LD_PRELOAD");
	if (*cr_preload_path && (!v || !lists_lib(v, cr_preload_path)) &&
	    ld_entry(ld_buf, sizeof(ld_buf), v && *v ? v : NULL))
		putenv(ld_buf);
	v = getenv(CRW_ENV_SOCKET);
	if (!v || strcmp(v, cr_env_socket + sizeof(CRW_ENV_SOCKET)) != 0)
		putenv(cr_env_socket);
	v = getenv(CRW_ENV_RUN);
	if (cr_env_run[0] && (!v || strcmp(v, cr_env_run + sizeof(CRW_ENV_RUN)) != 0))
		putenv(cr_env_run);
	v = getenv(CRW_ENV_PRELOAD);
	if (cr_env_preload[0] && (!v || strcmp(v, cr_preload_path) != 0))
		putenv(cr_env_preload);
}

static bool runnable(const char *path)
{
	struct stat st;

	return access(path, X_OK) == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int cr_exec_resolve(const char *file, bool search, char *out)
{
	char cand[CRW_PATH_MAX];
	const char *path, *d, *e;
	size_t fl, dl;

	if (!file || !*file)
		return -1;
	if (!search || strchr(file, '/'))
		return cr_path_abs(AT_FDCWD, file, out);
	/* execvp searches the caller's PATH (not the new environment's). */
	path = getenv("PATH");
	if (!path)
		path = "/bin:/usr/bin";
	fl = strlen(file);
	for (d = path;; d = e + 1) {
		e = strchrnul(d, ':');
		dl = (size_t)(e - d);
		if (dl + 1 + fl < sizeof(cand)) {
			if (dl == 0) { /* an empty element is the cwd */
				memcpy(cand, file, fl + 1);
			} else {
				memcpy(cand, d, dl);
				cand[dl] = '/';
				memcpy(cand + dl + 1, file, fl + 1);
			}
			if (runnable(cand))
				return cr_path_abs(AT_FDCWD, cand, out);
		}
		if (!*e)
			break;
	}
	return -1;
}

static bool read_at(int fd, void *buf, size_t n, off_t off)
{
	ssize_t r;

	do
		r = pread(fd, buf, n, off);
	while (r < 0 && errno == EINTR);
	return r == (ssize_t)n;
}

/* ELF without PT_INTERP: nothing loads the hook (static, static-pie). */
static uint32_t inspect_elf(int fd, const unsigned char *ident)
{
	Elf64_Ehdr eh;
	Elf64_Phdr ph[64];
	Elf32_Ehdr eh32;
	Elf32_Phdr ph32[64];
	unsigned i;

	if (ident[EI_CLASS] == ELFCLASS64) {
		if (!read_at(fd, &eh, sizeof(eh), 0) || eh.e_phentsize != sizeof(Elf64_Phdr) ||
		    eh.e_phnum == 0 || eh.e_phnum > 64 ||
		    !read_at(fd, ph, eh.e_phnum * sizeof(Elf64_Phdr), (off_t)eh.e_phoff))
			return 0; /* unknown: the kernel will decide */
		for (i = 0; i < eh.e_phnum; i++)
			if (ph[i].p_type == PT_INTERP)
				return 0;
		return CRW_UNOBS_STATIC;
	}
	if (ident[EI_CLASS] == ELFCLASS32) {
		if (!read_at(fd, &eh32, sizeof(eh32), 0) ||
		    eh32.e_phentsize != sizeof(Elf32_Phdr) || eh32.e_phnum == 0 ||
		    eh32.e_phnum > 64 ||
		    !read_at(fd, ph32, eh32.e_phnum * sizeof(Elf32_Phdr), (off_t)eh32.e_phoff))
			return 0;
		for (i = 0; i < eh32.e_phnum; i++)
			if (ph32[i].p_type == PT_INTERP)
				return 0;
		return CRW_UNOBS_STATIC;
	}
	return 0;
}

static uint32_t inspect(int fd, const char *path, int depth)
{
	unsigned char head[256];
	char interp[CRW_PATH_MAX];
	struct stat st;
	uint32_t flags = 0;
	bool own = false;
	ssize_t n;
	size_t i, j;

	if (fd < 0) {
		fd = REAL(open)(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return 0; /* execute-only or gone: the exec will tell */
		own = true;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
		goto done;
	do
		n = pread(fd, head, sizeof(head) - 1, 0);
	while (n < 0 && errno == EINTR);
	if (n < 4)
		goto done;
	if (head[0] == '#' && head[1] == '!') {
		/* The kernel ignores set-id bits on scripts; the interpreter counts. */
		head[n] = '\0';
		for (i = 2; head[i] == ' ' || head[i] == '\t'; i++)
			;
		for (j = 0; head[i] && head[i] != ' ' && head[i] != '\t' && head[i] != '\n' &&
		            j < sizeof(interp) - 1;
		     i++, j++)
			interp[j] = (char)head[i];
		interp[j] = '\0';
		if (j > 0 && depth < 4)
			flags = inspect(-1, interp, depth + 1);
		goto done;
	}
	/* The loader runs in secure mode (ignoring LD_PRELOAD) only when the
	 * exec changes our effective ids. */
	if (((st.st_mode & S_ISUID) && st.st_uid != geteuid()) ||
	    ((st.st_mode & S_ISGID) && st.st_gid != getegid()))
		flags |= CRW_UNOBS_SETUID;
	if (memcmp(head, ELFMAG, SELFMAG) == 0 && (size_t)n >= EI_NIDENT)
		flags |= inspect_elf(fd, head);
done:
	if (own)
		REAL(close)(fd);
	return flags;
}

uint32_t cr_exec_inspect(int fd, const char *path)
{
	return inspect(fd, path, 0);
}
