/*
 * The preload hook's state: real functions, start-up, the connection to the
 * recorder, the ring writer, and the tracking of descriptors opened for
 * writing and of shared writable mappings. The wrappers are in hooks.c.
 *
 * Invariants:
 * - Nothing here allocates or uses stdio for itself; buffers are static
 *   (touched only under the connect state machine or a lock) or on the
 *   stack. The one stdio call is fflush() of the program's own stream just
 *   before its descriptor is reported, which is what fclose/exit would do.
 * - The connection is made on the first report (conn_state IDLE -> BUSY ->
 *   READY or OFF) and belongs to this process: a fork child drops the
 *   inherited one (cr_child_reset) and makes its own.
 * - Ring records are written under ring_lock (process-private) and
 *   published by a release store of head. A record never wraps, and the
 *   space left before the end of the data area is never 1..23 bytes: a
 *   record that would leave such a sliver takes it as padding, so a
 *   CRW_REC_PAD header always fits where one is needed.
 * - fdtab[fd] says what the hook knows about descriptor fd: 0 nothing,
 *   1..SLOT_MAX a regular file opened for writing (the slot counts the
 *   descriptors sharing that open file description: dups report once, at
 *   the last close), FD_NOSLOT writing but no slot left (reports at every
 *   close), FD_INTERNAL one of our own descriptors (the socket, dups kept
 *   for mappings), which we move away when the program closes its number.
 */
#include "preload.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct cr_real cr_real;
int cr_real_ready;
__thread int cr_in_hook CR_TLS_IE;
static __thread int32_t tls_tid CR_TLS_IE;
int cr_init_state;
bool cr_active;

#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path))

char cr_env_socket[sizeof(CRW_ENV_SOCKET) + SUN_PATH_MAX];
char cr_env_run[sizeof(CRW_ENV_RUN) + 256];
char cr_env_preload[sizeof(CRW_ENV_PRELOAD) + CRW_PATH_MAX];
const char *cr_preload_path = "";
static const char *socket_path;

static int32_t g_pid;
static uint32_t hello_flags;

enum { CONN_IDLE, CONN_BUSY, CONN_READY, CONN_OFF };
static int conn_state;
static int sock_fd = -1;
static crw_ring *ring;
static uint8_t *ring_data;
static uint64_t ring_head; /* ours, under ring_lock; published to ring->head */
static atomic_flag ring_lock = ATOMIC_FLAG_INIT;
static bool ring_stalled; /* the last record was dropped: do not wait again */

/* HELLO payload: built by the one thread that connects. */
static char hello_buf[CRW_PATH_MAX + 1 + CRW_ARGV_MAX + 1];

#define FD_TRACK_MAX 65536
#define SLOT_MAX     256
#define FD_NOSLOT    0xfffe
#define FD_INTERNAL  0xffff
static uint16_t fdtab[FD_TRACK_MAX];
static uint32_t slot_refs[SLOT_MAX + 1];
static FILE *slot_stream[SLOT_MAX + 1];
static int writers; /* descriptors tracked for writing, for the exit scan */

#define MAP_MAX 256
struct map_ent {
	uintptr_t addr;
	size_t len; /* 0: free */
	int fd;     /* our dup of the mapped file */
};
static struct map_ent maps[MAP_MAX];
static int map_count;
static atomic_flag map_lock = ATOMIC_FLAG_INIT;

static int exit_status_known;
static int exit_status;
static int exit_done;

/* ---- real functions and start-up ---------------------------------------- */

#define RESOLVE(field, name) (*(void **)&cr_real.field = dlsym(RTLD_NEXT, name))

