/*
 * entrypoints: exercise the hooked entry points one case at a time, for
 * tests/hooks/test_hooks.py, which runs each case under hookdump and checks
 * the exact events.
 *
 *   entrypoints CASE DIR [EXTRA]
 *
 * DIR is a scratch directory prepared by the test (DIR/in.txt exists).
 * Built with -O2 -D_FORTIFY_SOURCE=2 -D_FILE_OFFSET_BITS=64, so open() with
 * non-constant flags becomes __open64_2; the other names (open, fopen,
 * mmap, ... without 64, __open_2) are called explicitly through asm labels
 * so each exported wrapper is reached. Exit status 0 on success; failures
 * print to stderr and exit 1.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* The unsuffixed names, which _FILE_OFFSET_BITS=64 would redirect. */
extern int open32(const char *, int, ...) __asm__("open");
extern int openat32(int, const char *, int, ...) __asm__("openat");
extern int creat32(const char *, mode_t) __asm__("creat");
extern FILE *fopen32(const char *, const char *) __asm__("fopen");
extern FILE *freopen32(const char *, const char *, FILE *) __asm__("freopen");
extern FILE *tmpfile32(void) __asm__("tmpfile");
extern int mkstemp32(char *) __asm__("mkstemp");
extern int mkostemp32(char *, int) __asm__("mkostemp");
extern int mkstemps32(char *, int) __asm__("mkstemps");
extern int mkostemps32(char *, int, int) __asm__("mkostemps");
extern int truncate32(const char *, long) __asm__("truncate");
extern void *mmap32(void *, size_t, int, int, int, long) __asm__("mmap");
extern int fcntl32(int, int, ...) __asm__("fcntl");
/* The fortified entry points, called directly as well (the headers would
 * redirect __open_2 to __open64_2 here). */
extern int open_2(const char *, int) __asm__("__open_2");
extern int open64_2(const char *, int) __asm__("__open64_2");
extern int openat_2(int, const char *, int) __asm__("__openat_2");
extern int openat64_2(int, const char *, int) __asm__("__openat64_2");

static const char *dir;

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
	va_list ap;
	int e = errno;

	va_start(ap, fmt);
	fprintf(stderr, "entrypoints: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, " (errno %d: %s)\n", e, strerror(e));
	va_end(ap);
	exit(1);
}

static char *P(const char *name)
{
	/* Per thread: the threads case formats paths concurrently. */
	static __thread char bufs[8][4096];
	static __thread int k;
	char *b = bufs[k++ % 8];

	snprintf(b, 4096, "%s/%s", dir, name);
	return b;
}

static void drain_close(int fd, const char *what)
{
	char buf[4096];

	if (fd < 0)
		die("%s", what);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	if (close(fd) < 0)
		die("close %s", what);
}

static void put(int fd, const char *s)
{
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s))
		die("write");
}

static int wait_ok(pid_t pid)
{
	int st;

	if (pid < 0)
		die("fork/spawn");
	if (waitpid(pid, &st, 0) != pid)
		die("waitpid");
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
		fprintf(stderr, "entrypoints: child %d status 0x%x\n", (int)pid, st);
		exit(1);
	}
	return 0;
}

/* ---- cases ------------------------------------------------------------------ */

