/*
 * The recorder's side of the hook wire (hooks/wire.h): the listening
 * socket, one connection per traced process, its ring, and strict parsing
 * of every message and record.
 *
 * Everything that arrives here was written by the traced program, which may
 * be buggy or hostile: every length is checked before it is used, records
 * are copied out of the shared ring before they are parsed (the writer can
 * change the ring under us; we never read a field twice from shared memory),
 * and descriptors we did not ask for are closed. A connection that breaks
 * the protocol returns CR_EINVAL with the pid and offset, and stays broken.
 *
 * Ownership: a connection owns its socket, its ring mapping and its buffers.
 * A WRITTEN event's passed_fd belongs to the callback once it is called;
 * every other descriptor received is closed here.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "recorder/wire.h"

/* The largest NOTE payload accepted (hooks/python JSON marks). */
#define NOTE_MAX 65536u
#define MSG_MAX  (sizeof(crw_msg) + NOTE_MAX)
/* The largest ring record: an exec with a full path and argv, rounded up,
 * plus the < 24 bytes a writer may append instead of leaving a sliver. */
#define REC_MAX (((sizeof(crw_exec) + CRW_PATH_MAX + CRW_ARGV_MAX + 7u) & ~7u) + 24u)
/* Descriptors a message may carry before the control buffer overflows. */
#define FDS_MAX 8
/* Messages read per cr_wire_conn_read call, so one process cannot starve others. */
#define READ_BATCH 256

struct cr_wire_conn {
	int fd;
	int32_t pid;
	bool hello;
	bool broken;
	uint8_t *map; /* CRW_RING_BYTES, shared with the process */
	uint64_t tail;
	uint8_t rec[REC_MAX];
	uint8_t msg[MSG_MAX + 1];
};

static int check_path(const uint8_t *p, size_t n, bool may_be_empty, const char *what)
{
	if (n == 0 && !may_be_empty)
		return cr_error_set(CR_EINVAL, "%s: empty path", what);
	if (n > CRW_PATH_MAX)
		return cr_error_set(CR_EINVAL, "%s: path of %zu bytes exceeds CRW_PATH_MAX", what,
		                    n);
	if (n && memchr(p, '\0', n))
		return cr_error_set(CR_EINVAL, "%s: NUL inside the path", what);
	return 0;
}

static int check_argv(const uint8_t *p, size_t n, const char *what)
{
	if (n > CRW_ARGV_MAX)
		return cr_error_set(CR_EINVAL, "%s: argv of %zu bytes exceeds CRW_ARGV_MAX", what,
		                    n);
	if (n && p[n - 1] != '\0')
		return cr_error_set(CR_EINVAL, "%s: argv does not end with NUL", what);
	return 0;
}

static const char *rec_name(unsigned type)
{
	static const char *const names[] = {"PAD",    "OPEN",       "RENAME", "LINK",
	                                    "UNLINK", "TRUNCATE",   "FORK",   "EXEC",
	                                    "SPAWN",  "UNOBSERVED", "EXIT"};

	return type < sizeof(names) / sizeof(names[0]) ? names[type] : "?";
}

