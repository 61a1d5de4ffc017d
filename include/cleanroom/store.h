/*
 * The store: a project's .cleanroom/ folder holding log.git (the source of
 * truth), index.sqlite (derived, rebuildable) and a writer lock.
 *
 * Events are appended into a pending segment; cr_store_flush() commits it
 * as one git commit, then updates the index. A crash between the two leaves
 * the index behind, and the next open catches it up from the log.
 */
#ifndef CLEANROOM_STORE_H
#define CLEANROOM_STORE_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cleanroom/hash.h"
#include "cleanroom/merkle.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CR_STORE_DEFAULT_PATH ".cleanroom"

/* Open flags. */
#define CR_STORE_WRITE 0x1    /* take the writer lock; appends allowed */
#define CR_STORE_RAW 0x2      /* do not reconcile the index with the log (check, rebuild) */

/* A pending segment is committed once it holds this many bytes or events. */
#define CR_STORE_SEGMENT_BYTES (8u * 1024 * 1024)
#define CR_STORE_SEGMENT_EVENTS 65536u

struct timespec;
typedef struct cr_store cr_store;

/* The committed state of the log. */
typedef struct cr_store_state {
	uint64_t size;
	uint8_t root[CR_HASH_SIZE];
	char commit[41]; /* head commit id, "" when empty */
} cr_store_state;

/* Create a store at path (the folder may exist but must not hold a store: CR_EEXISTS). */
int cr_store_init(const char *path);

/*
 * Open the store at path. CR_ENOTFOUND when there is none, CR_ELOCKED when
 * CR_STORE_WRITE is asked and another process writes, CR_ECORRUPT when the
 * index and log disagree in a way a catch-up cannot mend (unless
 * CR_STORE_RAW). *out is the caller's: cr_store_free() it.
 */
int cr_store_open(cr_store **out, const char *path, unsigned flags);

/* Free the store; pending (unflushed) events are discarded. NULL-safe. */
void cr_store_free(cr_store *store);

const char *cr_store_path(const cr_store *store);

/*
 * What the open did on its own that the user should hear about (today: an
 * index of an older schema rebuilt from the log), or NULL. Borrowed while
 * store lives. Said once: the next open finds nothing to do.
 */
const char *cr_store_notice(const cr_store *store);
void cr_store_state_get(const cr_store *store, cr_store_state *out);

/*
 * Append one event to the pending segment; *out_index (may be NULL) gets its
 * leaf index. Flushes on its own when the segment is full.
 */
int cr_store_append(cr_store *store, const json_t *ev, uint64_t *out_index);

/* Commit the pending segment, if any, as one git commit. */
int cr_store_flush(cr_store *store);

/* Number of appended events not yet flushed. */
uint64_t cr_store_pending(const cr_store *store);

/*
 * The hash cache (keyed by file identity). CR_ENOTFOUND on a miss. In a
 * store open for writing, these and cr_store_file_recorded() run inside the
 * pending segment's index transaction (begun when none is open), which the
 * next cr_store_flush() commits, with or without events.
 */
int cr_store_cache_get(cr_store *store, const cr_file_id *id, uint8_t sha[CR_SHA256_SIZE]);
int cr_store_cache_put(cr_store *store, const cr_file_id *id, const uint8_t sha[CR_SHA256_SIZE]);

/* 1 when a file event with this path and SHA-256 is recorded, 0 when not, < 0 on error. */
int cr_store_file_recorded(cr_store *store, const char *path, size_t len,
                           const uint8_t sha[CR_SHA256_SIZE]);

/*
 * A reader of the store's hash cache and recorded files for another thread
 * (one reader per thread): a read-only view of the index as last committed
 * (it never sees the writer's pending segment), so that lookups can run
 * beside the writer. Both lookups answer as cr_store_cache_get() and
 * cr_store_file_recorded() do. *out is the caller's: free it with
 * cr_store_reader_free() before the store.
 */
typedef struct cr_store_reader cr_store_reader;
int cr_store_reader_open(cr_store *store, cr_store_reader **out);
void cr_store_reader_free(cr_store_reader *reader); /* NULL-safe */
int cr_store_reader_cache_get(cr_store_reader *reader, const cr_file_id *id,
                              uint8_t sha[CR_SHA256_SIZE]);
int cr_store_reader_file_recorded(cr_store_reader *reader, const char *path, size_t len,
                                  const uint8_t sha[CR_SHA256_SIZE]);
