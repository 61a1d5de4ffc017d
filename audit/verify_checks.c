/*
 * The verifier's checks beyond the archive itself: the auditor's inputs
 * (--key, --data, --checkpoints, --root) before anything is read, the seal
 * and its signature, --root, --previous, and the recorded files on disk
 * (--data, --checkpoints). Recorded file lists are kept only when a folder
 * to compare with was given.
 *
 * --previous is read first, on its own, and only its verdict is kept (its
 * seal's size, root and origin, its key, its failures); the new bundle's
 * events then stream past its size, where the root of the prefix is taken.
 */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "audit/verify_internal.h"
#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "cleanroom/anchor.h"
#include "cleanroom/attest.h"
#include "cleanroom/dsse.h"
#include "cleanroom/seal.h"
#include "util/codec.h"

static int files_push(cr_verify_files *f, const char *path, const char *sha)
{
	if (f->n == f->cap) {
		size_t cap = f->cap ? 2 * f->cap : 256;
		cr_verify_file *p = realloc(f->v, cap * sizeof(*p));

		if (!p)
			return cr_error_set(CR_ENOMEM, "out of memory");
		f->v = p;
		f->cap = cap;
	}
	memset(&f->v[f->n], 0, sizeof(cr_verify_file));
	if ((f->v[f->n].path = strdup(path)) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	snprintf(f->v[f->n].sha, sizeof(f->v[f->n].sha), "%s", sha ? sha : "");
	f->n++;
	return 0;
}

int cr_verify_event_hook(cr_verify *v, uint64_t index, const char *leaf, size_t len,
                         const json_t *ev)
{
	const char *type = cr_event_type(ev);
	const char *path = json_string_value(json_object_get(ev, "path"));
	const char *sha = json_string_value(json_object_get(ev, "sha256"));

	if (v->att && !v->att_failed &&
	    cr_attest_checker_feed(v->att, index, leaf, len, ev) != 0)
		v->att_failed = 1; /* the checker keeps the message for finish() */
	if (strcmp(type, "run_start") == 0 && v->opts->data_dir) {
		json_t *roots = json_object_get(ev, "data_roots");
		size_t i;
		json_t *r;

		if (!v->data_roots)
			v->data_roots = json_array();
		json_array_foreach(roots, i, r)
			json_array_append(v->data_roots, r);
	}
	/* Paths stored as path_b64 (not UTF-8) cannot be named on this side; skipped. */
	if (!path)
		return 0;
	if (strcmp(type, "input") == 0 && v->opts->data_dir)
		return files_push(&v->inputs, path, sha);
	if (strcmp(type, "checkpoint") == 0 && v->opts->checkpoints_dir)
		return files_push(&v->checkpoints, path, sha);
	return 0;
}

/* Never prompt for a passphrase: a public key has none. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;
}

/* A PEM public key held in memory (key.pub); NULL when it is not one. */
static EVP_PKEY *pem_public(const cr_buf *pub)
{
	EVP_PKEY *key = NULL;
	BIO *bio;

	if (!pub->ptr || pub->len > INT_MAX || (bio = BIO_new_mem_buf(pub->ptr, (int)pub->len)) == NULL)
		return NULL;
	key = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
	BIO_free(bio);
	ERR_clear_error();
	return key;
}

/* Load the trusted key: --key (PEM file), else the bundle's own key.pub. */
static EVP_PKEY *load_key(cr_verify *v)
{
	EVP_PKEY *key = NULL;
	const cr_buf *pub = &v->small[CR_SMALL_PUB];
	char msg[700];

	if (v->trusted) {
		if (EVP_PKEY_up_ref(v->trusted) != 1) {
			cr_verify_fail(v, "seal", "cannot take a reference to the key");
			return NULL;
		}
		return v->trusted;
	}
	if (v->opts->public_pem) {
		if (cr_key_load_public(&key, v->opts->public_pem) == 0)
			return key;
		snprintf(msg, sizeof(msg), "%s", cr_error_last());
		cr_verify_fail(v, "seal", msg);
		return NULL;
	}
	v->sum->key_from_bundle = 1;
	if (!pub->ptr) {
		cr_verify_fail(v, "seal", "no --key given and key.pub is missing from the bundle");
		return NULL;
	}
	/* Parsed from memory: the verifier writes nothing to disk. */
	if ((key = pem_public(pub)) == NULL) {
		cr_verify_fail(v, "seal", "key.pub: not a PEM public key (SubjectPublicKeyInfo)");
		return NULL;
	}
	if (!EVP_PKEY_is_a(key, "ED25519")) {
		snprintf(msg, sizeof(msg), "key.pub: a %s key, not Ed25519",
		         EVP_PKEY_get0_type_name(key) ? EVP_PKEY_get0_type_name(key) : "non-Ed25519");
		cr_verify_fail(v, "seal", msg);
		EVP_PKEY_free(key);
		return NULL;
	}
	return key;
}

static void check_attestation_start(cr_verify *v)
{
	const cr_buf *env = &v->small[CR_SMALL_ATTESTATION];
	const cr_buf *note = &v->small[CR_SMALL_SEAL];
	char *payload = NULL, msg[700];
	size_t plen;

	if (!env->ptr) {
		cr_verify_fail(v, "attestation", "attestation.dsse.json is missing");
		return;
	}
	if (cr_dsse_verify(&payload, &plen, env->ptr, env->len, CR_DSSE_INTOTO_TYPE, v->key) != 0) {
		snprintf(msg, sizeof(msg), "attestation.dsse.json: %s", cr_error_last());
		cr_verify_fail(v, "attestation", msg);
		return;
	}
	if (cr_attest_checker_new(&v->att, payload, plen, note->ptr, note->len) != 0) {
		snprintf(msg, sizeof(msg), "attestation statement: %s", cr_error_last());
		cr_verify_fail(v, "attestation", msg);
		v->att = NULL;
	}
	free(payload);
}

void cr_verify_seal_hook(cr_verify *v)
{
	const cr_buf *note = &v->small[CR_SMALL_SEAL];
	const cr_buf *vk = &v->small[CR_SMALL_VKEY];
	cr_seal_body body = {0};
	cr_vkey bundle_vkey, vkey;
	const char *name = CR_KEY_DEFAULT_NAME;
	size_t text_len;
	char msg[700];

	if (v->seal_done)
		return;
	v->seal_done = 1;
	if (!note->ptr) {
		cr_verify_fail(v, "seal", "seal.note is missing");
		return;
	}
	if ((v->key = load_key(v)) == NULL)
		return;
	/* The bundle's own key files must hold the key the seal is checked with. */
	if (v->opts->public_pem && v->small[CR_SMALL_PUB].ptr) {
		EVP_PKEY *own = pem_public(&v->small[CR_SMALL_PUB]);

		if (!own || EVP_PKEY_eq(own, v->key) != 1) {
			snprintf(msg, sizeof(msg), "key.pub is not the key %s", v->opts->public_pem);
			cr_verify_fail(v, "seal", msg);
		}
		EVP_PKEY_free(own);
	}
	/* The name only labels the signature line; the key bits are what is trusted. */
	if (vk->ptr) {
		size_t n = vk->len;

		while (n && (vk->ptr[n - 1] == '\n'))
			n--;
		if (cr_vkey_parse(&bundle_vkey, vk->ptr, n) != 0) {
			snprintf(msg, sizeof(msg), "key.vkey: %s", cr_error_last());
			cr_error_clear();
			cr_verify_fail(v, "seal", msg);
		} else if (cr_vkey_from_key(&vkey, v->key, bundle_vkey.name) != 0 ||
		           CRYPTO_memcmp(vkey.key, bundle_vkey.key, sizeof(vkey.key)) != 0) {
			cr_error_clear();
			cr_verify_fail(v, "seal", "key.vkey holds another key than the one the seal is checked with");
		} else {
			name = bundle_vkey.name;
		}
	}
	if (cr_vkey_from_key(&vkey, v->key, name) != 0 ||
	    cr_note_verify(note->ptr, note->len, &vkey, &text_len) != 0) {
		snprintf(msg, sizeof(msg), "seal.note: %s", cr_error_last());
		cr_verify_fail(v, "seal", msg);
		return;
	}
	if (cr_seal_body_parse(&body, note->ptr, text_len) != 0) {
		snprintf(msg, sizeof(msg), "seal.note: %s", cr_error_last());
		cr_verify_fail(v, "seal", msg);
		return;
	}
	snprintf(v->sum->origin, sizeof(v->sum->origin), "%s", body.origin);
	v->sum->tree_size = body.size;
	memcpy(v->sum->root, body.root, 32);
	cr_seal_body_free(&body);
	v->vkey = vkey;
	v->sealed = 1;
	snprintf(msg, sizeof(msg), "signed by %s with %s", name,
	         v->opts->public_pem ? v->opts->public_pem
	                             : "the key shipped in the bundle (not independently trusted)");
	cr_verify_pass(v, "seal", msg);
	check_attestation_start(v);
}

static void check_attestation_end(cr_verify *v)
{
	char msg[700];

	if (!v->att)
		return;
	if (cr_attest_checker_finish(v->att) != 0) {
		snprintf(msg, sizeof(msg), "the attestation disagrees with the events: %s", cr_error_last());
		cr_verify_fail(v, "attestation", msg);
	} else {
		cr_verify_pass(v, "attestation", "the DSSE signature verifies and the statement agrees with the events");
	}
}

static void check_anchor(cr_verify *v)
{
	const cr_buf *anchor = &v->small[CR_SMALL_ANCHOR];
	const cr_buf *note = &v->small[CR_SMALL_SEAL];
	int published = 0;
	char msg[700];

	if (!anchor->ptr) {
		cr_verify_fail(v, "anchor", "anchor.json is missing");
		return;
	}
	if (!note->ptr)
		return;
	if (cr_anchor_check(anchor->ptr, anchor->len, note->ptr, note->len, &published) != 0) {
		const char *why = cr_error_last();

		/* The checker names anchor.json itself, but for what it takes from the seal. */
		snprintf(msg, sizeof(msg), "%s%s", strncmp(why, "anchor.json", 11) == 0 ? "" : "anchor.json: ",
		         why);
		cr_verify_fail(v, "anchor", msg);
		return;
	}
	cr_verify_pass(v, "anchor", published
	               ? "anchor.json agrees with the seal; it claims a publication that cannot be checked "
	                 "offline (check the chain, then use --root)"
	               : "anchor.json agrees with the seal (not published yet)");
}

/* The folder recorded files are relative to: the data root holding it, else the common parent. */
static const char *common_parent(cr_verify_files *f, char *out, size_t cap)
{
	size_t len = 0;

	out[0] = '\0';
	for (size_t i = 0; i < f->n; i++) {
		const char *p = f->v[i].path;
		const char *slash = strrchr(p, '/');
		size_t dl = slash ? (size_t)(slash - p) : 0;

		if (i == 0) {
			len = dl < cap - 1 ? dl : cap - 1;
			memcpy(out, p, len);
			out[len] = '\0';
			continue;
		}
		while (len && (strncmp(out, p, len) != 0 || (p[len] != '/' && p[len] != '\0'))) {
			char *s = strrchr(out, '/');

			len = s ? (size_t)(s - out) : 0;
			out[len] = '\0';
		}
	}
	return out;
}

static void assign_rel(cr_verify *v, cr_verify_files *f)
{
	char parent[4096];

	common_parent(f, parent, sizeof(parent));
	for (size_t i = 0; i < f->n; i++) {
		const char *p = f->v[i].path, *best = NULL;
		size_t best_len = 0, k;
		json_t *r;

		json_array_foreach(v->data_roots, k, r) {
			const char *root = json_string_value(r);
			size_t rl = root ? strlen(root) : 0;

			if (rl > best_len && strncmp(p, root, rl) == 0 && p[rl] == '/') {
				best = root;
				best_len = rl;
			}
		}
		if (!best)
			best_len = strlen(parent);
		f->v[i].rel = (char *)p + best_len + (p[best_len] == '/' ? 1 : 0);
	}
}

static int cmp_rel(const void *a, const void *b)
{
	return strcmp(((const cr_verify_file *)a)->rel, ((const cr_verify_file *)b)->rel);
}

typedef struct numbered_file {
	cr_verify_file f;
	size_t i; /* place in the log */
} numbered_file;

static int cmp_rel_then_place(const void *a, const void *b)
{
	const numbered_file *x = a, *y = b;
	int c = strcmp(x->f.rel, y->f.rel);

	return c ? c : (x->i > y->i) - (x->i < y->i);
}

/*
 * Sort by relative name, one entry per file: a file recorded more than once
 * (added, then read by a run) is judged by its last recording, and counted
 * once. Falls back to a plain sort when memory is short.
 */
static void sort_unique(cr_verify_files *f)
{
	numbered_file *t = f->n ? calloc(f->n, sizeof(*t)) : NULL;
	size_t i, n = 0;

	if (!t) {
		if (f->n)
			qsort(f->v, f->n, sizeof(*f->v), cmp_rel);
		return;
	}
	for (i = 0; i < f->n; i++) {
		t[i].f = f->v[i];
		t[i].i = i;
	}
	qsort(t, f->n, sizeof(*t), cmp_rel_then_place);
	for (i = 0; i < f->n; i++) {
		if (i + 1 < f->n && strcmp(t[i].f.rel, t[i + 1].f.rel) == 0) {
			free(t[i].f.path); /* an earlier recording of the same file */
			continue;
		}
		f->v[n++] = t[i].f;
	}
	f->n = n;
	free(t);
}

typedef struct disk_walk {
	cr_verify *v;
	cr_verify_files *f;
	const char *check;
	size_t root_len;
	uint64_t extra;
} disk_walk;

static void walk_extra(disk_walk *w, const char *dir, int depth)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[4096];

	if (!d || depth > 64) {
		if (d)
			closedir(d);
		return;
	}
	while ((e = readdir(d)) != NULL) {
		struct stat st;
		cr_verify_file key;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, e->d_name) >= sizeof(path) ||
		    lstat(path, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			walk_extra(w, path, depth + 1);
			continue;
		}
		if (!S_ISREG(st.st_mode))
			continue;
		key.rel = path + w->root_len + 1;
		if (!bsearch(&key, w->f->v, w->f->n, sizeof(*w->f->v), cmp_rel)) {
			char msg[4200];

			if (++w->extra <= 20) {
				snprintf(msg, sizeof(msg), "extra: %s is not recorded", path);
				cr_verify_fail(w->v, w->check, msg);
			}
		}
	}
	closedir(d);
}

