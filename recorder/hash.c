/*
 * SHA-256 of memory, descriptors and files through OpenSSL EVP, and a pool
 * of threads hashing many files at once.
 *
 * Files are streamed with read() into one BLOCK_SIZE buffer per caller or
 * per worker (never one per block). mmap()+MADV_SEQUENTIAL was ~2% faster on
 * a cached 2 GiB file, but a mapped file truncated by its writer (a training
 * job still saving a checkpoint) kills the process with SIGBUS, while read()
 * just comes up short and we report the file as changed. read() also works
 * on pipes and honours the descriptor's offset.
 *
 * A file's identity is taken by fstat() before and after the read; if it
 * moved, or the byte count differs from the size, the file is reported as
 * CR_HASH_CHANGED and no hash is handed out (out is zeroed).
 *
 * The SHA-256 method is fetched once per process and kept for its lifetime;
 * every call or worker has its own EVP_MD_CTX.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cleanroom/error.h"
#include "cleanroom/hash.h"
#include "util/thread.h"

/*
 * 1 MiB: on a cached 2 GiB file 1 MiB and 4 MiB reads were within noise of
 * each other (~1600 MB/s, 1.14x `openssl dgst`), 256 KiB ~3% slower. The
 * smaller of the two keeps a many-threaded pool's memory modest.
 */
#define BLOCK_SIZE (1u << 20)
#define BLOCK_ALIGN 4096u

/* Progress is reported at most this often, plus once at the end. */
#define PROGRESS_INTERVAL_NS 100000000LL

/*
 * More threads than this cannot make hashing faster (it is bound by memory
 * and I/O bandwidth long before), but each costs a BLOCK_SIZE buffer.
 */
#define MAX_THREADS 256u

static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static const EVP_MD *sha256_md;

static void sha256_fetch(void)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	/*
	 * An explicit fetch saves EVP_DigestInit_ex() the implicit provider
	 * lookup it does on every call with EVP_sha256(); that matters when a
	 * pool hashes thousands of small files.
	 */
	EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);

	if (md) {
		sha256_md = md; /* kept for the life of the process */
		return;
	}
#endif
	sha256_md = EVP_sha256();
}

static const EVP_MD *sha256(void)
{
	pthread_once(&sha256_once, sha256_fetch);
	return sha256_md;
}

/* What one hashing thread needs, allocated once and reused for every file. */
typedef struct hasher {
	EVP_MD_CTX *ctx;
	uint8_t *buf;
} hasher;

static void hasher_free(hasher *h)
{
	if (!h)
		return;
	EVP_MD_CTX_free(h->ctx);
	free(h->buf);
	h->ctx = NULL;
	h->buf = NULL;
}

static int hasher_init(hasher *h)
{
	h->ctx = EVP_MD_CTX_new();
	h->buf = aligned_alloc(BLOCK_ALIGN, BLOCK_SIZE);
	if (!h->ctx || !h->buf) {
		hasher_free(h);
		return cr_error_set(CR_ENOMEM, "out of memory for a hash buffer (%u bytes)",
		                    BLOCK_SIZE);
	}
	return 0;
}

static int64_t timespec_ns(const struct timespec *ts)
{
	int64_t ns;

	/*
	 * int64 nanoseconds end in 2262; a file stamped beyond that (touch -d
	 * allows it) saturates rather than overflowing. Two such files differ
	 * in ino/size as well, so ids rarely collide, and a collision only
	 * means the cache compares the other fields.
	 */
	if (__builtin_mul_overflow((int64_t)ts->tv_sec, (int64_t)1000000000, &ns) ||
	    __builtin_add_overflow(ns, (int64_t)ts->tv_nsec, &ns))
		return ts->tv_sec < 0 ? INT64_MIN : INT64_MAX;
	return ns;
}

void cr_file_id_from_stat(cr_file_id *id, const struct stat *st)
{
	id->dev = (uint64_t)st->st_dev;
	id->ino = (uint64_t)st->st_ino;
	id->size = (uint64_t)st->st_size;
	id->mtime_ns = timespec_ns(&st->st_mtim);
	id->ctime_ns = timespec_ns(&st->st_ctim);
}

int cr_file_id_from_fd(cr_file_id *id, int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return cr_error_set_errno(CR_EIO, errno, "fstat descriptor %d", fd);
	cr_file_id_from_stat(id, &st);
	return 0;
}

