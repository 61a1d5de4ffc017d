/*
 * The bundle verifier. One pass over the archive with libarchive, nothing
 * written to disk but anonymous temporary files: small members are held in
 * memory (each under CR_VERIFY_SMALL_MAX), proofs are spooled, events are
 * streamed line by line into a compact Merkle state while their leaf
 * hashes (32 bytes each) are kept for the proofs. Every failure is
 * reported with where it is; checks go on after a failure so an auditor
 * sees everything that is wrong at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "audit/verify_internal.h"
#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "cleanroom/merkle.h"
#include "cleanroom/verify.h"
#include "util/buf.h"
#include "util/codec.h"

/*
 * Bounds on what one pass may decompress, beyond the per-member limits of
 * verify.h. A proof line is at most 65 hashes of 64 hex digits and its
 * fields; a sealed tree of n events needs at most n proof lines per proof
 * member and n event lines of at most CR_EVENT_MAX_SIZE bytes each. All
 * members together never exceed TOTAL_MAX.
 */
#define PROOF_LINE_MAX 8192u
#define TOTAL_MAX CR_VERIFY_MEMBER_MAX
#define BAD_EVENTS_MAX 10

/* What one pass over an archive keeps besides v (v is shared with --previous). */
typedef struct pass {
	uint64_t total;        /* bytes decompressed so far, every member */
	uint64_t extra_events; /* lines beyond the sealed tree size, counted only */
} pass;

static const char *const small_members[] = {
	"VERSION", "manifest.json", "seal.note", "key.pub", "key.vkey", "anchor.json",
	"attestation.dsse.json", NULL,
};

/*
 * Names and messages may come from the archive: replace control characters
 * (nothing to steer a terminal with) and bytes that are not UTF-8 (JSON
 * output) with '?'.
 */
static void printable(char *s)
{
	unsigned char *p = (unsigned char *)s;

	while (*p) {
		size_t n = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3
		         : (*p & 0xf8) == 0xf0 ? 4 : 0;
		size_t k;
		uint32_t c = n == 1 ? *p : n == 2 ? *p & 0x1fu : n == 3 ? *p & 0x0fu : *p & 0x07u;

		for (k = 1; k < n && (p[k] & 0xc0) == 0x80; k++)
			c = (c << 6) | (p[k] & 0x3fu);
		if (n == 0 || k < n || (n == 2 && c < 0x80) || (n == 3 && c < 0x800) ||
		    (n == 4 && (c < 0x10000 || c > 0x10ffff)) || (c >= 0xd800 && c <= 0xdfff)) {
			*p++ = '?'; /* one bad byte; resynchronise on the next */
			continue;
		}
		if (c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0))
			memset(p, '?', n);
		p += n;
	}
}

