/*
 * Absolute paths without system calls in the common case.
 *
 * The working directory is cached (refreshed by the chdir/fchdir hooks, in
 * every fork child and at start) behind a sequence counter: readers copy it
 * and retry if a writer ran meanwhile, so an open never takes a lock for it.
 * Relative paths are joined to the cached cwd; paths relative to a real
 * directory descriptor are joined to readlink(/proc/self/fd/N). "." and ".."
 * are resolved lexically (a ".." after a symlink is taken literally, as
 * the brief asks: the kernel's view is one readlink away if ever needed).
 */
#include "preload.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static char cwd_buf[CRW_PATH_MAX];
static size_t cwd_len; /* 0: unknown */
static unsigned cwd_seq;
static atomic_flag cwd_lock = ATOMIC_FLAG_INIT;

int cr_fstat(int fd, struct stat *st)
{
#if defined(__x86_64__) && defined(SYS_fstat)
	return (int)syscall(SYS_fstat, fd, st);
#else
	return fstat(fd, st);
#endif
}

size_t cr_utoa(char *buf, unsigned long v)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	for (i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	buf[n] = '\0';
	return n;
}

void cr_fd_link(char *buf, int fd)
{
	memcpy(buf, "/proc/self/fd/", 14);
	cr_utoa(buf + 14, (unsigned long)(unsigned)fd);
}

void cr_cwd_refresh(void)
{
	char tmp[CRW_PATH_MAX];
	size_t n = 0;

	/* getcwd fails for an unreachable cwd; then opens use /proc/self/fd. */
	if (getcwd(tmp, sizeof(tmp)) && tmp[0] == '/')
		n = strlen(tmp);
	while (atomic_flag_test_and_set_explicit(&cwd_lock, memory_order_acquire))
		__builtin_ia32_pause();
	__atomic_store_n(&cwd_seq, cwd_seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	memcpy(cwd_buf, tmp, n);
	cwd_len = n == 1 ? 0 : n; /* "/" joins as the empty prefix */
	if (n == 0)
		cwd_len = (size_t)-1;
	__atomic_store_n(&cwd_seq, cwd_seq + 1, __ATOMIC_RELEASE);
	atomic_flag_clear_explicit(&cwd_lock, memory_order_release);
}

/* Copy the cached cwd into out: its length (0 for "/"), or -1 if unknown. */
static long cwd_copy(char *out)
{
	unsigned s1, s2;
	size_t n;

	for (;;) {
		s1 = __atomic_load_n(&cwd_seq, __ATOMIC_ACQUIRE);
		if (s1 & 1) {
			__builtin_ia32_pause();
			continue;
		}
		n = __atomic_load_n(&cwd_len, __ATOMIC_RELAXED);
		if (n != (size_t)-1 && n < CRW_PATH_MAX)
			memcpy(out, cwd_buf, n);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		s2 = __atomic_load_n(&cwd_seq, __ATOMIC_RELAXED);
		if (s1 == s2)
			return n == (size_t)-1 ? -1 : (long)n;
	}
}

/*
 * Append path's components to out[0..n) (an absolute normalised prefix,
 * n == 0 meaning "/"), resolving "." and ".." lexically. NUL-terminates;
 * returns the length or -1 when longer than CRW_PATH_MAX - 1.
 */
static int join(char *out, size_t n, const char *path)
{
	const char *p = path, *c;
	size_t cl;

	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		c = p;
		while (*p && *p != '/')
			p++;
		cl = (size_t)(p - c);
		if (cl == 1 && c[0] == '.')
			continue;
		if (cl == 2 && c[0] == '.' && c[1] == '.') {
			while (n > 0 && out[n - 1] != '/')
				n--;
			if (n > 0)
				n--;
			continue;
		}
		if (n + 1 + cl >= CRW_PATH_MAX)
			return -1;
		out[n++] = '/';
		memcpy(out + n, c, cl);
		n += cl;
	}
	if (n == 0)
		out[n++] = '/';
	out[n] = '\0';
	return (int)n;
}

int cr_path_fd(int fd, char *out)
{
	char link[32];
	ssize_t n;

	cr_fd_link(link, fd);
	n = readlink(link, out, CRW_PATH_MAX - 1);
	if (n <= 0 || n >= CRW_PATH_MAX - 1)
		return -1;
	out[n] = '\0';
	return (int)n;
}

int cr_path_abs(int dirfd, const char *path, char *out)
{
	long n;

	if (!path)
		return -1;
	if (path[0] == '/')
		return join(out, 0, path);
	if (dirfd == AT_FDCWD) {
		n = cwd_copy(out);
		if (n < 0)
			return -1;
	} else {
		n = cr_path_fd(dirfd, out);
		if (n <= 0 || out[0] != '/')
			return -1;
		if (n == 1)
			n = 0;
	}
	return join(out, (size_t)n, path);
}

static bool under(const char *path, size_t n, const char *dir, size_t dn)
{
	return n >= dn && memcmp(path, dir, dn) == 0 && (n == dn || path[dn] == '/');
}

bool cr_path_pseudo(const char *path, size_t n)
{
	if (n < 4 || path[0] != '/')
		return false;
	switch (path[1]) {
	case 'p': return under(path, n, "/proc", 5);
	case 's': return under(path, n, "/sys", 4);
	case 'd': return under(path, n, "/dev", 4); /* includes /dev/shm */
	default: return false;
	}
}