int cr_file_id_racy(const cr_file_id *id)
{
	struct timespec now;
	int64_t t;

	clock_gettime(CLOCK_REALTIME, &now);
	t = timespec_ns(&now);
	return t - id->mtime_ns < CR_RACY_NS || t - id->ctime_ns < CR_RACY_NS;
}

int cr_file_id_equal(const cr_file_id *a, const cr_file_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

void cr_sha256(uint8_t out[CR_SHA256_SIZE], const void *data, size_t len)
{
	unsigned int n = 0;

	/*
	 * This API cannot report failure, and EVP_Digest() fails only when
	 * OpenSSL cannot allocate. Handing back a made-up digest would be worse
	 * for an integrity tool than stopping, so stop.
	 */
	if (!EVP_Digest(data, len, out, &n, sha256(), NULL) || n != CR_SHA256_SIZE)
		abort();
}

/*
 * Hash fd from its offset to EOF with h's context and buffer. name is used
 * in messages (a path, or NULL for "descriptor N").
 */
/*
 * Hash fd to EOF, or, when `expect` is not UINT64_MAX, until `expect` bytes
 * were read: for a regular file of known size that saves the read() that
 * would return 0, and the caller's fstat() afterwards catches a file that
 * grew meanwhile.
 */
static int hash_fd_with(hasher *h, int fd, const char *name, uint8_t out[CR_SHA256_SIZE],
                        uint64_t *out_len, uint64_t expect)
{
	uint64_t total = 0;
	unsigned int n = 0;
	ssize_t got;

	/* Only a hint, worth its system call for files of several blocks; it
	 * fails harmlessly (ESPIPE) on pipes. */
	if (expect == UINT64_MAX || expect > BLOCK_SIZE)
		(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);

	if (!EVP_DigestInit_ex(h->ctx, sha256(), NULL))
		return cr_error_set(CR_ECRYPTO, "SHA-256 init failed");
	while (total != expect) {
		/* A short read is not EOF; only 0 is. */
		got = read(fd, h->buf, BLOCK_SIZE);
		if (got == 0)
			break;
		if (got < 0) {
			if (errno == EINTR)
				continue;
			if (name)
				return cr_error_set_errno(CR_EIO, errno, "read %s", name);
			return cr_error_set_errno(CR_EIO, errno, "read descriptor %d", fd);
		}
		if (!EVP_DigestUpdate(h->ctx, h->buf, (size_t)got))
			return cr_error_set(CR_ECRYPTO, "SHA-256 update failed");
		total += (uint64_t)got;
	}
	if (!EVP_DigestFinal_ex(h->ctx, out, &n) || n != CR_SHA256_SIZE)
		return cr_error_set(CR_ECRYPTO, "SHA-256 final failed");
	if (out_len)
		*out_len = total;
	return 0;
}

int cr_hash_fd(int fd, uint8_t out[CR_SHA256_SIZE], uint64_t *out_len)
{
	hasher h = {0};
	int rc;

	rc = hasher_init(&h);
	if (rc)
		return rc;
	rc = hash_fd_with(&h, fd, NULL, out, out_len, UINT64_MAX);
	hasher_free(&h);
	return rc;
}

static int open_error(const char *path, int err)
{
	/* Sockets and driverless device nodes fail open() before fstat() can tell. */
	if (err == ENXIO)
		return cr_error_set(CR_EINVAL, "%s: not a regular file", path);
	if (err == ENOENT || err == ENOTDIR)
		return cr_error_set_errno(CR_ENOTFOUND, err, "open %s", path);
	return cr_error_set_errno(CR_EIO, err, "open %s", path);
}

/* A pool's "known" hook as one worker calls it; fn NULL when there is none. */
typedef struct known_hook {
	int (*fn)(void *ctx, unsigned worker, uint64_t tag, const char *path, const cr_file_id *id,
	          uint8_t sha[CR_SHA256_SIZE]);
	void *ctx;
	unsigned worker;
	uint64_t tag;
} known_hook;

/*
 * Hash an open regular file from offset 0 to EOF, taking its identity by
 * fstat() before and after; name is for messages. *nread gets the bytes
 * hashed. When the known hook (may be NULL) has the content for the
 * identity, the file is not read and *cached is set.
 */
static int hash_open_file(hasher *h, int fd, int fresh, const char *name,
                          uint8_t out[CR_SHA256_SIZE], cr_file_id *id, uint64_t *nread,
                          const known_hook *known, int *cached)
{
	struct stat before, after;
	uint64_t len = 0;
	int rc;

	memset(out, 0, CR_SHA256_SIZE);
	*nread = 0;
	*cached = 0;
	if (fstat(fd, &before) < 0) {
		rc = cr_error_set_errno(CR_EIO, errno, "fstat %s", name);
		goto done;
	}
	if (!S_ISREG(before.st_mode)) {
		rc = cr_error_set(CR_EINVAL, "%s: not a regular file", name);
		goto done;
	}
	/*
	 * O_NONBLOCK (from the open that must not block on a FIFO) does not
	 * apply to regular files on Linux, so it is left on: two system calls
	 * per file saved. Descriptors handed in (checkpoints) may sit anywhere.
	 */
	if (!fresh && lseek(fd, 0, SEEK_SET) < 0) {
		rc = cr_error_set_errno(CR_EIO, errno, "seek %s", name);
		goto done;
	}
	cr_file_id_from_stat(id, &before);
	if (known && known->fn) {
		rc = known->fn(known->ctx, known->worker, known->tag, name, id, out);
		if (rc > 0) {
			*cached = 1;
			return 0;
		}
		if (rc < 0)
			goto done;
	}

	/* Size 0 may be a lie (/proc): then read to EOF and let the size check judge. */
	rc = hash_fd_with(h, fd, name, out, &len,
	                  before.st_size > 0 ? (uint64_t)before.st_size : UINT64_MAX);
	if (rc)
		goto done;
	*nread = len;

	if (fstat(fd, &after) < 0) {
		rc = cr_error_set_errno(CR_EIO, errno, "fstat %s", name);
		goto done;
	}
	if (after.st_size != before.st_size || len != (uint64_t)before.st_size ||
	    timespec_ns(&after.st_mtim) != id->mtime_ns ||
	    timespec_ns(&after.st_ctim) != id->ctime_ns)
		rc = cr_error_set(CR_HASH_CHANGED, "%s changed while it was read", name);

done:
	if (rc)
		memset(out, 0, CR_SHA256_SIZE); /* never hand out a hash we do not vouch for */
	return rc;
}

/*
 * cr_hash_file with the caller's hasher, extra open() flags, and a known
 * hook (may be NULL); *nread gets the bytes hashed. The file opened is
 * path + at_off relative to the folder open at dirfd (AT_FDCWD: path).
 */
static int hash_file_with(hasher *h, int dirfd, const char *path, size_t at_off, int flags,
                          uint8_t out[CR_SHA256_SIZE], cr_file_id *id, uint64_t *nread,
                          const known_hook *known, int *cached)
{
	int fd, rc;

	memset(out, 0, CR_SHA256_SIZE);
	*nread = 0;
	*cached = 0;
	/*
	 * O_NONBLOCK so that a FIFO at path is rejected below instead of
	 * blocking open() until some writer shows up; O_NOCTTY so that a
	 * terminal never becomes ours.
	 */
	fd = openat(dirfd, path + at_off, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | flags);
	if (fd < 0) {
		if (errno == ELOOP && (flags & O_NOFOLLOW))
			return cr_error_set(CR_EINVAL, "%s is a symbolic link; not followed", path);
		return open_error(path, errno);
	}
	rc = hash_open_file(h, fd, 1, path, out, id, nread, known, cached);
	close(fd);
	return rc;
}

int cr_hash_file(const char *path, uint8_t out[CR_SHA256_SIZE], cr_file_id *id)
{
	hasher h = {0};
	uint64_t nread;
	int rc, cached;

	rc = hasher_init(&h);
	if (rc)
		return rc;
	rc = hash_file_with(&h, AT_FDCWD, path, 0, 0, out, id, &nread, NULL, &cached);
	hasher_free(&h);
	return rc;
}

unsigned cr_hash_default_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	if ((unsigned long)n > MAX_THREADS)
		return MAX_THREADS;
	return (unsigned)n;
}