static void report(cr_verify *v, const char *check, int ok, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static void report(cr_verify *v, const char *check, int ok, const char *fmt, ...)
{
	char detail[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	printable(detail);
	v->sum->checks++;
	if (!ok)
		v->sum->failures++;
	if (v->fn)
		v->fn(v->ctx, check, ok, detail);
}

void cr_verify_fail(cr_verify *v, const char *check, const char *detail)
{
	report(v, check, 0, "%s", detail);
}

void cr_verify_pass(cr_verify *v, const char *check, const char *detail)
{
	report(v, check, 1, "%s", detail);
}

static int small_index(const char *name)
{
	for (int i = 0; small_members[i]; i++)
		if (strcmp(small_members[i], name) == 0)
			return i;
	return -1;
}

static int is_proofs(const char *name)
{
	return strcmp(name, "proofs/checkpoints.jsonl") == 0 || strcmp(name, "proofs/inputs.jsonl") == 0 ||
	       strcmp(name, "proofs/consistency.jsonl") == 0;
}

/* A member's digest as read, for the manifest check. */
static int seen_add(cr_verify *v, const char *name, uint64_t size, const uint8_t sha[32])
{
	if (v->n_seen == CR_VERIFY_MEMBERS_MAX)
		return cr_error_set(CR_EINVAL, "more than %d members", CR_VERIFY_MEMBERS_MAX);
	if ((v->seen[v->n_seen].name = strdup(name)) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	v->seen[v->n_seen].size = size;
	memcpy(v->seen[v->n_seen].sha, sha, 32);
	v->n_seen++;
	return 0;
}

/*
 * One line of events.jsonl. With a valid seal, lines beyond its tree size
 * are only counted (check_root reports them), so memory stays bounded by
 * what the seal covers; without one the leaf hashes are not kept (nothing
 * can be proved against an unsealed tree) and only the events are checked.
 */
static int take_event(cr_verify *v, pass *ps, const char *line, size_t len)
{
	uint8_t hash[CR_HASH_SIZE];
	json_t *ev = NULL;
	int rc;

	if (v->sealed && v->n_leaves >= v->sum->tree_size) {
		ps->extra_events++;
		return 0;
	}
	if (v->sealed && v->n_leaves == v->cap_leaves) {
		size_t cap = v->cap_leaves ? 2 * v->cap_leaves : 4096;
		uint8_t (*p)[CR_HASH_SIZE];

		if (cap > v->sum->tree_size)
			cap = (size_t)v->sum->tree_size; /* > n_leaves here */
		if ((p = realloc(v->leaves, cap * CR_HASH_SIZE)) == NULL)
			return cr_error_set(CR_ENOMEM, "out of memory for leaf hashes");
		v->leaves = p;
		v->cap_leaves = cap;
	}
	cr_merkle_leaf_hash(hash, line, len);
	if (v->sealed)
		memcpy(v->leaves[v->n_leaves], hash, CR_HASH_SIZE);
	if (cr_event_parse(&ev, line, len) != 0) {
		char where[64];

		if (++v->bad_events > BAD_EVENTS_MAX) {
			cr_error_clear();
			report(v, "events", 0, "more than %d malformed events; the rest of events.jsonl is not read",
			       BAD_EVENTS_MAX);
			return CR_EINVAL; /* reported */
		}
		snprintf(where, sizeof(where), "events.jsonl line %zu: ", v->n_leaves + 1);
		report(v, "events", 0, "%s%s", where, cr_error_last());
		cr_error_clear();
	} else {
		if ((rc = cr_verify_event_hook(v, v->n_leaves, line, len, ev)) != 0) {
			json_decref(ev);
			return rc;
		}
		json_decref(ev);
	}
	if ((rc = cr_merkle_state_append(&v->tree, hash, NULL, NULL)) != 0)
		return rc;
	v->n_leaves++;
	return 0;
}

static int read_events(cr_verify *v, pass *ps, struct archive *a, uint64_t size, EVP_MD_CTX *md)
{
	cr_buf line = CR_BUF_INIT;
	char buf[65536];
	uint64_t total = 0;
	la_ssize_t n;
	int rc = 0;

	while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) {
		size_t pos = 0;

		total += (uint64_t)n;
		ps->total += (uint64_t)n;
		if (total > size || total > CR_VERIFY_MEMBER_MAX) {
			report(v, "archive", 0, "events.jsonl holds more than its header says");
			rc = CR_EINVAL;
			goto done;
		}
		EVP_DigestUpdate(md, buf, (size_t)n);
		while (pos < (size_t)n) {
			char *eol = memchr(buf + pos, '\n', (size_t)n - pos);
			size_t m = eol ? (size_t)(eol - (buf + pos)) : (size_t)n - pos;

			if (line.len + m > CR_EVENT_MAX_SIZE) {
				report(v, "events", 0, "events.jsonl line %zu exceeds %u bytes; the rest is not read",
				       v->n_leaves + 1, CR_EVENT_MAX_SIZE);
				rc = CR_EINVAL;
				goto done;
			}
			if ((rc = cr_buf_put(&line, buf + pos, m)) != 0)
				goto done;
			pos += m;
			if (eol) {
				if ((rc = take_event(v, ps, line.ptr ? line.ptr : "", line.len)) != 0)
					goto done;
				cr_buf_clear(&line);
				pos++;
			}
		}
	}
	if (n < 0) {
		rc = cr_error_set(CR_EARCHIVE, "reading events.jsonl: %s", archive_error_string(a));
		goto done;
	}
	if (line.len)
		report(v, "events", 0, "events.jsonl does not end with a newline (truncated?)");
done:
	cr_buf_free(&line);
	return rc;
}

/* The most a member may hold: fixed for small ones, relative to the sealed tree for the rest. */
static uint64_t member_limit(const cr_verify *v, const char *name, int small)
{
	uint64_t n = v->sum->tree_size, per;

	if (small || strncmp(name, "tensors/", 8) == 0 || strncmp(name, "report.", 7) == 0)
		return CR_VERIFY_SMALL_MAX;
	if (!v->sealed)
		return CR_VERIFY_MEMBER_MAX; /* read, digested, not kept: nothing to check them against */
	per = strcmp(name, "events.jsonl") == 0 ? (uint64_t)CR_EVENT_MAX_SIZE + 1 : PROOF_LINE_MAX;
	return n > CR_VERIFY_MEMBER_MAX / per ? CR_VERIFY_MEMBER_MAX : n * per;
}

static int read_member(cr_verify *v, pass *ps, struct archive *a, struct archive_entry *e)
{
	const char *name = archive_entry_pathname(e);
	la_int64_t size = archive_entry_size(e);
	EVP_MD_CTX *md = NULL;
	uint64_t limit;
	uint8_t sha[32];
	unsigned int dn;
	int idx, rc = 0;

	if (!name || !*name) {
		report(v, "archive", 0, "a member has no name");
		return CR_EINVAL;
	}
	if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e) ||
	    archive_entry_symlink(e)) {
		report(v, "archive", 0, "%s: not a regular file (links, folders and devices are refused)", name);
		return CR_EINVAL;
	}
	if (name[0] == '/' || strstr(name, "..") || strchr(name, '\\')) {
		report(v, "archive", 0, "%s: unsafe member name", name);
		return CR_EINVAL;
	}
	if (!archive_entry_size_is_set(e) || size < 0) {
		report(v, "archive", 0, "%s: no size", name);
		return CR_EINVAL;
	}
	for (size_t i = 0; i < v->n_seen; i++) {
		if (strcmp(v->seen[i].name, name) == 0) {
			report(v, "archive", 0, "%s: appears twice", name);
			return CR_EINVAL;
		}
	}
	idx = small_index(name);
	if (idx < 0 && !is_proofs(name) && strcmp(name, "events.jsonl") != 0 &&
	    strncmp(name, "tensors/", 8) != 0 && strncmp(name, "report.", 7) != 0) {
		report(v, "archive", 0, "%s: not a member a bundle holds", name);
		return CR_EINVAL;
	}
	/* The small members come first: judge the seal and the attestation as
	 * soon as they are read, so what follows is bounded by the sealed tree
	 * and the events stream through their checks once. */
	if (idx < 0)
		cr_verify_seal_hook(v);
	limit = member_limit(v, name, idx >= 0);
	if ((uint64_t)size > limit) {
		report(v, "archive", 0, "%s: %lld bytes is over the limit of %" PRIu64 " bytes%s", name,
		       (long long)size, limit,
		       v->sealed && idx < 0 && limit < CR_VERIFY_MEMBER_MAX ? " for the sealed tree size" : "");
		return CR_EINVAL;
	}
	if ((uint64_t)size > TOTAL_MAX - ps->total) {
		report(v, "archive", 0, "%s: the members would decompress to more than %llu bytes in all", name,
		       (unsigned long long)TOTAL_MAX);
		return CR_EINVAL;
	}
	if ((md = EVP_MD_CTX_new()) == NULL || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(md);
		return cr_error_set(CR_ECRYPTO, "SHA-256 init failed");
	}
	if (strcmp(name, "events.jsonl") == 0) {
		v->have_events = 1;
		rc = read_events(v, ps, a, (uint64_t)size, md);
	} else {
		cr_buf *dst = idx >= 0 ? &v->small[idx] : NULL;
		FILE *spool = NULL;
		char buf[65536];
		uint64_t total = 0, line = 0;
		la_ssize_t n;

		/* Proofs are kept (in an anonymous file) only when there is a sealed root to check them with. */
		if (is_proofs(name) && v->sealed) {
			if ((spool = tmpfile()) == NULL) {
				rc = cr_error_set_errno(CR_EIO, errno, "temporary file");
				goto done;
			}
			if (strcmp(name, "proofs/consistency.jsonl") == 0)
				v->consistency = spool;
			else if (strcmp(name, "proofs/checkpoints.jsonl") == 0)
				v->proofs[0] = spool;
			else
				v->proofs[1] = spool;
		}
		while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) {
			total += (uint64_t)n;
			ps->total += (uint64_t)n;
			if (total > (uint64_t)size) {
				report(v, "archive", 0, "%s: holds more than its header says", name);
				rc = CR_EINVAL;
				goto done;
			}
			EVP_DigestUpdate(md, buf, (size_t)n);
			if (dst && (rc = cr_buf_put(dst, buf, (size_t)n)) != 0)
				goto done;
			if (!spool)
				continue;
			for (la_ssize_t k = 0; k < n; k++) {
				line = buf[k] == '\n' ? 0 : line + 1;
				if (line > PROOF_LINE_MAX) {
					report(v, "proofs", 0, "%s: a line is longer than %u bytes", name, PROOF_LINE_MAX);
					rc = CR_EINVAL;
					goto done;
				}
			}
			if (fwrite(buf, 1, (size_t)n, spool) != (size_t)n) {
				rc = cr_error_set_errno(CR_EIO, errno, "temporary file");
				goto done;
			}
		}
		if (n < 0) {
			rc = cr_error_set(CR_EARCHIVE, "reading %s: %s", name, archive_error_string(a));
			goto done;
		}
		if (spool)
			rewind(spool);
		if (dst && !dst->ptr)
			rc = cr_buf_put(dst, "", 0);
	}
	if (!rc && EVP_DigestFinal_ex(md, sha, &dn))
		rc = seen_add(v, name, (uint64_t)size, sha);
