/*
 * Recording files by hand: every regular file under the given paths is
 * hashed (in parallel, through the hash cache) and appended as one "input"
 * event, in sorted path order, one segment per batch. A file whose path and
 * content are already recorded is counted as unchanged and not appended
 * again; a file that changes while it is read is reported, never recorded.
 */
#ifndef CLEANROOM_ADD_H
#define CLEANROOM_ADD_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cr_add_stats {
	uint64_t files;          /* regular files found */
	uint64_t bytes;          /* the total size of those that were read or found in the cache */
	uint64_t recorded;       /* input events appended */
	uint64_t unchanged;      /* already recorded with this path and content */
	uint64_t hashed_files;   /* files whose bytes were hashed */
	uint64_t hashed_bytes;
	uint64_t cached_files;   /* hashes taken from the cache */
	uint64_t skipped;        /* symlinks and special files inside folders */
	uint64_t failed;         /* unreadable or changed while read */
	uint64_t shards;         /* of the recorded: archives given a member manifest */
} cr_add_stats;

/* A file that could not be recorded, or was skipped: path and why. */
typedef void (*cr_add_problem_fn)(void *ctx, const char *path, const char *what);
/* Progress after each batch. */
typedef void (*cr_add_progress_fn)(void *ctx, const cr_add_stats *so_far);

typedef struct cr_add_options {
	unsigned threads;             /* 0: all online CPUs */
	int nice;                     /* lower the hashing threads' priority by this much, so
	                                 that the thread writing the log keeps up (0: none) */
	size_t batch;                 /* files per segment; 0: 4096 */
	cr_add_problem_fn problem;
	cr_add_progress_fn progress;
	void *ctx;
} cr_add_options;

/*
 * Add paths (files or folders) to the store (open for writing). Problems
 * with single files are reported through opts->problem and counted in
 * stats->failed; the call fails only when the store cannot be written or a
 * named path does not exist (then nothing from that path was added).
 */
int cr_add_paths(cr_store *store, const char *const *paths, size_t n,
                 const cr_add_options *opts, cr_add_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