/* Shared by the workers of one cr_hash_many() call. */
typedef struct pool {
	cr_hash_job *jobs;
	size_t n;
	atomic_size_t next; /* next job to take: small files balance themselves */

	pthread_mutex_t lock; /* guards the fields below and serialises progress */
	size_t done;
	uint64_t bytes;
	int64_t last_report_ns;
	cr_hash_progress_fn progress;
	void *ctx;
} pool;

typedef struct worker {
	pool *pool;
	hasher h;
	pthread_t thread;
} worker;

static int64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void job_finished(pool *p, uint64_t nread)
{
	int64_t now;

	pthread_mutex_lock(&p->lock);
	p->done++;
	p->bytes += nread;
	if (p->progress) {
		now = monotonic_ns();
		/* done reaches n in exactly one worker, so the final report comes once. */
		if (p->done == p->n || now - p->last_report_ns >= PROGRESS_INTERVAL_NS) {
			p->last_report_ns = now;
			p->progress(p->ctx, p->done, p->n, p->bytes);
		}
	}
	pthread_mutex_unlock(&p->lock);
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	pool *p = w->pool;
	cr_hash_job *job;
	uint64_t nread;
	size_t i;
	int cached;

	for (;;) {
		i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
		if (i >= p->n)
			break;
		job = &p->jobs[i];
		nread = 0;
		cr_error_clear();
		job->rc = hash_file_with(&w->h, AT_FDCWD, job->path, 0, 0, job->sha256, &job->id,
		                         &nread, NULL, &cached);
		/*
		 * The message is thread-local: copy it here or it is lost. A
		 * failed strdup leaves error NULL; rc still tells what happened.
		 */
		if (job->rc < 0)
			job->error = strdup(cr_error_last());
		job_finished(p, nread);
	}
	return NULL;
}

