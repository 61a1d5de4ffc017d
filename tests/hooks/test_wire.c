/*
 * Unit tests of recorder/wire.c's connection layer: a fake hook (this
 * program) speaks the wire format over a real socket and ring, and every
 * protocol check has a test that breaks it (message before HELLO, missing
 * or extra descriptors, wrong ring size or magic, malformed records, a pid
 * that changes, ring_pos past head), plus ordering and wrap-around.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "recorder/wire.h"
#include "harness.h"

#define PID 4242

struct fake {
	int lfd, s;
	cr_wire_conn *c;
	crw_ring *ring;
	uint8_t *data;
	int memfd;
	char dir[64], path[128];
};

struct seen {
	int n;
	int type[4096];
	char last_path[256];
	int32_t last_pid;
};

static int collect(void *ctx, const cr_wire_event *ev)
{
	struct seen *s = ctx;

	if (s->n < 4096)
		s->type[s->n] = ev->type;
	s->n++;
	if (ev->path && ev->path_len < sizeof(s->last_path)) {
		memcpy(s->last_path, ev->path, ev->path_len);
		s->last_path[ev->path_len] = '\0';
	}
	s->last_pid = ev->pid;
	if (ev->passed_fd >= 0)
		close(ev->passed_fd);
	return 0;
}

static int fake_open(struct fake *f, size_t ring_bytes)
{
	struct sockaddr_un sa;

	memset(f, 0, sizeof(*f));
	strcpy(f->dir, "/tmp/cr-test-wire-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/s", f->dir);
	if (cr_wire_listen(f->path, &f->lfd) < 0)
		return -1;
	f->s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	strcpy(sa.sun_path, f->path);
	if (connect(f->s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return -1;
	if (cr_wire_accept(f->lfd, &f->c) < 0)
		return -1;
	f->memfd = memfd_create("test-ring", MFD_CLOEXEC);
	if (f->memfd < 0 || ftruncate(f->memfd, (off_t)ring_bytes) < 0)
		return -1;
	f->ring = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
	if (f->ring == MAP_FAILED)
		return -1;
	f->ring->magic = CRW_RING_MAGIC;
	f->ring->version = CRW_VERSION;
	f->ring->data_bytes = CRW_RING_DATA;
	f->data = (uint8_t *)f->ring + CRW_RING_CONTROL;
	return 0;
}

static void fake_close(struct fake *f, size_t ring_bytes)
{
	cr_wire_conn_free(f->c);
	if (f->s >= 0)
		close(f->s);
	close(f->lfd);
	close(f->memfd);
	munmap(f->ring, ring_bytes);
	unlink(f->path);
	rmdir(f->dir);
}

/* Send header + payload with nfds copies of fd attached. */
static void send_msg(struct fake *f, uint16_t type, int32_t pid, uint32_t flags, const void *p,
                     size_t n, int fd, int nfds, uint64_t ring_pos)
{
	uint8_t buf[16384];
	crw_msg m;
	struct iovec iov;
	struct msghdr mh;
	union {
		char b[CMSG_SPACE(sizeof(int) * 4)];
		struct cmsghdr a;
	} ctl;
	int i;

	memset(&m, 0, sizeof(m));
	m.magic = CRW_MAGIC;
	m.version = CRW_VERSION;
	m.type = type;
	m.pid = pid;
	m.ppid = 1;
	m.flags = flags;
	m.payload_len = (uint32_t)n;
	m.ring_pos = ring_pos;
	memcpy(buf, &m, sizeof(m));
	memcpy(buf + sizeof(m), p, n);
	iov.iov_base = buf;
	iov.iov_len = sizeof(m) + n;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (nfds > 0) {
		struct cmsghdr *c;

		memset(&ctl, 0, sizeof(ctl));
		mh.msg_control = ctl.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
		for (i = 0; i < nfds; i++)
			memcpy(CMSG_DATA(c) + (size_t)i * sizeof(int), &fd, sizeof(int));
	}
	if (sendmsg(f->s, &mh, 0) < 0)
		abort();
}