void cr_real_resolve(void)
{
	/* dlsym allocates nothing on success and calls none of our hooks. */
	RESOLVE(open, "open");
	RESOLVE(open64, "open64");
	RESOLVE(openat, "openat");
	RESOLVE(openat64, "openat64");
	RESOLVE(open_2, "__open_2");
	RESOLVE(open64_2, "__open64_2");
	RESOLVE(openat_2, "__openat_2");
	RESOLVE(openat64_2, "__openat64_2");
	RESOLVE(creat, "creat");
	RESOLVE(creat64, "creat64");
	RESOLVE(fopen, "fopen");
	RESOLVE(fopen64, "fopen64");
	RESOLVE(freopen, "freopen");
	RESOLVE(freopen64, "freopen64");
	RESOLVE(tmpfile, "tmpfile");
	RESOLVE(tmpfile64, "tmpfile64");
	RESOLVE(mkstemp, "mkstemp");
	RESOLVE(mkstemp64, "mkstemp64");
	RESOLVE(mkostemp, "mkostemp");
	RESOLVE(mkostemp64, "mkostemp64");
	RESOLVE(mkstemps, "mkstemps");
	RESOLVE(mkstemps64, "mkstemps64");
	RESOLVE(mkostemps, "mkostemps");
	RESOLVE(mkostemps64, "mkostemps64");
	RESOLVE(close, "close");
	RESOLVE(fclose, "fclose");
	RESOLVE(close_range, "close_range");
	RESOLVE(dup, "dup");
	RESOLVE(dup2, "dup2");
	RESOLVE(dup3, "dup3");
	RESOLVE(fcntl, "fcntl");
	RESOLVE(fcntl64, "fcntl64");
	RESOLVE(rename, "rename");
	RESOLVE(renameat, "renameat");
	RESOLVE(renameat2, "renameat2");
	RESOLVE(link, "link");
	RESOLVE(linkat, "linkat");
	RESOLVE(unlink, "unlink");
	RESOLVE(unlinkat, "unlinkat");
	RESOLVE(truncate, "truncate");
	RESOLVE(truncate64, "truncate64");
	RESOLVE(mmap, "mmap");
	RESOLVE(mmap64, "mmap64");
	RESOLVE(munmap, "munmap");
	RESOLVE(msync, "msync");
	RESOLVE(fork, "fork");
	RESOLVE(_Fork, "_Fork");
	RESOLVE(clone, "clone");
	RESOLVE(execve, "execve");
	RESOLVE(execvpe, "execvpe");
	RESOLVE(execveat, "execveat");
	RESOLVE(fexecve, "fexecve");
	RESOLVE(posix_spawn, "posix_spawn");
	RESOLVE(posix_spawnp, "posix_spawnp");
	RESOLVE(system, "system");
	RESOLVE(popen, "popen");
	RESOLVE(chdir, "chdir");
	RESOLVE(fchdir, "fchdir");
	RESOLVE(exit, "exit");
	RESOLVE(_exit, "_exit");
	RESOLVE(_Exit, "_Exit");
	__atomic_store_n(&cr_real_ready, 1, __ATOMIC_RELEASE);
}

/* "NAME=value" into dst (size cap); false when it does not fit. */
static bool env_entry(char *dst, size_t cap, const char *name, const char *value)
{
	size_t a = strlen(name), b = strlen(value);

	if (a + 1 + b + 1 > cap)
		return false;
	memcpy(dst, name, a);
	dst[a] = '=';
	memcpy(dst + a + 1, value, b + 1);
	return true;
}

static void atfork_child(void)
{
	cr_child_reset();
}

void cr_init(void)
{
	int expected = 0;
	int saved_errno = errno;
	int was_in_hook = cr_in_hook;
	const char *s, *run, *pre;
	Dl_info info;

	if (!__atomic_compare_exchange_n(&cr_init_state, &expected, 1, false, __ATOMIC_ACQ_REL,
	                                 __ATOMIC_ACQUIRE)) {
		/* Another thread is initialising: the hook is usable once it is done. */
		while (__atomic_load_n(&cr_init_state, __ATOMIC_ACQUIRE) != 2)
			sched_yield();
		return;
	}
	cr_in_hook = 1;
	if (!__atomic_load_n(&cr_real_ready, __ATOMIC_ACQUIRE))
		cr_real_resolve();
	s = getenv(CRW_ENV_SOCKET);
	if (s && *s && env_entry(cr_env_socket, sizeof(cr_env_socket), CRW_ENV_SOCKET, s)) {
		socket_path = cr_env_socket + sizeof(CRW_ENV_SOCKET);
		run = getenv(CRW_ENV_RUN);
		if (!run || !env_entry(cr_env_run, sizeof(cr_env_run), CRW_ENV_RUN, run))
			cr_env_run[0] = '\0';
		pre = getenv(CRW_ENV_PRELOAD);
		if (!pre || !*pre) {
			/* Not given: our own path as the loader found it. */
			pre =
			    dladdr((void *)cr_init, &info) && info.dli_fname ? info.dli_fname : "";
		}
		if (*pre && env_entry(cr_env_preload, sizeof(cr_env_preload), CRW_ENV_PRELOAD, pre))
			cr_preload_path = cr_env_preload + sizeof(CRW_ENV_PRELOAD);
		else
			cr_env_preload[0] = '\0';
		g_pid = getpid();
		/* Whether called from our constructor or from a hook that ran
		 * before it, this is a fresh image: it started by exec. */
		hello_flags = CRW_HELLO_AFTER_EXEC;
		cr_cwd_refresh();
		pthread_atfork(NULL, NULL, atfork_child);
		cr_active = true;
	}
	__atomic_store_n(&cr_init_state, 2, __ATOMIC_RELEASE);
	cr_in_hook = was_in_hook;
	errno = saved_errno;
}