int cr_hash_many(cr_hash_job *jobs, size_t n, unsigned threads,
                 cr_hash_progress_fn progress, void *ctx)
{
	pool p;
	worker *workers = NULL;
	unsigned started = 0, i;
	size_t j;
	int rc = 0, err;

	if (n == 0)
		return 0;
	if (!jobs)
		return cr_error_set(CR_EINVAL, "hash jobs missing");

	/* Outputs are defined even for jobs that never run (rc says so). */
	for (j = 0; j < n; j++) {
		memset(jobs[j].sha256, 0, sizeof(jobs[j].sha256));
		memset(&jobs[j].id, 0, sizeof(jobs[j].id));
		jobs[j].rc = CR_ERROR;
		jobs[j].error = NULL;
	}

	if (threads == 0)
		threads = cr_hash_default_threads();
	if (threads > MAX_THREADS)
		threads = MAX_THREADS;
	if (threads > n)
		threads = (unsigned)n;

	memset(&p, 0, sizeof(p));
	p.jobs = jobs;
	p.n = n;
	atomic_init(&p.next, 0);
	p.last_report_ns = monotonic_ns();
	p.progress = progress;
	p.ctx = ctx;
	err = pthread_mutex_init(&p.lock, NULL);
	if (err)
		return cr_error_set_errno(CR_ERROR, err, "hash pool mutex");

	/* Everything a worker needs is allocated before any job runs. */
	workers = calloc(threads, sizeof(*workers));
	if (!workers) {
		rc = cr_error_set(CR_ENOMEM, "out of memory for %u hash workers", threads);
		goto done;
	}
	for (i = 0; i < threads; i++) {
		workers[i].pool = &p;
		rc = hasher_init(&workers[i].h);
		if (rc)
			goto done;
	}

	for (i = 0; i < threads; i++) {
		err = pthread_create(&workers[i].thread, NULL, worker_main, &workers[i]);
		if (err) {
			/*
			 * With one worker running every job still gets done, only
			 * slower; with none, fail before any job has been run.
			 */
			if (started == 0)
				rc = cr_error_set_errno(CR_ERROR, err, "cannot start hash threads");
			break;
		}
		started++;
	}
	for (i = 0; i < started; i++)
		pthread_join(workers[i].thread, NULL);

done:
	if (workers) {
		for (i = 0; i < threads; i++)
			hasher_free(&workers[i].h);
		free(workers);
	}
	pthread_mutex_destroy(&p.lock);
	return rc;
}

/*
 * The asynchronous pool used while recording: jobs queue under a mutex,
 * workers hash them, results queue back and an eventfd wakes the owner's
 * event loop. Each worker owns one hasher for its whole life.
 */
/* A job, and once done its result: one allocation for both. */
typedef struct pool_job {
	struct pool_job *next;
	uint64_t tag;
	int fd;    /* a descriptor to hash, or -1 */
	int dirfd; /* else open path + at_off relative to this (AT_FDCWD: path) */
	size_t at_off;
	cr_hash_result r;
	char path[];
} pool_job;

typedef struct pool_thread {
	struct cr_hash_pool *pool;
	unsigned index;
	pthread_t thread;
} pool_thread;

