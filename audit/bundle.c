/*
 * The audit bundle writer. Two passes over the events: the first learns
 * the digest and size of events.jsonl and which events need proofs, the
 * second streams them into the archive after the small members. Proofs
 * are spooled to anonymous temporary files, so memory stays bounded
 * however large the log is. Every entry has fixed metadata (mode 0644,
 * owner 0, time 0) and a fixed place, so the output is reproducible.
 *
 * Earlier seals of the store (<store>/seals/<size>.note) signed by the
 * bundle's key for the same origin each get a consistency proof to the
 * sealed size, the seal itself carried in the line (docs/formats/bundle.md,
 * "Earlier seals and their consistency proofs"); a seal of ours whose root
 * the log no longer has at that size stops the bundle (the log was
 * rewritten after it was sealed).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "cleanroom/bundle.h"
#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "cleanroom/merkle.h"
#include "cleanroom/seal.h"
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

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
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

/* The sizes of <store>/seals/<16 digits>.note at most limit, ascending. */
static int seal_sizes(const char *dir, uint64_t limit, u64list *out)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int rc = 0;

	if (!d)
		return errno == ENOENT ? 0 : cr_error_set_errno(CR_EIO, errno, "cannot read %s", dir);
	while (!rc && (e = readdir(d)) != NULL) {
		uint64_t size = 0;
		size_t i;

		if (strlen(e->d_name) != 16 + 5 || strcmp(e->d_name + 16, ".note") != 0)
			continue;
		for (i = 0; i < 16 && e->d_name[i] >= '0' && e->d_name[i] <= '9'; i++)
			size = size * 10 + (uint64_t)(e->d_name[i] - '0');
		if (i == 16 && size >= 1 && size < limit)
			rc = u64list_push(out, size);
	}
	closedir(d);
	if (!rc && out->n)
		qsort(out->v, out->n, sizeof(*out->v), cmp_u64);
	return rc;
}

/*
 * A seal file, whole: CR_ERANGE when it is over max bytes or not a regular
 * file (never waiting on a fifo). *out is malloc'ed.
 */
