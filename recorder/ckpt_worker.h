/*
 * The recorder's reader workers. A checkpoint worker is one thread that
 * reads each checkpoint once for its SHA-256, tensor manifest and delta from
 * the previous checkpoint of the run, in the order checkpoints are
 * submitted. A shard worker (threads > 1 allowed, no order) reads data files
 * that are archives once for their SHA-256 and member manifest.
 *
 * Deltas need the previous checkpoint's float tensors even after its file
 * was overwritten in place (torch.save to the same path truncates the same
 * inode), so the worker keeps them in an unlinked temporary "base" file in
 * the store's folder, written during the same read.
 */
#ifndef CR_RECORDER_CKPT_WORKER_H
#define CR_RECORDER_CKPT_WORKER_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cleanroom/hash.h"

typedef struct cr_ckpt_worker cr_ckpt_worker;

typedef struct cr_ckpt_result {
	uint64_t tag;              /* as submitted */
	int rc;                    /* 0, CR_HASH_CHANGED, or an error reading the file */
	uint8_t sha256[CR_SHA256_SIZE];
	cr_file_id id;             /* identity as read */
	json_t *manifest;          /* the tensor manifest, or NULL (then manifest_error) */
	uint8_t manifest_sha256[CR_SHA256_SIZE];
	json_t *delta;             /* delta from the checkpoint submitted as base_tag, or NULL */
	uint64_t base_tag;
	char manifest_error[256];  /* why there is no manifest ("" when there is) */
	int manifest_dropped;      /* made but too large for an event: only its digest is kept */
	json_t *shard;             /* shard jobs: the member manifest, or NULL */
	uint8_t shard_sha256[CR_SHA256_SIZE];
	char error[256];           /* message when rc < 0 */
} cr_ckpt_result;

/*
 * tmpdir holds the base files (unlinked); deltas are off when want_delta is
 * 0. threads must be 1 for checkpoints (deltas follow submission order).
 */
int cr_ckpt_worker_new(cr_ckpt_worker **out, const char *tmpdir, int want_delta, unsigned threads);
/* Queue a checkpoint open for reading at fd (consumed); path names it. */
int cr_ckpt_worker_submit(cr_ckpt_worker *w, uint64_t tag, const char *path, int fd);
/* Queue a data file that is an archive (fd consumed, or path opened when fd < 0). */
int cr_ckpt_worker_submit_shard(cr_ckpt_worker *w, uint64_t tag, const char *path, int fd);

/* The workers lower their priority from their next job on (as cr_hash_pool_set_nice). */
void cr_ckpt_worker_set_nice(cr_ckpt_worker *w, int nice);
/*
 * Whether a manifest's JSON is over what an event may carry (half the
 * event limit). When it is, *j is released and set to NULL and why says so
 * (the caller keeps the manifest's digest).
 */
int cr_manifest_too_large(json_t **j, const char *what, size_t count, char *why, size_t why_len);
/* Whether a data file's name says it is an archive worth a member manifest. */
int cr_shard_name(const char *path, size_t len);
/* Move up to max finished results to out (never blocks); the caller owns their JSON. */
size_t cr_ckpt_worker_collect(cr_ckpt_worker *w, cr_ckpt_result *out, size_t max);
/* Jobs queued, running or finished but not collected. */
size_t cr_ckpt_worker_busy(cr_ckpt_worker *w);
/* Readable when results may be waiting. */
int cr_ckpt_worker_eventfd(const cr_ckpt_worker *w);
/* Finish the jobs in hand, stop, free. NULL-safe. */
void cr_ckpt_worker_free(cr_ckpt_worker *w);
/* Release a collected result's JSON. */
void cr_ckpt_result_clear(cr_ckpt_result *r);

#endif
