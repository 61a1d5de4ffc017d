/*
 * The audit bundle writer. Two passes over the events: the first learns
 * the digest and size of events.jsonl and which events need proofs, the
 * second streams them into the archive after the small members. Proofs
 * are spooled to an anonymous temporary file, so memory stays bounded
 * however large the log is. Every entry has fixed metadata (mode 0644,
 * owner 0, time 0) and a fixed place, so the output is reproducible.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include "cleanroom/bundle.h"
#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "cleanroom/merkle.h"
#include "util/buf.h"
#include "util/codec.h"

#define FLUSH_BYTES (1u << 20)

typedef struct member {
	const char *name;
	uint64_t size;
	uint8_t sha[32];
} member;

typedef struct u64list {
	uint64_t *v;
	size_t n, cap;
} u64list;

static int u64list_push(u64list *l, uint64_t x)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 256;
		uint64_t *p = realloc(l->v, cap * sizeof(*p));

		if (!p)
			return cr_error_set(CR_ENOMEM, "out of memory");
		l->v = p;
		l->cap = cap;
	}
	l->v[l->n++] = x;
	return 0;
}

/* Pass 1: digest of events.jsonl, and the indexes that get proofs. */
typedef struct scan {
	uint64_t limit;
	EVP_MD_CTX *md;
	uint64_t bytes;
	int prove_inputs;
	u64list checkpoints, inputs;
	uint64_t runs;
	cr_bundle_stats *stats;
} scan;

static int scan_event(void *ctx, uint64_t index, const char *leaf, size_t len)
{
	scan *s = ctx;
	json_t *ev = NULL;
	const char *type;
	int rc = 0;

	if (index >= s->limit)
		return 1; /* stop: beyond the sealed tree */
	if (!EVP_DigestUpdate(s->md, leaf, len) || !EVP_DigestUpdate(s->md, "\n", 1))
		return cr_error_set(CR_ECRYPTO, "SHA-256 update failed");
	s->bytes += len + 1;
	s->stats->events++;
	if (cr_event_parse(&ev, leaf, len) != 0)
		return cr_error_set(CR_ECORRUPT, "event %" PRIu64 ": %s (run `cleanroom check`)", index,
		                    cr_error_last());
	type = cr_event_type(ev);
	if (strcmp(type, "checkpoint") == 0) {
		s->stats->checkpoints++;
		rc = u64list_push(&s->checkpoints, index);
	} else if (strcmp(type, "input") == 0) {
		s->stats->inputs++;
		if (s->prove_inputs)
			rc = u64list_push(&s->inputs, index);
	} else if (strcmp(type, "run_start") == 0) {
		s->runs++;
	}
	json_decref(ev);
	return rc;
}

/* Spool one proof per index to f, as canonical JSON lines; digest on the way. */
static int spool_proofs(cr_store *store, const u64list *idx, uint64_t size, FILE *f, member *m,
                        uint64_t *count)
{
	uint8_t path[CR_MERKLE_MAX_PATH][CR_HASH_SIZE], leaf[CR_HASH_SIZE];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	cr_buf line = CR_BUF_INIT;
	char hex[65];
	unsigned int n;
	int rc = 0;

	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(md);
		return cr_error_set(CR_ECRYPTO, "SHA-256 init failed");
	}
	m->size = 0;
	for (size_t i = 0; i < idx->n; i++) {
		size_t len;

		if ((rc = cr_store_leaf_hash(store, idx->v[i], leaf)) != 0 ||
		    (rc = cr_store_inclusion_proof(store, idx->v[i], size, path, &len)) != 0)
			goto done;
		cr_buf_clear(&line);
		rc = cr_buf_puts(&line, "{\"audit_path\":[");
		for (size_t k = 0; !rc && k < len; k++) {
			cr_hex_encode(hex, path[k], CR_HASH_SIZE);
			rc = cr_buf_printf(&line, "%s\"%s\"", k ? "," : "", hex);
		}
		cr_hex_encode(hex, leaf, CR_HASH_SIZE);
		if (!rc)
			rc = cr_buf_printf(&line, "],\"index\":%" PRIu64 ",\"leaf_hash\":\"%s\",\"tree_size\":%" PRIu64 "}\n",
			                   idx->v[i], hex, size);
		if (rc)
			goto done;
		if (fwrite(line.ptr, 1, line.len, f) != line.len) {
			rc = cr_error_set_errno(CR_EIO, errno, "writing proofs to a temporary file");
			goto done;
		}
		EVP_DigestUpdate(md, line.ptr, line.len);
		m->size += line.len;
		(*count)++;
	}
	if (fflush(f) != 0 || fseek(f, 0, SEEK_SET) != 0) {
		rc = cr_error_set_errno(CR_EIO, errno, "rewinding the proof spool");
		goto done;
	}
	if (!EVP_DigestFinal_ex(md, m->sha, &n))
		rc = cr_error_set(CR_ECRYPTO, "SHA-256 final failed");