struct cr_hash_pool {
	pthread_mutex_t lock;
	pthread_cond_t wake;
	pool_job *jobs, **jobs_tail;
	pool_job *results, **results_tail;
	size_t queued, running, finished; /* finished: results not yet collected */
	pthread_cond_t ready;             /* for cr_hash_pool_wait */
	size_t want;                      /* what a waiter waits for; 0: nobody waits */
	int stopping;
	int nice;
	int efd;
	cr_hash_hooks hooks;
	unsigned nthreads;
	pool_thread *threads;
};

static void *pool_worker(void *arg)
{
	pool_thread *t = arg;
	cr_hash_pool *p = t->pool;
	hasher h = {0};
	int ready = hasher_init(&h), flags = p->hooks.open_flags & O_NOFOLLOW;
	known_hook known = {p->hooks.known, p->hooks.ctx, t->index, 0};
	int nice = CR_NICE_UNSET, want;

	/* A name for top and perf; failing to set it changes nothing. */
	(void)pthread_setname_np(pthread_self(), "cr-hash");

	for (;;) {
		pool_job *j;
		cr_hash_result *res;
		uint64_t nread, one = 1;
		int rc, signal;

		pthread_mutex_lock(&p->lock);
		while (!p->jobs && !p->stopping)
			pthread_cond_wait(&p->wake, &p->lock);
		if (p->stopping) {
			/* Jobs not started are dropped (cr_hash_pool_free frees them). */
			pthread_mutex_unlock(&p->lock);
			break;
		}
		j = p->jobs;
		p->jobs = j->next;
		if (!p->jobs)
			p->jobs_tail = &p->jobs;
		p->queued--;
		p->running++;
		want = p->nice;
		pthread_mutex_unlock(&p->lock);
		cr_thread_follow(&nice, want); /* outside the lock */

		res = &j->r;
		memset(res, 0, sizeof(*res));
		res->tag = j->tag;
		known.tag = j->tag;
		cr_error_clear();
		if (ready != 0)
			rc = ready;
		else if (j->fd >= 0)
			rc = hash_open_file(&h, j->fd, 0, j->path, res->sha256, &res->id, &nread,
			                    &known, &res->cached);
		else
			rc = hash_file_with(&h, j->dirfd, j->path, j->at_off, flags, res->sha256,
			                    &res->id, &nread, &known, &res->cached);
		res->rc = rc;
		if (rc < 0)
			snprintf(res->error, sizeof(res->error), "%s", cr_error_last());
		if (p->hooks.done)
			p->hooks.done(p->hooks.ctx, t->index, j->path, res);
		if (j->fd >= 0)
			close(j->fd);
		j->fd = -1;
		j->next = NULL;

		pthread_mutex_lock(&p->lock);
		p->running--;
		p->finished++;
		if (p->want && (p->finished >= p->want || (p->queued == 0 && p->running == 0)))
			pthread_cond_signal(&p->ready);
		/*
		 * The owner is woken when results appear, not once per result: it
		 * takes every result there is on each collect, and re-arms the
		 * eventfd when it leaves some. That saves a system call per file,
		 * and the owner's wake-ups while it is still busy with earlier ones.
		 */
		signal = !p->results;
		*p->results_tail = j;
		p->results_tail = &j->next;
		pthread_mutex_unlock(&p->lock);
		if (signal && write(p->efd, &one, sizeof(one)) < 0) {
			/* The counter saturating only delays the wake-up; nothing is lost. */
		}
	}
	hasher_free(&h);
	return NULL;
}

int cr_hash_pool_new(cr_hash_pool **out, unsigned threads)
{
	return cr_hash_pool_new_with(out, threads, NULL);
}

int cr_hash_pool_new_with(cr_hash_pool **out, unsigned threads, const cr_hash_hooks *hooks)
{
	cr_hash_pool *p;
	unsigned i;

	*out = NULL;
	if (threads == 0)
		threads = cr_hash_default_threads();
	if (threads > MAX_THREADS)
		threads = MAX_THREADS;
	if ((p = calloc(1, sizeof(*p))) == NULL ||
	    (p->threads = calloc(threads, sizeof(*p->threads))) == NULL) {
		free(p);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->efd < 0) {
		int e = errno;

		free(p->threads);
		free(p);
		return cr_error_set_errno(CR_EIO, e, "eventfd");
	}
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->wake, NULL);
	{
		pthread_condattr_t ca;

		/* cr_hash_pool_wait's timeout does not move with the wall clock. */
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&p->ready, &ca);
		pthread_condattr_destroy(&ca);
	}
	p->nice = CR_NICE_UNSET;
	p->jobs_tail = &p->jobs;
	p->results_tail = &p->results;
	if (hooks)
		p->hooks = *hooks;
	for (i = 0; i < threads; i++) {
		p->threads[i].pool = p;
		p->threads[i].index = i;
		if (pthread_create(&p->threads[i].thread, NULL, pool_worker, &p->threads[i]) != 0)
			break;
	}
	p->nthreads = i;
	if (i == 0) {
		cr_hash_pool_free(p);
		return cr_error_set(CR_ERROR, "cannot start hashing threads");
	}
	*out = p;
	return 0;
}