int cr_wire_parse_record(const uint8_t *data, size_t len, cr_wire_event *out)
{
	crw_rec h;
	size_t body;
	int rc;

	memset(out, 0, sizeof(*out));
	out->passed_fd = -1;
	out->fd = -1;
	if (!data || len < sizeof(h))
		return cr_error_set(CR_EINVAL, "record of %zu bytes is shorter than its header",
		                    len);
	memcpy(&h, data, sizeof(h));
	if (h.len != len)
		return cr_error_set(CR_EINVAL, "record says %u bytes, has %zu", h.len, len);
	if (len % 8)
		return cr_error_set(CR_EINVAL, "record length %zu is not a multiple of 8", len);
	out->type = h.type;
	out->pid = h.pid;
	out->tid = h.tid;
	out->time_ns = h.time_ns;
	out->flags = h.flags;
	if (h.type == CRW_REC_PAD)
		return 0;
	if (len > REC_MAX)
		return cr_error_set(CR_EINVAL, "%s record of %zu bytes exceeds %zu",
		                    rec_name(h.type), len, (size_t)REC_MAX);
	if (h.pid <= 0 || h.tid <= 0)
		return cr_error_set(CR_EINVAL, "%s record with pid %d tid %d", rec_name(h.type),
		                    h.pid, h.tid);
	switch (h.type) {
	case CRW_REC_OPEN: {
		crw_open o;

		if (len < sizeof(o))
			return cr_error_set(CR_EINVAL, "OPEN record of %zu bytes is too short",
			                    len);
		memcpy(&o, data, sizeof(o));
		body = len - sizeof(o);
		if (o.path_len > body)
			return cr_error_set(CR_EINVAL, "OPEN path_len %u exceeds the record",
			                    o.path_len);
		if ((rc = check_path(data + sizeof(o), o.path_len, false, "OPEN")) < 0)
			return rc;
		if (o.fd < 0)
			return cr_error_set(CR_EINVAL, "OPEN with fd %d", o.fd);
		out->id = o.id;
		out->fd = o.fd;
		out->path = (const char *)data + sizeof(o);
		out->path_len = o.path_len;
		return 0;
	}
	case CRW_REC_RENAME:
	case CRW_REC_LINK: {
		crw_two_paths t;

		if (len < sizeof(t))
			return cr_error_set(CR_EINVAL, "%s record of %zu bytes is too short",
			                    rec_name(h.type), len);
		memcpy(&t, data, sizeof(t));
		body = len - sizeof(t);
		if ((uint64_t)t.old_len + t.new_len > body)
			return cr_error_set(CR_EINVAL, "%s path lengths %u + %u exceed the record",
			                    rec_name(h.type), t.old_len, t.new_len);
		if ((rc = check_path(data + sizeof(t), t.old_len, false, rec_name(h.type))) < 0 ||
		    (rc = check_path(data + sizeof(t) + t.old_len, t.new_len, false,
		                     rec_name(h.type))) < 0)
			return rc;
		out->path = (const char *)data + sizeof(t);
		out->path_len = t.old_len;
		out->path2 = out->path + t.old_len;
		out->path2_len = t.new_len;
		return 0;
	}
	case CRW_REC_UNLINK:
	case CRW_REC_TRUNCATE: {
		crw_path p;

		if (len < sizeof(p))
			return cr_error_set(CR_EINVAL, "%s record of %zu bytes is too short",
			                    rec_name(h.type), len);
		memcpy(&p, data, sizeof(p));
		if (p.path_len > len - sizeof(p))
			return cr_error_set(CR_EINVAL, "%s path_len %u exceeds the record",
			                    rec_name(h.type), p.path_len);
		if ((rc = check_path(data + sizeof(p), p.path_len, false, rec_name(h.type))) < 0)
			return rc;
		out->path = (const char *)data + sizeof(p);
		out->path_len = p.path_len;
		return 0;
	}
	case CRW_REC_FORK:
	case CRW_REC_EXIT: {
		crw_proc p;

		if (len < sizeof(p))
			return cr_error_set(CR_EINVAL, "%s record of %zu bytes is too short",
			                    rec_name(h.type), len);
		memcpy(&p, data, sizeof(p));
		if (h.type == CRW_REC_FORK && (p.arg <= 0 || p.arg > INT32_MAX))
			return cr_error_set(CR_EINVAL, "FORK with child pid %lld",
			                    (long long)p.arg);
		out->arg = p.arg;
		return 0;
	}
	case CRW_REC_EXEC:
	case CRW_REC_SPAWN:
	case CRW_REC_UNOBSERVED: {
		crw_exec e;

		if (len < sizeof(e))
			return cr_error_set(CR_EINVAL, "%s record of %zu bytes is too short",
			                    rec_name(h.type), len);
		memcpy(&e, data, sizeof(e));
		body = len - sizeof(e);
		if ((uint64_t)e.path_len + e.argv_len > body)
			return cr_error_set(CR_EINVAL, "%s lengths %u + %u exceed the record",
			                    rec_name(h.type), e.path_len, e.argv_len);
		if ((rc = check_path(data + sizeof(e), e.path_len, false, rec_name(h.type))) < 0 ||
		    (rc = check_argv(data + sizeof(e) + e.path_len, e.argv_len, rec_name(h.type))) <
		        0)
			return rc;
		if (h.type == CRW_REC_SPAWN && (e.child <= 0 || e.child > INT32_MAX))
			return cr_error_set(CR_EINVAL, "SPAWN with child pid %lld",
			                    (long long)e.child);
		if (h.type == CRW_REC_UNOBSERVED && h.flags == 0)
			return cr_error_set(CR_EINVAL, "UNOBSERVED without a reason");
		out->arg = e.child;
		out->path = (const char *)data + sizeof(e);
		out->path_len = e.path_len;
		out->argv = out->path + e.path_len;
		out->argv_len = e.argv_len;
		return 0;
	}
	default: return cr_error_set(CR_EINVAL, "unknown record type %u", h.type);
	}
}