done:
	EVP_MD_CTX_free(md);
	return rc;
}

/*
 * Every member the manifest lists is present with its size and digest, and
 * nothing else; the members every bundle holds are there (the manifest is
 * not signed: a forger could leave one out of both).
 */
static void check_manifest(cr_verify *v)
{
	static const char *const required[] = {
		"VERSION", "manifest.json", "seal.note", "key.pub", "key.vkey", "anchor.json",
		"attestation.dsse.json", "proofs/checkpoints.jsonl", "events.jsonl", NULL,
	};
	json_t *m = json_loadb(v->small[1].ptr ? v->small[1].ptr : "", v->small[1].len,
	                       JSON_REJECT_DUPLICATES, NULL);
	json_t *members = json_object_get(m, "members");
	size_t i, bad = 0;
	char hex[65];

	if (!v->small[0].ptr || strcmp(v->small[0].ptr, "cleanroom-bundle 1\n") != 0) {
		report(v, "manifest", 0, "VERSION is missing or not \"cleanroom-bundle 1\"");
		bad++;
	}
	if (!json_is_array(members)) {
		report(v, "manifest", 0, "manifest.json is missing or malformed");
		json_decref(m);
		return;
	}
	for (i = 0; i < json_array_size(members); i++) {
		json_t *e = json_array_get(members, i);
		const char *name = json_string_value(json_object_get(e, "name"));
		const char *sha = json_string_value(json_object_get(e, "sha256"));
		json_t *size = json_object_get(e, "size");
		size_t k;

		if (!name || !sha || !json_is_integer(size)) {
			report(v, "manifest", 0, "manifest entry %zu is malformed", i);
			bad++;
			continue;
		}
		for (k = 0; k < v->n_seen && strcmp(v->seen[k].name, name) != 0; k++)
			;
		if (k == v->n_seen) {
			report(v, "manifest", 0, "%s: listed in the manifest, missing from the bundle", name);
			bad++;
			continue;
		}
		v->seen[k].listed = 1;
		cr_hex_encode(hex, v->seen[k].sha, 32);
		if ((uint64_t)json_integer_value(size) != v->seen[k].size || strcmp(hex, sha) != 0) {
			report(v, "manifest", 0, "%s: size or SHA-256 differs from the manifest", name);
			bad++;
		}
	}
	for (i = 0; required[i]; i++) {
		size_t k;

		for (k = 0; k < v->n_seen && strcmp(v->seen[k].name, required[i]) != 0; k++)
			;
		if (k == v->n_seen) {
			report(v, "manifest", 0, "%s: missing (every bundle holds it)", required[i]);
			bad++;
		}
	}
	for (i = 0; i < v->n_seen; i++) {
		if (!v->seen[i].listed && strcmp(v->seen[i].name, "manifest.json") != 0 &&
		    strcmp(v->seen[i].name, "attestation.dsse.json") != 0) {
			report(v, "manifest", 0, "%s: in the bundle but not in the manifest", v->seen[i].name);
			bad++;
		}
	}
	if (!bad)
		report(v, "manifest", 1, "%zu members match the manifest", json_array_size(members));
	json_decref(m);
}