__attribute__((constructor)) static void preload_constructor(void)
{
	if (__atomic_load_n(&cr_init_state, __ATOMIC_ACQUIRE) != 2)
		cr_init();
}

static int32_t cur_tid(void)
{
	if (CR_UNLIKELY(!tls_tid))
		tls_tid = gettid();
	return tls_tid;
}

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts); /* vDSO: no system call */
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void pause_briefly(uint64_t ns)
{
	struct timespec ts = {0, (long)ns};

	nanosleep(&ts, NULL);
}

/* ---- the connection ------------------------------------------------------ */

static bool send_msg(uint16_t type, const void *a, size_t an, const void *b, size_t bn, int fd,
                     uint64_t ring_pos)
{
	crw_msg m;
	struct iovec iov[3];
	struct msghdr mh;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	ssize_t r;

	memset(&m, 0, sizeof(m));
	m.magic = CRW_MAGIC;
	m.version = CRW_VERSION;
	m.type = type;
	m.pid = g_pid;
	m.ppid = getppid();
	m.time_ns = now_ns(CLOCK_REALTIME);
	m.flags = type == CRW_MSG_HELLO ? hello_flags : 0;
	m.payload_len = (uint32_t)(an + bn);
	m.ring_pos = ring_pos;
	iov[0].iov_base = &m;
	iov[0].iov_len = sizeof(m);
	iov[1].iov_base = (void *)a;
	iov[1].iov_len = an;
	iov[2].iov_base = (void *)b;
	iov[2].iov_len = bn;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = 3;
	if (fd >= 0) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	do
		r = sendmsg(sock_fd, &mh, MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	return r == (ssize_t)(sizeof(m) + an + bn);
}

/* Read up to cap bytes of a small /proc file. */
static size_t read_small(const char *path, char *buf, size_t cap)
{
	int fd = REAL(open)(path, O_RDONLY | O_CLOEXEC);
	size_t n = 0;
	ssize_t r;

	if (fd < 0)
		return 0;
	while (n < cap) {
		r = read(fd, buf + n, cap - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	REAL(close)(fd);
	return n;
}

static size_t hello_payload(void)
{
	ssize_t e = readlink("/proc/self/exe", hello_buf, CRW_PATH_MAX);
	size_t n, a, cut;

	if (e < 0 || e >= CRW_PATH_MAX)
		e = 0;
	hello_buf[e] = '\0';
	n = (size_t)e + 1;
	/* One byte more than allowed tells us whether argv was cut. */
	a = read_small("/proc/self/cmdline", hello_buf + n, CRW_ARGV_MAX + 1);
	if (a > CRW_ARGV_MAX) {
		/* Keep whole strings only: cut after the last NUL that fits. */
		for (cut = CRW_ARGV_MAX; cut > 0 && hello_buf[n + cut - 1] != '\0'; cut--)
			;
		a = cut;
	} else if (a > 0 && hello_buf[n + a - 1] != '\0') {
		hello_buf[n + a++] = '\0'; /* a program that rewrote its argv area */
		if (a > CRW_ARGV_MAX)
			a = 0;
	}
	return n + a;
}

static void internal_fd(int fd)
{
	if (fd >= 0 && fd < FD_TRACK_MAX)
		__atomic_store_n(&fdtab[fd], FD_INTERNAL, __ATOMIC_RELAXED);
}

static bool conn_open(void)
{
	struct sockaddr_un sa;
	int s = -1, mfd = -1;
	void *m = MAP_FAILED;
	crw_ring *r;
	size_t n;

	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, socket_path, strlen(socket_path));
	s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0)
		goto fail;
	while (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		if (errno != EINTR)
			goto fail;
	mfd = memfd_create("cleanroom-ring", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, CRW_RING_BYTES) < 0)
		goto fail;
	m = REAL(mmap)(NULL, CRW_RING_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (m == MAP_FAILED)
		goto fail;
	r = m;
	r->magic = CRW_RING_MAGIC;
	r->version = CRW_VERSION;
	r->data_bytes = CRW_RING_DATA;
	sock_fd = s;
	n = hello_payload();
	if (!send_msg(CRW_MSG_HELLO, hello_buf, n, NULL, 0, mfd, 0))
		goto fail;
	REAL(close)(mfd); /* the recorder has its own reference now */
	internal_fd(s);
	ring = r;
	ring_data = (uint8_t *)m + CRW_RING_CONTROL;
	ring_head = 0;
	ring_stalled = false;
	return true;
fail:
	sock_fd = -1;
	if (m != MAP_FAILED)
		REAL(munmap)(m, CRW_RING_BYTES);
	if (mfd >= 0)
		REAL(close)(mfd);
	if (s >= 0)
		REAL(close)(s);
	return false;
}

/* True when reports can be made; connects on first use. */
static bool conn_ready(void)
{
	int st = __atomic_load_n(&conn_state, __ATOMIC_ACQUIRE);
	int expected = CONN_IDLE;

	if (CR_LIKELY(st == CONN_READY))
		return true;
	if (st == CONN_OFF)
		return false;
	if (st == CONN_IDLE && __atomic_compare_exchange_n(&conn_state, &expected, CONN_BUSY, false,
	                                                   __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
		st = conn_open() ? CONN_READY : CONN_OFF;
		__atomic_store_n(&conn_state, st, __ATOMIC_RELEASE);
		return st == CONN_READY;
	}
	while ((st = __atomic_load_n(&conn_state, __ATOMIC_ACQUIRE)) == CONN_BUSY)
		sched_yield();
	return st == CONN_READY;
}

/* ---- the ring ------------------------------------------------------------ */

static void ring_lock_take(void)
{
	unsigned spins = 0;

	while (atomic_flag_test_and_set_explicit(&ring_lock, memory_order_acquire)) {
		/* The holder may be waiting for the recorder: stop burning CPU. */
		if (++spins < 2000)
			__builtin_ia32_pause();
		else
			pause_briefly(50000);
	}
}

static void ring_lock_drop(void)
{
	atomic_flag_clear_explicit(&ring_lock, memory_order_release);
}

/*
 * Room for *len bytes (a multiple of 8): the record's place, with the lock
 * held, and *len possibly grown by the sliver rule. NULL when the record was
 * dropped (lock released).
 */
static uint8_t *ring_reserve(uint32_t *len)
{
	uint64_t deadline = 0;
	unsigned spins = 0;

	ring_lock_take();
	for (;;) {
		uint64_t off = ring_head % CRW_RING_DATA;
		uint64_t to_end = CRW_RING_DATA - off;
		uint64_t need = *len, pad = 0;
		uint64_t tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);

		if (need > to_end)
			pad = to_end;
		else if (need < to_end && to_end - need < sizeof(crw_rec))
			need = to_end;
		if (tail <= ring_head && ring_head - tail <= CRW_RING_DATA &&
		    CRW_RING_DATA - (ring_head - tail) >= pad + need) {
			if (pad) {
				crw_rec *h = (crw_rec *)(ring_data + off);

				memset(h, 0, sizeof(*h));
				h->len = (uint32_t)pad;
				h->type = CRW_REC_PAD;
				h->pid = g_pid;
				ring_head += pad; /* published with the record */
			}
			ring_stalled = false;
			*len = (uint32_t)need;
			return ring_data + ring_head % CRW_RING_DATA;
		}
		/* A recorder that stopped draining costs one wait, not one per record. */
		if (ring_stalled)
			break;
		if (spins < 64) {
			spins++;
			sched_yield();
			continue;
		}
		if (!deadline) {
			deadline = now_ns(CLOCK_MONOTONIC) + CRW_RING_WAIT_NS;
		} else if (now_ns(CLOCK_MONOTONIC) >= deadline) {
			ring_stalled = true;
			break;
		}
		pause_briefly(200000);
	}
	__atomic_fetch_add(&ring->dropped, 1, __ATOMIC_RELAXED);
	ring_lock_drop();
	return NULL;
}

static void ring_commit(uint8_t *p, uint32_t len, uint32_t used)
{
	memset(p + used, 0, len - used);
	ring_head += len;
	__atomic_store_n(&ring->head, ring_head, __ATOMIC_RELEASE);
	ring_lock_drop();
}

/* A record of body bytes with its header written, or NULL. */
static uint8_t *rec_begin(uint32_t body, uint16_t type, uint16_t flags, uint32_t *len)
{
	crw_rec h;
	uint8_t *p;

	if (!conn_ready())
		return NULL;
	h.time_ns = now_ns(CLOCK_REALTIME);
	h.tid = cur_tid();
	h.pid = g_pid;
	h.type = type;
	h.flags = flags;
	*len = (body + 7u) & ~7u;
	p = ring_reserve(len);
	if (!p)
		return NULL;
	h.len = *len;
	memcpy(p, &h, sizeof(h));
	return p;
}

static void file_id(crw_file_id *id, const struct stat *st)
{
	id->dev = st->st_dev;
	id->ino = st->st_ino;
	id->size = (uint64_t)st->st_size;
	id->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
	id->ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

void cr_rec_open(const struct stat *st, int fd, uint16_t flags, const char *path, size_t n)
{
	uint32_t body = (uint32_t)(sizeof(crw_open) + n), len;
	uint8_t *p = rec_begin(body, CRW_REC_OPEN, flags, &len);
	crw_open *o = (crw_open *)p;

	if (!p)
		return;
	file_id(&o->id, st);
	o->fd = fd;
	o->path_len = (uint32_t)n;
	memcpy(p + sizeof(crw_open), path, n);
	ring_commit(p, len, body);
}

void cr_rec_path(uint16_t type, uint16_t flags, const char *path, size_t n)
{
	uint32_t body = (uint32_t)(sizeof(crw_path) + n), len;
	uint8_t *p = rec_begin(body, type, flags, &len);
	crw_path *r = (crw_path *)p;

	if (!p)
		return;
	r->path_len = (uint32_t)n;
	r->reserved = 0;
	memcpy(p + sizeof(crw_path), path, n);
	ring_commit(p, len, body);
}

void cr_rec_two(uint16_t type, uint16_t flags, const char *a, size_t an, const char *b, size_t bn)
{
	uint32_t body = (uint32_t)(sizeof(crw_two_paths) + an + bn), len;
	uint8_t *p = rec_begin(body, type, flags, &len);
	crw_two_paths *r = (crw_two_paths *)p;

	if (!p)
		return;
	r->old_len = (uint32_t)an;
	r->new_len = (uint32_t)bn;
	memcpy(p + sizeof(crw_two_paths), a, an);
	memcpy(p + sizeof(crw_two_paths) + an, b, bn);
	ring_commit(p, len, body);
}

void cr_rec_proc(uint16_t type, int64_t arg)
{
	uint32_t body = sizeof(crw_proc), len;
	uint8_t *p = rec_begin(body, type, 0, &len);

	if (!p)
		return;
	((crw_proc *)p)->arg = arg;
	ring_commit(p, len, body);
}

void cr_rec_exec(uint16_t type, uint16_t flags, int64_t child, const char *path, size_t n,
                 char *const argv[])
{
	size_t a = 0, l, i;
	uint32_t body, len;
	uint8_t *p, *q;
	crw_exec *e;

	/* Whole strings only, at most CRW_ARGV_MAX bytes. */
	for (i = 0; argv && argv[i]; i++) {
		l = strlen(argv[i]) + 1;
		if (a + l > CRW_ARGV_MAX)
			break;
		a += l;
	}
	body = (uint32_t)(sizeof(crw_exec) + n + a);
	p = rec_begin(body, type, flags, &len);
	if (!p)
		return;
	e = (crw_exec *)p;
	e->child = child;
	e->path_len = (uint32_t)n;
	e->argv_len = (uint32_t)a;
	memcpy(p + sizeof(crw_exec), path, n);
	q = p + sizeof(crw_exec) + n;
	for (i = 0; a > 0; i++) {
		l = strlen(argv[i]) + 1;
		memcpy(q, argv[i], l);
		q += l;
		a -= l;
	}
	ring_commit(p, len, body);
}

/* ---- WRITTEN --------------------------------------------------------------- */

static void report_written(int fd, uint32_t flags)
{
	static const char deleted[] = " (deleted)";
	const size_t dl = sizeof(deleted) - 1;
	char path[CRW_PATH_MAX];
	struct stat st;
	crw_written w;
	int n;

	if (!conn_ready() || cr_fstat(fd, &st) < 0)
		return;
	/*
	 * The name now, from the kernel: it follows every rename, including
	 * the write-to-temporary-then-rename idiom and renames made by other
	 * processes, at the cost of one readlink per file written.
	 */
	n = cr_path_fd(fd, path);
	if (n < 0)
		n = 0;
	if (st.st_nlink == 0 && (size_t)n >= dl && memcmp(path + n - dl, deleted, dl) == 0) {
		n -= (int)dl;
		flags |= CRW_WRITTEN_UNLINKED;
	}
	memset(&w, 0, sizeof(w));
	file_id(&w.id, &st);
	w.flags = flags;
	w.path_len = (uint32_t)n;
	if (!send_msg(CRW_MSG_WRITTEN, &w, sizeof(w), path, (size_t)n, fd,
	              __atomic_load_n(&ring->head, __ATOMIC_ACQUIRE)) &&
	    errno != EBADF)
		__atomic_store_n(&conn_state, CONN_OFF, __ATOMIC_RELEASE); /* recorder gone */
}

/* ---- descriptors ----------------------------------------------------------- */

static uint16_t slot_take(void)
{
	static unsigned hint;
	unsigned i, k = __atomic_load_n(&hint, __ATOMIC_RELAXED);
	uint32_t zero;

	for (i = 0; i < SLOT_MAX; i++) {
		unsigned s = 1 + (k + i) % SLOT_MAX;

		zero = 0;
		if (__atomic_compare_exchange_n(&slot_refs[s], &zero, 1, false, __ATOMIC_ACQ_REL,
		                                __ATOMIC_RELAXED)) {
			__atomic_store_n(&hint, s, __ATOMIC_RELAXED);
			__atomic_store_n(&slot_stream[s], NULL, __ATOMIC_RELAXED);
			return (uint16_t)s;
		}
	}
	return FD_NOSLOT;
}

static void internal_lost(int fd);

/* Forget what we knew about fd (a stale entry: closed behind our back). */
static void fd_forget(int fd)
{
	uint16_t v = __atomic_exchange_n(&fdtab[fd], 0, __ATOMIC_RELAXED);

	if (v == 0)
		return;
	if (v == FD_INTERNAL) {
		internal_lost(fd);
		return;
	}
	__atomic_fetch_sub(&writers, 1, __ATOMIC_RELAXED);
	if (v != FD_NOSLOT)
		__atomic_fetch_sub(&slot_refs[v], 1, __ATOMIC_ACQ_REL);
}

void cr_fd_opened(int fd, bool writing)
{
	if (fd < 0 || fd >= FD_TRACK_MAX)
		return; /* beyond the table: reported, not tracked (see README) */
	if (__atomic_load_n(&fdtab[fd], __ATOMIC_RELAXED))
		fd_forget(fd);
	if (!writing)
		return;
	__atomic_fetch_add(&writers, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&fdtab[fd], slot_take(), __ATOMIC_RELAXED);
}

void cr_fd_stream(int fd, FILE *f)
{
	uint16_t v;

	if (fd < 0 || fd >= FD_TRACK_MAX)
		return;
	v = __atomic_load_n(&fdtab[fd], __ATOMIC_RELAXED);
	if (v >= 1 && v <= SLOT_MAX)
		__atomic_store_n(&slot_stream[v], f, __ATOMIC_RELAXED);
}

bool cr_fd_tracked(int fd)
{
	uint16_t v;

	if (fd < 0 || fd >= FD_TRACK_MAX)
		return false;
	v = __atomic_load_n(&fdtab[fd], __ATOMIC_RELAXED);
	return v != 0 && v != FD_INTERNAL;
}

void cr_fd_dup(int oldfd, int newfd)
{
	uint16_t v = 0;

	if (newfd < 0 || newfd >= FD_TRACK_MAX || oldfd == newfd)
		return;
	if (__atomic_load_n(&fdtab[newfd], __ATOMIC_RELAXED))
		fd_forget(newfd);
	if (oldfd >= 0 && oldfd < FD_TRACK_MAX)
		v = __atomic_load_n(&fdtab[oldfd], __ATOMIC_RELAXED);
	if (v == 0 || v == FD_INTERNAL)
		return;
	__atomic_fetch_add(&writers, 1, __ATOMIC_RELAXED);
	if (v != FD_NOSLOT)
		__atomic_fetch_add(&slot_refs[v], 1, __ATOMIC_ACQ_REL);
	__atomic_store_n(&fdtab[newfd], v, __ATOMIC_RELAXED);
}

/*
 * The program closes a number that holds one of our descriptors (a loop
 * closing every fd, dup2 onto it): keep ours under another number. Upwards
 * first, so the low numbers a daemon reopens stay free; from 3 when the
 * top is reached (a close-everything loop has passed the low ones).
 */
static void internal_move(int fd)
{
	int nfd = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, fd + 1);
	int i;

	if (nfd < 0)
		nfd = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, 3);
	__atomic_store_n(&fdtab[fd], 0, __ATOMIC_RELAXED);
	if (nfd < 0) {
		internal_lost(fd);
		return;
	}
	internal_fd(nfd);
	if (fd == sock_fd) {
		sock_fd = nfd;
		return;
	}
	while (atomic_flag_test_and_set_explicit(&map_lock, memory_order_acquire))
		__builtin_ia32_pause();
	for (i = 0; i < MAP_MAX; i++)
		if (maps[i].len && maps[i].fd == fd)
			maps[i].fd = nfd;
	atomic_flag_clear_explicit(&map_lock, memory_order_release);
}

/* One of our descriptors was closed where we could not see it. */
static void internal_lost(int fd)
{
	int i;

	if (fd == sock_fd) {
		sock_fd = -1;
		__atomic_store_n(&conn_state, CONN_OFF, __ATOMIC_RELEASE);
		return;
	}
	while (atomic_flag_test_and_set_explicit(&map_lock, memory_order_acquire))
		__builtin_ia32_pause();
	for (i = 0; i < MAP_MAX; i++)
		if (maps[i].len && maps[i].fd == fd)
			maps[i].fd = -1;
	atomic_flag_clear_explicit(&map_lock, memory_order_release);
}

void cr_fd_closing(int fd, FILE *stream)
{
	uint16_t v;
	bool last;

	if (fd < 0 || fd >= FD_TRACK_MAX)
		return;
	v = __atomic_load_n(&fdtab[fd], __ATOMIC_RELAXED);
	if (CR_LIKELY(v == 0))
		return;
	if (v == FD_INTERNAL) {
		internal_move(fd);
		return;
	}
	__atomic_store_n(&fdtab[fd], 0, __ATOMIC_RELAXED);
	__atomic_fetch_sub(&writers, 1, __ATOMIC_RELAXED);
	last = v == FD_NOSLOT || __atomic_fetch_sub(&slot_refs[v], 1, __ATOMIC_ACQ_REL) == 1;
	if (!last)
		return;
	/* Buffered bytes first, so the recorder hashes what fclose leaves. */
	if (stream)
		fflush(stream);
	report_written(fd, 0);
}

void cr_fd_closing_range(unsigned int first, unsigned int last)
{
	unsigned int fd, top = last < FD_TRACK_MAX - 1 ? last : FD_TRACK_MAX - 1;
	uint16_t v;

	for (fd = first; fd <= top; fd++) {
		v = __atomic_load_n(&fdtab[fd], __ATOMIC_RELAXED);
		if (v && v != FD_INTERNAL)
			cr_fd_closing((int)fd, NULL);
	}
}

/* close_range(first, last, flags) that leaves our own descriptors open. */
int cr_close_range_around(unsigned int first, unsigned int last, int flags)
{
	unsigned int fd, lo = first, top = last < FD_TRACK_MAX - 1 ? last : FD_TRACK_MAX - 1;
	int r = 0, e = 0;

	if (first > last || (flags & CLOSE_RANGE_CLOEXEC))
		return REAL(close_range)(first, last, flags); /* ours are CLOEXEC already */
	for (fd = first; fd <= top; fd++) {
		if (__atomic_load_n(&fdtab[fd], __ATOMIC_RELAXED) != FD_INTERNAL)
			continue;
		if (fd > lo && REAL(close_range)(lo, fd - 1, flags) < 0 && !e) {
			r = -1;
			e = errno;
		}
		lo = fd + 1;
	}
	if (lo <= last && lo >= first && REAL(close_range)(lo, last, flags) < 0 && !e) {
		r = -1;
		e = errno;
	}
	if (r < 0)
		errno = e;
	return r;
}

/* ---- mappings ---------------------------------------------------------------- */

static void map_lock_take(void)
{
	while (atomic_flag_test_and_set_explicit(&map_lock, memory_order_acquire))
		__builtin_ia32_pause();
}

static void map_lock_drop(void)
{
	atomic_flag_clear_explicit(&map_lock, memory_order_release);
}

void cr_map_added(void *addr, size_t len, int prot, int flags, int fd)
{
	int type = flags & MAP_TYPE, i, dfd;
	uint16_t v;

	if (!(prot & PROT_WRITE) || (type != MAP_SHARED && type != MAP_SHARED_VALIDATE))
		return;
	if (fd < 0 || fd >= FD_TRACK_MAX || len == 0)
		return;
	/* Only files we saw opened for writing: that excludes /dev/shm and memfds. */
	v = __atomic_load_n(&fdtab[fd], __ATOMIC_RELAXED);
	if (v == 0 || v == FD_INTERNAL)
		return;
	/* Our own reference: the program may close fd right after mapping. */
	dfd = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, 100);
	if (dfd < 0)
		dfd = REAL(fcntl)(fd, F_DUPFD_CLOEXEC, 3);
	if (dfd < 0)
		return;
	map_lock_take();
	for (i = 0; i < MAP_MAX && maps[i].len; i++)
		;
	if (i < MAP_MAX) {
		maps[i].addr = (uintptr_t)addr;
		maps[i].len = len;
		maps[i].fd = dfd;
		internal_fd(dfd);
		__atomic_fetch_add(&map_count, 1, __ATOMIC_RELAXED);
	}
	map_lock_drop();
	if (i == MAP_MAX) {
		REAL(close)(dfd);
		if (conn_ready()) /* counted where the recorder looks for losses */
			__atomic_fetch_add(&ring->dropped, 1, __ATOMIC_RELAXED);
	}
}