int cr_wire_parse_msg(const uint8_t *data, size_t len, cr_wire_event *out)
{
	const uint8_t *p;
	crw_msg m;
	size_t n;
	int rc;

	memset(out, 0, sizeof(*out));
	out->passed_fd = -1;
	out->fd = -1;
	if (!data || len < sizeof(m))
		return cr_error_set(CR_EINVAL, "message of %zu bytes is shorter than its header",
		                    len);
	memcpy(&m, data, sizeof(m));
	if (m.magic != CRW_MAGIC)
		return cr_error_set(CR_EINVAL, "message magic 0x%08x", m.magic);
	if (m.version != CRW_VERSION)
		return cr_error_set(CR_EINVAL, "message version %u, expected %u", m.version,
		                    CRW_VERSION);
	if (m.payload_len != len - sizeof(m))
		return cr_error_set(CR_EINVAL, "message payload_len %u, has %zu", m.payload_len,
		                    len - sizeof(m));
	if (m.pid <= 0 || m.ppid < 0)
		return cr_error_set(CR_EINVAL, "message with pid %d ppid %d", m.pid, m.ppid);
	out->pid = m.pid;
	out->tid = 0;
	out->ppid = m.ppid;
	out->time_ns = m.time_ns;
	out->flags = m.flags;
	out->ring_pos = m.ring_pos;
	p = data + sizeof(m);
	n = m.payload_len;
	switch (m.type) {
	case CRW_MSG_HELLO: {
		const uint8_t *nul = memchr(p, '\0', n < CRW_PATH_MAX + 1 ? n : CRW_PATH_MAX + 1);

		if (!nul)
			return cr_error_set(CR_EINVAL, "HELLO: executable path not NUL-terminated "
			                               "within CRW_PATH_MAX");
		out->type = CR_WIRE_HELLO;
		out->path = (const char *)p;
		out->path_len = (size_t)(nul - p);
		out->argv = (const char *)nul + 1;
		out->argv_len = n - out->path_len - 1;
		if ((rc = check_argv((const uint8_t *)out->argv, out->argv_len, "HELLO")) < 0)
			return rc;
		if (m.flags & ~(uint32_t)CRW_HELLO_AFTER_EXEC)
			return cr_error_set(CR_EINVAL, "HELLO flags 0x%x", m.flags);
		return 0;
	}
	case CRW_MSG_WRITTEN: {
		crw_written w;

		if (n < sizeof(w))
			return cr_error_set(CR_EINVAL, "WRITTEN payload of %zu bytes is too short",
			                    n);
		memcpy(&w, p, sizeof(w));
		if (w.path_len != n - sizeof(w))
			return cr_error_set(CR_EINVAL, "WRITTEN path_len %u, has %zu", w.path_len,
			                    n - sizeof(w));
		/* Empty when the hook could not name the file: the descriptor is what counts. */
		if ((rc = check_path(p + sizeof(w), w.path_len, true, "WRITTEN")) < 0)
			return rc;
		out->type = CR_WIRE_WRITTEN;
		out->id = w.id;
		out->flags = w.flags;
		out->path = (const char *)p + sizeof(w);
		out->path_len = w.path_len;
		return 0;
	}
	case CRW_MSG_NOTE:
		if (n > NOTE_MAX)
			return cr_error_set(CR_EINVAL, "NOTE of %zu bytes exceeds %u", n, NOTE_MAX);
		if (memchr(p, '\0', n))
			return cr_error_set(CR_EINVAL, "NOTE: NUL inside the payload");
		out->type = CR_WIRE_NOTE;
		out->payload = (const char *)p;
		out->payload_len = n;
		return 0;
	default: return cr_error_set(CR_EINVAL, "unknown message type %u", m.type);
	}
}