static void check_files(cr_verify *v, cr_verify_files *f, const char *dir, const char *check)
{
	uint64_t missing = 0, changed = 0, ok = 0;
	disk_walk w = {v, f, check, 0, 0};
	char path[8192], msg[8400], hex[65];

	if (!dir)
		return;
	assign_rel(v, f);
	sort_unique(f);
	for (size_t i = 0; i < f->n; i++) {
		uint8_t sha[32];
		cr_file_id id;
		int rc;

		snprintf(path, sizeof(path), "%s/%s", dir, f->v[i].rel);
		rc = cr_hash_file(path, sha, &id);
		if (rc < 0) {
			cr_error_clear();
			if (++missing <= 20) {
				snprintf(msg, sizeof(msg), "missing: %s (recorded as %s)", path, f->v[i].path);
				cr_verify_fail(v, check, msg);
			}
			continue;
		}
		cr_hex_encode(hex, sha, 32);
		if (rc != 0 || !f->v[i].sha[0] || strcmp(hex, f->v[i].sha) != 0) {
			if (++changed <= 20) {
				snprintf(msg, sizeof(msg), "changed: %s has SHA-256 %s, recorded %s", path, hex,
				         f->v[i].sha[0] ? f->v[i].sha : "(changed during the run)");
				cr_verify_fail(v, check, msg);
			}
			continue;
		}
		ok++;
	}
	w.root_len = strlen(dir);
	while (w.root_len > 1 && dir[w.root_len - 1] == '/')
		w.root_len--;
	walk_extra(&w, dir, 0);
	snprintf(msg, sizeof(msg), "%s: %" PRIu64 " files match, %" PRIu64 " missing, %" PRIu64
	         " changed, %" PRIu64 " extra", dir, ok, missing, changed, w.extra);
	if (missing || changed || w.extra)
		cr_verify_fail(v, check, msg);
	else
		cr_verify_pass(v, check, msg);
}

