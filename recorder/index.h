/*
 * The SQLite index (index.sqlite, WAL): events, files, segments, Merkle
 * interior nodes and the log state, all derived from the log and rebuilt
 * from it on demand; plus two tables that are not derived and survive a
 * rebuild: the hash cache and the witness (every head this store wrote).
 * SQLite errors are translated here and nowhere else.
 */
#ifndef CR_RECORDER_INDEX_H
#define CR_RECORDER_INDEX_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cleanroom/hash.h"
#include "cleanroom/merkle.h"
#include "util/buf.h"

/* Interior nodes of at least this level are kept (subtrees of 256 leaves and up). */
#define CR_INDEX_NODE_LEVEL 8

typedef struct cr_index cr_index;

/* cr_index_open flags. */
#define CR_INDEX_MIGRATE 0x1 /* an index of an older schema may be migrated */

/*
 * Open the index at path, creating it when missing. An index of an older
 * schema is CR_ECORRUPT unless CR_INDEX_MIGRATE is given: then its derived
 * tables are dropped and made again in the current schema, empty (the hash
 * cache and witness are kept), and the caller must index the log again.
 * *old_version (may be NULL) gets the older schema version found, whether
 * migrated or refused, and 0 otherwise (a current index, or a new file). An
 * index of a newer schema is always refused (CR_ERROR: another build's).
 */
int cr_index_open(cr_index **out, const char *path, unsigned flags, int *old_version);
void cr_index_free(cr_index *idx);

int cr_index_begin(cr_index *idx);
int cr_index_commit(cr_index *idx);
void cr_index_rollback(cr_index *idx);

/* The log state the index reflects: size, compact tree and head commit ("" if none). */
int cr_index_state(cr_index *idx, cr_merkle_state *tree, char commit[41]);
int cr_index_set_state(cr_index *idx, const cr_merkle_state *tree, const char *commit);

/* Record one event (already encoded as leaf, parsed as ev) at leaf index i. */
int cr_index_add_event(cr_index *idx, uint64_t i, const json_t *ev,
                       const uint8_t leaf[CR_HASH_SIZE]);

/*
 * What the index keeps of an event besides its leaf hash, taken from the
 * event on any thread (no index needed) and added later. Start zeroed;
 * reusable; free with cr_index_entry_free().
 */
typedef struct cr_index_entry {
	cr_buf type;
	cr_buf path; /* raw bytes, when is_file */
	int is_file; /* names a file by path and SHA-256 */
	uint8_t sha256[CR_SHA256_SIZE];
	int has_size;
	int64_t size;
} cr_index_entry;
int cr_index_entry_set(cr_index_entry *e, const json_t *ev);
void cr_index_entry_free(cr_index_entry *e);
int cr_index_add_entry(cr_index *idx, uint64_t i, const cr_index_entry *e,
                       const uint8_t leaf[CR_HASH_SIZE]);
int cr_index_add_segment(cr_index *idx, uint64_t first, uint64_t count, const char *path,
                         const char *commit);
/* A cr_merkle_node_cb: keeps nodes of level >= CR_INDEX_NODE_LEVEL. Errors are kept in idx. */
void cr_index_node_cb(void *ctx, unsigned level, uint64_t pos, const uint8_t hash[CR_HASH_SIZE]);
/* The first error a node callback hit since the last call (then cleared), or 0. */
int cr_index_node_error(cr_index *idx);

/* A proof source reading leaf hashes and kept nodes. idx must outlive src. */
void cr_index_merkle_source(cr_index *idx, cr_merkle_source *src);
int cr_index_leaf(cr_index *idx, uint64_t i, uint8_t out[CR_HASH_SIZE]);
/* The segment holding leaf i: its first leaf and repository path. */
int cr_index_segment_of(cr_index *idx, uint64_t i, uint64_t *first, char path[64]);

/* Remove every derived row (for a rebuild); the cache and witness stay. */
int cr_index_clear_derived(cr_index *idx);

int cr_index_cache_get(cr_index *idx, const cr_file_id *id, uint8_t out[CR_SHA256_SIZE]);
int cr_index_cache_put(cr_index *idx, const cr_file_id *id, const uint8_t sha[CR_SHA256_SIZE]);

/* 1 when a file event with this path and SHA-256 exists, 0 when not, < 0 on error. */
int cr_index_file_recorded(cr_index *idx, const char *path, size_t len,
                           const uint8_t sha[CR_SHA256_SIZE]);

/*
 * A reader: a read-only connection of its own, used by one thread at a
 * time, for lookups off the writer's thread. It sees the index as last
 * committed (never the writer's open transaction), renewing its view every
 * few thousand statements. CR_ECORRUPT when the schema is not current.
 */
typedef struct cr_index_reader cr_index_reader;
int cr_index_reader_open(cr_index_reader **out, const char *path);
void cr_index_reader_free(cr_index_reader *r); /* NULL-safe */
int cr_index_reader_cache_get(cr_index_reader *r, const cr_file_id *id,
                              uint8_t out[CR_SHA256_SIZE]);
int cr_index_reader_file_recorded(cr_index_reader *r, const char *path, size_t len,
                                  const uint8_t sha[CR_SHA256_SIZE]);
/* 1 when the hash cache holds a file of device dev, 0 when not, < 0 on error. */
int cr_index_reader_cache_has_device(cr_index_reader *r, uint64_t dev);
/* 1 when a file event is recorded below folder dir (len bytes, no trailing '/'), 0 when not. */
int cr_index_reader_recorded_under(cr_index_reader *r, const char *dir, size_t len);

int cr_index_witness_add(cr_index *idx, uint64_t size, const uint8_t root[CR_HASH_SIZE],
                         const char *commit);
typedef int (*cr_index_witness_fn)(void *ctx, uint64_t size, const uint8_t root[CR_HASH_SIZE],
                                   const char *commit);
int cr_index_witness_foreach(cr_index *idx, cr_index_witness_fn fn, void *ctx);

/*
 * Leaf indexes of events naming a file by this path (raw bytes) or, when
 * sha is not NULL, this SHA-256; of the given event type unless type is NULL.
 */
int cr_index_find_files(cr_index *idx, const char *path, size_t path_len, const uint8_t *sha,
                        const char *type, int (*fn)(void *ctx, uint64_t i), void *ctx);

/* Counts for status. */
typedef struct cr_index_counts {
	uint64_t events;
	uint64_t segments;
	uint64_t files;
	uint64_t file_bytes;
	uint64_t cache_entries;
} cr_index_counts;
int cr_index_counts_get(cr_index *idx, cr_index_counts *out);
/* Per-type counts: fn(ctx, type, count) in type order. */
int cr_index_type_counts(cr_index *idx, int (*fn)(void *ctx, const char *type, uint64_t n),
                         void *ctx);

/* The underlying handle, for tests and the dump used to compare rebuilds. */
struct sqlite3 *cr_index_db(cr_index *idx);

#endif
