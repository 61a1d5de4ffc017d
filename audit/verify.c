/*
 * The bundle verifier. One pass over the archive with libarchive, nothing
 * written to disk but anonymous temporary files: small members are held in
 * memory (each under CR_VERIFY_SMALL_MAX), proofs are spooled, events are
 * streamed line by line into a compact Merkle state (O(log n) memory) and
 * through the attestation checker, while the spooled inclusion proofs are
 * read alongside them (both in event order: events.jsonl is the last
 * member), each proof matched with the leaf hash of its event as it passes.
 * Memory therefore does not grow with the number of events. Every failure
 * is reported with where it is; checks go on after a failure so an auditor
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
#include "cleanroom/bundle.h"
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
#define CONSISTENCY_LINE_MAX (PROOF_LINE_MAX + 2 * CR_BUNDLE_SEAL_MAX)
#define TOTAL_MAX CR_VERIFY_MEMBER_MAX
#define BAD_EVENTS_MAX 10
#define BAD_PROOFS_SHOWN 10 /* failures reported one by one per proof member */

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

/* One proof member's failure; the first ten of each are reported. */
static void proof_bad(cr_verify *v, cr_proof_cursor *c, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void proof_bad(cr_verify *v, cr_proof_cursor *c, const char *fmt, ...)
{
	char detail[900];
	va_list ap;

	if (++c->bad > BAD_PROOFS_SHOWN)
		return;
	va_start(ap, fmt);
	vsnprintf(detail, sizeof(detail), fmt, ap);
	va_end(ap);
	report(v, "proofs", 0, "%s line %" PRIu64 ": %s", c->name, c->lineno, detail);
}

/* A JSON integer in [0, 2^63). */
static int get_count(const json_t *o, const char *key, uint64_t *out)
{
	json_t *j = json_object_get(o, key);

	if (!json_is_integer(j) || json_integer_value(j) < 0)
		return 0;
	*out = (uint64_t)json_integer_value(j);
	return 1;
}

/* A JSON array of at most CR_MERKLE_MAX_PATH hashes in hex; 0 when malformed. */
static int get_path(const json_t *o, const char *key, uint8_t out[][CR_HASH_SIZE], size_t *len)
{
	json_t *path = json_object_get(o, key);

	*len = json_array_size(path);
	if (!json_is_array(path) || *len > CR_MERKLE_MAX_PATH)
		return 0;
	for (size_t k = 0; k < *len; k++) {
		const char *h = json_string_value(json_array_get(path, k));

		if (!h || cr_hex_decode(out[k], CR_HASH_SIZE, h, strlen(h)) != 0) {
			cr_error_clear();
			return 0;
		}
	}
	return 1;
}

static int get_hash(const json_t *o, const char *key, uint8_t out[CR_HASH_SIZE])
{
	const char *h = json_string_value(json_object_get(o, key));

	if (!h || cr_hex_decode(out, CR_HASH_SIZE, h, strlen(h)) != 0) {
		cr_error_clear();
		return 0;
	}
	return 1;
}

/*
 * Move c to its next well-formed proof, reporting the lines on the way that
 * are not. Proofs must come in increasing event order (one per event); each
 * is verified against the sealed root here, and matched with its event as
 * the events stream past (cursor_event).
 */
static void cursor_next(cr_verify *v, cr_proof_cursor *c)
{
	ssize_t n;

	c->primed = 1;
	c->have = 0;
	while (c->f && (n = getline(&c->line, &c->cap, c->f)) > 0) {
		json_t *p = json_loadb(c->line, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
		uint8_t path[CR_MERKLE_MAX_PATH][CR_HASH_SIZE], leaf[CR_HASH_SIZE];
		uint64_t index = 0, size = 0;
		size_t len = 0;

		c->lineno++;
		if (!json_is_object(p) || !get_count(p, "index", &index) ||
		    !get_count(p, "tree_size", &size) || !get_hash(p, "leaf_hash", leaf) ||
		    !get_path(p, "audit_path", path, &len)) {
			proof_bad(v, c, "malformed proof");
			json_decref(p);
			continue;
		}
		json_decref(p);
		if (c->started && index <= c->last_index) {
			proof_bad(v, c, "event %" PRIu64 " comes after event %" PRIu64 " (one proof per event, "
			          "in event order)", index, c->last_index);
			continue;
		}
		c->started = 1;
		c->last_index = index;
		c->have = 1;
		c->next_bad = 0;
		c->next_line = c->lineno;
		c->next_index = index;
		memcpy(c->next_leaf, leaf, CR_HASH_SIZE);
		if (size != v->sum->tree_size) {
			proof_bad(v, c, "the proof for event %" PRIu64 " is for a tree of %" PRIu64
			          " events, not the sealed %" PRIu64, index, size, v->sum->tree_size);
			c->next_bad = 1;
		} else if (cr_merkle_verify_inclusion(leaf, index, size, (const uint8_t (*)[CR_HASH_SIZE])path,
		                                      len, v->sum->root) != 0) {
			cr_error_clear();
			proof_bad(v, c, "the proof for event %" PRIu64 " does not verify against the sealed root",
			          index);
			c->next_bad = 1;
		}
		return;
	}
}

/* Event index (leaf hash, type when it parsed) streams past cursor c. */
static void cursor_event(cr_verify *v, cr_proof_cursor *c, uint64_t index,
                         const uint8_t hash[CR_HASH_SIZE], const char *type)
{
	char a[65], b[65];

	if (!c->f)
		return;
	if (!c->primed)
		cursor_next(v, c);
	if (c->have && c->next_index == index) {
		uint64_t line = c->lineno;

		c->lineno = c->next_line; /* name the proof's line, not the one read ahead */
		if (c->next_bad) {
			/* reported when read */
		} else if (CRYPTO_memcmp(c->next_leaf, hash, CR_HASH_SIZE) != 0) {
			cr_hex_encode(a, c->next_leaf, CR_HASH_SIZE);
			cr_hex_encode(b, hash, CR_HASH_SIZE);
			proof_bad(v, c, "proves leaf hash %s for event %" PRIu64 ", but that event hashes to %s", a,
			          index, b);
		} else if (type && strcmp(type, c->type) != 0) {
			proof_bad(v, c, "proves event %" PRIu64 ", of type %s: this member proves %s events only",
			          index, type, c->type);
		} else {
			c->ok++;
		}
		c->lineno = line;
		cursor_next(v, c);
	} else if (type && strcmp(type, c->type) == 0) {
		if (++c->bad <= BAD_PROOFS_SHOWN)
			report(v, "proofs", 0, "%s: %s event %" PRIu64 " has no inclusion proof", c->name, type,
			       index);
	}
}

/*
 * One line of events.jsonl. With a valid seal, lines beyond its tree size
 * are only counted (check_root reports them); the proofs are matched with
 * the events as they pass. Nothing is kept per event.
 */
static int take_event(cr_verify *v, pass *ps, const char *line, size_t len)
{
	uint8_t hash[CR_HASH_SIZE];
	const char *type = NULL;
	json_t *ev = NULL;
	int rc;

	if (v->sealed && v->n_leaves >= v->sum->tree_size) {
		ps->extra_events++;
		return 0;
	}
	cr_merkle_leaf_hash(hash, line, len);
	if (cr_event_parse(&ev, line, len) != 0) {
		if (++v->bad_events > BAD_EVENTS_MAX) {
			cr_error_clear();
			report(v, "events", 0, "more than %d malformed events; the rest of events.jsonl is not read",
			       BAD_EVENTS_MAX);
			return CR_EINVAL; /* reported */
		}
		report(v, "events", 0, "events.jsonl line %" PRIu64 ": %s", v->n_leaves + 1, cr_error_last());
		cr_error_clear();
	} else {
		type = cr_event_type(ev);
		if ((rc = cr_verify_event_hook(v, v->n_leaves, line, len, ev)) != 0) {
			json_decref(ev);
			return rc;
		}
	}
	if (v->sealed) {
		cursor_event(v, &v->proofs[0], v->n_leaves, hash, type);
		cursor_event(v, &v->proofs[1], v->n_leaves, hash, type);
	}
	json_decref(ev); /* type is borrowed from it */
	if ((rc = cr_merkle_state_append(&v->tree, hash, NULL, NULL)) != 0)
		return rc;
	v->n_leaves++;
	if (v->n_leaves == v->prefix_size) {
		cr_merkle_state_root(&v->tree, v->prefix_root);
		v->have_prefix = 1;
	}
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
				report(v, "events", 0, "events.jsonl line %" PRIu64 " exceeds %u bytes; the rest is not read",
				       v->n_leaves + 1, CR_EVENT_MAX_SIZE);
				rc = CR_EINVAL;
				goto done;
			}
			/* A whole line in the buffer is taken where it is. */
			if (eol && line.len == 0) {
				if ((rc = take_event(v, ps, buf + pos, m)) != 0)
					goto done;
				pos += m + 1;
				continue;
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
	per = strcmp(name, "events.jsonl") == 0 ? (uint64_t)CR_EVENT_MAX_SIZE + 1
	    : strcmp(name, "proofs/consistency.jsonl") == 0 ? CONSISTENCY_LINE_MAX
	    : PROOF_LINE_MAX;
	return n > CR_VERIFY_MEMBER_MAX / per ? CR_VERIFY_MEMBER_MAX : n * per;
}

static int read_member(cr_verify *v, pass *ps, struct archive *a, struct archive_entry *e)
{
	const char *name = archive_entry_pathname(e);
	la_int64_t size = archive_entry_size(e);
	EVP_MD_CTX *md = NULL;
	uint64_t limit, line_max = PROOF_LINE_MAX;
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
	/* The events stream through every check once, proofs alongside: all
	 * else must be read before them. */
	if (v->have_events) {
		report(v, "archive", 0, "%s: after events.jsonl (events.jsonl is the last member)", name);
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
			if (strcmp(name, "proofs/consistency.jsonl") == 0) {
				v->consistency = spool;
				line_max = CONSISTENCY_LINE_MAX;
			} else if (strcmp(name, "proofs/checkpoints.jsonl") == 0) {
				v->proofs[0].f = spool;
			} else {
				v->proofs[1].f = spool;
			}
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
				if (line > line_max) {
					report(v, "proofs", 0, "%s: a line is longer than %" PRIu64 " bytes", name, line_max);
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
		if (spool && (fflush(spool) != 0 || fseek(spool, 0, SEEK_SET) != 0)) {
			rc = cr_error_set_errno(CR_EIO, errno, "temporary file");
			goto done;
		}
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
 * not signed: a forger could leave one out of both). The manifest leaves out
 * itself, the attestation (signed on its own) and anchor.json (rebuilt from
 * the seal and compared; its "published" block is filled in by people).
 */
static void check_manifest(cr_verify *v)
{
	static const char *const required[] = {
		"VERSION", "manifest.json", "seal.note", "key.pub", "key.vkey", "anchor.json",
		"attestation.dsse.json", "proofs/checkpoints.jsonl", "proofs/consistency.jsonl",
		"events.jsonl", NULL,
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
		    strcmp(v->seen[i].name, "attestation.dsse.json") != 0 &&
		    strcmp(v->seen[i].name, "anchor.json") != 0) {
			report(v, "manifest", 0, "%s: in the bundle but not in the manifest", v->seen[i].name);
			bad++;
		}
	}
	if (!bad)
		report(v, "manifest", 1, "%zu members match the manifest", json_array_size(members));
	json_decref(m);
}

/* What is left of an inclusion proof member once the events went by. */
static void check_proofs(cr_verify *v, cr_proof_cursor *c)
{
	if (!c->f || !v->sealed)
		return;
	if (!c->primed)
		cursor_next(v, c);
	while (c->have) {
		uint64_t line = c->lineno;

		c->lineno = c->next_line;
		if (c->next_bad)
			; /* reported when read */
		else if (v->have_events)
			proof_bad(v, c, "proves event %" PRIu64 ", beyond the %" PRIu64 " events", c->next_index,
			          v->n_leaves);
		else
			c->ok++; /* against the sealed root only: no events to match */
		c->lineno = line;
		cursor_next(v, c);
	}
	if (!c->bad)
		report(v, "proofs", 1, "%s: %" PRIu64 " inclusion proofs verify against the sealed root%s%s%s",
		       c->name, c->ok, v->have_events ? ", one for every " : "", v->have_events ? c->type : "",
		       v->have_events ? " event" : "");
	else if (c->bad > BAD_PROOFS_SHOWN)
		report(v, "proofs", 0, "%s: %" PRIu64 " failures in all", c->name, c->bad);
}

/*
 * Each consistency proof shows that an earlier seal of this log, signed
 * with the key this bundle's seal verified with, is a prefix of the sealed
 * tree. The earlier seal travels in the line: a proof from a size nobody
 * signed would prove nothing anyone relied on.
 */
static void check_consistency(cr_verify *v, FILE *f)
{
	static const char name[] = "proofs/consistency.jsonl";
	char *line = NULL, a[65], b[65];
	size_t cap = 0;
	uint64_t ok = 0, bad = 0, lineno = 0, last = 0, first = 0;
	ssize_t n;

#define CONSISTENCY_BAD(...)                                                   \
	do {                                                                   \
		if (++bad <= BAD_PROOFS_SHOWN)                                 \
			report(v, "proofs", 0, __VA_ARGS__);                    \
	} while (0)

	if (!f || !v->sealed)
		return;
	while ((n = getline(&line, &cap, f)) > 0) {
		json_t *p = json_loadb(line, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
		json_t *jseal = json_object_get(p, "seal");
		uint8_t path[CR_MERKLE_MAX_PATH][CR_HASH_SIZE], old_root[CR_HASH_SIZE];
		uint64_t old_size = 0, new_size = 0;
		cr_seal_body body = {0};
		size_t len = 0, text_len;

		lineno++;
		if (!json_is_object(p) || !get_count(p, "old_size", &old_size) ||
		    !get_count(p, "new_size", &new_size) || !get_hash(p, "old_root", old_root) ||
		    !get_path(p, "proof", path, &len) || !json_is_string(jseal)) {
			CONSISTENCY_BAD("%s line %" PRIu64 ": malformed consistency proof", name, lineno);
			goto next;
		}
		if (old_size <= last) {
			CONSISTENCY_BAD("%s line %" PRIu64 ": the seal at size %" PRIu64 " comes after size %" PRIu64
			                " (one line per earlier seal, by size)", name, lineno, old_size, last);
			goto next;
		}
		last = old_size;
		if (old_size == 0 || old_size >= v->sum->tree_size || new_size != v->sum->tree_size) {
			CONSISTENCY_BAD("%s line %" PRIu64 ": a proof from size %" PRIu64 " to %" PRIu64 " is not from "
			                "an earlier size to the sealed %" PRIu64, name, lineno, old_size, new_size,
			                v->sum->tree_size);
			goto next;
		}
		if (cr_note_verify(json_string_value(jseal), json_string_length(jseal), &v->vkey, &text_len) != 0) {
			CONSISTENCY_BAD("%s line %" PRIu64 ": the seal at size %" PRIu64 " is not signed by %s with "
			                "the key this bundle's seal verifies with: %s", name, lineno, old_size,
			                v->vkey.name, cr_error_last());
			cr_error_clear();
			goto next;
		}
		if (cr_seal_body_parse(&body, json_string_value(jseal), text_len) != 0) {
			CONSISTENCY_BAD("%s line %" PRIu64 ": the seal at size %" PRIu64 ": %s", name, lineno, old_size,
			                cr_error_last());
			cr_error_clear();
			goto next;
		}
		if (strcmp(body.origin, v->sum->origin) != 0) {
			CONSISTENCY_BAD("%s line %" PRIu64 ": the seal at size %" PRIu64 " is of another log (origin %s)",
			                name, lineno, old_size, body.origin);
			goto next;
		}
		if (body.size != old_size || CRYPTO_memcmp(body.root, old_root, CR_HASH_SIZE) != 0) {
			cr_hex_encode(a, old_root, CR_HASH_SIZE);
			cr_hex_encode(b, body.root, CR_HASH_SIZE);
			CONSISTENCY_BAD("%s line %" PRIu64 ": old_size %" PRIu64 " and old_root %s are not its seal's "
			                "(size %" PRIu64 ", root %s)", name, lineno, old_size, a, body.size, b);
			goto next;
		}
		if (cr_merkle_verify_consistency(old_size, v->sum->tree_size, old_root, v->sum->root,
		                                 (const uint8_t (*)[CR_HASH_SIZE])path, len) != 0) {
			cr_error_clear();
			CONSISTENCY_BAD("%s line %" PRIu64 ": the proof from the seal at size %" PRIu64
			                " does not verify against the sealed root", name, lineno, old_size);
			goto next;
		}
		if (!ok++)
			first = old_size;
next:
		cr_seal_body_free(&body);
		json_decref(p);
	}
#undef CONSISTENCY_BAD
	free(line);
	if (!bad && ok)
		report(v, "proofs", 1, "%s: %" PRIu64 " earlier seals (sizes %" PRIu64 " to %" PRIu64
		       "), signed by %s, are prefixes of the sealed tree", name, ok, first, last, v->vkey.name);
	else if (!bad)
		report(v, "proofs", 1, "%s: no earlier seals", name);
	else if (bad > BAD_PROOFS_SHOWN)
		report(v, "proofs", 0, "%s: %" PRIu64 " failures in all", name, bad);
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
		report(v, "events", 0, "the %" PRIu64 " events give root %s, the seal says %" PRIu64
		       " events with root %s", v->n_leaves, a, v->sum->tree_size, b);
	else if (!v->bad_events)
		report(v, "events", 1, "%" PRIu64 " events recompute the sealed root %s", v->n_leaves, a);
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

void cr_verify_free(cr_verify *v)
{
	for (int i = 0; i < CR_VERIFY_SMALL_COUNT; i++)
		cr_buf_free(&v->small[i]);
	for (size_t i = 0; i < v->n_seen; i++)
		free(v->seen[i].name);
	free(v->seen);
	v->seen = NULL;
	v->n_seen = 0;
	for (int i = 0; i < 2; i++) {
		if (v->proofs[i].f)
			fclose(v->proofs[i].f);
		free(v->proofs[i].line);
		memset(&v->proofs[i], 0, sizeof(v->proofs[i]));
	}
	if (v->consistency)
		fclose(v->consistency);
	v->consistency = NULL;
	cr_verify_hooks_free(v);
}

/*
 * Read the archive a (freed here) into v and run the checks. An archive
 * whose first member cannot be read is no bundle at all: an error, nothing
 * reported. Past that, damage is a failed "archive" check.
 */
static int read_archive(cr_verify *v, struct archive *a, const char *path)
{
	struct archive_entry *e;
	pass ps = {0, 0};
	uint64_t headers = 0;
	int rc = 0, r;

	if (!v->seen && (v->seen = calloc(CR_VERIFY_MEMBERS_MAX, sizeof(*v->seen))) == NULL) {
		archive_read_free(a);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	v->proofs[0].name = "proofs/checkpoints.jsonl";
	v->proofs[0].type = "checkpoint";
	v->proofs[1].name = "proofs/inputs.jsonl";
	v->proofs[1].type = "input";
	cr_merkle_state_init(&v->tree);
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		uint64_t failures = v->sum->failures;

		headers++;
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
		if (headers == 0) {
			rc = cr_error_set(CR_EARCHIVE, "%s: not a bundle: %s", path,
			                  archive_error_string(a) ? archive_error_string(a) : "unreadable archive");
			archive_read_free(a);
			return rc;
		}
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
	check_proofs(v, &v->proofs[0]);
	check_proofs(v, &v->proofs[1]);
	check_consistency(v, v->consistency);
	return cr_verify_finish_hooks(v);
}

int cr_verify_run(cr_verify *v, const char *path)
{
	struct archive *a = NULL;
	int rc;

	if ((rc = open_archive(path, &a)) != 0)
		return rc;
	return read_archive(v, a, path);
}

int cr_verify_bundle(const cr_verify_options *opts, cr_verify_fn fn, void *ctx,
                     cr_verify_summary *out)
{
	struct archive *a = NULL;
	cr_verify v;
	int rc;

	memset(&v, 0, sizeof(v));
	memset(out, 0, sizeof(*out));
	v.opts = opts;
	v.fn = fn;
	v.ctx = ctx;
	v.sum = out;
	/* The auditor's own inputs first, then the bundle can be opened at all,
	 * then --previous (whose tree size the events are streamed against). */
	if ((rc = cr_verify_preflight(&v)) == 0 && (rc = open_archive(opts->bundle, &a)) == 0 &&
	    (rc = cr_verify_previous_read(&v)) == 0) {
		rc = read_archive(&v, a, opts->bundle);
		a = NULL; /* freed there */
	}
	if (a)
		archive_read_free(a);
	cr_verify_free(&v);
	if (rc)
		return rc;
	return out->failures ? CR_EVERIFY : 0;
}