static void check_root_option(cr_verify *v)
{
	uint8_t want[32];
	char msg[300], hex[65];
	const char *h = v->opts->root_hex;

	if (!h)
		return;
	if (strncmp(h, "0x", 2) == 0)
		h += 2;
	if (cr_hex_decode(want, 32, h, strlen(h)) != 0) {
		cr_error_clear();
		cr_verify_fail(v, "root", "--root is not 64 hex digits");
		return;
	}
	cr_hex_encode(hex, v->sum->root, 32);
	if (!v->sealed || CRYPTO_memcmp(want, v->sum->root, 32) != 0) {
		snprintf(msg, sizeof(msg), "the anchored root %s differs from the sealed root %s", h, hex);
		cr_verify_fail(v, "root", msg);
	} else {
		snprintf(msg, sizeof(msg), "the sealed root equals the anchored root %s", hex);
		cr_verify_pass(v, "root", msg);
	}
}

/* What --previous left to report: its verdict, read before this bundle. */
#define PREV_SHOWN 20

typedef struct cr_verify_prev {
	cr_verify_summary sum;
	EVP_PKEY *key;            /* the key its seal verified with (NULL: none) */
	char *shown[PREV_SHOWN];  /* its first failures, as messages */
	size_t n_shown;
	uint64_t failures;
} cr_verify_prev;