static void hello(struct fake *f)
{
	static const char payload[] = "/bin/prog\0prog\0arg\0";

	send_msg(f, CRW_MSG_HELLO, PID, CRW_HELLO_AFTER_EXEC, payload, sizeof(payload) - 1,
	         f->memfd, 1, 0);
}

/* Append a record at head; returns its offset. len_override 0: correct. */
static uint64_t put_rec(struct fake *f, uint16_t type, int32_t pid, const void *body,
                        size_t body_len, uint32_t len_override)
{
	uint64_t head = f->ring->head, off = head % CRW_RING_DATA;
	uint32_t len = (uint32_t)((sizeof(crw_rec) + body_len + 7) & ~(size_t)7);
	crw_rec h;

	memset(&h, 0, sizeof(h));
	h.len = len_override ? len_override : len;
	h.type = type;
	h.pid = pid;
	h.tid = pid;
	memset(f->data + off, 0, len);
	memcpy(f->data + off, &h, sizeof(h));
	memcpy(f->data + off + sizeof(h), body, body_len);
	__atomic_store_n(&f->ring->head, head + len, __ATOMIC_RELEASE);
	return head;
}

static void put_unlink(struct fake *f, const char *path, int32_t pid)
{
	uint8_t body[256];
	uint32_t n = (uint32_t)strlen(path), z = 0;

	memcpy(body, &n, 4);
	memcpy(body + 4, &z, 4);
	memcpy(body + 8, path, n);
	put_rec(f, CRW_REC_UNLINK, pid, body, 8 + n, 0);
}

static void written(struct fake *f, const char *path, uint64_t ring_pos, int nfds)
{
	uint8_t p[512];
	crw_written w;
	int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

	memset(&w, 0, sizeof(w));
	w.path_len = (uint32_t)strlen(path);
	memcpy(p, &w, sizeof(w));
	memcpy(p + sizeof(w), path, w.path_len);
	send_msg(f, CRW_MSG_WRITTEN, PID, 0, p, sizeof(w) + w.path_len, fd, nfds, ring_pos);
	close(fd);
}

static bool err_has(const char *s)
{
	return strstr(cr_error_last(), s) != NULL;
}

static void test_order_and_eof(void)
{
	struct fake f;
	struct seen s = {0};

	REQUIRE(fake_open(&f, CRW_RING_BYTES) == 0);
	hello(&f);
	CHECK(cr_wire_conn_read(f.c, collect, &s) == 0);
	CHECK(cr_wire_conn_pid(f.c) == PID);
	put_unlink(&f, "/a", PID);
	put_unlink(&f, "/b", PID);
	written(&f, "/w", f.ring->head, 1);
	put_unlink(&f, "/after", PID);
	CHECK(cr_wire_conn_read(f.c, collect, &s) == 0);
	/* HELLO, the two records before ring_pos, then WRITTEN; /after not yet. */
	CHECK(s.n == 4);
	CHECK(s.type[0] == CR_WIRE_HELLO && s.type[1] == CRW_REC_UNLINK &&
	      s.type[2] == CRW_REC_UNLINK && s.type[3] == CR_WIRE_WRITTEN);
	close(f.s);
	f.s = -1;
	CHECK(cr_wire_conn_read(f.c, collect, &s) == 1); /* EOF drains the rest */
	CHECK(s.n == 5 && strcmp(s.last_path, "/after") == 0);
	CHECK(f.ring->tail == f.ring->head);
	fake_close(&f, CRW_RING_BYTES);
}