done:
	cr_buf_free(&line);
	EVP_MD_CTX_free(md);
	return rc;
}

static int archive_fail(struct archive *a, const char *what)
{
	return cr_error_set(CR_EARCHIVE, "%s: %s", what,
	                    archive_error_string(a) ? archive_error_string(a) : "archive error");
}

static int entry_header(struct archive *a, const char *name, uint64_t size)
{
	struct archive_entry *e = archive_entry_new();
	int rc = 0;

	if (!e)
		return cr_error_set(CR_ENOMEM, "out of memory");
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0644);
	archive_entry_set_size(e, (la_int64_t)size);
	archive_entry_set_mtime(e, 0, 0);
	archive_entry_set_uid(e, 0);
	archive_entry_set_gid(e, 0);
	archive_entry_set_uname(e, "root");
	archive_entry_set_gname(e, "root");
	if (archive_write_header(a, e) != ARCHIVE_OK)
		rc = archive_fail(a, name);
	archive_entry_free(e);
	return rc;
}

static int write_all(struct archive *a, const char *name, const void *data, size_t len)
{
	const char *p = data;

	while (len) {
		la_ssize_t n = archive_write_data(a, p, len);

		if (n <= 0)
			return archive_fail(a, name);
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_member(struct archive *a, const char *name, const void *data, size_t len)
{
	int rc = entry_header(a, name, len);

	return rc ? rc : write_all(a, name, data, len);
}

static int write_file_member(struct archive *a, const char *name, FILE *f, uint64_t size)
{
	char buf[65536];
	uint64_t left = size;
	int rc = entry_header(a, name, size);

	while (!rc && left) {
		size_t n = fread(buf, 1, left < sizeof(buf) ? (size_t)left : sizeof(buf), f);

		if (n == 0)
			return cr_error_set(CR_EIO, "%s: the spool ended early", name);
		rc = write_all(a, name, buf, n);
		left -= n;
	}
	return rc;
}

/* Pass 2: stream the events, buffered. */
typedef struct emit {
	struct archive *a;
	uint64_t limit;
	cr_buf buf;
	int rc;
} emit;

static int emit_event(void *ctx, uint64_t index, const char *leaf, size_t len)
{
	emit *e = ctx;
	int rc;

	if (index >= e->limit)
		return 1;
	if ((rc = cr_buf_put(&e->buf, leaf, len)) != 0 || (rc = cr_buf_putc(&e->buf, '\n')) != 0)
		return rc;
	if (e->buf.len >= FLUSH_BYTES) {
		if ((rc = write_all(e->a, "events.jsonl", e->buf.ptr, e->buf.len)) != 0)
			return rc;
		cr_buf_clear(&e->buf);
	}
	return 0;
}

static void digest_of(const char *data, size_t len, member *m)
{
	m->size = len;
	cr_sha256(m->sha, data, len);
}

static json_t *manifest_json(const member *members, size_t n, const cr_bundle_options *o,
                             const uint8_t root[CR_HASH_SIZE], const cr_bundle_stats *st,
                             uint64_t runs)
{
	json_t *list = json_array(), *m;
	char hex[65];

	for (size_t i = 0; i < n; i++) {
		cr_hex_encode(hex, members[i].sha, 32);
		json_array_append_new(list, json_pack("{s:s,s:s,s:I}", "name", members[i].name, "sha256",
		                                      hex, "size", (json_int_t)members[i].size));
	}
	cr_hex_encode(hex, root, 32);
	m = json_pack("{s:s,s:i,s:{s:s,s:s,s:I},s:o,s:{s:I,s:I,s:I,s:I}}", "format", "cleanroom-bundle",
	              "version", CR_BUNDLE_VERSION, "log", "origin", o->origin ? o->origin : "", "root",
	              hex, "tree_size", (json_int_t)o->tree_size, "members", list, "counts", "events",
	              (json_int_t)st->events, "checkpoints", (json_int_t)st->checkpoints, "inputs",
	              (json_int_t)st->inputs, "runs", (json_int_t)runs);
	return m;
}

int cr_bundle_write(cr_store *store, const char *path, const cr_bundle_options *o,
                    cr_bundle_stats *stats)
{
	static const char version[] = "cleanroom-bundle 1\n";
	member members[16];
	size_t nm = 0;
	scan sc;
	emit em;
	FILE *cp_spool = NULL, *in_spool = NULL;
	struct archive *a = NULL;
	cr_store_state state;
	uint8_t root[CR_HASH_SIZE];
	char *tmp = NULL, *manifest = NULL;
	member cp_m = {"proofs/checkpoints.jsonl", 0, {0}}, in_m = {"proofs/inputs.jsonl", 0, {0}};
	member ev_m = {"events.jsonl", 0, {0}};
	unsigned int dn;
	size_t plen;
	int rc = 0;
	json_t *mj = NULL;

	memset(stats, 0, sizeof(*stats));
	memset(&sc, 0, sizeof(sc));
	memset(&em, 0, sizeof(em));
	cr_store_state_get(store, &state);
	if (!o->seal_note || !o->public_pem)
		return cr_error_set(CR_EINVAL, "a bundle needs a seal and the public key");
	if (o->tree_size == 0 || o->tree_size > state.size)
		return cr_error_set(CR_ERANGE, "cannot bundle a tree of size %" PRIu64 " (the log holds %" PRIu64 ")",
		                    o->tree_size, state.size);
	if ((rc = cr_store_root_at(store, o->tree_size, root)) != 0)
		return rc;

	/* Pass 1. */
	sc.limit = o->tree_size;
	sc.prove_inputs = o->prove_inputs;
	sc.stats = stats;
	if ((sc.md = EVP_MD_CTX_new()) == NULL || !EVP_DigestInit_ex(sc.md, EVP_sha256(), NULL)) {
		rc = cr_error_set(CR_ECRYPTO, "SHA-256 init failed");
		goto done;
	}
	rc = cr_store_foreach_event(store, 0, scan_event, &sc);
	if (rc == 1)
		rc = 0;
	if (rc)
		goto done;
	if (stats->events != o->tree_size) {
		rc = cr_error_set(CR_ECORRUPT, "the log yielded %" PRIu64 " events, expected %" PRIu64,
		                  stats->events, o->tree_size);
		goto done;
	}
	if (!EVP_DigestFinal_ex(sc.md, ev_m.sha, &dn)) {
		rc = cr_error_set(CR_ECRYPTO, "SHA-256 final failed");
		goto done;
	}
	ev_m.size = sc.bytes;
	if ((cp_spool = tmpfile()) == NULL || (o->prove_inputs && (in_spool = tmpfile()) == NULL)) {
		rc = cr_error_set_errno(CR_EIO, errno, "cannot make a temporary file for proofs");
		goto done;
	}
	if ((rc = spool_proofs(store, &sc.checkpoints, o->tree_size, cp_spool, &cp_m, &stats->proofs)) != 0 ||
	    (o->prove_inputs &&
	     (rc = spool_proofs(store, &sc.inputs, o->tree_size, in_spool, &in_m, &stats->proofs)) != 0))
		goto done;

	/* The manifest lists every member but itself and the attestation, in order. */
	members[nm] = (member){"VERSION", 0, {0}};
	digest_of(version, strlen(version), &members[nm++]);
	members[nm] = (member){"seal.note", 0, {0}};
	digest_of(o->seal_note, strlen(o->seal_note), &members[nm++]);
	members[nm] = (member){"key.pub", 0, {0}};
	digest_of(o->public_pem, strlen(o->public_pem), &members[nm++]);
	if (o->vkey) {
		members[nm] = (member){"key.vkey", 0, {0}};
		digest_of(o->vkey, strlen(o->vkey), &members[nm++]);
	}
	if (o->anchor) {
		members[nm] = (member){"anchor.json", 0, {0}};
		digest_of(o->anchor, strlen(o->anchor), &members[nm++]);
	}
	members[nm++] = cp_m;
	if (o->prove_inputs)
		members[nm++] = in_m;
	members[nm++] = ev_m;
	mj = manifest_json(members, nm, o, root, stats, sc.runs);
	if (!mj || (manifest = json_dumps(mj, JSON_COMPACT | JSON_SORT_KEYS)) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory building the manifest");
		goto done;
	}

	/* Write. */
	plen = strlen(path) + 5;
	if ((tmp = malloc(plen)) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	snprintf(tmp, plen, "%s.tmp", path);
	if ((a = archive_write_new()) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
	    (o->gzip ? archive_write_add_filter_gzip(a) : archive_write_add_filter_zstd(a)) != ARCHIVE_OK ||
	    /* No name or time in the gzip header: the bytes depend on the log alone. */
	    (o->gzip && archive_write_set_filter_option(a, "gzip", "timestamp", NULL) != ARCHIVE_OK) ||
	    archive_write_open_filename(a, tmp) != ARCHIVE_OK) {
		rc = archive_fail(a, tmp);
		goto done;
	}
	if ((rc = write_member(a, "VERSION", version, strlen(version))) != 0 ||
	    (rc = write_member(a, "manifest.json", manifest, strlen(manifest))) != 0 ||
	    (rc = write_member(a, "seal.note", o->seal_note, strlen(o->seal_note))) != 0 ||
	    (rc = write_member(a, "key.pub", o->public_pem, strlen(o->public_pem))) != 0 ||
	    (o->vkey && (rc = write_member(a, "key.vkey", o->vkey, strlen(o->vkey))) != 0) ||
	    (o->anchor && (rc = write_member(a, "anchor.json", o->anchor, strlen(o->anchor))) != 0) ||
	    (o->attestation &&
	     (rc = write_member(a, "attestation.dsse.json", o->attestation, strlen(o->attestation))) != 0) ||
	    (rc = write_file_member(a, cp_m.name, cp_spool, cp_m.size)) != 0 ||
	    (o->prove_inputs && (rc = write_file_member(a, in_m.name, in_spool, in_m.size)) != 0) ||
	    (rc = entry_header(a, "events.jsonl", ev_m.size)) != 0)
		goto done;
	em.a = a;
	em.limit = o->tree_size;
	rc = cr_store_foreach_event(store, 0, emit_event, &em);
	if (rc == 1)
		rc = 0;
	if (!rc && em.buf.len)
		rc = write_all(a, "events.jsonl", em.buf.ptr, em.buf.len);
	if (rc)
		goto done;
	if (archive_write_close(a) != ARCHIVE_OK) {
		rc = archive_fail(a, tmp);
		goto done;
	}
	for (size_t i = 0; i < nm; i++)
		stats->bytes += members[i].size;
	if (rename(tmp, path) != 0)
		rc = cr_error_set_errno(CR_EIO, errno, "cannot write %s", path);
done:
	if (a)
		archive_write_free(a);
	if (rc && tmp)
		unlink(tmp);
	cr_buf_free(&em.buf);
	EVP_MD_CTX_free(sc.md);
	free(sc.checkpoints.v);
	free(sc.inputs.v);
	if (cp_spool)
		fclose(cp_spool);
	if (in_spool)
		fclose(in_spool);
	json_decref(mj);
	free(manifest);
	free(tmp);
	return rc;
}
