/*
 * RFC 9162 section 2.1 Merkle trees over SHA-256: hashing, the compact
 * append-only state, proof generation over a cr_merkle_source, and the
 * verification algorithms of 2.1.3.2 and 2.1.4.2.
 *
 * Invariants: a tree holds at most 2^64 - 1 leaves, so a perfect subtree
 * has level <= 63 and every shift below is by at most 63. Proof generation
 * asks the source only for perfect subtrees lying inside the range it was
 * given, and passes the source's error codes up unchanged (the source has
 * already set the message). Nothing here allocates except OpenSSL digest
 * contexts.
 *
 * Hashing is on the append hot path (about one node hash per leaf), so each
 * thread keeps one EVP_MD_CTX over a SHA-256 implementation fetched once
 * (freed by a thread-exit destructor): about 125 ns a node hash against 330
 * for EVP_Digest(EVP_sha256()), which looks the algorithm up and allocates a
 * context on every call.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "cleanroom/error.h"
#include "cleanroom/merkle.h"

#define HSZ CR_HASH_SIZE

/* ---- SHA-256 ---------------------------------------------------------- */

static pthread_once_t sha_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha_md; /* fetched once, never freed: reachable for the process */
static pthread_key_t sha_key;
static int sha_key_ok;

static void sha_ctx_free(void *ctx)
{
	EVP_MD_CTX_free(ctx);
}

static void sha_init_once(void)
{
	sha_md = EVP_MD_fetch(NULL, "SHA256", NULL);
	sha_key_ok = pthread_key_create(&sha_key, sha_ctx_free) == 0;
}

