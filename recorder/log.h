/*
 * The git-backed append-only log: a bare repository (log.git) whose branch
 * refs/heads/main is a linear chain of commits, each adding exactly one
 * segment file (events joined by "\n") and never touching an existing
 * path. Each commit message carries trailers with the segment, its first
 * leaf index and count, and the tree size and root after it.
 * docs/formats/git-log.md is the reference for this layout.
 */
#ifndef CR_RECORDER_LOG_H
#define CR_RECORDER_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/merkle.h"

#define CR_LOG_BRANCH "refs/heads/main"
#define CR_LOG_OID_HEX 41 /* a SHA-1 object id in hex plus NUL */
#define CR_LOG_PATH_MAX 64

typedef struct cr_log cr_log;

/* What a commit's message says about the log after it. */
typedef struct cr_log_head {
	int empty;                    /* no commit yet: size 0, empty root */
	char commit[CR_LOG_OID_HEX];  /* "" when empty */
	uint64_t size;
	uint8_t root[CR_HASH_SIZE];
} cr_log_head;

/* One segment as a commit added it. Borrowed for the duration of a callback. */
typedef struct cr_log_segment {
	const char *commit;
	const char *path;
	uint64_t first;
	uint64_t count;
	uint64_t tree_size;            /* as the commit message records it */
	uint8_t root[CR_HASH_SIZE];    /* as the commit message records it */
	const char *data;              /* the segment's bytes */
	size_t len;
} cr_log_segment;

typedef int (*cr_log_segment_fn)(void *ctx, const cr_log_segment *seg);

/* Create a bare repository at git_dir with HEAD on refs/heads/main. */
int cr_log_init(const char *git_dir);

int cr_log_open(cr_log **out, const char *git_dir);
void cr_log_free(cr_log *log);

/* The head of the branch. CR_ECORRUPT when its message lacks the trailers. */
int cr_log_head_read(cr_log *log, cr_log_head *out);

/* The repository path of the segment starting at leaf first. */
void cr_log_segment_path(char out[CR_LOG_PATH_MAX], uint64_t first);

/*
 * Commit one segment: data holds count events, each followed by "\n",
 * starting at leaf `first` (which must equal expected->size). The branch is
 * moved only if it still points at expected->commit (compare-and-swap).
 * *out receives the new head.
 */
int cr_log_append(cr_log *log, const cr_log_head *expected, uint64_t first, uint64_t count,
                  const char *data, size_t len, const uint8_t new_root[CR_HASH_SIZE],
                  cr_log_head *out);

/*
 * Call fn for each segment, oldest first, following the first-parent chain
 * from the head and the path each message names; segments wholly below
 * leaf `from` are skipped without reading their data. A non-zero return
 * from fn stops the walk and is returned.
 */
int cr_log_walk(cr_log *log, uint64_t from, cr_log_segment_fn fn, void *ctx);

/* Problems found by cr_log_check: where (commit id or path) and what. */
typedef void (*cr_log_problem_fn)(void *ctx, const char *where, const char *what);
/* Each leaf as the check replays it (index, leaf bytes, leaf hash). */
typedef int (*cr_log_leaf_fn)(void *ctx, uint64_t index, const char *leaf, size_t len,
                              const uint8_t hash[CR_HASH_SIZE]);

typedef struct cr_log_check_result {
	uint64_t commits;
	uint64_t size;                 /* leaves replayed */
	uint8_t root[CR_HASH_SIZE];    /* root over the replayed leaves */
	uint64_t problems;
} cr_log_check_result;

/*
 * Replay the whole history and report every departure from append-only:
 * merge or extra-parent commits, commits that modify, delete or add
 * anything but the next segment, segments that do not start where the
 * previous one ended, lines that are not canonical events, and recorded
 * sizes/roots that the leaves do not give. seen(ctx, size, commit) is asked
 * for every commit (may be NULL). Returns 0 when clean, CR_EVERIFY when a
 * problem was reported, other codes when the repository cannot be read.
 */
int cr_log_check(cr_log *log, cr_log_problem_fn problem, cr_log_leaf_fn leaf, void *ctx,
                 cr_log_check_result *out);

/* Read the segment at path in the head commit; *out is malloc'ed (free it). */
int cr_log_read_segment(cr_log *log, const char *path, char **out, size_t *len);

/*
 * Called after a commit passed every check: the segment it added and the
 * tree after it. A non-zero return stops the walk and is returned.
 */
typedef int (*cr_log_commit_fn)(void *ctx, const char *commit, const char *path, uint64_t first,
                                uint64_t count, const cr_merkle_state *tree);

/*
 * cr_log_check over the commits after `after` (all when NULL or ""),
 * starting from the tree state *tree (updated). done may be NULL.
 */
int cr_log_check_range(cr_log *log, const char *after, cr_merkle_state *tree,
                       cr_log_problem_fn problem, cr_log_leaf_fn leaf, cr_log_commit_fn done,
                       void *ctx, cr_log_check_result *out);

/* Look up the tree size and root recorded in the commit with this id. */
int cr_log_commit_state(cr_log *log, const char *commit, uint64_t *size,
                        uint8_t root[CR_HASH_SIZE]);

/* Nonzero when `ancestor` is the head or reachable from it by first parents. */
int cr_log_contains(cr_log *log, const char *ancestor);

#endif