/*
 * Whether a lookup can hit at all, to skip many that cannot: 1 when the
 * hash cache holds any file of device dev; 1 when any file event is
 * recorded below folder dir (len bytes, no trailing '/'); 0 when not, < 0
 * on an error.
 */
int cr_store_reader_cache_has_device(cr_store_reader *reader, uint64_t dev);
int cr_store_reader_recorded_under(cr_store_reader *reader, const char *dir, size_t len);

/*
 * An event prepared ahead of its append, on any thread: encoded, its leaf
 * hashed, and what the index keeps of it taken out, so that appending it
 * is only the writing. A prepared event is reused by preparing it again;
 * it holds no reference to the event.
 */
typedef struct cr_store_prepared cr_store_prepared;
int cr_store_prepared_new(cr_store_prepared **out);
void cr_store_prepared_free(cr_store_prepared *p); /* NULL-safe */
/* Prepare ev into p (thread-safe; no store needed). */
int cr_store_prepare(cr_store_prepared *p, const json_t *ev);
/*
 * Prepare the input event `cleanroom add` records for a file: {"path" (or
 * "path_b64" for a path that is not UTF-8), "sha256", "size", "time",
 * "type":"input", "v", "via"}, the same bytes and index entry as building it
 * with cr_event_* and cr_store_prepare() give (the store's tests hold the two
 * to that), at a fraction of the cost: it is written straight to bytes.
 */
int cr_store_prepare_input(cr_store_prepared *p, const char *path, size_t len,
                           const uint8_t sha[CR_SHA256_SIZE], uint64_t size,
                           const struct timespec *time, const char *via);
/* cr_store_append() of the event p was prepared from; p is empty afterwards. */
int cr_store_append_prepared(cr_store *store, cr_store_prepared *p, uint64_t *out_index);

/* Proofs against the committed log; size 0 means the current size. */
int cr_store_leaf_hash(cr_store *store, uint64_t index, uint8_t out[CR_HASH_SIZE]);
int cr_store_root_at(cr_store *store, uint64_t size, uint8_t out[CR_HASH_SIZE]);
int cr_store_inclusion_proof(cr_store *store, uint64_t index, uint64_t size,
                             uint8_t path[][CR_HASH_SIZE], size_t *path_len);
int cr_store_consistency_proof(cr_store *store, uint64_t size1, uint64_t size2,
                               uint8_t path[][CR_HASH_SIZE], size_t *path_len);

/* Each committed event from leaf `from` on, in order, as its exact leaf bytes. */
typedef int (*cr_store_event_fn)(void *ctx, uint64_t index, const char *leaf, size_t len);
int cr_store_foreach_event(cr_store *store, uint64_t from, cr_store_event_fn fn, void *ctx);

/* The exact leaf bytes of event `index`; *out is malloc'ed and NUL-terminated (free it). */
int cr_store_event_get(cr_store *store, uint64_t index, char **out, size_t *len);

/*
 * Leaf indexes, in order, of events naming a file whose path is `key`, or
 * whose SHA-256 is `key` when it is 64 hex digits; only events of `type`
 * unless type is NULL.
 */
int cr_store_find_files(cr_store *store, const char *key, const char *type,
                        int (*fn)(void *ctx, uint64_t index), void *ctx);

/* Problems found by a check: where and what. */
typedef void (*cr_store_problem_fn)(void *ctx, const char *where, const char *what);

typedef struct cr_store_check_result {
	uint64_t commits;
	uint64_t size;
	uint8_t root[CR_HASH_SIZE];
	uint64_t problems;
} cr_store_check_result;

/*
 * Check the whole store: the log is append-only and each commit's recorded
 * size and root match its leaves; every head this store wrote is still in
 * the history with the same root; the index matches the log leaf by leaf.
 * 0 when clean, CR_EVERIFY after reporting problems, other codes when the
 * store cannot be read. Open the store with CR_STORE_RAW for this.
 */
int cr_store_check(cr_store *store, cr_store_problem_fn problem, void *ctx,
                   cr_store_check_result *out);

/* Rebuild every derived table of the index from the log (needs CR_STORE_WRITE). */
int cr_store_rebuild_index(cr_store *store);

typedef struct cr_store_counts {
	uint64_t events;
	uint64_t segments;
	uint64_t files;
	uint64_t file_bytes;
	uint64_t cache_entries;
} cr_store_counts;
int cr_store_counts_get(cr_store *store, cr_store_counts *out);
int cr_store_type_counts(cr_store *store, int (*fn)(void *ctx, const char *type, uint64_t n),
                         void *ctx);

#ifdef __cplusplus
}
#endif
#endif