static bool overlaps(const struct map_ent *m, uintptr_t a, size_t len)
{
	return m->len && a < m->addr + m->len && m->addr < a + len;
}

void cr_map_synced(void *addr, size_t len)
{
	int i;

	if (!__atomic_load_n(&map_count, __ATOMIC_RELAXED))
		return;
	map_lock_take();
	for (i = 0; i < MAP_MAX; i++)
		if (overlaps(&maps[i], (uintptr_t)addr, len) && maps[i].fd >= 0)
			report_written(maps[i].fd, CRW_WRITTEN_MMAP);
	map_lock_drop();
}

void cr_map_removing(void *addr, size_t len)
{
	uintptr_t a = (uintptr_t)addr;
	struct map_ent *m;
	int i;

	if (CR_LIKELY(!__atomic_load_n(&map_count, __ATOMIC_RELAXED)))
		return;
	map_lock_take();
	for (i = 0; i < MAP_MAX; i++) {
		m = &maps[i];
		if (!overlaps(m, a, len))
			continue;
		/* The pages are the file's page cache: what is there now is
		 * what the recorder hashes, before or after the unmap. */
		if (m->fd >= 0)
			report_written(m->fd, CRW_WRITTEN_MMAP);
		if (a <= m->addr && a + len >= m->addr + m->len) {
			if (m->fd >= 0) {
				__atomic_store_n(&fdtab[m->fd], 0, __ATOMIC_RELAXED);
				REAL(close)(m->fd);
			}
			m->len = 0;
			__atomic_fetch_sub(&map_count, 1, __ATOMIC_RELAXED);
		}
	}
	map_lock_drop();
}

