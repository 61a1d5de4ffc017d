/*
 * Unit tests for recorder/hash.c: known answers, files larger than one read
 * block, what is refused (directories, FIFOs, missing files), the pool
 * agreeing with sequential hashing on 1/2/4 threads, files that change
 * while they are read, and the asynchronous pool with its hooks. Temporary files live in one
 * mkdtemp directory under $CR_TMP (or /tmp), removed at exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/hash.h"
#include "harness.h"

/* Larger than recorder/hash.c's 1 MiB read block, and not a multiple of it. */
#define MULTI_BLOCK_SIZE ((3u << 20) + 12345u)
#define PATH_LEN (4096 + 256)


static int write_all(int fd, const void *data, size_t len)
{
	const uint8_t *p = data;
	ssize_t n;

	while (len > 0) {
		n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_file(const char *path, const void *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int rc;

	if (fd < 0)
		return -1;
	rc = write_all(fd, data, len);
	if (close(fd) < 0)
		rc = -1;
	return rc;
}

/* Deterministic bytes, so a failure reproduces. */
static uint64_t rng_next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void fill_random(uint8_t *buf, size_t len, uint64_t seed)
{
	uint64_t s = seed | 1;
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = (uint8_t)(rng_next(&s) >> 24);
}

static void from_hex(uint8_t out[CR_SHA256_SIZE], const char *hex)
{
	size_t i;
	unsigned v;

	for (i = 0; i < CR_SHA256_SIZE; i++) {
		sscanf(hex + 2 * i, "%2x", &v);
		out[i] = (uint8_t)v;
	}
}

static int is_zero(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

struct vector {
	const char *name;
	const char *hex;
};

static const struct vector vectors[] = {
	/* FIPS 180-2 / NIST examples */
	{"empty", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	{"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	{"two-block", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
	{"million-a", "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"},
};

/* The message for vector i, in a malloc'd buffer. */
static uint8_t *vector_data(size_t i, size_t *len)
{
	static const char two_block[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
	uint8_t *d;

	switch (i) {
	case 0: *len = 0; break;
	case 1: *len = 3; break;
	case 2: *len = sizeof(two_block) - 1; break;
	default: *len = 1000000; break;
	}
	d = malloc(*len + 1);
	if (!d)
		return NULL;
	if (i == 1)
		memcpy(d, "abc", 3);
	else if (i == 2)
		memcpy(d, two_block, *len);
	else if (i == 3)
		memset(d, 'a', *len);
	return d;
}

static void test_known_answers(void)
{
	uint8_t want[CR_SHA256_SIZE], got[CR_SHA256_SIZE];
	cr_file_id id;
	uint64_t len;
	size_t i, n;
	uint8_t *data;
	int fd;

	for (i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++) {
		from_hex(want, vectors[i].hex);
		data = vector_data(i, &n);
		REQUIRE(data != NULL);

		cr_sha256(got, data, n);
		CHECK_MEM(got, want, CR_SHA256_SIZE);

		/* The same bytes through a file, by path and by descriptor. */
		REQUIRE(write_file(harness_tmp_path(vectors[i].name), data, n) == 0);
		memset(got, 0xaa, sizeof(got));
		CHECK(cr_hash_file(harness_tmp_path(vectors[i].name), got, &id) == 0);
		CHECK_MEM(got, want, CR_SHA256_SIZE);
		CHECK(id.size == n);

		fd = open(harness_tmp_path(vectors[i].name), O_RDONLY | O_CLOEXEC);
		REQUIRE(fd >= 0);
		len = 12345;
		CHECK(cr_hash_fd(fd, got, &len) == 0);
		CHECK_MEM(got, want, CR_SHA256_SIZE);
		CHECK(len == n);
		close(fd);
		free(data);
	}
}

static void test_multi_block_file(void)
{
	const char *path = harness_tmp_path("multi-block");
	uint8_t want[CR_SHA256_SIZE], got[CR_SHA256_SIZE];
	cr_file_id id, id2;
	uint64_t len = 0;
	uint8_t *data;
	int fd;

	data = malloc(MULTI_BLOCK_SIZE);
	REQUIRE(data != NULL);
	fill_random(data, MULTI_BLOCK_SIZE, 42);
	REQUIRE(write_file(path, data, MULTI_BLOCK_SIZE) == 0);

	cr_sha256(want, data, MULTI_BLOCK_SIZE);
	CHECK(cr_hash_file(path, got, &id) == 0);
	CHECK_MEM(got, want, CR_SHA256_SIZE);
	CHECK(id.size == MULTI_BLOCK_SIZE);

	fd = open(path, O_RDONLY | O_CLOEXEC);
	REQUIRE(fd >= 0);
	CHECK(cr_file_id_from_fd(&id2, fd) == 0);
	CHECK(cr_file_id_equal(&id, &id2));

	/* cr_hash_fd starts at the current offset. */
	CHECK(lseek(fd, 1000, SEEK_SET) == 1000);
	cr_sha256(want, data + 1000, MULTI_BLOCK_SIZE - 1000);
	CHECK(cr_hash_fd(fd, got, &len) == 0);
	CHECK_MEM(got, want, CR_SHA256_SIZE);
	CHECK(len == MULTI_BLOCK_SIZE - 1000);
	close(fd);
	free(data);
}

static void test_file_id(void)
{
	const char *path = harness_tmp_path("id");
	cr_file_id a, b, c;
	struct stat st;
	int fd;

	REQUIRE(write_file(path, "one", 3) == 0);
	fd = open(path, O_RDWR | O_CLOEXEC);
	REQUIRE(fd >= 0);
	REQUIRE(fstat(fd, &st) == 0);
	CHECK(cr_file_id_from_fd(&a, fd) == 0);
	CHECK(a.dev == (uint64_t)st.st_dev && a.ino == (uint64_t)st.st_ino && a.size == 3);
	CHECK(a.mtime_ns == (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
	CHECK(a.ctime_ns == (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec);
	CHECK(cr_file_id_from_fd(&b, fd) == 0);
	CHECK(cr_file_id_equal(&a, &b));

	/* Same size, mtime set explicitly: still a different id. */
	{
		struct timespec ts[2] = {{1000000000, 1}, {1000000000, 1}};

		CHECK(futimens(fd, ts) == 0);
	}
	CHECK(cr_file_id_from_fd(&c, fd) == 0);
	CHECK(!cr_file_id_equal(&a, &c));
	CHECK(c.mtime_ns == 1000000000LL * 1000000000LL + 1);
	close(fd);

	CHECK(cr_file_id_from_fd(&c, -1) == CR_EIO);
}

static void test_rejects(void)
{
	const char *dir = harness_tmp_path("a-directory");
	const char *fifo = NULL;
	uint8_t got[CR_SHA256_SIZE];
	cr_file_id id;
	char missing[PATH_LEN];
	int rc;

	REQUIRE(mkdir(dir, 0700) == 0);
	memset(got, 0xaa, sizeof(got));
	cr_error_clear();
	CHECK(cr_hash_file(dir, got, &id) == CR_EINVAL);
	CHECK(strstr(cr_error_last(), dir) != NULL);
	CHECK(is_zero(got, sizeof(got)));

	/* Must not block waiting for a writer. */
	fifo = harness_tmp_path("a-fifo");
	REQUIRE(mkfifo(fifo, 0600) == 0);
	cr_error_clear();
	CHECK(cr_hash_file(fifo, got, &id) == CR_EINVAL);
	CHECK(strstr(cr_error_last(), fifo) != NULL);

	snprintf(missing, sizeof(missing), "%s", harness_tmp_path("does-not-exist"));
	cr_error_clear();
	rc = cr_hash_file(missing, got, &id);
	CHECK(rc == CR_ENOTFOUND || rc == CR_EIO);
	CHECK(strstr(cr_error_last(), missing) != NULL);

	/* /proc files claim size 0 but have content: bytes read != size. */
	if (access("/proc/self/status", R_OK) == 0) {
		memset(got, 0xaa, sizeof(got));
		CHECK(cr_hash_file("/proc/self/status", got, &id) == CR_HASH_CHANGED);
		CHECK(is_zero(got, sizeof(got)));
	}
}

struct pipe_writer {
	int fd;
	const uint8_t *data;
	size_t len;
	pthread_t reader;
	atomic_int signals_sent;
};

static atomic_int signals_seen;

static void on_signal(int sig)
{
	(void)sig;
	atomic_fetch_add(&signals_seen, 1);
}

static void *pipe_writer_main(void *arg)
{
	struct pipe_writer *w = arg;
	struct timespec pause = {0, 5000000};
	size_t off = 0, chunk;
	int i;

	/* Interrupt the reader while it waits in read() on the empty pipe. */
	for (i = 0; i < 5; i++) {
		nanosleep(&pause, NULL);
		pthread_kill(w->reader, SIGUSR1);
		atomic_fetch_add(&w->signals_sent, 1);
	}
	/* Odd chunk sizes so the reader sees many short reads. */
	while (off < w->len) {
		chunk = 7777 + off % 50000;
		if (chunk > w->len - off)
			chunk = w->len - off;
		if (write_all(w->fd, w->data + off, chunk) < 0)
			break;
		off += chunk;
		if (off % 3 == 0)
			pthread_kill(w->reader, SIGUSR1);
	}
	close(w->fd);
	return NULL;
}

static void test_hash_fd_pipe_eintr(void)
{
	struct pipe_writer w;
	struct sigaction sa, old;
	uint8_t want[CR_SHA256_SIZE], got[CR_SHA256_SIZE];
	uint64_t len = 0;
	pthread_t writer;
	uint8_t *data;
	int fds[2], rc;

	data = malloc(MULTI_BLOCK_SIZE);
	REQUIRE(data != NULL);
	fill_random(data, MULTI_BLOCK_SIZE, 7);
	cr_sha256(want, data, MULTI_BLOCK_SIZE);
	REQUIRE(pipe(fds) == 0);

	/* No SA_RESTART: read() must come back with EINTR and be retried. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);

	memset(&w, 0, sizeof(w));
	w.fd = fds[1];
	w.data = data;
	w.len = MULTI_BLOCK_SIZE;
	w.reader = pthread_self();
	atomic_store(&signals_seen, 0);
	REQUIRE(pthread_create(&writer, NULL, pipe_writer_main, &w) == 0);

	rc = cr_hash_fd(fds[0], got, &len);
	pthread_join(writer, NULL);
	sigaction(SIGUSR1, &old, NULL);
	close(fds[0]);

	CHECK(rc == 0);
	CHECK(len == MULTI_BLOCK_SIZE);
	CHECK_MEM(got, want, CR_SHA256_SIZE);
	CHECK(atomic_load(&signals_seen) >= 5);

	/* A read error names the descriptor. */
	cr_error_clear();
	CHECK(cr_hash_fd(-1, got, &len) == CR_EIO);
	CHECK(strstr(cr_error_last(), "descriptor -1") != NULL);
	free(data);
}

#define MANY_FILES 500

struct progress_log {
	size_t calls;
	size_t last_done;
	size_t total;
	uint64_t last_bytes;
	int monotonic;
};

static void on_progress(void *ctx, size_t done, size_t total, uint64_t bytes)
{
	struct progress_log *log = ctx;

	if (done < log->last_done || bytes < log->last_bytes)
		log->monotonic = 0;
	log->calls++;
	log->last_done = done;
	log->last_bytes = bytes;
	log->total = total;
}

static void test_hash_many(void)
{
	static const unsigned thread_counts[] = {1, 2, 4, 0, 1000};
	char (*paths)[PATH_LEN] = NULL;
	cr_hash_job *seq = NULL, *jobs = NULL;
	struct progress_log log;
	uint8_t *buf = NULL;
	uint64_t s = 1234, total_bytes = 0;
	size_t n = MANY_FILES + 2, i, len, t;
	int ready = 0;

	paths = calloc(n, sizeof(*paths));
	seq = calloc(n, sizeof(*seq));
	jobs = calloc(n, sizeof(*jobs));
	buf = malloc(MULTI_BLOCK_SIZE);
	if (!paths || !seq || !jobs || !buf)
		goto done;

	/* Mostly small files, some empty, a few larger than one read block. */
	for (i = 0; i < MANY_FILES; i++) {
		len = rng_next(&s) % 5 == 0 ? 0 : rng_next(&s) % 40000;
		if (i % 97 == 3)
			len = (1u << 20) + rng_next(&s) % (1u << 20);
		fill_random(buf, len, i + 1);
		snprintf(paths[i], sizeof(paths[i]), "many-%03zu", i);
		snprintf(paths[i], sizeof(paths[i]), "%s", harness_tmp_path(paths[i])); /* copies first */
		if (write_file(paths[i], buf, len) != 0)
			goto done;
		total_bytes += len;
	}
	/* Failing jobs among them: their messages come back per job. */
	snprintf(paths[MANY_FILES], sizeof(paths[0]), "%s", harness_tmp_path("many-missing"));
	snprintf(paths[MANY_FILES + 1], sizeof(paths[0]), "%s", harness_tmp_path("many-dir"));
	if (mkdir(paths[MANY_FILES + 1], 0700) != 0)
		goto done;
	ready = 1;

	for (i = 0; i < n; i++) {
		seq[i].path = paths[i];
		seq[i].rc = cr_hash_file(paths[i], seq[i].sha256, &seq[i].id);
	}
	CHECK(seq[MANY_FILES].rc == CR_ENOTFOUND);
	CHECK(seq[MANY_FILES + 1].rc == CR_EINVAL);

	for (t = 0; t < sizeof(thread_counts) / sizeof(thread_counts[0]); t++) {
		size_t mismatches = 0;

		memset(jobs, 0, n * sizeof(*jobs));
		for (i = 0; i < n; i++)
			jobs[i].path = paths[i];
		memset(&log, 0, sizeof(log));
		log.monotonic = 1;

		CHECK(cr_hash_many(jobs, n, thread_counts[t], on_progress, &log) == 0);
		for (i = 0; i < n; i++) {
			if (jobs[i].rc != seq[i].rc ||
			    memcmp(jobs[i].sha256, seq[i].sha256, CR_SHA256_SIZE) != 0 ||
			    (jobs[i].rc == 0 && !cr_file_id_equal(&jobs[i].id, &seq[i].id)) ||
			    (jobs[i].rc < 0) != (jobs[i].error != NULL))
				mismatches++;
		}
		if (mismatches)
			fprintf(stderr, "threads=%u: %zu jobs differ from sequential\n",
			        thread_counts[t], mismatches);
		CHECK(mismatches == 0);
		CHECK(jobs[MANY_FILES].error && strstr(jobs[MANY_FILES].error, paths[MANY_FILES]));
		CHECK(jobs[MANY_FILES + 1].error &&
		      strstr(jobs[MANY_FILES + 1].error, paths[MANY_FILES + 1]));

		/* Throttled, but the final report always comes. */
		CHECK(log.calls >= 1);
		CHECK(log.monotonic);
		CHECK(log.last_done == n);
		CHECK(log.total == n);
		CHECK(log.last_bytes == total_bytes);

		for (i = 0; i < n; i++)
			free(jobs[i].error);
	}

	/* No callback, fewer jobs than threads, and nothing to do. */
	memset(jobs, 0, 3 * sizeof(*jobs));
	for (i = 0; i < 3; i++)
		jobs[i].path = paths[i];
	CHECK(cr_hash_many(jobs, 3, 8, NULL, NULL) == 0);
	for (i = 0; i < 3; i++)
		CHECK(jobs[i].rc == 0 && memcmp(jobs[i].sha256, seq[i].sha256, CR_SHA256_SIZE) == 0);
	CHECK(cr_hash_many(jobs, 0, 4, on_progress, &log) == 0);
	CHECK(cr_hash_default_threads() >= 1);

done:
	CHECK(ready);
	free(buf);
	free(jobs);
	free(seq);
	free(paths);
}

struct hash_attempt {
	const char *path;
	uint8_t sha256[CR_SHA256_SIZE];
	cr_file_id id;
	int rc;
	atomic_int finished;
};

static void *hash_attempt_main(void *arg)
{
	struct hash_attempt *a = arg;

	a->rc = cr_hash_file(a->path, a->sha256, &a->id);
	atomic_store(&a->finished, 1);
	return NULL;
}

static void test_changed_while_read(void)
{
	const char *path = harness_tmp_path("growing");
	size_t base = 16u << 20;
	struct hash_attempt a;
	struct timespec start, now;
	uint8_t *data, chunk[4096];
	pthread_t thread;
	int attempts = 0, changed = 0, unexpected = 0, fd;

	data = malloc(base);
	REQUIRE(data != NULL);
	fill_random(data, base, 99);
	memset(chunk, 'x', sizeof(chunk));
	clock_gettime(CLOCK_MONOTONIC, &start);

	/*
	 * A race by nature, so retry: one thread hashes while this one appends.
	 * Any single attempt may finish before the first append lands.
	 */
	do {
		attempts++;
		REQUIRE(write_file(path, data, base) == 0);
		fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
		REQUIRE(fd >= 0);
		memset(&a, 0, sizeof(a));
		a.path = path;
		atomic_init(&a.finished, 0);
		REQUIRE(pthread_create(&thread, NULL, hash_attempt_main, &a) == 0);
		while (!atomic_load(&a.finished))
			if (write_all(fd, chunk, sizeof(chunk)) < 0)
				break;
		pthread_join(thread, NULL);
		close(fd);

		if (a.rc == CR_HASH_CHANGED) {
			changed++;
			if (!is_zero(a.sha256, sizeof(a.sha256)))
				unexpected++;
		} else if (a.rc != 0) {
			unexpected++;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
	} while (changed == 0 && now.tv_sec - start.tv_sec < 10);

	if (!changed)
		fprintf(stderr, "no change seen in %d attempts\n", attempts);
	CHECK(changed > 0);
	CHECK(unexpected == 0);
	free(data);
}

#define POOL_FILES    300
#define POOL_THREADS  3
#define POOL_FAIL_TAG 7

struct pool_ctx {
	char paths[POOL_FILES + 1][PATH_LEN];
	atomic_int known_calls, done_calls, bad_worker, bad_path, slow;
};

static const uint8_t marker[CR_SHA256_SIZE] = {0x42, 0x42, 0x42, 0x42};

/* Even tags are "known" (without reading), POOL_FAIL_TAG fails, odd ones are hashed. */
static int pool_known(void *ctx, unsigned worker, uint64_t tag, const char *path,
                      const cr_file_id *id, uint8_t sha[CR_SHA256_SIZE])
{
	struct pool_ctx *c = ctx;

	atomic_fetch_add(&c->known_calls, 1);
	if (worker >= POOL_THREADS)
		atomic_fetch_add(&c->bad_worker, 1);
	if (tag < POOL_FILES && (strcmp(path, c->paths[tag]) != 0 || id->size == 0))
		atomic_fetch_add(&c->bad_path, 1);
	if (atomic_load(&c->slow))
		usleep(2000);
	if (tag == POOL_FAIL_TAG)
		return cr_error_set(CR_EIO, "the cache of tag %d is unreadable", POOL_FAIL_TAG);
	if (tag % 2)
		return 0;
	memcpy(sha, marker, sizeof(marker));
	return 1;
}

static void pool_done(void *ctx, unsigned worker, const char *path, cr_hash_result *r)
{
	struct pool_ctx *c = ctx;

	atomic_fetch_add(&c->done_calls, 1);
	if (worker >= POOL_THREADS)
		atomic_fetch_add(&c->bad_worker, 1);
	if (r->tag <= POOL_FILES && strcmp(path, c->paths[r->tag]) != 0)
		atomic_fetch_add(&c->bad_path, 1);
}

static void test_pool_hooks(void)
{
	static struct pool_ctx c;
	static uint8_t want[POOL_FILES][CR_SHA256_SIZE];
	static int seen[POOL_FILES + 1];
	cr_hash_hooks hooks = {pool_known, pool_done, &c, O_NOFOLLOW};
	cr_hash_pool *pool = NULL;
	cr_hash_result res[16];
	uint8_t buf[5000];
	cr_file_id id;
	size_t got = 0, n, i;
	int wrong = 0, tries = 0;

	memset(&c, 0, sizeof(c));
	for (i = 0; i < POOL_FILES; i++) {
		char name[32];

		fill_random(buf, 1 + i * 13 % sizeof(buf), i + 77);
		snprintf(name, sizeof(name), "pool-%03zu", i);
		snprintf(c.paths[i], PATH_LEN, "%s", harness_tmp_path(name));
		REQUIRE(write_file(c.paths[i], buf, 1 + i * 13 % sizeof(buf)) == 0);
		REQUIRE(cr_hash_file(c.paths[i], want[i], &id) == 0);
	}
	/* A link to a file: with O_NOFOLLOW it is refused, not followed. */
	snprintf(c.paths[POOL_FILES], PATH_LEN, "%s", harness_tmp_path("pool-link"));
	REQUIRE(symlink(c.paths[1], c.paths[POOL_FILES]) == 0);

	REQUIRE(cr_hash_pool_new_with(&pool, POOL_THREADS, &hooks) == 0);
	CHECK(cr_hash_pool_threads(pool) == POOL_THREADS);
	for (i = 0; i <= POOL_FILES; i++)
		REQUIRE(cr_hash_pool_submit(pool, i, c.paths[i], -1) == 0);
	/* The owner waits on the eventfd and collects until nothing is left. */
	while (got < POOL_FILES + 1 && tries++ < 1000) {
		struct pollfd pfd = {cr_hash_pool_eventfd(pool), POLLIN, 0};

		(void)poll(&pfd, 1, 1000);
		while ((n = cr_hash_pool_collect(pool, res, 16)) > 0) {
			for (i = 0; i < n; i++) {
				cr_hash_result *r = &res[i];

				if (r->tag > POOL_FILES) {
					wrong++;
					continue;
				}
				seen[r->tag]++;
				got++;
				if (r->tag == POOL_FILES) {
					if (r->rc >= 0 || !strstr(r->error, "symbolic link"))
						wrong++;
				} else if (r->tag == POOL_FAIL_TAG) {
					if (r->rc != CR_EIO || !strstr(r->error, "is unreadable"))
						wrong++;
				} else if (r->rc != 0 || r->cached != !(r->tag % 2) ||
				           memcmp(r->sha256, r->tag % 2 ? want[r->tag] : marker,
				                  CR_SHA256_SIZE) != 0 ||
				           r->id.size != 1 + r->tag * 13 % sizeof(buf)) {
					wrong++;
				}
			}
		}
	}
	CHECK(got == POOL_FILES + 1);
	for (i = 0; i <= POOL_FILES; i++)
		CHECK(seen[i] == 1);
	CHECK(wrong == 0);
	CHECK(cr_hash_pool_busy(pool) == 0);
	CHECK(cr_hash_pool_collect(pool, res, 16) == 0);
	/* Every opened file was offered to the known hook; the link never was. */
	CHECK(atomic_load(&c.known_calls) == POOL_FILES);
	CHECK(atomic_load(&c.done_calls) == POOL_FILES + 1);
	CHECK(atomic_load(&c.bad_worker) == 0);
	CHECK(atomic_load(&c.bad_path) == 0);
	cr_hash_pool_free(pool);

	/* Freeing drops the jobs not started instead of running them all. */
	memset(&c.known_calls, 0, sizeof(c.known_calls));
	atomic_store(&c.slow, 1);
	REQUIRE(cr_hash_pool_new_with(&pool, 1, &hooks) == 0);
	for (i = 0; i < POOL_FILES; i++)
		REQUIRE(cr_hash_pool_submit(pool, i, c.paths[i], -1) == 0);
	usleep(10000);
	cr_hash_pool_free(pool);
	CHECK(atomic_load(&c.known_calls) < POOL_FILES / 2);
}

/* cr_hash_pool_wait: returns with a group of results, or when the pool has no work left. */
static void test_pool_wait(void)
{
	static struct pool_ctx c;
	cr_hash_hooks hooks = {pool_known, pool_done, &c, O_NOFOLLOW};
	cr_hash_pool *pool = NULL;
	cr_hash_result res[POOL_FILES];
	uint8_t buf[100];
	size_t got, i;

	memset(&c, 0, sizeof(c));
	for (i = 0; i < 10; i++) {
		char name[32];

		fill_random(buf, sizeof(buf), i + 5);
		snprintf(name, sizeof(name), "wait-%02zu", i);
		snprintf(c.paths[i], PATH_LEN, "%s", harness_tmp_path(name));
		REQUIRE(write_file(c.paths[i], buf, sizeof(buf)) == 0);
	}
	atomic_store(&c.slow, 1); /* each job takes 2 ms or more */
	REQUIRE(cr_hash_pool_new_with(&pool, 1, &hooks) == 0);
	/* Nothing queued: no waiting. */
	cr_hash_pool_wait(pool, 5, 60000);
	CHECK(cr_hash_pool_busy(pool) == 0);
	for (i = 0; i < 10; i++)
		REQUIRE(cr_hash_pool_submit(pool, i, c.paths[i], -1) == 0);
	cr_hash_pool_wait(pool, 4, 60000);
	got = cr_hash_pool_collect(pool, res, POOL_FILES);
	CHECK(got >= 4); /* a group at least */
	/* More than will ever come: returns once the last job is done. */
	cr_hash_pool_wait(pool, 1000, 60000);
	CHECK(cr_hash_pool_busy(pool) == 10 - got);
	got += cr_hash_pool_collect(pool, res, POOL_FILES);
	CHECK(got == 10);
	CHECK(cr_hash_pool_busy(pool) == 0);
	cr_hash_pool_free(pool);
}

TEST_MAIN(TEST(test_known_answers), TEST(test_multi_block_file), TEST(test_file_id),
          TEST(test_rejects), TEST(test_hash_fd_pipe_eintr), TEST(test_hash_many),
          TEST(test_changed_while_read), TEST(test_pool_hooks), TEST(test_pool_wait))