/* ---- sockets ---------------------------------------------------------------- */

int cr_wire_listen(const char *path, int *out_fd)
{
	struct sockaddr_un sa;
	size_t n = path ? strlen(path) : 0;
	int fd, e;

	*out_fd = -1;
	memset(&sa, 0, sizeof(sa));
	if (n == 0 || n >= sizeof(sa.sun_path))
		return cr_error_set(CR_EINVAL, "socket path of %zu bytes (1..%zu allowed)", n,
		                    sizeof(sa.sun_path) - 1);
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, n);
	fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return cr_error_set_errno(CR_EIO, errno, "socket(AF_UNIX, SOCK_SEQPACKET)");
	/*
	 * A socket's mode comes from the umask at bind; the caller's private
	 * 0700 directory keeps others out until the chmod below.
	 */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		e = errno;
		close(fd);
		return cr_error_set_errno(e == EADDRINUSE ? CR_EEXISTS : CR_EIO, e, "bind %s",
		                          path);
	}
	if (chmod(path, 0600) < 0 || listen(fd, SOMAXCONN) < 0) {
		e = errno;
		close(fd);
		unlink(path);
		return cr_error_set_errno(CR_EIO, e, "listen on %s", path);
	}
	*out_fd = fd;
	return 0;
}

int cr_wire_accept(int listen_fd, cr_wire_conn **out)
{
	cr_wire_conn *c;
	int fd;

	*out = NULL;
	for (;;) {
		fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ECONNABORTED)
			return cr_error_set(CR_ENOTFOUND, "no connection waiting");
		return cr_error_set_errno(CR_EIO, errno, "accept");
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return cr_error_set(CR_ENOMEM, "out of memory for a hook connection");
	}
	c->fd = fd;
	*out = c;
	return 0;
}

int cr_wire_conn_fd(const cr_wire_conn *c)
{
	return c ? c->fd : -1;
}

int32_t cr_wire_conn_pid(const cr_wire_conn *c)
{
	return c ? c->pid : 0;
}

uint64_t cr_wire_conn_dropped(const cr_wire_conn *c)
{
	if (!c || !c->map)
		return 0;
	return __atomic_load_n(&((const crw_ring *)c->map)->dropped, __ATOMIC_RELAXED);
}