static void test_wraparound(void)
{
	struct fake f;
	struct seen s = {0};
	char path[64];
	int i, total = 0;

	REQUIRE(fake_open(&f, CRW_RING_BYTES) == 0);
	hello(&f);
	CHECK(cr_wire_conn_read(f.c, collect, &s) == 0);
	/* Three times around the ring, padding at the end like the hook does. */
	for (i = 0; i < 3 * (int)(CRW_RING_DATA / 48) + 10; i++) {
		uint64_t off = f.ring->head % CRW_RING_DATA, to_end = CRW_RING_DATA - off;

		if (to_end < 48) {
			crw_rec h;

			memset(&h, 0, sizeof(h));
			h.len = (uint32_t)to_end;
			h.type = CRW_REC_PAD;
			memcpy(f.data + off, &h, sizeof(h));
			f.ring->head += to_end;
		}
		snprintf(path, sizeof(path), "/%012d", i); /* 24 + 8 + 13 -> 48 bytes */
		put_unlink(&f, path, PID);
		total++;
		if (i % 1000 == 999) {
			REQUIRE(cr_wire_conn_drain(f.c, collect, &s) == 0);
		}
	}
	CHECK(cr_wire_conn_drain(f.c, collect, &s) == 0);
	CHECK(s.n == 1 + total);
	CHECK(f.ring->tail == f.ring->head);
	fake_close(&f, CRW_RING_BYTES);
}

/* Each breaks one rule; the read must fail with CR_EINVAL naming it. */
static void expect_broken2(struct fake *f, const char *what, const char *also)
{
	struct seen s = {0};
	int rc = cr_wire_conn_read(f->c, collect, &s);

	if (rc == 0)
		rc = cr_wire_conn_drain(f->c, collect, &s);
	CHECK(rc == CR_EINVAL);
	if (!err_has(what))
		fprintf(stderr, "  expected \"%s\" in: %s\n", what, cr_error_last());
	CHECK(err_has(what));
	if (also && !err_has(also))
		fprintf(stderr, "  expected \"%s\" in: %s\n", also, cr_error_last());
	CHECK(!also || err_has(also));
	/* Stays broken. */
	CHECK(cr_wire_conn_read(f->c, collect, &s) == CR_EINVAL);
}

static void expect_broken(struct fake *f, const char *what)
{
	expect_broken2(f, what, NULL);
}

static void test_message_before_hello(void)
{
	struct fake f;

	REQUIRE(fake_open(&f, CRW_RING_BYTES) == 0);
	written(&f, "/w", 0, 1);
	expect_broken(&f, "first message is not HELLO");
	fake_close(&f, CRW_RING_BYTES);
}

static void test_hello_without_fd(void)
{
	struct fake f;

	REQUIRE(fake_open(&f, CRW_RING_BYTES) == 0);
	send_msg(&f, CRW_MSG_HELLO, PID, 0, "/x\0", 3, -1, 0, 0);
	expect_broken(&f, "carries 0 descriptors");
	fake_close(&f, CRW_RING_BYTES);
}

static void test_hello_ring_wrong_size(void)
{
	struct fake f;

	REQUIRE(fake_open(&f, 2 * CRW_RING_BYTES) == 0);
	hello(&f);
	expect_broken(&f, "ring is not a");
	fake_close(&f, 2 * CRW_RING_BYTES);
}

static void test_hello_ring_bad_magic(void)
{
	struct fake f;

	REQUIRE(fake_open(&f, CRW_RING_BYTES) == 0);
	f.ring->magic = 0;
	hello(&f);
	expect_broken(&f, "ring control page magic");
	fake_close(&f, CRW_RING_BYTES);
}

static void test_second_hello(void)
{
	struct fake f;

	REQUIRE(fake_open(&f, CRW_RING_BYTES) == 0);
	hello(&f);
	hello(&f);
	expect_broken(&f, "second HELLO");
	fake_close(&f, CRW_RING_BYTES);
}

static void test_written_two_fds(void)
{
	struct fake f;
	struct seen s = {0};

	REQUIRE(fake_open(&f, CRW_RING_BYTES) == 0);
	hello(&f);
	CHECK(cr_wire_conn_read(f.c, collect, &s) == 0);
	written(&f, "/w", 0, 2);
	expect_broken(&f, "carries 2 descriptors");
	fake_close(&f, CRW_RING_BYTES);
}