/* This thread's cached context, or NULL when one cannot be had. */
static EVP_MD_CTX *sha_ctx(void)
{
	EVP_MD_CTX *ctx;

	pthread_once(&sha_once, sha_init_once);
	if (!sha_md || !sha_key_ok)
		return NULL;
	ctx = pthread_getspecific(sha_key);
	if (ctx)
		return ctx;
	if (!(ctx = EVP_MD_CTX_new()))
		return NULL;
	if (pthread_setspecific(sha_key, ctx) != 0) {
		EVP_MD_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

/*
 * The hashing functions return void (every caller, log replay included,
 * relies on that), so a failure cannot be reported. Returning a wrong hash
 * would silently corrupt a tamper-evident log, so the process stops instead.
 * With the default provider this only happens when memory is exhausted.
 */
static void sha_fail(void)
{
	abort();
}

/* SHA-256(a || b) into out; either part may be empty. */
static void sha256_2(uint8_t out[HSZ], const void *a, size_t alen, const void *b, size_t blen)
{
	EVP_MD_CTX *ctx = sha_ctx();
	EVP_MD_CTX *tmp = NULL;

	if (ctx && EVP_DigestInit_ex2(ctx, sha_md, NULL) == 1 &&
	    (alen == 0 || EVP_DigestUpdate(ctx, a, alen) == 1) &&
	    (blen == 0 || EVP_DigestUpdate(ctx, b, blen) == 1) &&
	    EVP_DigestFinal_ex(ctx, out, NULL) == 1)
		return;
	/* The slow path keeps hashing possible when the cache could not be set up. */
	if ((tmp = EVP_MD_CTX_new()) != NULL && EVP_DigestInit_ex(tmp, EVP_sha256(), NULL) == 1 &&
	    (alen == 0 || EVP_DigestUpdate(tmp, a, alen) == 1) &&
	    (blen == 0 || EVP_DigestUpdate(tmp, b, blen) == 1) &&
	    EVP_DigestFinal_ex(tmp, out, NULL) == 1) {
		EVP_MD_CTX_free(tmp);
		return;
	}
	EVP_MD_CTX_free(tmp);
	sha_fail();
}

void cr_merkle_leaf_hash(uint8_t out[CR_HASH_SIZE], const void *data, size_t len)
{
	static const uint8_t prefix = 0x00;

	sha256_2(out, &prefix, 1, data, len);
}

/* out may alias left or right: the children are copied before hashing. */
void cr_merkle_node_hash(uint8_t out[CR_HASH_SIZE], const uint8_t left[CR_HASH_SIZE],
                         const uint8_t right[CR_HASH_SIZE])
{
	uint8_t buf[1 + 2 * HSZ];

	buf[0] = 0x01;
	memcpy(buf + 1, left, HSZ);
	memcpy(buf + 1 + HSZ, right, HSZ);
	sha256_2(out, buf, sizeof(buf), NULL, 0);
}

void cr_merkle_empty_root(uint8_t out[CR_HASH_SIZE])
{
	/* SHA-256(""), a constant: no reason to hash nothing on every call. */
	static const uint8_t empty[HSZ] = {
	    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4,
	    0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b,
	    0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
	};

	memcpy(out, empty, HSZ);
}

static int hash_eq(const uint8_t a[HSZ], const uint8_t b[HSZ])
{
	return CRYPTO_memcmp(a, b, HSZ) == 0;
}

/* ---- compact state ---------------------------------------------------- */

void cr_merkle_state_init(cr_merkle_state *st)
{
	memset(st, 0, sizeof(*st));
}

int cr_merkle_state_append(cr_merkle_state *st, const uint8_t leaf_hash[CR_HASH_SIZE],
                           cr_merkle_node_cb on_node, void *ctx)
{
	uint8_t h[HSZ];
	uint64_t leaf = st->size;
	unsigned level = 0;

	/* size is a uint64_t: 2^64 - 1 leaves is the most it can count. */
	if (st->size == UINT64_MAX)
		return cr_error_set(CR_ERANGE, "Merkle tree is full (%llu leaves)",
		                    (unsigned long long)st->size);
	memcpy(h, leaf_hash, HSZ); /* leaf_hash may point into st->frontier */
	/*
	 * Binary addition of one: each set low bit is a perfect subtree that
	 * the new one merges with. size < 2^64 - 1 means some bit below 64 is
	 * clear, so level stays <= 63.
	 */
	while (st->size >> level & 1) {
		cr_merkle_node_hash(h, st->frontier[level], h);
		level++;
		if (on_node)
			on_node(ctx, level, leaf >> level, h);
	}
	memcpy(st->frontier[level], h, HSZ);
	st->size++;
	return 0;
}

void cr_merkle_state_root(const cr_merkle_state *st, uint8_t out[CR_HASH_SIZE])
{
	uint8_t r[HSZ];
	unsigned k;
	int have = 0;

	if (st->size == 0) {
		cr_merkle_empty_root(out);
		return;
	}
	/* MTH folds the subtrees right to left: smallest (rightmost) first. */
	for (k = 0; k < 64; k++) {
		if (!(st->size >> k & 1))
			continue;
		if (!have) {
			memcpy(r, st->frontier[k], HSZ);
			have = 1;
		} else {
			cr_merkle_node_hash(r, st->frontier[k], r);
		}
	}
	memcpy(out, r, HSZ);
}

void cr_merkle_state_save(const cr_merkle_state *st, uint8_t *out, size_t *out_len)
{
	size_t n = 0;
	int k;

	for (k = 63; k >= 0; k--) {
		if (st->size >> k & 1) {
			memcpy(out + n, st->frontier[k], HSZ);
			n += HSZ;
		}
	}
	*out_len = n;
}

int cr_merkle_state_load(cr_merkle_state *st, uint64_t size, const uint8_t *data, size_t len)
{
	cr_merkle_state tmp;
	size_t want = (size_t)__builtin_popcountll(size) * HSZ;
	size_t n = 0;
	int k;

	if (len != want)
		return cr_error_set(
		    CR_EINVAL,
		    "Merkle state of %llu leaves needs %zu bytes of subtree hashes, got %zu",
		    (unsigned long long)size, want, len);
	if (len && !data)
		return cr_error_set(CR_EINVAL, "Merkle state: no data");
	/* Build aside so a rejected load leaves st as it was. */
	cr_merkle_state_init(&tmp);
	tmp.size = size;
	for (k = 63; k >= 0; k--) {
		if (size >> k & 1) {
			memcpy(tmp.frontier[k], data + n, HSZ);
			n += HSZ;
		}
	}
	*st = tmp;
	return 0;
}

/* ---- sources ---------------------------------------------------------- */

/* Root of the perfect subtree of 2^level leaves starting at leaves[0]. */
static void memory_perfect(const uint8_t (*leaves)[HSZ], unsigned level, uint8_t out[HSZ])
{
	uint8_t left[HSZ], right[HSZ];

	if (level == 0) {
		memcpy(out, leaves[0], HSZ);
		return;
	}
	/*
	 * Depth is bounded by level (<= 63); the work is 2^level, as for any
	 * source without stored interior nodes.
	 */
	memory_perfect(leaves, level - 1, left);
	memory_perfect(leaves + ((size_t)1 << (level - 1)), level - 1, right);
	cr_merkle_node_hash(out, left, right);
}

static int memory_subtree(void *ctx, unsigned level, uint64_t index, uint8_t out[CR_HASH_SIZE])
{
	const cr_merkle_memory *mem = ctx;

	/* index < n >> level  <=>  (index + 1) << level <= n, without overflow. */
	if (level > 63 || index >= mem->n >> level)
		return cr_error_set(
		    CR_ERANGE,
		    "Merkle subtree (level %u, index %llu) is outside the %llu leaves in memory",
		    level, (unsigned long long)index, (unsigned long long)mem->n);
	/* In range means index << level < n, and n leaves fit in memory. */
	memory_perfect(mem->leaves + (size_t)(index << level), level, out);
	return 0;
}

void cr_merkle_memory_source(cr_merkle_source *src, cr_merkle_memory *mem)
{
	src->subtree = memory_subtree;
	src->ctx = mem;
}

/* Ask the source for one perfect, aligned subtree. */
static int source_get(const cr_merkle_source *src, unsigned level, uint64_t index, uint8_t out[HSZ])
{
	int rc = src->subtree(src->ctx, level, index, out);

	/* Outside the contract; callers testing rc < 0 would take it for success. */
	if (rc > 0)
		return cr_error_set(CR_ERROR, "Merkle source returned %d, not a CR_E* code", rc);
	return rc;
}

/*
 * MTH of the 2^level leaves starting at start. Aligned blocks (the only
 * kind proofs and roots of D[0:n] produce) cost one source call; an
 * unaligned one is split until its pieces are aligned.
 */
static int perfect_root(const cr_merkle_source *src, uint64_t start, unsigned level,
                        uint8_t out[HSZ])
{
	uint8_t left[HSZ], right[HSZ];
	int rc;

	if (level == 0 || (start & ((UINT64_C(1) << level) - 1)) == 0)
		return source_get(src, level, start >> level, out);
	if ((rc = perfect_root(src, start, level - 1, left)) != 0)
		return rc;
	/* start + 2^level fits (checked by the caller), so this half's start does too. */
	if ((rc = perfect_root(src, start + (UINT64_C(1) << (level - 1)), level - 1, right)) != 0)
		return rc;
	cr_merkle_node_hash(out, left, right);
	return 0;
}

/*
 * MTH(D[start:start+n]) for n >= 1 and start + n not overflowing. The RFC
 * split at the largest power of two below n makes the tree a right fold of
 * one perfect subtree per set bit of n, largest first; fold from the right.
 */
static int range_root(const cr_merkle_source *src, uint64_t start, uint64_t n, uint8_t out[HSZ])
{
	uint8_t acc[HSZ], sub[HSZ];
	uint64_t end = start + n;
	unsigned b;
	int rc, have = 0;

	for (b = 0; b < 64; b++) {
		if (!(n >> b & 1))
			continue;
		end -= UINT64_C(1) << b;
		if ((rc = perfect_root(src, end, b, have ? sub : acc)) != 0)
			return rc;
		if (have)
			cr_merkle_node_hash(acc, sub, acc);
		have = 1;
	}
	memcpy(out, acc, HSZ);
	return 0;
}

static int check_source(const cr_merkle_source *src)
{
	if (!src || !src->subtree)
		return cr_error_set(CR_EINVAL, "no Merkle source");
	return 0;
}

int cr_merkle_range_root(const cr_merkle_source *src, uint64_t start, uint64_t n,
                         uint8_t out[CR_HASH_SIZE])
{
	uint64_t end;
	int rc;

	if ((rc = check_source(src)) != 0)
		return rc;
	if (n == 0)
		return cr_error_set(CR_EINVAL, "Merkle range root of no leaves");
	if (__builtin_add_overflow(start, n, &end))
		return cr_error_set(CR_ERANGE, "Merkle range [%llu, +%llu) overflows",
		                    (unsigned long long)start, (unsigned long long)n);
	return range_root(src, start, n, out);
}

int cr_merkle_root(const cr_merkle_source *src, uint64_t size, uint8_t out[CR_HASH_SIZE])
{
	int rc;

	if ((rc = check_source(src)) != 0)
		return rc;
	if (size == 0) {
		cr_merkle_empty_root(out);
		return 0;
	}
	return range_root(src, 0, size, out);
}

/* log2 of the largest power of two strictly below n (n >= 2). */
static unsigned split_level(uint64_t n)
{
	return 63u - (unsigned)__builtin_clzll(n - 1);
}

int cr_merkle_inclusion_proof(const cr_merkle_source *src, uint64_t index, uint64_t size,
                              uint8_t path[][CR_HASH_SIZE], size_t *path_len)
{
	uint64_t lo = 0, n = size, m = index;
	size_t len = 0, i;
	int rc;

	if (path_len)
		*path_len = 0;
	if ((rc = check_source(src)) != 0)
		return rc;
	if (!path || !path_len)
		return cr_error_set(CR_EINVAL, "inclusion proof: no output buffer");
	if (index >= size)
		return cr_error_set(CR_ERANGE,
		                    "inclusion proof: leaf %llu is not in a tree of %llu",
		                    (unsigned long long)index, (unsigned long long)size);
	/*
	 * Walk PATH(m, D[lo:lo+n]) from the root down, collecting the sibling
	 * of each step; the RFC lists them leaf level first, so reverse after.
	 * A tree of < 2^64 leaves is at most 64 levels deep.
	 */
	while (n > 1) {
		unsigned lv = split_level(n);
		uint64_t k = UINT64_C(1) << lv;

		if (m < k) {
			rc = range_root(src, lo + k, n - k, path[len]);
			n = k;
		} else {
			rc = perfect_root(src, lo, lv, path[len]);
			lo += k;
			m -= k;
			n -= k;
		}
		if (rc != 0)
			return rc;
		len++;
	}
	for (i = 0; i < len / 2; i++) {
		uint8_t t[HSZ];

		memcpy(t, path[i], HSZ);
		memcpy(path[i], path[len - 1 - i], HSZ);
		memcpy(path[len - 1 - i], t, HSZ);
	}
	*path_len = len;
	return 0;
}

int cr_merkle_consistency_proof(const cr_merkle_source *src, uint64_t size1, uint64_t size2,
                                uint8_t path[][CR_HASH_SIZE], size_t *path_len)
{
	/* One sibling per level: a tree of < 2^64 leaves is at most 64 deep. */
	uint8_t sib[64][HSZ];
	uint64_t lo = 0, n = size2, m = size1;
	size_t nsib = 0, len = 0, i;
	int whole = 1; /* the RFC's b: still inside the old tree's leftmost edge */
	int rc;

	if (path_len)
		*path_len = 0;
	if ((rc = check_source(src)) != 0)
		return rc;
	if (!path || !path_len)
		return cr_error_set(CR_EINVAL, "consistency proof: no output buffer");
	if (size1 > size2)
		return cr_error_set(CR_ERANGE, "consistency proof: old size %llu > new size %llu",
		                    (unsigned long long)size1, (unsigned long long)size2);
	if (size1 == 0 || size1 == size2)
		return 0;
	/* SUBPROOF(m, D[lo:lo+n], whole), top down; m < n on every step. */
	while (m != n) {
		unsigned lv = split_level(n);
		uint64_t k = UINT64_C(1) << lv;

		if (m <= k) {
			rc = range_root(src, lo + k, n - k, sib[nsib]);
			n = k;
		} else {
			rc = perfect_root(src, lo, lv, sib[nsib]);
			lo += k;
			m -= k;
			n -= k;
			whole = 0;
		}
		if (rc != 0)
			return rc;
		nsib++;
	}
	/*
	 * The walk stops on a left child, a perfect aligned subtree equal to
	 * the old tree's last piece; the verifier needs it unless it is the
	 * whole old tree (which the verifier already has as root1).
	 */
	if (!whole) {
		if ((rc = range_root(src, lo, n, path[len])) != 0)
			return rc;
		len++;
	}
	for (i = nsib; i > 0; i--)
		memcpy(path[len++], sib[i - 1], HSZ);
	*path_len = len;
	return 0;
}

/* ---- verification ----------------------------------------------------- */

int cr_merkle_verify_inclusion(const uint8_t leaf_hash[CR_HASH_SIZE], uint64_t index, uint64_t size,
                               const uint8_t path[][CR_HASH_SIZE], size_t path_len,
                               const uint8_t root[CR_HASH_SIZE])
{
	uint8_t r[HSZ];
	uint64_t fn, sn;
	size_t i;

	if (path_len && !path)
		return cr_error_set(CR_EINVAL, "inclusion proof: no path");
	if (index >= size)
		return cr_error_set(CR_EVERIFY,
		                    "inclusion proof: leaf %llu is not in a tree of %llu",
		                    (unsigned long long)index, (unsigned long long)size);
	/* More than 64 hashes can never verify; stop before hashing them. */
	if (path_len > 64)
		return cr_error_set(CR_EVERIFY, "inclusion proof: %zu hashes is too many",
		                    path_len);
	fn = index;
	sn = size - 1;
	memcpy(r, leaf_hash, HSZ);
	for (i = 0; i < path_len; i++) {
		if (sn == 0)
			return cr_error_set(CR_EVERIFY,
			                    "inclusion proof: too long (%zu hashes, %zu expected)",
			                    path_len, i);
		if ((fn & 1) || fn == sn) {
			cr_merkle_node_hash(r, path[i], r);
			/* On the right border a node without a right sibling moves up unchanged. */
			while (!(fn & 1) && fn != 0) {
				fn >>= 1;
				sn >>= 1;
			}
		} else {
			cr_merkle_node_hash(r, r, path[i]);
		}
		fn >>= 1;
		sn >>= 1;
	}
	if (sn != 0)
		return cr_error_set(CR_EVERIFY, "inclusion proof: too short (%zu hashes)",
		                    path_len);
	if (!hash_eq(r, root))
		return cr_error_set(
		    CR_EVERIFY,
		    "inclusion proof: leaf %llu does not lead to the root of the tree of %llu",
		    (unsigned long long)index, (unsigned long long)size);
	return 0;
}

int cr_merkle_verify_consistency(uint64_t size1, uint64_t size2, const uint8_t root1[CR_HASH_SIZE],
                                 const uint8_t root2[CR_HASH_SIZE],
                                 const uint8_t path[][CR_HASH_SIZE], size_t path_len)
{
	uint8_t fr[HSZ], sr[HSZ];
	const uint8_t *seed;
	uint64_t fn, sn;
	size_t i, first;

	if (path_len && !path)
		return cr_error_set(CR_EINVAL, "consistency proof: no path");
	if (size1 > size2)
		return cr_error_set(CR_EVERIFY, "consistency proof: old size %llu > new size %llu",
		                    (unsigned long long)size1, (unsigned long long)size2);
	/*
	 * The empty tree is a prefix of every tree, so a "proof" from it says
	 * nothing; a caller asking for one has lost track of its old head.
	 * transparency-dev/merkle rejects it too.
	 */
	if (size1 == 0)
		return cr_error_set(CR_EVERIFY,
		                    "consistency proof: from the empty tree is meaningless");
	if (size1 == size2) {
		if (path_len != 0)
			return cr_error_set(
			    CR_EVERIFY, "consistency proof: %zu hashes for equal sizes, want none",
			    path_len);
		if (!hash_eq(root1, root2))
			return cr_error_set(CR_EVERIFY,
			                    "consistency proof: two different roots for size %llu",
			                    (unsigned long long)size1);
		return 0;
	}
	if (path_len == 0)
		return cr_error_set(CR_EVERIFY, "consistency proof: empty for sizes %llu and %llu",
		                    (unsigned long long)size1, (unsigned long long)size2);
	if (path_len > CR_MERKLE_MAX_PATH)
		return cr_error_set(CR_EVERIFY, "consistency proof: %zu hashes is too many",
		                    path_len);
	/* RFC 9162 2.1.4.2 step 2: a power-of-two old tree is its own first hash. */
	if ((size1 & (size1 - 1)) == 0) {
		seed = root1;
		first = 0;
	} else {
		seed = path[0];
		first = 1;
	}
	fn = size1 - 1;
	sn = size2 - 1;
	while (fn & 1) {
		fn >>= 1;
		sn >>= 1;
	}
	memcpy(fr, seed, HSZ);
	memcpy(sr, seed, HSZ);
	for (i = first; i < path_len; i++) {
		if (sn == 0)
			return cr_error_set(CR_EVERIFY, "consistency proof: too long (%zu hashes)",
			                    path_len);
		if ((fn & 1) || fn == sn) {
			cr_merkle_node_hash(fr, path[i], fr);
			cr_merkle_node_hash(sr, path[i], sr);
			while (!(fn & 1) && fn != 0) {
				fn >>= 1;
				sn >>= 1;
			}
		} else {
			/* Only the new tree has leaves to the right of the old edge. */
			cr_merkle_node_hash(sr, sr, path[i]);
		}
		fn >>= 1;
		sn >>= 1;
	}
	if (sn != 0)
		return cr_error_set(CR_EVERIFY, "consistency proof: too short (%zu hashes)",
		                    path_len);
	if (!hash_eq(fr, root1))
		return cr_error_set(CR_EVERIFY,
		                    "consistency proof: does not lead to the old root (size %llu)",
		                    (unsigned long long)size1);
	if (!hash_eq(sr, root2))
		return cr_error_set(CR_EVERIFY,
		                    "consistency proof: does not lead to the new root (size %llu)",
		                    (unsigned long long)size2);
	return 0;
}