static int read_seal(const char *path, size_t max, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	FILE *f = NULL;
	struct stat st;
	char *buf = NULL;
	size_t n;
	int rc = 0;

	*out = NULL;
	*len = 0;
	if (fd < 0)
		return cr_error_set_errno(CR_EIO, errno, "cannot open seal %s", path);
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return cr_error_set(CR_ERANGE, "seal %s is not a regular file", path);
	}
	if ((f = fdopen(fd, "rb")) == NULL) {
		close(fd);
		return cr_error_set_errno(CR_EIO, errno, "cannot open seal %s", path);
	}
	if ((buf = malloc(max + 1)) == NULL) {
		fclose(f);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	n = fread(buf, 1, max + 1, f);
	if (ferror(f))
		rc = cr_error_set_errno(CR_EIO, errno, "cannot read seal %s", path);
	else if (n > max)
		rc = cr_error_set(CR_ERANGE, "seal %s is over %zu bytes", path, max);
	fclose(f);
	if (rc) {
		free(buf);
		return rc;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return 0;
}

/*
 * One canonical line per earlier seal of ours, to f:
 * {"new_size","old_root","old_size","proof","seal"}. Seals of another key,
 * name or origin, malformed or over CR_BUNDLE_SEAL_MAX bytes, are left out
 * and counted in *skipped.
 */
static int spool_consistency(cr_store *store, const cr_bundle_options *o, FILE *f, member *m,
                             cr_bundle_stats *stats)
{
	uint8_t path[CR_MERKLE_MAX_PATH][CR_HASH_SIZE], root[CR_HASH_SIZE];
	char hex[65], ohex[65], file[32];
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	u64list sizes = {NULL, 0, 0};
	cr_buf dir = CR_BUF_INIT, fpath = CR_BUF_INIT;
	cr_vkey vkey;
	size_t vlen = strlen(o->vkey);
	unsigned int dn;
	int rc;

	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		EVP_MD_CTX_free(md);
		return cr_error_set(CR_ECRYPTO, "SHA-256 init failed");
	}
	m->size = 0;
	while (vlen && o->vkey[vlen - 1] == '\n')
		vlen--;
	if ((rc = cr_vkey_parse(&vkey, o->vkey, vlen)) != 0 ||
	    (rc = cr_buf_printf(&dir, "%s/%s", cr_store_path(store), CR_SEAL_DIR)) != 0 ||
	    (rc = seal_sizes(dir.ptr, o->tree_size, &sizes)) != 0)
		goto done;
	for (size_t i = 0; i < sizes.n; i++) {
		cr_seal_body body = {0};
		json_t *line = NULL, *proof = NULL;
		char *note = NULL, *text = NULL;
		size_t len, text_len, plen;

		snprintf(file, sizeof(file), "%016" PRIu64 ".note", sizes.v[i]);
		cr_buf_clear(&fpath);
		if ((rc = cr_buf_printf(&fpath, "%s/%s", dir.ptr, file)) != 0)
			goto done;
		rc = read_seal(fpath.ptr, CR_BUNDLE_SEAL_MAX, &note, &len);
		if (rc == CR_ERANGE) {
			stats->seals_skipped++;
			cr_error_clear();
			continue;
		}
		if (rc)
			goto done;
		/* Ours: signed by this key under this name, for this log, at the size its name says. */
		if (cr_note_verify(note, len, &vkey, &text_len) != 0 ||
		    cr_seal_body_parse(&body, note, text_len) != 0 || body.size != sizes.v[i] ||
		    strcmp(body.origin, o->origin ? o->origin : "") != 0) {
			cr_error_clear();
			cr_seal_body_free(&body);
			free(note);
			stats->seals_skipped++;
			continue;
		}
		if ((rc = cr_store_root_at(store, body.size, root)) == 0 &&
		    CRYPTO_memcmp(root, body.root, CR_HASH_SIZE) != 0) {
			cr_hex_encode(hex, root, CR_HASH_SIZE);
			cr_hex_encode(ohex, body.root, CR_HASH_SIZE);
			rc = cr_error_set(CR_ECORRUPT, "seal %s, signed by this key, says root %s at size %" PRIu64
			                  ", but the log has %s there: the log was rewritten after it was sealed "
			                  "(run `cleanroom check`)", fpath.ptr, ohex, body.size, hex);
		}
		if (!rc)
			rc = cr_store_consistency_proof(store, body.size, o->tree_size, path, &plen);
		if (!rc && (proof = json_array()) == NULL)
			rc = cr_error_set(CR_ENOMEM, "out of memory");
		for (size_t k = 0; !rc && k < plen; k++) {
			cr_hex_encode(hex, path[k], CR_HASH_SIZE);
			if (json_array_append_new(proof, json_string(hex)) != 0)
				rc = cr_error_set(CR_ENOMEM, "out of memory");
		}
		cr_hex_encode(ohex, body.root, CR_HASH_SIZE);
		if (!rc) {
			line = json_pack("{s:I,s:s,s:I,s:O,s:s%}", "new_size", (json_int_t)o->tree_size,
			                 "old_root", ohex, "old_size", (json_int_t)body.size, "proof", proof,
			                 "seal", note, len);
			if (!line || (text = json_dumps(line, JSON_COMPACT | JSON_SORT_KEYS)) == NULL)
				rc = cr_error_set(CR_ENOMEM, "out of memory building a consistency proof");
		}
		if (!rc) {
			size_t n = strlen(text);

			if (fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF)
				rc = cr_error_set_errno(CR_EIO, errno, "writing proofs to a temporary file");
			EVP_DigestUpdate(md, text, n);
			EVP_DigestUpdate(md, "\n", 1);
			m->size += n + 1;
			stats->consistency++;
		}
		free(text);
		json_decref(line);
		json_decref(proof);
		cr_seal_body_free(&body);
		free(note);
		if (rc)
			goto done;
	}
	if (fflush(f) != 0 || fseek(f, 0, SEEK_SET) != 0) {
		rc = cr_error_set_errno(CR_EIO, errno, "rewinding the proof spool");
		goto done;
	}
	if (!EVP_DigestFinal_ex(md, m->sha, &dn))
		rc = cr_error_set(CR_ECRYPTO, "SHA-256 final failed");
done:
	EVP_MD_CTX_free(md);
	free(sizes.v);
	cr_buf_free(&dir);
	cr_buf_free(&fpath);
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
	FILE *cp_spool = NULL, *in_spool = NULL, *cs_spool = NULL;
	struct archive *a = NULL;
	cr_store_state state;
	uint8_t root[CR_HASH_SIZE];
	char *tmp = NULL, *manifest = NULL;
	member cp_m = {"proofs/checkpoints.jsonl", 0, {0}}, in_m = {"proofs/inputs.jsonl", 0, {0}};
	member cs_m = {"proofs/consistency.jsonl", 0, {0}}, ev_m = {"events.jsonl", 0, {0}};
	unsigned int dn;
	size_t plen;
	int rc = 0;
	json_t *mj = NULL;

	memset(stats, 0, sizeof(*stats));
	memset(&sc, 0, sizeof(sc));
	memset(&em, 0, sizeof(em));
	cr_store_state_get(store, &state);
	if (!o->seal_note || !o->public_pem || !o->vkey)
		return cr_error_set(CR_EINVAL, "a bundle needs a seal and the public and verifier keys");
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
	if ((cp_spool = tmpfile()) == NULL || (cs_spool = tmpfile()) == NULL ||
	    (o->prove_inputs && (in_spool = tmpfile()) == NULL)) {
		rc = cr_error_set_errno(CR_EIO, errno, "cannot make a temporary file for proofs");
		goto done;
	}
	if ((rc = spool_proofs(store, &sc.checkpoints, o->tree_size, cp_spool, &cp_m, &stats->proofs)) != 0 ||
	    (o->prove_inputs &&
	     (rc = spool_proofs(store, &sc.inputs, o->tree_size, in_spool, &in_m, &stats->proofs)) != 0) ||
	    (rc = spool_consistency(store, o, cs_spool, &cs_m, stats)) != 0)
		goto done;

	/*
	 * The manifest lists every member but itself, the attestation (signed on
	 * its own) and anchor.json (checked field by field against the seal; its
	 * "published" block is filled in after the bundle is written), in order.
	 */
	members[nm] = (member){"VERSION", 0, {0}};
	digest_of(version, strlen(version), &members[nm++]);
	members[nm] = (member){"seal.note", 0, {0}};
	digest_of(o->seal_note, strlen(o->seal_note), &members[nm++]);
	members[nm] = (member){"key.pub", 0, {0}};
	digest_of(o->public_pem, strlen(o->public_pem), &members[nm++]);
	members[nm] = (member){"key.vkey", 0, {0}};
	digest_of(o->vkey, strlen(o->vkey), &members[nm++]);
	members[nm++] = cp_m;
	if (o->prove_inputs)
		members[nm++] = in_m;
	members[nm++] = cs_m;
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
	    (rc = write_member(a, "key.vkey", o->vkey, strlen(o->vkey))) != 0 ||
	    (o->anchor && (rc = write_member(a, "anchor.json", o->anchor, strlen(o->anchor))) != 0) ||
	    (o->attestation &&
	     (rc = write_member(a, "attestation.dsse.json", o->attestation, strlen(o->attestation))) != 0) ||
	    (rc = write_file_member(a, cp_m.name, cp_spool, cp_m.size)) != 0 ||
	    (o->prove_inputs && (rc = write_file_member(a, in_m.name, in_spool, in_m.size)) != 0) ||
	    (rc = write_file_member(a, cs_m.name, cs_spool, cs_m.size)) != 0 ||
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
	stats->bytes += strlen(manifest) + (o->anchor ? strlen(o->anchor) : 0) +
	                (o->attestation ? strlen(o->attestation) : 0);
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
	if (cs_spool)
		fclose(cs_spool);
	json_decref(mj);
	free(manifest);
	free(tmp);
	return rc;
}