static void case_opens(void)
{
	volatile int ro = O_RDONLY; /* not constant: the fortified open calls __open64_2 */
	int d, fd;

	drain_close(open32(P("in.txt"), O_RDONLY), "open");
	drain_close(open64(P("in.txt"), O_RDONLY), "open64");
	drain_close(openat32(AT_FDCWD, P("in.txt"), O_RDONLY), "openat");
	d = open(dir, O_RDONLY | O_DIRECTORY);
	if (d < 0)
		die("open dir");
	drain_close(openat64(d, "in.txt", O_RDONLY), "openat64 dirfd");
	drain_close(open_2(P("in.txt"), O_RDONLY), "__open_2");
	drain_close(open64_2(P("in.txt"), O_RDONLY), "__open64_2");
	drain_close(openat_2(d, "in.txt", O_RDONLY), "__openat_2");
	drain_close(openat64_2(AT_FDCWD, P("in.txt"), O_RDONLY), "__openat64_2");
	drain_close(open(P("in.txt"), ro), "fortified open");
	if (chdir(dir) < 0)
		die("chdir");
	drain_close(open("sub/../in.txt", O_RDONLY), "relative open");
	if (chdir("/") < 0 || fchdir(d) < 0)
		die("fchdir");
	drain_close(open("./sub/./.././in.txt", O_RDONLY), "relative after fchdir");
	close(d);
	/* Never reported: pseudo file systems and devices. */
	drain_close(open("/proc/self/status", O_RDONLY), "/proc");
	drain_close(open("/sys/kernel/uevent_seqnum", O_RDONLY), "/sys");
	drain_close(open("/dev/null", O_RDONLY), "/dev/null");
	fd = open("/dev/shm/cleanroom-entrypoints", O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		die("/dev/shm");
	put(fd, "shm");
	close(fd);
	unlink("/dev/shm/cleanroom-entrypoints");
	if (chdir("/proc/self") < 0)
		die("chdir /proc");
	drain_close(open("status", O_RDONLY), "relative /proc");
	drain_close(open("../../etc/../proc/self/status", O_RDONLY), "dotted /proc");
}

static void case_creat(void)
{
	int fd = creat32(P("c1"), 0644);

	if (fd < 0)
		die("creat");
	put(fd, "creat one\n");
	close(fd);
	fd = creat64(P("c2"), 0644);
	if (fd < 0)
		die("creat64");
	put(fd, "creat two\n");
	close(fd);
}

static void case_fopen(void)
{
	char buf[64];
	FILE *f;

	f = fopen32(P("in.txt"), "r");
	if (!f || !fgets(buf, sizeof(buf), f))
		die("fopen r");
	fclose(f);
	f = fopen64(P("f1"), "w");
	if (!f)
		die("fopen64 w");
	fputs("fopen64 content\n", f); /* still buffered at fclose: flushed before the report */
	fclose(f);
	f = fopen(P("f3"), "w");
	if (!f)
		die("fopen f3");
	fputs("one", f);
	f = freopen32(P("f4"), "w", f);
	if (!f)
		die("freopen");
	fputs("two", f);
	f = freopen64(P("f6"), "a+", f);
	if (!f)
		die("freopen64");
	fputs("three", f);
	fclose(f);
	f = fopen(P("f5"), "w");
	if (!f)
		die("fopen f5");
	fputs("left open at exit", f); /* reported by the destructor */
}

static void case_tmp(void)
{
	static const char *const sfx[] = {"XXXXXX",     "XXXXXX",     "XXXXXX",     "XXXXXX",
	                                  "XXXXXX.sfx", "XXXXXX.sfx", "XXXXXX.sfx", "XXXXXX.sfx"};
	char t[8][4096];
	FILE *f;
	int fd[8], i;

	f = tmpfile32();
	if (!f)
		die("tmpfile");
	fputs("tmpfile", f);
	fclose(f);
	f = tmpfile64();
	if (!f)
		die("tmpfile64");
	fputs("tmpfile64", f);
	fclose(f);
	for (i = 0; i < 8; i++)
		snprintf(t[i], sizeof(t[i]), "%s/mk%d-%s", dir, i, sfx[i]);
	fd[0] = mkstemp32(t[0]);
	fd[1] = mkstemp64(t[1]);
	fd[2] = mkostemp32(t[2], O_CLOEXEC);
	fd[3] = mkostemp64(t[3], O_CLOEXEC);
	fd[4] = mkstemps32(t[4], 4);
	fd[5] = mkstemps64(t[5], 4);
	fd[6] = mkostemps32(t[6], 4, O_CLOEXEC);
	fd[7] = mkostemps64(t[7], 4, O_CLOEXEC);
	for (i = 0; i < 8; i++) {
		char c[32];

		if (fd[i] < 0)
			die("mkstemp variant %d", i);
		snprintf(c, sizeof(c), "mk%d", i);
		put(fd[i], c);
		close(fd[i]);
	}
}

static void case_dups(void)
{
	struct flock fl;
	int fd, d2, d3, d4, d5, d6, fl_before;

	fd = open(P("d1"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die("open d1");
	put(fd, "abc");
	d2 = dup(fd);
	d3 = dup2(fd, 50);
	d4 = dup3(fd, 51, O_CLOEXEC);
	d5 = fcntl32(fd, F_DUPFD, 60);
	d6 = fcntl(fd, F_DUPFD_CLOEXEC, 70);
	if (d2 < 0 || d3 != 50 || d4 != 51 || d5 < 60 || d6 < 70)
		die("dups %d %d %d %d %d", d2, d3, d4, d5, d6);
	/* Variadic forwarding: an int argument, then a pointer argument. */
	fl_before = fcntl(d6, F_GETFL);
	if (fcntl32(d6, F_SETFL, fl_before | O_APPEND) < 0 || !(fcntl(d6, F_GETFL) & O_APPEND))
		die("F_SETFL");
	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_WRLCK;
	fl.l_whence = SEEK_SET;
	if (fcntl(d6, F_SETLK, &fl) < 0 || fcntl32(d6, F_GETLK, &fl) < 0)
		die("F_SETLK");
	close(fd);
	close(d2);
	close(d3);
	close(d4);
	close(d5);
	put(d6, "def");
	close(d6); /* the last one: one WRITTEN for d1 */
	/* Reopen over the number of a closed write fd, read-only: no report. */
	fd = open(P("d2"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	put(fd, "ranged");
	if (dup2(fd, 90) != 90)
		die("dup2 90");
	/* Closes fd, 90 and whatever else is above 3, the hook's socket aside. */
	if (close_range(3, ~0u, 0) < 0)
		die("close_range");
	fd = open(P("d3"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	put(fd, "after close_range");
	close(fd);
}

static void case_rename(void)
{
	int d, fd;

	/* Renamed while open: the WRITTEN carries the final name. */
	fd = open(P("r1.tmp"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	put(fd, "renamed while open");
	fsync(fd);
	if (rename(P("r1.tmp"), P("r1.final")) < 0)
		die("rename");
	close(fd);
	/* Classic: close, then rename. */
	fd = open(P("r2.tmp"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	put(fd, "closed then renamed");
	close(fd);
	d = open(dir, O_RDONLY | O_DIRECTORY);
	if (renameat(d, "r2.tmp", AT_FDCWD, P("r2.final")) < 0)
		die("renameat");
	fd = open(P("r3.tmp"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	put(fd, "renameat2");
	if (renameat2(d, "r3.tmp", d, "r3.final", RENAME_NOREPLACE) < 0)
		die("renameat2");
	close(fd);
	close(d);
}

static void case_link(void)
{
	char target[4096];
	int d, fd;

	fd = open(P("l1"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	put(fd, "linked");
	close(fd);
	d = open(dir, O_RDONLY | O_DIRECTORY);
	if (link(P("l1"), P("l2")) < 0 || linkat(d, "l2", d, "l3", 0) < 0)
		die("link");
	if (unlink(P("l1")) < 0 || unlinkat(d, "l2", 0) < 0)
		die("unlink");
	if (mkdir(P("emptydir"), 0755) < 0 || unlinkat(d, "emptydir", AT_REMOVEDIR) < 0)
		die("rmdir");
	/* A nameless file given a name. */
	fd = open(dir, O_TMPFILE | O_WRONLY, 0644);
	if (fd < 0)
		die("O_TMPFILE");
	put(fd, "tmpfile linked");
	snprintf(target, sizeof(target), "%s/tmp-linked", dir);
	if (linkat(fd, "", AT_FDCWD, target, AT_EMPTY_PATH) < 0)
		die("linkat AT_EMPTY_PATH");
	close(fd);
	close(d);
}

static void case_truncate(void)
{
	int fd = open(P("t1"), O_WRONLY | O_CREAT | O_TRUNC, 0644);

	put(fd, "123456");
	close(fd);
	if (truncate32(P("t1"), 4) < 0 || truncate64(P("t1"), 2) < 0)
		die("truncate");
}

static void case_mmap(void)
{
	static const char text[] = "written through a shared mapping";
	char *p, *q;
	int fd;

	fd = open(P("m1"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, 4096) < 0)
		die("m1");
	p = mmap32(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		die("mmap");
	close(fd); /* reported now (zeros); the mapping stays */
	memcpy(p, text, sizeof(text));
	if (msync(p, 4096, MS_SYNC) < 0)
		die("msync");
	p[0] = 'W';
	if (munmap(p, 4096) < 0)
		die("munmap");
	fd = open(P("m2"), O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || ftruncate(fd, 8192) < 0)
		die("m2");
	q = mmap64(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (q == MAP_FAILED)
		die("mmap64");
	memcpy(q + 4096, "second", 6);
	if (munmap(q, 8192) < 0)
		die("munmap 2");
	close(fd);
}

static void child_reads(void)
{
	int fd;

	drain_close(open(P("in.txt"), O_RDONLY), "child open");
	fd = open(P("child.txt"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	put(fd, "from the child");
	close(fd);
}

static void case_fork(void)
{
	pid_t pid = fork();

	if (pid == 0) {
		child_reads();
		_exit(0);
	}
	wait_ok(pid);
	drain_close(open(P("in.txt"), O_RDONLY), "parent open");
}

static void case_vfork(void)
{
	pid_t pid = vfork();

	if (pid == 0) {
		execl("/bin/cat", "cat", P("in.txt"), (char *)NULL);
		_exit(127);
	}
	wait_ok(pid);
}

static int clone_fn(void *arg)
{
	(void)arg;
	child_reads();
	return 0;
}

static void case_clone(void)
{
	static char stack[256 * 1024] __attribute__((aligned(16)));
	pid_t pid;

	pid = clone(clone_fn, stack + sizeof(stack), SIGCHLD, NULL);
	wait_ok(pid);
	pid = _Fork();
	if (pid == 0) {
		drain_close(open(P("in.txt"), O_RDONLY), "_Fork child open");
		_exit(0);
	}
	wait_ok(pid);
}

static void case_spawn(void)
{
	char *argv[] = {"cat", P("in.txt"), NULL};
	pid_t pid;

	if (posix_spawn(&pid, "/bin/cat", NULL, NULL, argv, environ) != 0)
		die("posix_spawn");
	wait_ok(pid);
	if (posix_spawnp(&pid, "cat", NULL, NULL, argv, environ) != 0)
		die("posix_spawnp");
	wait_ok(pid);
}

/* A program that scrubs the hook from its environment first. */
static void scrub_env(void)
{
	unsetenv("LD_PRELOAD");
	unsetenv("CLEANROOM_SOCKET");
	unsetenv("CLEANROOM_RUN");
	unsetenv("CLEANROOM_PRELOAD");
}

static void case_system(void)
{
	char cmd[8192];

	scrub_env();
	snprintf(cmd, sizeof(cmd), "cat %s > /dev/null", P("in.txt"));
	if (system(cmd) != 0)
		die("system");
}

static void case_popen(void)
{
	char cmd[8192], buf[256];
	FILE *p;

	scrub_env();
	snprintf(cmd, sizeof(cmd), "cat %s", P("in.txt"));
	p = popen(cmd, "r");
	if (!p)
		die("popen");
	while (fgets(buf, sizeof(buf), p))
		;
	if (pclose(p) != 0)
		die("pclose");
}

/* Each exec variant in its own child, each running cat on in.txt. */
static void case_execs(void)
{
	char *argv[] = {"cat", P("in.txt"), NULL};
	char *empty[] = {NULL};
	char *custom[] = {"FOO=bar", "LD_PRELOAD=", NULL};
	int which, fd;
	pid_t pid;

	for (which = 0; which < 9; which++) {
		pid = fork();
		if (pid < 0)
			die("fork");
		if (pid > 0) {
			wait_ok(pid);
			continue;
		}
		switch (which) {
		case 0: execve("/bin/cat", argv, empty); break; /* env -i */
		case 1: execv("/bin/cat", argv); break;
		case 2: execvp("cat", argv); break;
		case 3: execvpe("cat", argv, empty); break;
		case 4: execl("/bin/cat", "cat", P("in.txt"), (char *)NULL); break;
		case 5: execlp("cat", "cat", P("in.txt"), (char *)NULL); break;
		case 6: execle("/bin/cat", "cat", P("in.txt"), (char *)NULL, custom); break;
		case 7: execveat(AT_FDCWD, "/bin/cat", argv, empty, 0); break;
		case 8:
			fd = open("/bin/cat", O_RDONLY | O_CLOEXEC);
			fexecve(fd, argv, empty);
			break;
		}
		_exit(127);
	}
}

static void case_failed_exec(void)
{
	char *argv[] = {"nope", NULL};

	errno = 0;
	if (execv(P("does-not-exist"), argv) != -1 || errno != ENOENT)
		die("a failed exec must keep its errno");
	errno = 0;
	if (open(P("does-not-exist"), O_RDONLY) != -1 || errno != ENOENT)
		die("a failed open must keep its errno");
}

#define THREADS    8
#define PER_THREAD 50

static void *thread_main(void *arg)
{
	long t = (long)arg;
	char name[64];
	int i, fd;

	for (i = 0; i < PER_THREAD; i++) {
		snprintf(name, sizeof(name), "th/%ld-%d", t, i);
		drain_close(open(P(name), O_RDONLY), "thread open");
	}
	snprintf(name, sizeof(name), "th-out-%ld", t);
	fd = open(P(name), O_WRONLY | O_CREAT | O_TRUNC, 0644);
	put(fd, name);
	close(fd);
	return NULL;
}

static void case_threads(void)
{
	pthread_t th[THREADS];
	long i;

	for (i = 0; i < THREADS; i++)
		if (pthread_create(&th[i], NULL, thread_main, (void *)i) != 0)
			die("pthread_create");
	for (i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
}

static void case_exec_path(const char *path)
{
	char *argv[] = {(char *)path, NULL};
	pid_t pid = fork();

	if (pid == 0) {
		execv(path, argv);
		_exit(127);
	}
	wait_ok(pid);
}

int main(int argc, char **argv)
{
	const char *c;

	if (argc < 3) {
		fprintf(stderr, "usage: entrypoints CASE DIR [EXTRA]\n");
		return 2;
	}
	c = argv[1];
	dir = argv[2];
	if (strcmp(c, "opens") == 0)
		case_opens();
	else if (strcmp(c, "creat") == 0)
		case_creat();
	else if (strcmp(c, "fopen") == 0)
		case_fopen();
	else if (strcmp(c, "tmp") == 0)
		case_tmp();
	else if (strcmp(c, "dups") == 0)
		case_dups();
	else if (strcmp(c, "rename") == 0)
		case_rename();
	else if (strcmp(c, "link") == 0)
		case_link();
	else if (strcmp(c, "truncate") == 0)
		case_truncate();
	else if (strcmp(c, "mmap") == 0)
		case_mmap();
	else if (strcmp(c, "fork") == 0)
		case_fork();
	else if (strcmp(c, "vfork") == 0)
		case_vfork();
	else if (strcmp(c, "clone") == 0)
		case_clone();
	else if (strcmp(c, "spawn") == 0)
		case_spawn();
	else if (strcmp(c, "system") == 0)
		case_system();
	else if (strcmp(c, "popen") == 0)
		case_popen();
	else if (strcmp(c, "execs") == 0)
		case_execs();
	else if (strcmp(c, "failed-exec") == 0)
		case_failed_exec();
	else if (strcmp(c, "threads") == 0)
		case_threads();
	else if (strcmp(c, "exec-path") == 0 && argc > 3)
		case_exec_path(argv[3]);
	else if (strcmp(c, "exit") == 0)
		exit(7);
	else {
		fprintf(stderr, "entrypoints: unknown case %s\n", c);
		return 2;
	}
	return 0;
}