void cr_hash_pool_set_nice(cr_hash_pool *p, int nice)
{
	pthread_mutex_lock(&p->lock);
	p->nice = cr_nice_clamp(nice);
	pthread_mutex_unlock(&p->lock);
}

static int submit(cr_hash_pool *p, uint64_t tag, const char *path, int fd, int dirfd, size_t at_off)
{
	size_t n = strlen(path);
	pool_job *j;

	if (at_off > n)
		return cr_error_set(CR_EINVAL, "hash job: name offset beyond the path");
	if ((j = malloc(sizeof(*j) + n + 1)) == NULL) {
		if (fd >= 0)
			close(fd);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	j->next = NULL;
	j->tag = tag;
	j->fd = fd;
	j->dirfd = dirfd;
	j->at_off = at_off;
	memcpy(j->path, path, n + 1);
	pthread_mutex_lock(&p->lock);
	*p->jobs_tail = j;
	p->jobs_tail = &j->next;
	p->queued++;
	pthread_cond_signal(&p->wake);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

int cr_hash_pool_submit(cr_hash_pool *p, uint64_t tag, const char *path, int fd)
{
	return submit(p, tag, path, fd, AT_FDCWD, 0);
}

int cr_hash_pool_submit_at(cr_hash_pool *p, uint64_t tag, int dirfd, const char *path,
                           size_t name_off)
{
	return submit(p, tag, path, -1, dirfd, name_off);
}

size_t cr_hash_pool_collect(cr_hash_pool *p, cr_hash_result *out, size_t max)
{
	size_t n = 0;
	uint64_t counter;

	if (read(p->efd, &counter, sizeof(counter)) < 0) {
		/* EAGAIN: nothing signalled; results may still be queued. */
	}
	pthread_mutex_lock(&p->lock);
	while (p->results && n < max) {
		pool_job *j = p->results;

		p->results = j->next;
		if (!p->results)
			p->results_tail = &p->results;
		out[n++] = j->r;
		p->finished--;
		free(j);
	}
	if (p->results) {
		uint64_t one = 1;

		/* More left: keep the eventfd readable. */
		if (write(p->efd, &one, sizeof(one)) < 0) {
		}
	}
	pthread_mutex_unlock(&p->lock);
	return n;
}

size_t cr_hash_pool_busy(cr_hash_pool *p)
{
	size_t n;

	pthread_mutex_lock(&p->lock);
	n = p->queued + p->running + p->finished;
	pthread_mutex_unlock(&p->lock);
	return n;
}

void cr_hash_pool_wait(cr_hash_pool *p, size_t min, int timeout_ms)
{
	struct timespec until;

	if (timeout_ms < 0)
		timeout_ms = 0;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&p->lock);
	p->want = min ? min : 1;
	while (p->finished < p->want && (p->queued || p->running) && !p->stopping) {
		if (pthread_cond_timedwait(&p->ready, &p->lock, &until) != 0)
			break; /* timed out */
	}
	p->want = 0;
	pthread_mutex_unlock(&p->lock);
}

int cr_hash_pool_eventfd(const cr_hash_pool *p)
{
	return p->efd;
}

unsigned cr_hash_pool_threads(const cr_hash_pool *p)
{
	return p->nthreads;
}

void cr_hash_pool_free(cr_hash_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_broadcast(&p->wake);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i].thread, NULL);
	while (p->jobs) {
		pool_job *j = p->jobs;

		p->jobs = j->next;
		if (j->fd >= 0)
			close(j->fd);
		free(j);
	}
	while (p->results) {
		pool_job *r = p->results;

		p->results = r->next;
		free(r);
	}
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->wake);
	pthread_cond_destroy(&p->ready);
	close(p->efd);
	free(p->threads);
	free(p);
}