static void test_note_with_fd(void)
{
	struct fake f;
	struct seen s = {0};

	REQUIRE(fake_open(&f, CRW_RING_BYTES) == 0);
	hello(&f);
	CHECK(cr_wire_conn_read(f.c, collect, &s) == 0);
	send_msg(&f, CRW_MSG_NOTE, PID, 0, "{}", 2, f.memfd, 1, 0);
	expect_broken(&f, "carries 1 descriptors, expected 0");
	fake_close(&f, CRW_RING_BYTES);
}

static void test_pid_changes(void)
{
	struct fake f;
	struct seen s = {0};

	REQUIRE(fake_open(&f, CRW_RING_BYTES) == 0);
	hello(&f);
	CHECK(cr_wire_conn_read(f.c, collect, &s) == 0);
	put_unlink(&f, "/x", PID + 1);
	expect_broken(&f, "record of pid 4243");
	fake_close(&f, CRW_RING_BYTES);
}

static void test_ring_pos_past_head(void)
{
	struct fake f;
	struct seen s = {0};

	REQUIRE(fake_open(&f, CRW_RING_BYTES) == 0);
	hello(&f);
	CHECK(cr_wire_conn_read(f.c, collect, &s) == 0);
	written(&f, "/w", 4096, 1);
	expect_broken(&f, "past the ring head");
	fake_close(&f, CRW_RING_BYTES);
}

static void test_bad_records(void)
{
	static const struct {
		uint32_t len_override;
		uint16_t type;
		const char *path;
		const char *want;
	} cases[] = {
	    {36, CRW_REC_UNLINK, "/x", "record length 36"},
	    {4096, CRW_REC_UNLINK, "/x", "record length 4096"},
	    {16, CRW_REC_UNLINK, "/x", "record length 16"},
	    {0, 77, "/x", "unknown record type 77"},
	    {0, CRW_REC_UNLINK, "/a\0b", "NUL inside the path"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct fake f;
		struct seen s = {0};
		uint8_t body[64];
		uint32_t n = cases[i].path[1] == 'a' ? 4 : (uint32_t)strlen(cases[i].path), z = 0;

		REQUIRE(fake_open(&f, CRW_RING_BYTES) == 0);
		hello(&f);
		CHECK(cr_wire_conn_read(f.c, collect, &s) == 0);
		put_unlink(&f, "/fine", PID);
		memcpy(body, &n, 4);
		memcpy(body + 4, &z, 4);
		memcpy(body + 8, cases[i].path, n);
		put_rec(&f, cases[i].type, PID, body, 8 + n, cases[i].len_override);
		if (cases[i].len_override > 40) /* claim more than published */
			f.ring->head = 40 + 40;
		/* The message names the process and the record's offset (after /fine's 40 bytes).
		 */
		expect_broken2(&f, cases[i].want, "pid 4242: ring record at offset 40");
		fake_close(&f, CRW_RING_BYTES);
	}
}

static void test_path_too_long(void)
{
	struct fake f;
	struct seen s = {0};
	static uint8_t body[8 + CRW_PATH_MAX + 8];
	uint32_t n = CRW_PATH_MAX + 1, z = 0;

	REQUIRE(fake_open(&f, CRW_RING_BYTES) == 0);
	hello(&f);
	CHECK(cr_wire_conn_read(f.c, collect, &s) == 0);
	memcpy(body, &n, 4);
	memcpy(body + 4, &z, 4);
	memset(body + 8, 'a', n);
	body[8] = '/';
	put_rec(&f, CRW_REC_UNLINK, PID, body, 8 + n, 0);
	expect_broken(&f, "exceeds CRW_PATH_MAX");
	fake_close(&f, CRW_RING_BYTES);
}

TEST_MAIN(TEST(test_order_and_eof), TEST(test_wraparound), TEST(test_message_before_hello),
          TEST(test_hello_without_fd), TEST(test_hello_ring_wrong_size),
          TEST(test_hello_ring_bad_magic), TEST(test_second_hello), TEST(test_written_two_fds),
          TEST(test_note_with_fd), TEST(test_pid_changes), TEST(test_ring_pos_past_head),
          TEST(test_bad_records), TEST(test_path_too_long))