/* ---- process life ------------------------------------------------------------ */

/* Report what is still open for writing, and every mapping. */
static void report_leftovers(bool flush)
{
	uint8_t done[(SLOT_MAX + 1 + 7) / 8];
	uint16_t v;
	FILE *f;
	int fd, i;

	memset(done, 0, sizeof(done));
	for (fd = 0; fd < FD_TRACK_MAX && __atomic_load_n(&writers, __ATOMIC_RELAXED) > 0; fd++) {
		v = __atomic_load_n(&fdtab[fd], __ATOMIC_RELAXED);
		if (v == 0 || v == FD_INTERNAL)
			continue;
		if (v != FD_NOSLOT) {
			if (done[v / 8] & (1u << (v % 8)))
				continue;
			done[v / 8] |= (uint8_t)(1u << (v % 8));
			f = __atomic_load_n(&slot_stream[v], __ATOMIC_RELAXED);
			/* exit() flushes streams after destructors: do it now for
			 * this one, unless another thread holds it (never block). */
			if (flush && f && ftrylockfile(f) == 0) {
				fflush_unlocked(f);
				funlockfile(f);
			}
		}
		report_written(fd, 0);
	}
	if (!__atomic_load_n(&map_count, __ATOMIC_RELAXED))
		return;
	map_lock_take();
	for (i = 0; i < MAP_MAX; i++)
		if (maps[i].len && maps[i].fd >= 0)
			report_written(maps[i].fd, CRW_WRITTEN_MMAP);
	map_lock_drop();
}