static void collect_failure(void *ctx, const char *check, int ok, const char *detail)
{
	cr_verify_prev *p = ctx;
	char msg[1400];

	if (ok)
		return;
	if (p->failures++ >= PREV_SHOWN)
		return;
	snprintf(msg, sizeof(msg), "the previous bundle fails its own %s check: %s", check, detail);
	p->shown[p->n_shown] = strdup(msg);
	if (p->shown[p->n_shown])
		p->n_shown++;
}

static void prev_free(cr_verify_prev *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_shown; i++)
		free(p->shown[i]);
	cr_key_free(p->key);
	free(p);
}

int cr_verify_previous_read(cr_verify *v)
{
	cr_verify_options o = {0};
	cr_verify_prev *p;
	cr_verify old;
	int rc;

	if (!v->opts->previous)
		return 0;
	if ((p = calloc(1, sizeof(*p))) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	memset(&old, 0, sizeof(old));
	o.bundle = v->opts->previous;
	o.public_pem = v->opts->public_pem;
	old.opts = &o;
	old.fn = collect_failure;
	old.ctx = p;
	old.sum = &p->sum;
	old.trusted = v->trusted; /* borrowed */
	rc = cr_verify_run(&old, o.bundle);
	old.trusted = NULL;
	if (rc) {
		char msg[900];

		snprintf(msg, sizeof(msg), "--previous %s", cr_error_last());
		cr_verify_free(&old);
		prev_free(p);
		return cr_error_set(rc, "%s", msg);
	}
	p->key = old.key;
	old.key = NULL; /* now p's */
	cr_verify_free(&old);
	v->prev = p;
	v->prefix_size = p->sum.tree_size;
	return 0;
}

static void check_previous(cr_verify *v)
{
	cr_verify_prev *p = v->prev;
	char msg[600], a[65], b[65];

	if (!p)
		return;
	for (size_t i = 0; i < p->n_shown; i++)
		cr_verify_fail(v, "previous", p->shown[i]);
	if (p->failures > p->n_shown) {
		snprintf(msg, sizeof(msg), "the previous bundle fails %" PRIu64 " checks in all", p->failures);
		cr_verify_fail(v, "previous", msg);
	}
	/* Without --key each bundle was checked with its own key.pub: they must be one key. */
	if (v->key && p->key && EVP_PKEY_eq(v->key, p->key) != 1) {
		cr_verify_fail(v, "previous", "the previous bundle is signed with another key");
		return;
	}
	if (!v->sealed) {
		cr_verify_fail(v, "previous", "this bundle has no valid seal to compare the previous one with");
		return;
	}
	if (strcmp(p->sum.origin, v->sum->origin) != 0) {
		snprintf(msg, sizeof(msg), "the previous bundle is of another log (origin %s, not %s)",
		         p->sum.origin, v->sum->origin);
		cr_verify_fail(v, "previous", msg);
		return;
	}
	if (p->sum.tree_size == 0 || !v->have_prefix) {
		snprintf(msg, sizeof(msg), "the previous bundle seals %" PRIu64 " events; this one holds %" PRIu64,
		         p->sum.tree_size, v->n_leaves);
		cr_verify_fail(v, "previous", msg);
		return;
	}
	if (CRYPTO_memcmp(v->prefix_root, p->sum.root, 32) != 0) {
		cr_hex_encode(a, v->prefix_root, 32);
		cr_hex_encode(b, p->sum.root, 32);
		snprintf(msg, sizeof(msg), "this log's first %" PRIu64 " events give root %s, not the previous "
		         "bundle's %s: the log was rewritten", p->sum.tree_size, a, b);
		cr_verify_fail(v, "previous", msg);
		return;
	}
	snprintf(msg, sizeof(msg), "this log extends the previous bundle's (%" PRIu64 " -> %" PRIu64 " events)",
	         p->sum.tree_size, v->sum->tree_size);
	cr_verify_pass(v, "previous", msg);
}

static int folder_ok(const char *dir, const char *option)
{
	struct stat st;

	if (!dir)
		return 0;
	if (stat(dir, &st) != 0)
		return cr_error_set_errno(errno == ENOENT ? CR_ENOTFOUND : CR_EIO, errno, "%s %s", option, dir);
	if (!S_ISDIR(st.st_mode))
		return cr_error_set(CR_EINVAL, "%s %s: not a folder", option, dir);
	return 0;
}

int cr_verify_preflight(cr_verify *v)
{
	const char *h = v->opts->root_hex;
	uint8_t root[32];
	int rc;

	if (h) {
		if (strncmp(h, "0x", 2) == 0)
			h += 2;
		if (cr_hex_decode(root, 32, h, strlen(h)) != 0)
			return cr_error_set(CR_EINVAL, "--root %s: not 64 hex digits", v->opts->root_hex);
	}
	if ((rc = folder_ok(v->opts->data_dir, "--data")) != 0 ||
	    (rc = folder_ok(v->opts->checkpoints_dir, "--checkpoints")) != 0)
		return rc;
	if (v->opts->public_pem && (rc = cr_key_load_public(&v->trusted, v->opts->public_pem)) != 0) {
		char msg[700];

		snprintf(msg, sizeof(msg), "--key: %s", cr_error_last());
		return cr_error_set(rc, "%s", msg);
	}
	return 0;
}

int cr_verify_finish_hooks(cr_verify *v)
{
	check_attestation_end(v);
	check_anchor(v);
	check_root_option(v);
	check_previous(v);
	check_files(v, &v->inputs, v->opts->data_dir, "data");
	check_files(v, &v->checkpoints, v->opts->checkpoints_dir, "checkpoints");
	return 0;
}

static void files_free(cr_verify_files *f)
{
	for (size_t i = 0; i < f->n; i++)
		free(f->v[i].path);
	free(f->v);
	memset(f, 0, sizeof(*f));
}

void cr_verify_hooks_free(cr_verify *v)
{
	prev_free(v->prev);
	v->prev = NULL;
	cr_key_free(v->trusted);
	v->trusted = NULL;
	files_free(&v->inputs);
	files_free(&v->checkpoints);
	json_decref(v->data_roots);
	v->data_roots = NULL;
	cr_attest_checker_free(v->att);
	v->att = NULL;
	cr_key_free(v->key);
	v->key = NULL;
}