void cr_wire_conn_free(cr_wire_conn *c)
{
	if (!c)
		return;
	if (c->map)
		munmap(c->map, CRW_RING_BYTES);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* Mark the connection broken and restate the last error with who and where. */
static int broken(cr_wire_conn *c, const char *where, unsigned long long off)
{
	char why[512];

	snprintf(why, sizeof(why), "%s", cr_error_last());
	c->broken = true;
	return cr_error_set(CR_EINVAL, "hook connection of pid %d: %s at offset %llu: %s", c->pid,
	                    where, off, why);
}

/* ---- the ring ---------------------------------------------------------------- */

/* Pass records in [tail, limit) on; limit <= the published head. */
static int drain_to(cr_wire_conn *c, uint64_t limit, bool to_head, cr_wire_fn fn, void *ctx)
{
	crw_ring *r = (crw_ring *)c->map;
	const uint8_t *data = c->map + CRW_RING_CONTROL;
	cr_wire_event ev;
	uint64_t head, off, avail, to_end;
	crw_rec h;
	int rc = 0;

	head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
	if (head < c->tail || head - c->tail > CRW_RING_DATA) {
		cr_error_set(CR_EINVAL, "ring head %llu with tail %llu", (unsigned long long)head,
		             (unsigned long long)c->tail);
		return broken(c, "ring", c->tail);
	}
	if (to_head)
		limit = head;
	if (limit > head) {
		cr_error_set(CR_EINVAL, "message ring_pos %llu is past the ring head %llu",
		             (unsigned long long)limit, (unsigned long long)head);
		return broken(c, "message", c->tail);
	}
	while (c->tail < limit) {
		off = c->tail % CRW_RING_DATA;
		avail = head - c->tail;
		to_end = CRW_RING_DATA - off;
		if (avail < sizeof(h) || to_end < sizeof(h)) {
			cr_error_set(CR_EINVAL,
			             "partial record header (%llu bytes published, %llu to "
			             "the end)",
			             (unsigned long long)avail, (unsigned long long)to_end);
			rc = broken(c, "ring record", c->tail);
			break;
		}
		memcpy(&h, data + off, sizeof(h)); /* read the length once */
		if (h.len < sizeof(h) || h.len % 8 || h.len > avail || h.len > to_end) {
			cr_error_set(CR_EINVAL,
			             "record length %u (published %llu, to the end %llu)", h.len,
			             (unsigned long long)avail, (unsigned long long)to_end);
			rc = broken(c, "ring record", c->tail);
			break;
		}
		if (h.type == CRW_REC_PAD) {
			c->tail += h.len;
			continue;
		}
		if (h.len > REC_MAX) {
			cr_error_set(CR_EINVAL, "record of %u bytes exceeds %zu", h.len,
			             (size_t)REC_MAX);
			rc = broken(c, "ring record", c->tail);
			break;
		}
		memcpy(c->rec, data + off, h.len);
		if (cr_wire_parse_record(c->rec, h.len, &ev) < 0) {
			rc = broken(c, "ring record", c->tail);
			break;
		}
		if (ev.type == CRW_REC_PAD) {
			/* The writer changed the type between our two reads. */
			cr_error_set(CR_EINVAL, "record changed while read");
			rc = broken(c, "ring record", c->tail);
			break;
		}
		if (ev.pid != c->pid) {
			cr_error_set(CR_EINVAL, "record of pid %d", ev.pid);
			rc = broken(c, "ring record", c->tail);
			break;
		}
		c->tail += h.len;
		rc = fn(ctx, &ev);
		if (rc)
			break;
	}
	__atomic_store_n(&r->tail, c->tail, __ATOMIC_RELEASE);
	return rc;
}

int cr_wire_conn_drain(cr_wire_conn *c, cr_wire_fn fn, void *ctx)
{
	if (c->broken)
		return cr_error_set(CR_EINVAL, "hook connection of pid %d is broken", c->pid);
	if (!c->map)
		return 0;
	return drain_to(c, 0, true, fn, ctx);
}

static int map_ring(cr_wire_conn *c, int fd)
{
	struct stat st;
	crw_ring r;
	void *m;

	if (fstat(fd, &st) < 0)
		return cr_error_set_errno(CR_EINVAL, errno, "HELLO: fstat of the ring");
	if (!S_ISREG(st.st_mode) || st.st_size != (off_t)CRW_RING_BYTES)
		return cr_error_set(CR_EINVAL,
		                    "HELLO: ring is not a %u-byte memfd (mode 0%o, %lld bytes)",
		                    CRW_RING_BYTES, (unsigned)st.st_mode, (long long)st.st_size);
	m = mmap(NULL, CRW_RING_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return cr_error_set_errno(CR_EINVAL, errno, "HELLO: mmap of the ring");
	memcpy(&r, m, sizeof(r));
	if (r.magic != CRW_RING_MAGIC || r.version != CRW_VERSION ||
	    r.data_bytes != CRW_RING_DATA || r.tail != 0) {
		munmap(m, CRW_RING_BYTES);
		return cr_error_set(CR_EINVAL,
		                    "HELLO: ring control page magic 0x%08x version %u "
		                    "data_bytes %llu tail %llu",
		                    r.magic, r.version, (unsigned long long)r.data_bytes,
		                    (unsigned long long)r.tail);
	}
	c->map = m;
	c->tail = 0;
	return 0;
}

static void close_fds(int *fds, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (fds[i] >= 0)
			close(fds[i]);
}

static int handle_msg(cr_wire_conn *c, size_t n, int *fds, int nfds, cr_wire_fn fn, void *ctx)
{
	cr_wire_event ev;
	int want, rc;

	if (cr_wire_parse_msg(c->msg, n, &ev) < 0) {
		close_fds(fds, nfds);
		return broken(c, "message", c->tail);
	}
	if (!c->hello && ev.type != CR_WIRE_HELLO)
		rc = cr_error_set(CR_EINVAL, "first message is not HELLO (type %d)", ev.type);
	else if (c->hello && ev.type == CR_WIRE_HELLO)
		rc = cr_error_set(CR_EINVAL, "second HELLO");
	else if (c->hello && ev.pid != c->pid)
		rc = cr_error_set(CR_EINVAL, "message of pid %d", ev.pid);
	else
		rc = 0;
	want = ev.type == CR_WIRE_NOTE ? 0 : 1;
	if (!rc && nfds != want)
		rc = cr_error_set(CR_EINVAL, "message type %d carries %d descriptors, expected %d",
		                  ev.type, nfds, want);
	if (rc) {
		close_fds(fds, nfds);
		return broken(c, "message", c->tail);
	}
	if (ev.type == CR_WIRE_HELLO) {
		rc = map_ring(c, fds[0]);
		close(fds[0]); /* the mapping keeps the memfd alive */
		if (rc < 0)
			return broken(c, "HELLO", 0);
		c->pid = ev.pid;
		c->hello = true;
		return fn(ctx, &ev);
	}
	/* Records before ring_pos happened before this message: pass them first. */
	rc = drain_to(c, ev.ring_pos < c->tail ? c->tail : ev.ring_pos, false, fn, ctx);
	if (rc) {
		close_fds(fds, nfds);
		return rc;
	}
	if (ev.type == CR_WIRE_WRITTEN)
		ev.passed_fd = fds[0]; /* the callback's now */
	return fn(ctx, &ev);
}

int cr_wire_conn_read(cr_wire_conn *c, cr_wire_fn fn, void *ctx)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * FDS_MAX)];
		struct cmsghdr align;
	} ctl;
	struct msghdr mh;
	struct iovec iov;
	struct cmsghdr *cm;
	int fds[FDS_MAX], nfds, k, batch, rc;
	ssize_t n;

	if (c->broken)
		return cr_error_set(CR_EINVAL, "hook connection of pid %d is broken", c->pid);
	for (batch = 0; batch < READ_BATCH; batch++) {
		memset(&mh, 0, sizeof(mh));
		iov.iov_base = c->msg;
		iov.iov_len = sizeof(c->msg);
		mh.msg_iov = &iov;
		mh.msg_iovlen = 1;
		mh.msg_control = ctl.buf;
		mh.msg_controllen = sizeof(ctl.buf);
		n = recvmsg(c->fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno != ECONNRESET)
				return cr_error_set_errno(CR_EIO, errno, "recvmsg from pid %d",
				                          c->pid);
			n = 0; /* reset: like EOF, what is in the ring is still there */
		}
		nfds = 0;
		for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			k = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
			while (k-- > 0) {
				int fd;

				memcpy(&fd, CMSG_DATA(cm) + (size_t)k * sizeof(int), sizeof(int));
				if (nfds < FDS_MAX)
					fds[nfds++] = fd;
				else
					close(fd);
			}
		}
		if (n == 0 && nfds == 0) {
			/* EOF: the process is gone (or exec'd); its ring is final. */
			rc = c->map ? drain_to(c, 0, true, fn, ctx) : 0;
			return rc ? rc : 1;
		}
		if (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) {
			close_fds(fds, nfds);
			cr_error_set(CR_EINVAL,
			             "message of %zd bytes truncated (flags 0x%x; limit %zu "
			             "bytes, %d descriptors)",
			             n, (unsigned)mh.msg_flags, (size_t)MSG_MAX, FDS_MAX);
			return broken(c, "message", c->tail);
		}
		rc = handle_msg(c, (size_t)n, fds, nfds, fn, ctx);
		if (rc)
			return rc;
	}
	return 0;
}