void cr_exit_status(int status)
{
	exit_status = status;
	__atomic_store_n(&exit_status_known, 1, __ATOMIC_RELEASE);
}

void cr_exit_now(int status)
{
	if (__atomic_exchange_n(&exit_done, 1, __ATOMIC_ACQ_REL))
		return;
	report_leftovers(false);
	cr_rec_proc(CRW_REC_EXIT, status);
}

__attribute__((destructor)) static void preload_destructor(void)
{
	int saved = errno;

	if (!cr_enter())
		return;
	if (!__atomic_exchange_n(&exit_done, 1, __ATOMIC_ACQ_REL)) {
		report_leftovers(true);
		cr_rec_proc(CRW_REC_EXIT, __atomic_load_n(&exit_status_known, __ATOMIC_ACQUIRE)
		                              ? exit_status
		                              : -1);
	}
	cr_leave();
	errno = saved;
}

/*
 * In a new child process (fork, _Fork, vfork, clone without CLONE_VM): the
 * connection and ring are the parent's. Close our copy of its socket (the
 * recorder must see the parent's EOF when the parent goes), unmap its ring,
 * and let the child connect on its own first report. Single-threaded here.
 */
void cr_child_reset(void)
{
	int saved = errno;

	cr_in_hook = 0;
	tls_tid = 0;
	if (__atomic_load_n(&cr_init_state, __ATOMIC_ACQUIRE) != 2 || !cr_active)
		return;
	g_pid = getpid();
	hello_flags = 0;
	if (sock_fd >= 0) {
		if (sock_fd < FD_TRACK_MAX)
			fdtab[sock_fd] = 0;
		REAL(close)(sock_fd);
		sock_fd = -1;
	}
	if (ring) {
		REAL(munmap)(ring, CRW_RING_BYTES);
		ring = NULL;
		ring_data = NULL;
	}
	ring_head = 0;
	ring_stalled = false;
	atomic_flag_clear(&ring_lock);
	atomic_flag_clear(&map_lock);
	conn_state = CONN_IDLE;
	exit_done = 0;
	exit_status_known = 0;
	cr_cwd_refresh();
	errno = saved;
}