/* Each spooled proof line verifies for the event it names against the sealed root. */
static void check_proofs(cr_verify *v, FILE *f, const char *name)
{
	char *line = NULL;
	size_t cap = 0, ok = 0, bad = 0, lineno = 0;
	ssize_t n;

	if (!f || !v->sealed)
		return;
	while ((n = getline(&line, &cap, f)) > 0) {
		json_t *p = json_loadb(line, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
		json_t *path = json_object_get(p, "audit_path");
		uint8_t hashes[CR_MERKLE_MAX_PATH][CR_HASH_SIZE], leaf[CR_HASH_SIZE];
		uint64_t index, size;
		const char *lh = json_string_value(json_object_get(p, "leaf_hash"));
		size_t k, len = json_array_size(path);
		int fine = p && json_is_integer(json_object_get(p, "index")) &&
		           json_is_integer(json_object_get(p, "tree_size")) && lh && json_is_array(path) &&
		           len <= CR_MERKLE_MAX_PATH && cr_hex_decode(leaf, 32, lh, strlen(lh)) == 0;

		lineno++;
		for (k = 0; fine && k < len; k++) {
			const char *h = json_string_value(json_array_get(path, k));

			fine = h && cr_hex_decode(hashes[k], 32, h, strlen(h)) == 0;
		}
		cr_error_clear();
		if (!fine) {
			if (++bad <= 10)
				report(v, "proofs", 0, "%s line %zu: malformed proof", name, lineno);
			json_decref(p);
			continue;
		}
		index = (uint64_t)json_integer_value(json_object_get(p, "index"));
		size = (uint64_t)json_integer_value(json_object_get(p, "tree_size"));
		if (size != v->sum->tree_size || index >= v->n_leaves ||
		    CRYPTO_memcmp(leaf, v->leaves[index], 32) != 0 ||
		    cr_merkle_verify_inclusion(leaf, index, size, (const uint8_t (*)[32])hashes, len,
		                               v->sum->root) != 0) {
			cr_error_clear();
			if (++bad <= 10)
				report(v, "proofs", 0, "%s line %zu: the proof for event %" PRIu64
				       " does not verify against the sealed root", name, lineno, index);
		} else {
			ok++;
		}
		json_decref(p);
	}
	free(line);
	if (!bad)
		report(v, "proofs", 1, "%s: %zu inclusion proofs verify", name, ok);
	else if (bad > 10)
		report(v, "proofs", 0, "%s: %zu proofs failed in all", name, bad);
}

/*
 * Each consistency proof shows an earlier tree head (old_size, old_root) is
 * a prefix of the sealed tree. With the events at hand that can be
 * recomputed, but a proof that is shipped must not go unchecked.
 */
static void check_consistency(cr_verify *v, FILE *f)
{
	static const char name[] = "proofs/consistency.jsonl";
	char *line = NULL;
	size_t cap = 0, ok = 0, bad = 0, lineno = 0;
	ssize_t n;

	if (!f || !v->sealed)
		return;
	while ((n = getline(&line, &cap, f)) > 0) {
		json_t *p = json_loadb(line, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
		json_t *path = json_object_get(p, "proof");
		uint8_t hashes[CR_MERKLE_MAX_PATH][CR_HASH_SIZE], old_root[CR_HASH_SIZE];
		const char *oh = json_string_value(json_object_get(p, "old_root"));
		json_t *jold = json_object_get(p, "old_size"), *jnew = json_object_get(p, "new_size");
		size_t k, len = json_array_size(path);
		int fine = p && json_is_integer(jold) && json_is_integer(jnew) && oh && json_is_array(path) &&
		           len <= CR_MERKLE_MAX_PATH && cr_hex_decode(old_root, 32, oh, strlen(oh)) == 0;
		uint64_t old_size;

		lineno++;
		for (k = 0; fine && k < len; k++) {
			const char *h = json_string_value(json_array_get(path, k));

			fine = h && cr_hex_decode(hashes[k], 32, h, strlen(h)) == 0;
		}
		cr_error_clear();
		if (!fine) {
			if (++bad <= 10)
				report(v, "proofs", 0, "%s line %zu: malformed proof", name, lineno);
			json_decref(p);
			continue;
		}
		old_size = (uint64_t)json_integer_value(jold);
		if ((uint64_t)json_integer_value(jnew) != v->sum->tree_size ||
		    cr_merkle_verify_consistency(old_size, v->sum->tree_size, old_root, v->sum->root,
		                                 (const uint8_t (*)[32])hashes, len) != 0) {
			cr_error_clear();
			if (++bad <= 10)
				report(v, "proofs", 0, "%s line %zu: the proof from size %" PRIu64
				       " does not verify against the sealed root", name, lineno, old_size);
		} else {
			ok++;
		}
		json_decref(p);
	}
	free(line);
	if (!bad)
		report(v, "proofs", 1, "%s: %zu consistency proofs verify", name, ok);
	else if (bad > 10)
		report(v, "proofs", 0, "%s: %zu proofs failed in all", name, bad);
}

static void check_root(cr_verify *v, const pass *ps)
{
	uint8_t root[CR_HASH_SIZE];
	char a[65], b[65];

	cr_merkle_state_root(&v->tree, root);
	v->sum->events = v->n_leaves;
	if (!v->have_events) {
		report(v, "events", 0, "events.jsonl is missing");
		return;
	}
	if (!v->sealed) {
		report(v, "events", 0, "no valid seal to compare the events with");
		return;
	}
	if (ps->extra_events) {
		report(v, "events", 0, "events.jsonl holds %" PRIu64 " events more than the %" PRIu64
		       " the seal covers", ps->extra_events, v->sum->tree_size);
		return;
	}
	cr_hex_encode(a, root, 32);
	cr_hex_encode(b, v->sum->root, 32);
	if (v->n_leaves != v->sum->tree_size || CRYPTO_memcmp(root, v->sum->root, 32) != 0)
		report(v, "events", 0, "the %zu events give root %s, the seal says %" PRIu64 " events with root %s",
		       v->n_leaves, a, v->sum->tree_size, b);
	else if (!v->bad_events)
		report(v, "events", 1, "%zu events recompute the sealed root %s", v->n_leaves, a);
}

static int open_archive(const char *path, struct archive **out)
{
	struct archive *a = archive_read_new();

	*out = NULL;
	if (!a)
		return cr_error_set(CR_ENOMEM, "out of memory");
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_format_tar(a);
	if (archive_read_open_filename(a, path, 65536) != ARCHIVE_OK) {
		int rc = cr_error_set(CR_EIO, "%s: %s", path, archive_error_string(a));

		archive_read_free(a);
		return rc;
	}
	*out = a;
	return 0;
}

static void verify_free(cr_verify *v)
{
	for (int i = 0; i < CR_VERIFY_SMALL_COUNT; i++)
		cr_buf_free(&v->small[i]);
	for (size_t i = 0; i < v->n_seen; i++)
		free(v->seen[i].name);
	free(v->seen);
	free(v->leaves);
	if (v->proofs[0])
		fclose(v->proofs[0]);
	if (v->proofs[1])
		fclose(v->proofs[1]);
	if (v->consistency)
		fclose(v->consistency);
	cr_verify_hooks_free(v);
}

int cr_verify_run(cr_verify *v, const char *path)
{
	struct archive *a = NULL;
	struct archive_entry *e;
	pass ps = {0, 0};
	int rc, r;

	if ((v->seen = calloc(CR_VERIFY_MEMBERS_MAX, sizeof(*v->seen))) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	cr_merkle_state_init(&v->tree);
	if ((rc = open_archive(path, &a)) != 0)
		return rc;
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		uint64_t failures = v->sum->failures;

		if ((rc = read_member(v, &ps, a, e)) != 0) {
			/* Every refusal is reported (a refusal with no failure would pass). */
			if (v->sum->failures == failures)
				report(v, "archive", 0, "%s", cr_error_last());
			/* A hostile or damaged archive is a failed check, refused as a whole;
			 * only what keeps us from checking at all (memory, temporary files)
			 * is an error. */
			if (rc == CR_EINVAL || rc == CR_EARCHIVE)
				rc = CR_EVERIFY;
			break;
		}
	}
	if (!rc && r != ARCHIVE_EOF) {
		report(v, "archive", 0, "%s: %s", path, archive_error_string(a));
		rc = CR_EVERIFY;
	}
	archive_read_free(a);
	if (rc && rc != CR_EVERIFY)
		return rc;
	if (rc == CR_EVERIFY)
		return 0; /* reported; nothing else can be trusted */
	cr_verify_seal_hook(v); /* no-op when the events already triggered it */
	check_manifest(v);
	check_root(v, &ps);
	check_proofs(v, v->proofs[0], "proofs/checkpoints.jsonl");
	check_proofs(v, v->proofs[1], "proofs/inputs.jsonl");
	check_consistency(v, v->consistency);
	return cr_verify_finish_hooks(v);
}

int cr_verify_bundle(const cr_verify_options *opts, cr_verify_fn fn, void *ctx,
                     cr_verify_summary *out)
{
	cr_verify v;
	int rc;

	memset(&v, 0, sizeof(v));
	memset(out, 0, sizeof(*out));
	v.opts = opts;
	v.fn = fn;
	v.ctx = ctx;
	v.sum = out;
	rc = cr_verify_run(&v, opts->bundle);
	verify_free(&v);
	if (rc)
		return rc;
	return out->failures ? CR_EVERIFY : 0;
}
