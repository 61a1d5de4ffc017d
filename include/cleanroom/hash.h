/*
 * SHA-256 of files: streamed in large blocks through OpenSSL EVP, many
 * files at once on a pool of threads. A file is identified for the hash
 * cache by (device, inode, size, mtime ns, ctime ns); a file whose identity
 * changes while it is read is reported as changed, never given a hash.
 */
#ifndef CLEANROOM_HASH_H
#define CLEANROOM_HASH_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CR_SHA256_SIZE 32

/* What the hash cache is keyed by. Two equal ids mean an unchanged file. */
typedef struct cr_file_id {
	uint64_t dev;
	uint64_t ino;
	uint64_t size;
	int64_t mtime_ns;
	int64_t ctime_ns;
} cr_file_id;

/* Fill id from an open descriptor (fstat). CR_EIO on failure. */
int cr_file_id_from_fd(cr_file_id *id, int fd);
int cr_file_id_equal(const cr_file_id *a, const cr_file_id *b);

struct stat;
/* Fill id from stat results. */
void cr_file_id_from_stat(cr_file_id *id, const struct stat *st);

/*
 * A file modified within this long of being hashed could change again
 * without its mtime/ctime moving ("racy git"); its hash is not cached.
 * Well above the kernel's coarse timestamp tick.
 */
#define CR_RACY_NS 100000000LL
/* Nonzero when id was modified less than CR_RACY_NS ago: do not cache its hash. */
int cr_file_id_racy(const cr_file_id *id);

/* One-shot SHA-256 of a memory block. */
void cr_sha256(uint8_t out[CR_SHA256_SIZE], const void *data, size_t len);

/*
 * Hash everything readable from fd from its current offset to EOF, in large
 * blocks. *out_len (may be NULL) receives the byte count. CR_EIO on a read
 * error, CR_ECRYPTO on an OpenSSL failure.
 */
int cr_hash_fd(int fd, uint8_t out[CR_SHA256_SIZE], uint64_t *out_len);

/* Result code of a hash job whose file changed while it was being read. */
#define CR_HASH_CHANGED 1

/*
 * Open path (regular files only, O_NOFOLLOW not used: the caller decides about
 * links), hash it, and fill id with its identity as it was read. Returns 0,
 * CR_HASH_CHANGED (positive) when size/mtime/ctime changed during the read or
 * the bytes read differ from the size, or a negative CR_E* code.
 */
int cr_hash_file(const char *path, uint8_t out[CR_SHA256_SIZE], cr_file_id *id);

typedef struct cr_hash_job {
	const char *path;              /* in: borrowed */
	uint8_t sha256[CR_SHA256_SIZE]; /* out */
	cr_file_id id;                 /* out: identity as read */
	int rc;                        /* out: as cr_hash_file */
	char *error;                   /* out: message when rc < 0, free() it */
} cr_hash_job;

/* Called from worker threads, serialised by the pool; may be NULL. */
typedef void (*cr_hash_progress_fn)(void *ctx, size_t done, size_t total, uint64_t bytes);

/*
 * Hash n jobs on `threads` threads (0 = number of online CPUs). Each job's
 * rc/error says how it went; the call itself fails only when threads cannot
 * be started (then no job has been run).
 */
int cr_hash_many(cr_hash_job *jobs, size_t n, unsigned threads,
                 cr_hash_progress_fn progress, void *ctx);

/*
 * An asynchronous pool for the recorder: submit files by path or by open
 * descriptor, collect results when the pool's eventfd is readable.
 */
typedef struct cr_hash_pool cr_hash_pool;

typedef struct cr_hash_result {
	uint64_t tag;                   /* as submitted */
	int rc;                         /* as cr_hash_file */
	uint8_t sha256[CR_SHA256_SIZE];
	cr_file_id id;                  /* identity as read */
	char error[256];                /* message when rc < 0 */
	int cached;                     /* the known hook gave sha256; the file was not read */
} cr_hash_result;

int cr_hash_pool_new(cr_hash_pool **out, unsigned threads);

/*
 * Work a pool's workers do around each job besides hashing, so that it
 * runs beside the owner's thread instead of on it. The hooks are called on
 * the worker threads, concurrently; worker (0 .. threads-1) tells which
 * thread calls, for state kept per thread. Any member may be 0/NULL.
 */
typedef struct cr_hash_hooks {
	/*
	 * After the file is opened and identified (fstat), before it is read:
	 * return 1 with sha filled when the content of this identity is known
	 * (the file is then not read, and the result has cached set), 0 to hash
	 * it, or a negative CR_E* code with a message to fail the job.
	 */
	int (*known)(void *ctx, unsigned worker, uint64_t tag, const char *path,
	             const cr_file_id *id, uint8_t sha[CR_SHA256_SIZE]);
	/* With every result, before the owner can collect it; path as submitted. */
	void (*done)(void *ctx, unsigned worker, const char *path, cr_hash_result *result);
	void *ctx;
	int open_flags; /* O_NOFOLLOW (the only one honoured): never follow a link at path */
} cr_hash_hooks;

/* cr_hash_pool_new() with hooks (copied; NULL: none). */
int cr_hash_pool_new_with(cr_hash_pool **out, unsigned threads, const cr_hash_hooks *hooks);
/* The number of worker threads running. */
unsigned cr_hash_pool_threads(const cr_hash_pool *pool);
/*
 * Queue a job. With fd >= 0 the pool hashes that descriptor (a regular
 * file opened for reading; hashed from offset 0) and closes it; path then
 * only names it in messages. Otherwise path is opened.
 */
int cr_hash_pool_submit(cr_hash_pool *pool, uint64_t tag, const char *path, int fd);
/*
 * Queue a job for the file named path + name_off in the folder open at
 * dirfd (openat: no lookup of the folders above it); path names it in
 * messages and hooks. dirfd must stay open until the result is collected.
 */
int cr_hash_pool_submit_at(cr_hash_pool *pool, uint64_t tag, int dirfd, const char *path,
                           size_t name_off);
/*
 * Have the workers lower their own threads' priority from their next job
 * on: to nice value -20..19, or with 20 to SCHED_IDLE (they run only on a
 * CPU nothing else wants). The rest of the process is left as it is. Lowers
 * only: raising a priority back needs privilege.
 */
void cr_hash_pool_set_nice(cr_hash_pool *pool, int nice);
/* Move up to max finished results to out (never blocks). */
size_t cr_hash_pool_collect(cr_hash_pool *pool, cr_hash_result *out, size_t max);
/* Jobs queued, running or finished but not collected. */
size_t cr_hash_pool_busy(cr_hash_pool *pool);
/*
 * Block until at least min results wait to be collected, or no job is
 * queued or running, or timeout_ms has passed: an owner that keeps up with
 * the pool takes its results in groups rather than one wake-up each. One
 * thread waits at a time (the pool's owner).
 */
void cr_hash_pool_wait(cr_hash_pool *pool, size_t min, int timeout_ms);
/*
 * Readable when results may be waiting: it is signalled when results appear
 * and re-armed by a collect that leaves some, so collect until it returns 0.
 */
int cr_hash_pool_eventfd(const cr_hash_pool *pool);
/*
 * Stop the workers and free the pool. NULL-safe. Jobs being hashed are
 * finished, jobs not started are dropped (their descriptors closed), and
 * results not collected are discarded.
 */
void cr_hash_pool_free(cr_hash_pool *pool);

/* Online CPUs, at least 1. */
unsigned cr_hash_default_threads(void);

#ifdef __cplusplus
}
#endif
#endif
