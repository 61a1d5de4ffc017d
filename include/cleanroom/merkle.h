/*
 * RFC 9162 Merkle trees over SHA-256.
 *
 *   leaf hash  = SHA-256(0x00 || leaf bytes)
 *   node hash  = SHA-256(0x01 || left || right)
 *   empty root = SHA-256("")
 *
 * A "perfect subtree" (level, index) covers leaves
 * [index << level, (index + 1) << level); level 0 is a single leaf hash.
 * Proof generation asks a cr_merkle_source for such subtree hashes, so the
 * caller decides where they come from (memory, the SQLite index, ...).
 */
#ifndef CLEANROOM_MERKLE_H
#define CLEANROOM_MERKLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CR_HASH_SIZE 32
/*
 * A proof for a tree of at most 2^64 - 1 leaves has at most this many
 * hashes: 64 for inclusion; 65 for consistency (64 siblings plus the old
 * tree's last subtree, e.g. from 2^63 + 1 to 2^64 - 1 leaves).
 */
#define CR_MERKLE_MAX_PATH 65

void cr_merkle_leaf_hash(uint8_t out[CR_HASH_SIZE], const void *data, size_t len);
void cr_merkle_node_hash(uint8_t out[CR_HASH_SIZE], const uint8_t left[CR_HASH_SIZE],
                         const uint8_t right[CR_HASH_SIZE]);
void cr_merkle_empty_root(uint8_t out[CR_HASH_SIZE]);

/*
 * Called when an append completes a perfect subtree at level >= 1.
 * Lets an index keep interior nodes so later proofs need O(log n) reads.
 */
typedef void (*cr_merkle_node_cb)(void *ctx, unsigned level, uint64_t index,
                                  const uint8_t hash[CR_HASH_SIZE]);

/*
 * The compact append-only state of a tree: one hash per set bit of size
 * (the roots of the perfect subtrees the leaves decompose into), so
 * O(log n) memory. frontier[k] is meaningful only when bit k of size is set.
 * Plain data: copy it, zero it (cr_merkle_state_init) to start empty.
 */
typedef struct cr_merkle_state {
	uint64_t size;
	uint8_t frontier[64][CR_HASH_SIZE];
} cr_merkle_state;

void cr_merkle_state_init(cr_merkle_state *st);

/* Append one leaf hash. on_node may be NULL. CR_ERANGE when the tree is full. */
int cr_merkle_state_append(cr_merkle_state *st, const uint8_t leaf_hash[CR_HASH_SIZE],
                           cr_merkle_node_cb on_node, void *ctx);

/* The root of the current tree (the empty root when size is 0). */
void cr_merkle_state_root(const cr_merkle_state *st, uint8_t out[CR_HASH_SIZE]);

/*
 * Serialise the set frontier hashes (largest subtree first) to out, which
 * must hold 64 * 32 bytes; *out_len receives popcount(size) * 32.
 * cr_merkle_state_load() is the inverse; CR_EINVAL if len does not match size.
 */
void cr_merkle_state_save(const cr_merkle_state *st, uint8_t *out, size_t *out_len);
int cr_merkle_state_load(cr_merkle_state *st, uint64_t size, const uint8_t *data,
                         size_t len);

/* Supplies hashes of perfect subtrees. Returns 0 or a negative CR_E* code. */
typedef struct cr_merkle_source {
	int (*subtree)(void *ctx, unsigned level, uint64_t index, uint8_t out[CR_HASH_SIZE]);
	void *ctx;
} cr_merkle_source;

/* A source over n leaf hashes held in memory (borrowed; must outlive src). */
typedef struct cr_merkle_memory {
	const uint8_t (*leaves)[CR_HASH_SIZE];
	uint64_t n;
} cr_merkle_memory;
void cr_merkle_memory_source(cr_merkle_source *src, cr_merkle_memory *mem);

/* MTH of leaves [start, start + n) as RFC 9162 defines it (n >= 1). */
int cr_merkle_range_root(const cr_merkle_source *src, uint64_t start, uint64_t n,
                         uint8_t out[CR_HASH_SIZE]);

/* MTH(D[0:size]); the empty root when size is 0. */
int cr_merkle_root(const cr_merkle_source *src, uint64_t size, uint8_t out[CR_HASH_SIZE]);

/*
 * Inclusion proof PATH(index, D[0:size]) in RFC order (leaf level first).
 * path must hold CR_MERKLE_MAX_PATH hashes. CR_ERANGE when index >= size.
 */
int cr_merkle_inclusion_proof(const cr_merkle_source *src, uint64_t index, uint64_t size,
                              uint8_t path[][CR_HASH_SIZE], size_t *path_len);

/*
 * Consistency proof PROOF(size1, D[0:size2]) in RFC order. path must hold
 * CR_MERKLE_MAX_PATH hashes. Empty when size1 == size2 or size1 == 0 (but
 * cr_merkle_verify_consistency rejects size1 == 0: the empty tree needs no
 * proof). CR_ERANGE when size1 > size2.
 */
int cr_merkle_consistency_proof(const cr_merkle_source *src, uint64_t size1, uint64_t size2,
                                uint8_t path[][CR_HASH_SIZE], size_t *path_len);

/*
 * RFC 9162 section 2.1.3.2. 0 when the proof shows leaf_hash at index in
 * the tree of size with the given root, CR_EVERIFY otherwise (with a message).
 */
int cr_merkle_verify_inclusion(const uint8_t leaf_hash[CR_HASH_SIZE], uint64_t index,
                               uint64_t size, const uint8_t path[][CR_HASH_SIZE],
                               size_t path_len, const uint8_t root[CR_HASH_SIZE]);

/*
 * RFC 9162 section 2.1.4.2. 0 when the proof shows the tree (size1, root1)
 * is a prefix of (size2, root2), CR_EVERIFY otherwise. size1 == size2 needs
 * an empty proof and equal roots. size1 == 0 is always CR_EVERIFY, as in
 * transparency-dev/merkle: every tree extends the empty one, so a caller
 * holding no old head has nothing to check and should not call this.
 */
int cr_merkle_verify_consistency(uint64_t size1, uint64_t size2,
                                 const uint8_t root1[CR_HASH_SIZE],
                                 const uint8_t root2[CR_HASH_SIZE],
                                 const uint8_t path[][CR_HASH_SIZE], size_t path_len);

#ifdef __cplusplus
}
#endif
#endif
