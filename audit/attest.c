/*
 * The lineage attestation: an in-toto Statement v1 built from a store's
 * events, and the checker that holds one against a log
 * (docs/formats/attestation.md).
 *
 * Builder and checker read events through the same code (observe() and
 * the run table), so what one writes is exactly what the other expects.
 * Memory stays bounded by the statement, never by the log: per event only
 * counters and two compact Merkle states change; runs and checkpoints are
 * kept, and their total size is capped at CR_ATTEST_STATEMENT_MAX (the
 * builder stops with CR_ERANGE, the checker never keeps more than the
 * statement lists). The statement is serialised with sorted keys and no
 * whitespace, and the checker refuses any other form, so a statement is a
 * pure function of the log and the seal.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>

#include "cleanroom/attest.h"
#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "cleanroom/merkle.h"
#include "cleanroom/seal.h"
#include "util/buf.h"
#include "util/codec.h"

#define NONE UINT64_MAX /* no index */

/* One checkpoint event, as the statement lists it. */
typedef struct ckpt {
	uint64_t index;
	uint8_t *path; /* raw bytes, NUL-terminated */
	size_t path_len;
	int has_sha;
	uint8_t sha[CR_SHA256_SIZE];
	int changed;
	char *run;  /* NULL when the event names no run */
	char *name; /* subject name, set by assign_names() */
} ckpt;

typedef struct run {
	char *id;
	json_t *argv;      /* a reference; JSON null when absent */
	char *start, *end; /* NULL when absent */
	int has_exit;
	int64_t exit_status;
	uint64_t checkpoints, inputs;
	int ended;
} run;

/* Runs in order of their run_start, with a hash index by id. */
typedef struct run_table {
	run *v;
	size_t n, cap;
	size_t *slots; /* index + 1 into v; 0 is empty */
	size_t nslots;
} run_table;

/* What every reader of the events keeps. */
typedef struct summary {
	cr_merkle_state log;
	uint64_t events;
	run_table runs;
	uint64_t inputs, input_bytes, first_input, last_input;
	cr_merkle_state input_tree;
	int code; /* CR_ECORRUPT when building, CR_EVERIFY when checking */
} summary;

enum { EV_OTHER, EV_RUN_START, EV_RUN_END, EV_CHECKPOINT, EV_INPUT };

/* One event, reduced to what the statement is about. Strings are borrowed
 * from the parsed event but for ck.path, which is owned. */
typedef struct event_info {
	int kind;
	const char *run;
	const json_t *argv;
	const char *time;
	int has_exit;
	int64_t exit_status;
	uint64_t size;
	ckpt ck;
} event_info;

/* ---- small helpers ----------------------------------------------------------- */

static int oom(void)
{
	return cr_error_set(CR_ENOMEM, "out of memory");
}

/* A printable, bounded copy of an untrusted string for messages. */
static const char *shown(char out[80], const char *s, size_t n)
{
	size_t i, m = n < 76 ? n : 73;

	for (i = 0; i < m; i++)
		out[i] = ((unsigned char)s[i] >= 0x20 && (unsigned char)s[i] < 0x7f) ? s[i] : '?';
	if (m < n) {
		memcpy(out + m, "...", 3);
		m += 3;
	}
	out[m] = '\0';
	return out;
}

static char *dup_str(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The signed text of a note: up to the newline before its last blank line,
 * as seal.c splits it; then the seal body in it. */
static int parse_note(cr_seal_body *out, const char *note, size_t len)
{
	size_t i;

	if (len > CR_NOTE_MAX_SIZE)
		return cr_error_set(CR_EINVAL, "seal note of %zu bytes exceeds the %u byte limit",
		                    len, CR_NOTE_MAX_SIZE);
	if (len == 0 || note[len - 1] != '\n')
		return cr_error_set(CR_EINVAL, "seal note does not end with a newline");
	for (i = len - 1; i > 0; i--) {
		if (note[i] == '\n' && note[i - 1] == '\n')
			return cr_seal_body_parse(out, note, i);
	}
	return cr_error_set(CR_EINVAL, "seal note has no blank line before its signatures");
}

/*
 * The statement's bytes: jansson's compact output with sorted keys, then
 * the hex digits of \u escapes lowercased, as RFC 8785 writes them (jansson
 * writes "\u001F"; only control characters are escaped that way). Every
 * key we write is ASCII, so byte order is RFC 8785's UTF-16 order too.
 */
static char *canonical_dump(const json_t *doc)
{
	char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);

	for (char *p = text; p && *p; p++) {
		if (*p != '\\')
			continue;
		if (p[1] == 'u') {
			for (int i = 2; i < 6; i++) {
				if (p[i] >= 'A' && p[i] <= 'F')
					p[i] = (char)(p[i] - 'A' + 'a');
			}
		}
		p++; /* skip the escaped character: an escaped backslash then "u" is no escape */
	}
	return text;
}

/* ---- runs ---------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
	return h;
}

static run *run_find(const run_table *t, const char *id)
{
	size_t i;

	if (!t->nslots || !id)
		return NULL;
	for (i = fnv1a(id) & (t->nslots - 1); t->slots[i]; i = (i + 1) & (t->nslots - 1)) {
		if (strcmp(t->v[t->slots[i] - 1].id, id) == 0)
			return &t->v[t->slots[i] - 1];
	}
	return NULL;
}

static int run_rehash(run_table *t, size_t nslots)
{
	size_t *slots = calloc(nslots, sizeof(*slots));

	if (!slots)
		return oom();
	for (size_t k = 0; k < t->n; k++) {
		size_t i = fnv1a(t->v[k].id) & (nslots - 1);

		while (slots[i])
			i = (i + 1) & (nslots - 1);
		slots[i] = k + 1;
	}
	free(t->slots);
	t->slots = slots;
	t->nslots = nslots;
	return 0;
}

/* Add a run (taking ownership of *r's members); code when the id is taken. */
static int run_add(run_table *t, run *r, int code, uint64_t index)
{
	char a[80];
	size_t i;
	int rc;

	if (run_find(t, r->id))
		return cr_error_set(code, "event %" PRIu64 ": run %s starts a second time", index,
		                    shown(a, r->id, strlen(r->id)));
	if (t->n == t->cap) {
		size_t cap = t->cap ? 2 * t->cap : 8;
		run *v = realloc(t->v, cap * sizeof(*v));

		if (!v)
			return oom();
		t->v = v;
		t->cap = cap;
	}
	if (2 * (t->n + 1) > t->nslots && (rc = run_rehash(t, t->nslots ? 2 * t->nslots : 16)) != 0)
		return rc;
	for (i = fnv1a(r->id) & (t->nslots - 1); t->slots[i]; i = (i + 1) & (t->nslots - 1))
		;
	t->v[t->n++] = *r;
	t->slots[i] = t->n;
	memset(r, 0, sizeof(*r)); /* now owned by the table */
	return 0;
}

static void run_clear(run *r)
{
	free(r->id);
	free(r->start);
	free(r->end);
	json_decref(r->argv);
	memset(r, 0, sizeof(*r));
}

static void run_table_free(run_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		run_clear(&t->v[i]);
	free(t->v);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

/* ---- checkpoints and their names --------------------------------------------- */

static void ckpt_clear(ckpt *c)
{
	free(c->path);
	free(c->run);
	free(c->name);
	memset(c, 0, sizeof(*c));
}

static size_t dir_len(const uint8_t *p, size_t n)
{
	while (n > 0 && p[n - 1] != '/')
		n--;
	return n; /* up to and including the last '/', 0 when none */
}

static int by_path_then_index(const void *a, const void *b)
{
	const ckpt *x = *(ckpt *const *)a, *y = *(ckpt *const *)b;
	size_t n = x->path_len < y->path_len ? x->path_len : y->path_len;
	int c = memcmp(x->path, y->path, n);

	if (c)
		return c;
	if (x->path_len != y->path_len)
		return x->path_len < y->path_len ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/*
 * Name every checkpoint: its path less the longest folder all checkpoint
 * paths share; "base64:" and the base64 of those bytes when they are not
 * UTF-8; and, when the same path was written more than once, "@<index>"
 * after all but the last one, so names stay unique.
 */
static int assign_names(ckpt *v, size_t n)
{
	ckpt **order = NULL;
	size_t common, i;
	int rc = 0;

	if (n == 0)
		return 0;
	common = dir_len(v[0].path, v[0].path_len);
	for (i = 1; i < n; i++) {
		size_t k = 0, d = dir_len(v[i].path, v[i].path_len);

		if (d < common)
			common = d;
		while (k < common && v[i].path[k] == v[0].path[k])
			k++;
		common = dir_len(v[0].path, k);
	}
	order = malloc(n * sizeof(*order));
	if (!order)
		return oom();
	for (i = 0; i < n; i++)
		order[i] = &v[i];
	qsort(order, n, sizeof(*order), by_path_then_index);
	for (i = 0; i < n && !rc; i++) {
		ckpt *c = order[i];
		const uint8_t *rel = c->path + common;
		size_t rel_len = c->path_len - common;
		/* Sorted by path then index: the last of a path is the last of its run. */
		int last = i + 1 == n || order[i + 1]->path_len != c->path_len ||
		           memcmp(order[i + 1]->path, c->path, c->path_len) != 0;
		cr_buf b = CR_BUF_INIT;

		if (rel_len == 0) { /* a path ending in '/': keep it whole */
			rel = c->path;
			rel_len = c->path_len;
		}
		if (cr_utf8_valid(rel, rel_len)) {
			rc = cr_buf_put(&b, rel, rel_len);
		} else {
			char *s = malloc(cr_base64_len(rel_len) + 1);

			if (!s) {
				rc = oom();
			} else {
				cr_base64_encode(s, rel, rel_len);
				rc = cr_buf_printf(&b, "base64:%s", s);
				free(s);
			}
		}
		if (!rc && !last)
			rc = cr_buf_printf(&b, "@%" PRIu64, c->index);
		if (!rc) {
			free(c->name);
			c->name = cr_buf_detach(&b);
		}
		cr_buf_free(&b);
	}
	free(order);
	return rc;
}

static int by_name_then_digest(const void *a, const void *b)
{
	const ckpt *x = *(ckpt *const *)a, *y = *(ckpt *const *)b;
	int c = strcmp(x->name, y->name);

	return c ? c : memcmp(x->sha, y->sha, CR_SHA256_SIZE);
}

/* The subjects: checkpoints with a digest, by name. *out is malloc'ed. */
static int subjects_of(ckpt ***out, size_t *out_n, ckpt *v, size_t n)
{
	ckpt **s = malloc((n ? n : 1) * sizeof(*s));
	size_t k = 0;

	*out = NULL;
	*out_n = 0;
	if (!s)
		return oom();
	for (size_t i = 0; i < n; i++) {
		if (v[i].has_sha)
			s[k++] = &v[i];
	}
	if (k > 1)
		qsort(s, k, sizeof(*s), by_name_then_digest);
	*out = s;
	*out_n = k;
	return 0;
}

/* ---- reading events ------------------------------------------------------------ */

static const char *opt_str(const json_t *ev, const char *key)
{
	return json_string_value(json_object_get(ev, key)); /* NULL unless a string */
}

/* Reduce one parsed event to info; s->code on an event the statement cannot describe. */
static int classify(event_info *info, const summary *s, uint64_t index, const json_t *ev)
{
	const char *type = cr_event_type(ev);
	cr_buf path = CR_BUF_INIT;
	json_t *v;
	int rc;

	memset(info, 0, sizeof(*info));
	info->run = opt_str(ev, "run");
	if (strcmp(type, "run_start") == 0 || strcmp(type, "run_end") == 0) {
		info->kind = strcmp(type, "run_start") == 0 ? EV_RUN_START : EV_RUN_END;
		if (!info->run)
			return cr_error_set(s->code, "event %" PRIu64 ": %s has no \"run\" string",
			                    index, type);
		info->argv = json_object_get(ev, "argv");
		info->time = opt_str(ev, "time");
		v = json_object_get(ev, "exit_status");
		if (json_is_integer(v)) {
			info->has_exit = 1;
			info->exit_status = json_integer_value(v);
		}
	} else if (strcmp(type, "input") == 0) {
		info->kind = EV_INPUT;
		v = json_object_get(ev, "size");
		if (json_is_integer(v) && json_integer_value(v) > 0)
			info->size = (uint64_t)json_integer_value(v);
	} else if (strcmp(type, "checkpoint") == 0) {
		const char *sha = opt_str(ev, "sha256");

		info->kind = EV_CHECKPOINT;
		info->ck.index = index;
		if ((rc = cr_event_get_path(ev, "path", &path)) != 0) {
			cr_buf_free(&path);
			return cr_error_set(s->code,
			                    "checkpoint event %" PRIu64 ": no readable path: %s",
			                    index, cr_error_last());
		}
		info->ck.path_len = path.len;
		info->ck.path = path.ptr ? (uint8_t *)cr_buf_detach(&path) : calloc(1, 1);
		if (!info->ck.path)
			return oom();
		if (sha) {
			if (strlen(sha) != 64 || cr_hex_decode(info->ck.sha, 32, sha, 64) != 0) {
				ckpt_clear(&info->ck);
				return cr_error_set(s->code,
				                    "checkpoint event %" PRIu64
				                    ": sha256 is not 64 hex digits",
				                    index);
			}
			info->ck.has_sha = 1;
		}
		info->ck.changed = json_is_true(json_object_get(ev, "changed"));
	}
	return 0;
}

/*
 * Account for one event: log tree, inputs, run ends and per-run counts.
 * Run starts and checkpoints are left to the caller (the builder keeps
 * them, the checker compares them first).
 */
static int observe(summary *s, uint64_t index, const char *leaf, size_t len, event_info *info)
{
	uint8_t h[CR_HASH_SIZE];
	char a[80];
	run *r;
	int rc;

	cr_merkle_leaf_hash(h, leaf, len);
	if ((rc = cr_merkle_state_append(&s->log, h, NULL, NULL)) != 0)
		return rc;
	s->events++;
	r = info->kind == EV_RUN_START ? NULL : run_find(&s->runs, info->run);
	switch (info->kind) {
	case EV_INPUT:
		if ((rc = cr_merkle_state_append(&s->input_tree, h, NULL, NULL)) != 0)
			return rc;
		if (info->size > (uint64_t)CR_EVENT_INT_MAX - s->input_bytes)
			return cr_error_set(
			    CR_ERANGE, "event %" PRIu64 ": input bytes exceed 2^53 - 1", index);
		s->input_bytes += info->size;
		if (s->inputs++ == 0)
			s->first_input = index;
		s->last_input = index;
		if (r)
			r->inputs++;
		break;
	case EV_CHECKPOINT:
		if (r)
			r->checkpoints++;
		break;
	case EV_RUN_END:
		if (!r)
			break; /* the end of a run whose start is not in the log: nothing to attach
			          to */
		if (r->ended)
			return cr_error_set(s->code, "event %" PRIu64 ": run %s ends a second time",
			                    index, shown(a, r->id, strlen(r->id)));
		r->ended = 1;
		r->end = dup_str(info->time);
		r->has_exit = info->has_exit;
		r->exit_status = info->exit_status;
		if (info->time && !r->end)
			return oom();
		break;
	default: break;
	}
	return 0;
}

/* A run as its run_start describes it. */
static int run_from_start(run *r, const event_info *info)
{
	memset(r, 0, sizeof(*r));
	r->id = dup_str(info->run);
	r->start = dup_str(info->time);
	r->argv = info->argv ? json_incref((json_t *)info->argv) : json_null();
	if (!r->id || (info->time && !r->start)) {
		run_clear(r);
		return oom();
	}
	return 0;
}

static void summary_init(summary *s, int code)
{
	memset(s, 0, sizeof(*s));
	cr_merkle_state_init(&s->log);
	cr_merkle_state_init(&s->input_tree);
	s->first_input = s->last_input = NONE;
	s->code = code;
}

/* ---- building -------------------------------------------------------------------- */

typedef struct builder {
	summary sum;
	uint64_t size;
	ckpt *ckpts;
	size_t n_ckpts, cap_ckpts;
	uint64_t budget; /* rough bytes of the statement so far */
} builder;

static int budget_add(builder *b, uint64_t n)
{
	b->budget += n;
	if (b->budget > CR_ATTEST_STATEMENT_MAX)
		return cr_error_set(CR_ERANGE,
		                    "the attestation would exceed %u bytes (%zu checkpoints, "
		                    "%zu runs so far)",
		                    CR_ATTEST_STATEMENT_MAX, b->n_ckpts, b->sum.runs.n);
	return 0;
}

static int build_event(void *ctx, uint64_t index, const char *leaf, size_t len)
{
	builder *b = ctx;
	json_t *ev = NULL;
	event_info info;
	run r;
	char *argv_text;
	int rc;

	memset(&info, 0, sizeof(info));
	if (index >= b->size)
		return 1; /* beyond the sealed tree: stop */
	if (index != b->sum.events)
		return cr_error_set(CR_ECORRUPT, "event %" PRIu64 " came out of order", index);
	if (cr_event_parse(&ev, leaf, len) != 0)
		return cr_error_set(CR_ECORRUPT, "event %" PRIu64 ": %s (run `cleanroom check`)",
		                    index, cr_error_last());
	if ((rc = classify(&info, &b->sum, index, ev)) != 0 ||
	    (rc = observe(&b->sum, index, leaf, len, &info)) != 0)
		goto done;
	if (info.kind == EV_RUN_START) {
		argv_text =
		    json_dumps(info.argv ? info.argv : json_null(), JSON_COMPACT | JSON_ENCODE_ANY);
		rc = argv_text ? budget_add(b, 200 + strlen(info.run) + strlen(argv_text)) : oom();
		free(argv_text);
		if (!rc && (rc = run_from_start(&r, &info)) == 0) {
			rc = run_add(&b->sum.runs, &r, CR_ECORRUPT, index);
			run_clear(&r);
		}
	} else if (info.kind == EV_CHECKPOINT) {
		if ((rc = budget_add(b, 240 + 3 * info.ck.path_len +
		                            (info.run ? strlen(info.run) : 0))) != 0)
			goto done;
		if (b->n_ckpts == b->cap_ckpts) {
			size_t cap = b->cap_ckpts ? 2 * b->cap_ckpts : 64;
			ckpt *v = realloc(b->ckpts, cap * sizeof(*v));

			if (!v) {
				rc = oom();
				goto done;
			}
			b->ckpts = v;
			b->cap_ckpts = cap;
		}
		info.ck.run = dup_str(info.run);
		if (info.run && !info.ck.run) {
			rc = oom();
			goto done;
		}
		b->ckpts[b->n_ckpts++] = info.ck;
		memset(&info.ck, 0, sizeof(info.ck)); /* now owned by the builder */
	}
done:
	ckpt_clear(&info.ck);
	json_decref(ev);
	return rc;
}

static json_t *hex_json(const uint8_t *data, size_t n)
{
	char buf[2 * CR_HASH_SIZE + 1];

	cr_hex_encode(buf, data, n); /* n <= 32 here */
	return json_string(buf);
}

static json_t *opt_string(const char *s)
{
	return s ? json_string(s) : json_null();
}

static json_t *opt_index(uint64_t i)
{
	return i == NONE ? json_null() : json_integer((json_int_t)i);
}

/* The statement's JSON for a checkpoint's path: "path" or, not UTF-8, "path_b64". */
static int set_path(json_t *obj, const ckpt *c)
{
	char *s;
	int rc;

	if (cr_utf8_valid(c->path, c->path_len))
		return json_object_set_new(obj, "path",
		                           json_stringn((const char *)c->path, c->path_len))
		           ? oom()
		           : 0;
	s = malloc(cr_base64_len(c->path_len) + 1);
	if (!s)
		return oom();
	cr_base64_encode(s, c->path, c->path_len);
	rc = json_object_set_new(obj, "path_b64", json_string(s)) ? oom() : 0;
	free(s);
	return rc;
}

static int statement_json(json_t **out, builder *b, const cr_seal_body *body, const char *note,
                          size_t note_len)
{
	json_t *doc = NULL, *subjects, *runs, *ckpts, *pred, *one;
	ckpt **subj = NULL;
	size_t n_subj = 0, i;
	uint8_t root[CR_HASH_SIZE];
	int rc;

	*out = NULL;
	if ((rc = assign_names(b->ckpts, b->n_ckpts)) != 0 ||
	    (rc = subjects_of(&subj, &n_subj, b->ckpts, b->n_ckpts)) != 0)
		return rc;
	cr_merkle_state_root(&b->sum.input_tree, root);
	doc = json_pack(
	    "{s:s, s:s, s:[], s:{s:[], s:{s:I, s:I, s:o, s:o, s:o}, s:{s:s, s:o, s:I}, "
	    "s:n, s:[], s:s%}}",
	    "_type", CR_ATTEST_STATEMENT_TYPE, "predicateType", CR_ATTEST_PREDICATE_TYPE, "subject",
	    "predicate", "checkpoints", "inputs", "bytes", (json_int_t)b->sum.input_bytes, "count",
	    (json_int_t)b->sum.inputs, "first_index", opt_index(b->sum.first_input), "last_index",
	    opt_index(b->sum.last_input), "root", hex_json(root, CR_HASH_SIZE), "log", "origin",
	    body->origin, "root", hex_json(body->root, CR_HASH_SIZE), "tree_size",
	    (json_int_t)body->size, "policy", "runs", "seal", note, note_len);
	if (!doc) {
		rc = cr_error_set(CR_EINVAL, "the seal note cannot go into JSON (not UTF-8?)");
		goto done;
	}
	pred = json_object_get(doc, "predicate");
	subjects = json_object_get(doc, "subject");
	runs = json_object_get(pred, "runs");
	ckpts = json_object_get(pred, "checkpoints");
	for (i = 0; i < n_subj; i++) {
		one = json_pack("{s:{s:o}, s:s}", "digest", "sha256", hex_json(subj[i]->sha, 32),
		                "name", subj[i]->name);
		if (!one || json_array_append_new(subjects, one) != 0) {
			rc = oom();
			goto done;
		}
	}
	for (i = 0; i < b->sum.runs.n; i++) {
		run *r = &b->sum.runs.v[i];

		one =
		    json_pack("{s:O, s:I, s:o, s:o, s:I, s:s, s:o}", "argv", r->argv, "checkpoints",
		              (json_int_t)r->checkpoints, "end", opt_string(r->end), "exit_status",
		              r->has_exit ? json_integer(r->exit_status) : json_null(), "inputs",
		              (json_int_t)r->inputs, "run", r->id, "start", opt_string(r->start));
		if (!one || json_array_append_new(runs, one) != 0) {
			rc = oom();
			goto done;
		}
	}
	for (i = 0; i < b->n_ckpts; i++) {
		ckpt *c = &b->ckpts[i];

		one = json_pack("{s:b, s:I, s:s, s:o, s:o}", "changed", c->changed, "index",
		                (json_int_t)c->index, "name", c->name, "run", opt_string(c->run),
		                "sha256", c->has_sha ? hex_json(c->sha, 32) : json_null());
		if (!one || (rc = set_path(one, c)) != 0 ||
		    json_array_append_new(ckpts, one) != 0) {
			json_decref(one);
			rc = rc ? rc : oom();
			goto done;
		}
	}
	*out = doc;
	doc = NULL;
done:
	free(subj);
	json_decref(doc);
	return rc;
}

int cr_attest_build(char **out, size_t *out_len, cr_store *store, const char *note, size_t note_len)
{
	builder b;
	cr_seal_body body = {0};
	cr_store_state st;
	uint8_t root[CR_HASH_SIZE];
	json_t *doc = NULL;
	char *text = NULL, a[80];
	int rc;

	*out = NULL;
	if (out_len)
		*out_len = 0;
	memset(&b, 0, sizeof(b));
	summary_init(&b.sum, CR_ECORRUPT);
	if ((rc = parse_note(&body, note, note_len)) != 0)
		return rc;
	if (body.size > (uint64_t)CR_EVENT_INT_MAX) {
		rc = cr_error_set(CR_ERANGE, "seal tree size %" PRIu64 " exceeds 2^53 - 1",
		                  body.size);
		goto done;
	}
	cr_store_state_get(store, &st);
	if (st.size < body.size) {
		rc = cr_error_set(CR_ERANGE,
		                  "the seal covers %" PRIu64 " events, the store holds %" PRIu64,
		                  body.size, st.size);
		goto done;
	}
	b.size = body.size;
	rc = body.size ? cr_store_foreach_event(store, 0, build_event, &b) : 0;
	if (rc == 1)
		rc = 0; /* stopped at the sealed size */
	if (rc)
		goto done;
	if (b.sum.events != body.size) {
		rc = cr_error_set(CR_ECORRUPT, "the log yielded %" PRIu64 " of %" PRIu64 " events",
		                  b.sum.events, body.size);
		goto done;
	}
	cr_merkle_state_root(&b.sum.log, root);
	if (CRYPTO_memcmp(root, body.root, CR_HASH_SIZE) != 0) {
		rc = cr_error_set(CR_EVERIFY,
		                  "the store's root at size %" PRIu64 " differs from the "
		                  "seal's (origin %s): the seal is not of this store",
		                  body.size, shown(a, body.origin, strlen(body.origin)));
		goto done;
	}
	if ((rc = statement_json(&doc, &b, &body, note, note_len)) != 0)
		goto done;
	text = canonical_dump(doc);
	if (!text) {
		rc = oom();
		goto done;
	}
	if (strlen(text) > CR_ATTEST_STATEMENT_MAX) {
		rc = cr_error_set(CR_ERANGE,
		                  "the attestation is %zu bytes, more than the %u byte limit",
		                  strlen(text), CR_ATTEST_STATEMENT_MAX);
		goto done;
	}
	if (out_len)
		*out_len = strlen(text);
	*out = text;
	text = NULL; /* now the caller's */
done:
	free(text);
	json_decref(doc);
	for (size_t i = 0; i < b.n_ckpts; i++)
		ckpt_clear(&b.ckpts[i]);
	free(b.ckpts);
	run_table_free(&b.sum.runs);
	cr_seal_body_free(&body);
	return rc;
}

/* ---- checking -------------------------------------------------------------------- */

struct cr_attest_checker {
	json_t *doc;
	uint64_t tree_size;
	uint8_t root[CR_HASH_SIZE];
	ckpt *want_ckpts; /* the predicate's checkpoints, in log order */
	size_t n_ckpts, next_ckpt;
	run *want_runs; /* the predicate's runs, in log order */
	size_t n_runs, next_run;
	uint64_t want_inputs, want_bytes, want_first, want_last;
	uint8_t want_input_root[CR_HASH_SIZE];
	summary sum; /* what the events fed so far show */
	int rc;      /* sticky: the first failure */
	char *msg;
};

/* Record the first failure (its message is in cr_error_last()). */
static int fail(cr_attest_checker *c, int rc)
{
	if (!c->rc) {
		c->rc = rc;
		c->msg = strdup(cr_error_last());
	}
	return rc;
}

/* "attestation: FIELD WHAT"; a WHAT starting with '.' names a member of FIELD. */
static int bad(const char *field, const char *what)
{
	return cr_error_set(CR_EINVAL, "attestation: %s%s%s", field, what[0] == '.' ? "" : " ",
	                    what);
}

/* obj must be an object holding exactly the named keys (NULL-terminated);
 * alt, when not NULL, may stand in for the key named first. */
static int exact_keys(const json_t *obj, const char *field, const char *const *keys,
                      const char *alt)
{
	const char *k;
	json_t *v;
	size_t n = 0, i;
	char a[80];

	if (!json_is_object(obj))
		return bad(field, "is not an object");
	json_object_foreach ((json_t *)obj, k, v) {
		for (i = 0; keys[i] && strcmp(keys[i], k) != 0; i++)
			;
		if (!keys[i] && !(alt && strcmp(alt, k) == 0))
			return cr_error_set(CR_EINVAL,
			                    "attestation: %s has an unknown field \"%s\"", field,
			                    shown(a, k, strlen(k)));
		n++;
	}
	for (i = 0; keys[i]; i++) {
		if (!json_object_get(obj, keys[i]) && !(i == 0 && alt && json_object_get(obj, alt)))
			return cr_error_set(CR_EINVAL, "attestation: %s has no \"%s\"", field,
			                    keys[i]);
	}
	if (n != i)
		return cr_error_set(CR_EINVAL, "attestation: %s has both \"%s\" and \"%s\"", field,
		                    keys[0], alt ? alt : "?");
	return 0;
}

static int get_count(uint64_t *out, const json_t *v, const char *field)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return bad(field, "is not a non-negative integer");
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int get_index(uint64_t *out, const json_t *v, const char *field)
{
	if (json_is_null(v)) {
		*out = NONE;
		return 0;
	}
	return get_count(out, v, field);
}

static int get_hash(uint8_t out[CR_HASH_SIZE], const json_t *v, const char *field)
{
	const char *s = json_string_value(v);
	char want[2 * CR_HASH_SIZE + 1];

	if (!s || json_string_length(v) != 64 || cr_hex_decode(out, CR_HASH_SIZE, s, 64) != 0)
		return bad(field, "is not 64 hex digits");
	cr_hex_encode(want, out, CR_HASH_SIZE);
	if (strcmp(want, s) != 0)
		return bad(field, "is not lowercase hex");
	return 0;
}

/* A string or null into a malloc'ed copy or NULL. */
static int get_opt_str(char **out, const json_t *v, const char *field)
{
	*out = NULL;
	if (json_is_null(v))
		return 0;
	if (!json_is_string(v))
		return bad(field, "is neither a string nor null");
	*out = strdup(json_string_value(v));
	return *out ? 0 : oom();
}

static int parse_ckpt(ckpt *c, const json_t *o, size_t i)
{
	static const char *const keys[] = {"path", "changed", "index", "name",
	                                   "run",  "sha256",  NULL};
	char field[64];
	json_t *v;
	int rc;

	memset(c, 0, sizeof(*c));
	snprintf(field, sizeof(field), "predicate.checkpoints[%zu]", i);
	if ((rc = exact_keys(o, field, keys, "path_b64")) != 0 ||
	    (rc = get_count(&c->index, json_object_get(o, "index"), field)) != 0 ||
	    (rc = get_opt_str(&c->run, json_object_get(o, "run"), field)) != 0)
		return rc;
	if (!json_is_boolean(json_object_get(o, "changed")))
		return bad(field, ".changed is not a boolean");
	c->changed = json_is_true(json_object_get(o, "changed"));
	if (!json_is_string(json_object_get(o, "name")))
		return bad(field, ".name is not a string");
	v = json_object_get(o, "sha256");
	if (!json_is_null(v)) {
		if ((rc = get_hash(c->sha, v, field)) != 0)
			return rc;
		c->has_sha = 1;
	}
	if ((v = json_object_get(o, "path")) != NULL) {
		if (!json_is_string(v))
			return bad(field, ".path is not a string");
		c->path_len = json_string_length(v);
		c->path = (uint8_t *)strdup(json_string_value(v));
		if (!c->path)
			return oom();
	} else {
		v = json_object_get(o, "path_b64");
		if (!json_is_string(v) || json_string_length(v) % 4)
			return bad(field, ".path_b64 is not base64");
		c->path = malloc(json_string_length(v) / 4 * 3 + 1);
		if (!c->path)
			return oom();
		if (cr_base64_decode(c->path, &c->path_len, json_string_value(v),
		                     json_string_length(v)) != 0)
			return bad(field, ".path_b64 is not base64");
		c->path[c->path_len] = '\0';
		/* The builder writes "path" for every UTF-8 path, as events do. */
		if (cr_utf8_valid(c->path, c->path_len))
			return bad(field, ".path_b64 holds UTF-8, which belongs in \"path\"");
	}
	return 0;
}

static int parse_run(run *r, const json_t *o, size_t i)
{
	static const char *const keys[] = {"argv",   "checkpoints", "end",   "exit_status",
	                                   "inputs", "run",         "start", NULL};
	char field[64];
	json_t *v;
	int rc;

	memset(r, 0, sizeof(*r));
	snprintf(field, sizeof(field), "predicate.runs[%zu]", i);
	if ((rc = exact_keys(o, field, keys, NULL)) != 0 ||
	    (rc = get_count(&r->checkpoints, json_object_get(o, "checkpoints"), field)) != 0 ||
	    (rc = get_count(&r->inputs, json_object_get(o, "inputs"), field)) != 0 ||
	    (rc = get_opt_str(&r->start, json_object_get(o, "start"), field)) != 0 ||
	    (rc = get_opt_str(&r->end, json_object_get(o, "end"), field)) != 0)
		return rc;
	if (!json_is_string(json_object_get(o, "run")))
		return bad(field, ".run is not a string");
	if (!(r->id = strdup(json_string_value(json_object_get(o, "run")))))
		return oom();
	v = json_object_get(o, "exit_status");
	if (json_is_integer(v)) {
		r->has_exit = 1;
		r->exit_status = json_integer_value(v);
	} else if (!json_is_null(v)) {
		return bad(field, ".exit_status is neither an integer nor null");
	}
	r->argv = json_incref(json_object_get(o, "argv"));
	return 0;
}

/* The subjects must be exactly those the listed checkpoints give, in order. */
static int check_subjects(cr_attest_checker *c, const json_t *subjects)
{
	static const char *const skeys[] = {"digest", "name", NULL};
	static const char *const dkeys[] = {"sha256", NULL};
	ckpt **want = NULL;
	size_t n_want, i, n;
	char field[64], a[80], hex[65];
	int rc;

	if (!json_is_array(subjects))
		return bad("subject", "is not an array");
	if ((rc = subjects_of(&want, &n_want, c->want_ckpts, c->n_ckpts)) != 0)
		return rc;
	n = json_array_size(subjects);
	for (i = 0; i < n; i++) {
		const json_t *s = json_array_get(subjects, i);
		const char *name;
		uint8_t sha[CR_HASH_SIZE];

		snprintf(field, sizeof(field), "subject[%zu]", i);
		if ((rc = exact_keys(s, field, skeys, NULL)) != 0)
			goto done;
		snprintf(field, sizeof(field), "subject[%zu].digest", i);
		if ((rc = exact_keys(json_object_get(s, "digest"), field, dkeys, NULL)) != 0 ||
		    (rc = get_hash(sha, json_object_get(json_object_get(s, "digest"), "sha256"),
		                   field)) != 0)
			goto done;
		name = json_string_value(json_object_get(s, "name"));
		if (!name) {
			rc = bad(field, "has a name that is not a string");
			goto done;
		}
		/* Both lists are sorted: a name before the expected one is extra, one after it
		 * means the expected subject was skipped. */
		if (i >= n_want || strcmp(name, want[i]->name) < 0) {
			rc = cr_error_set(CR_EVERIFY,
			                  "attestation: subject \"%s\" is not a checkpoint the "
			                  "predicate lists with a digest",
			                  shown(a, name, strlen(name)));
			goto done;
		}
		if (strcmp(name, want[i]->name) > 0) {
			rc = cr_error_set(CR_EVERIFY,
			                  "attestation: subject \"%s\" (checkpoint event "
			                  "%" PRIu64 ") is missing",
			                  shown(a, want[i]->name, strlen(want[i]->name)),
			                  want[i]->index);
			goto done;
		}
		if (CRYPTO_memcmp(sha, want[i]->sha, CR_HASH_SIZE) != 0) {
			cr_hex_encode(hex, want[i]->sha, CR_HASH_SIZE);
			rc = cr_error_set(CR_EVERIFY,
			                  "attestation: subject \"%s\" has the wrong digest: "
			                  "checkpoint event %" PRIu64 " has sha256 %s",
			                  shown(a, name, strlen(name)), want[i]->index, hex);
			goto done;
		}
	}
	if (i < n_want)
		rc = cr_error_set(CR_EVERIFY,
		                  "attestation: subject \"%s\" (checkpoint event %" PRIu64
		                  ") is missing",
		                  shown(a, want[i]->name, strlen(want[i]->name)), want[i]->index);
done:
	free(want);
	return rc;
}

/* Everything in the statement that needs no events. */
static int check_statement(cr_attest_checker *c, const char *statement, size_t len,
                           const char *note, size_t note_len)
{
	static const char *const top[] = {"_type", "predicate", "predicateType", "subject", NULL};
	static const char *const pred_keys[] = {"checkpoints", "inputs", "log", "policy",
	                                        "runs",        "seal",   NULL};
	static const char *const log_keys[] = {"origin", "root", "tree_size", NULL};
	static const char *const in_keys[] = {"bytes",      "count", "first_index",
	                                      "last_index", "root",  NULL};
	json_error_t jerr;
	json_t *pred, *log, *in, *v;
	cr_seal_body body = {0};
	const char *seal, *origin;
	char *again = NULL;
	size_t i, seal_len;
	int rc;

	if (len > CR_ATTEST_STATEMENT_MAX)
		return cr_error_set(CR_EINVAL, "attestation of %zu bytes exceeds the %u byte limit",
		                    len, CR_ATTEST_STATEMENT_MAX);
	c->doc = json_loadb(statement, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!c->doc)
		return cr_error_set(CR_EINVAL, "attestation is not JSON: %s at byte %d", jerr.text,
		                    jerr.position);
	again = canonical_dump(c->doc);
	if (!again)
		return oom();
	rc = strlen(again) != len || memcmp(again, statement, len) != 0;
	free(again);
	if (rc)
		return cr_error_set(CR_EINVAL,
		                    "attestation is not in canonical form (sorted keys, no "
		                    "whitespace, as cleanroom writes it)");
	if ((rc = exact_keys(c->doc, "statement", top, NULL)) != 0)
		return rc;
	if (!str_eq(json_string_value(json_object_get(c->doc, "_type")), CR_ATTEST_STATEMENT_TYPE))
		return bad("_type", "is not " CR_ATTEST_STATEMENT_TYPE);
	if (!str_eq(json_string_value(json_object_get(c->doc, "predicateType")),
	            CR_ATTEST_PREDICATE_TYPE))
		return bad("predicateType", "is not " CR_ATTEST_PREDICATE_TYPE);
	pred = json_object_get(c->doc, "predicate");
	if ((rc = exact_keys(pred, "predicate", pred_keys, NULL)) != 0)
		return rc;
	if (!json_is_null(json_object_get(pred, "policy")))
		return bad("predicate.policy", "is not null (this version attests no policy)");

	/* The seal it carries, and the log block against it. */
	v = json_object_get(pred, "seal");
	if (!json_is_string(v))
		return bad("predicate.seal", "is not a string");
	seal = json_string_value(v);
	seal_len = json_string_length(v);
	if (note && (seal_len != note_len || memcmp(seal, note, note_len) != 0))
		return cr_error_set(CR_EVERIFY,
		                    "attestation: predicate.seal is not the bundle's seal note");
	if ((rc = parse_note(&body, seal, seal_len)) != 0)
		return cr_error_set(CR_EINVAL, "attestation: predicate.seal: %s", cr_error_last());
	log = json_object_get(pred, "log");
	if ((rc = exact_keys(log, "predicate.log", log_keys, NULL)) != 0 ||
	    (rc = get_count(&c->tree_size, json_object_get(log, "tree_size"),
	                    "predicate.log.tree_size")) != 0 ||
	    (rc = get_hash(c->root, json_object_get(log, "root"), "predicate.log.root")) != 0)
		goto done;
	origin = json_string_value(json_object_get(log, "origin"));
	if (!str_eq(origin, body.origin))
		rc = cr_error_set(
		    CR_EVERIFY, "attestation: predicate.log.origin differs from the seal's origin");
	else if (c->tree_size != body.size)
		rc = cr_error_set(CR_EVERIFY,
		                  "attestation: predicate.log.tree_size is %" PRIu64
		                  ", the seal's tree size %" PRIu64,
		                  c->tree_size, body.size);
	else if (CRYPTO_memcmp(c->root, body.root, CR_HASH_SIZE) != 0)
		rc = cr_error_set(CR_EVERIFY,
		                  "attestation: predicate.log.root differs from the seal's root");
	if (rc)
		goto done;

	in = json_object_get(pred, "inputs");
	if ((rc = exact_keys(in, "predicate.inputs", in_keys, NULL)) != 0 ||
	    (rc = get_count(&c->want_inputs, json_object_get(in, "count"),
	                    "predicate.inputs.count")) != 0 ||
	    (rc = get_count(&c->want_bytes, json_object_get(in, "bytes"),
	                    "predicate.inputs.bytes")) != 0 ||
	    (rc = get_index(&c->want_first, json_object_get(in, "first_index"),
	                    "predicate.inputs.first_index")) != 0 ||
	    (rc = get_index(&c->want_last, json_object_get(in, "last_index"),
	                    "predicate.inputs.last_index")) != 0 ||
	    (rc = get_hash(c->want_input_root, json_object_get(in, "root"),
	                   "predicate.inputs.root")) != 0)
		goto done;

	v = json_object_get(pred, "runs");
	if (!json_is_array(v)) {
		rc = bad("predicate.runs", "is not an array");
		goto done;
	}
	c->want_runs = calloc(json_array_size(v) + 1, sizeof(*c->want_runs));
	if (!c->want_runs) {
		rc = oom();
		goto done;
	}
	for (i = 0; i < json_array_size(v); i++) {
		rc = parse_run(&c->want_runs[i], json_array_get(v, i), i);
		c->n_runs = i + 1; /* freed by cr_attest_checker_free even when half parsed */
		if (rc)
			goto done;
	}

	v = json_object_get(pred, "checkpoints");
	if (!json_is_array(v)) {
		rc = bad("predicate.checkpoints", "is not an array");
		goto done;
	}
	c->want_ckpts = calloc(json_array_size(v) + 1, sizeof(*c->want_ckpts));
	if (!c->want_ckpts) {
		rc = oom();
		goto done;
	}
	for (i = 0; i < json_array_size(v); i++) {
		rc = parse_ckpt(&c->want_ckpts[i], json_array_get(v, i), i);
		c->n_ckpts = i + 1;
		if (rc)
			goto done;
		if (i > 0 && c->want_ckpts[i].index <= c->want_ckpts[i - 1].index) {
			rc = bad("predicate.checkpoints", "are not in log order");
			goto done;
		}
	}
	if ((rc = assign_names(c->want_ckpts, c->n_ckpts)) != 0)
		goto done;
	for (i = 0; i < c->n_ckpts; i++) {
		const char *listed =
		    json_string_value(json_object_get(json_array_get(v, i), "name"));
		char a[80], b[80];

		if (strcmp(listed, c->want_ckpts[i].name) != 0) {
			rc = cr_error_set(
			    CR_EVERIFY,
			    "attestation: predicate.checkpoints[%zu] is named "
			    "\"%s\", but its path gives \"%s\"",
			    i, shown(a, listed, strlen(listed)),
			    shown(b, c->want_ckpts[i].name, strlen(c->want_ckpts[i].name)));
			goto done;
		}
	}
	rc = check_subjects(c, json_object_get(c->doc, "subject"));
done:
	cr_seal_body_free(&body);
	return rc;
}

int cr_attest_checker_new(cr_attest_checker **out, const char *statement, size_t len,
                          const char *note, size_t note_len)
{
	cr_attest_checker *c = calloc(1, sizeof(*c));
	int rc;

	*out = NULL;
	if (!c)
		return oom();
	summary_init(&c->sum, CR_EVERIFY);
	if ((rc = check_statement(c, statement, len, note, note_len)) != 0) {
		cr_attest_checker_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

static int feed_run_start(cr_attest_checker *c, uint64_t index, const event_info *info)
{
	run *want = c->next_run < c->n_runs ? &c->want_runs[c->next_run] : NULL;
	char a[80], b[80];
	run r;
	int rc;

	if (!want || strcmp(want->id, info->run) != 0) {
		if (run_find(&c->sum.runs, info->run))
			return cr_error_set(CR_EVERIFY,
			                    "attestation: event %" PRIu64 ": run %s starts a second time",
			                    index, shown(a, info->run, strlen(info->run)));
		if (!want)
			return cr_error_set(CR_EVERIFY,
			                    "attestation: run %s (event %" PRIu64 ") is not in "
			                    "the statement",
			                    shown(a, info->run, strlen(info->run)), index);
		return cr_error_set(CR_EVERIFY,
		                    "attestation: the log starts run %s at event %" PRIu64
		                    " where the statement lists run %s next",
		                    shown(a, info->run, strlen(info->run)), index,
		                    shown(b, want->id, strlen(want->id)));
	}
	if (!json_equal(want->argv, info->argv ? info->argv : json_null()))
		return cr_error_set(CR_EVERIFY,
		                    "attestation: run %s: argv differs from its run_start "
		                    "(event %" PRIu64 ")",
		                    shown(a, want->id, strlen(want->id)), index);
	if (!str_eq(want->start, info->time))
		return cr_error_set(CR_EVERIFY,
		                    "attestation: run %s: start differs from its run_start "
		                    "(event %" PRIu64 ")",
		                    shown(a, want->id, strlen(want->id)), index);
	c->next_run++;
	if ((rc = run_from_start(&r, info)) != 0)
		return rc;
	rc = run_add(&c->sum.runs, &r, CR_EVERIFY, index);
	run_clear(&r);
	return rc;
}

static int feed_checkpoint(cr_attest_checker *c, uint64_t index, const ckpt *have,
                           const char *run_id)
{
	ckpt *want = c->next_ckpt < c->n_ckpts ? &c->want_ckpts[c->next_ckpt] : NULL;
	char a[80], nm[80], hex[65], hex2[65];
	const char *name;

	if (!want || want->index != index)
		return cr_error_set(CR_EVERIFY,
		                    "attestation: checkpoint event %" PRIu64 " (%s) is "
		                    "in the log but not in the statement",
		                    index, shown(a, (const char *)have->path, have->path_len));
	c->next_ckpt++;
	name = shown(nm, want->name, strlen(want->name));
	if (want->path_len != have->path_len || memcmp(want->path, have->path, have->path_len) != 0)
		return cr_error_set(CR_EVERIFY,
		                    "attestation: subject \"%s\" (checkpoint event %" PRIu64
		                    "): the log's path is %s",
		                    name, index,
		                    shown(a, (const char *)have->path, have->path_len));
	if (want->has_sha != have->has_sha ||
	    (have->has_sha && CRYPTO_memcmp(want->sha, have->sha, CR_HASH_SIZE) != 0)) {
		strcpy(hex, "none");
		strcpy(hex2, "none");
		if (have->has_sha)
			cr_hex_encode(hex, have->sha, CR_HASH_SIZE);
		if (want->has_sha)
			cr_hex_encode(hex2, want->sha, CR_HASH_SIZE);
		return cr_error_set(CR_EVERIFY,
		                    "attestation: subject \"%s\" has the wrong digest: "
		                    "checkpoint event %" PRIu64 " has sha256 %s, the statement %s",
		                    name, index, hex, hex2);
	}
	if (want->changed != have->changed)
		return cr_error_set(CR_EVERIFY,
		                    "attestation: checkpoint \"%s\" (event %" PRIu64 "): "
		                    "\"changed\" differs from the log",
		                    name, index);
	if (!str_eq(want->run, run_id))
		return cr_error_set(CR_EVERIFY,
		                    "attestation: checkpoint \"%s\" (event %" PRIu64 "): "
		                    "its run differs from the log",
		                    name, index);
	return 0;
}

int cr_attest_checker_feed(cr_attest_checker *c, uint64_t index, const char *leaf, size_t len,
                           const json_t *ev)
{
	json_t *parsed = NULL;
	event_info info;
	ckpt *want;
	char nm[80];
	int rc;

	memset(&info, 0, sizeof(info));
	if (c->rc)
		return c->rc;
	if (index != c->sum.events)
		return fail(c, cr_error_set(CR_EVERIFY,
		                            "attestation: event %" PRIu64 " fed where event "
		                            "%" PRIu64 " was due",
		                            index, c->sum.events));
	if (index >= c->tree_size)
		return fail(c, cr_error_set(CR_EVERIFY,
		                            "attestation: the log has more events than the "
		                            "attested tree size %" PRIu64,
		                            c->tree_size));
	if (!ev) {
		if (cr_event_parse(&parsed, leaf, len) != 0)
			return fail(c,
			            cr_error_set(CR_EVERIFY, "attestation: event %" PRIu64 ": %s",
			                         index, cr_error_last()));
		ev = parsed;
	}
	if ((rc = classify(&info, &c->sum, index, ev)) != 0)
		goto done;
	/* A checkpoint the statement lists here must be what the log holds here. */
	want = c->next_ckpt < c->n_ckpts ? &c->want_ckpts[c->next_ckpt] : NULL;
	if (want && want->index == index && info.kind != EV_CHECKPOINT) {
		rc = cr_error_set(CR_EVERIFY,
		                  "attestation: subject \"%s\" (checkpoint event %" PRIu64
		                  ") is not in the log: event %" PRIu64 " is a %s",
		                  shown(nm, want->name, strlen(want->name)), index, index,
		                  cr_event_type(ev));
		goto done;
	}
	if (info.kind == EV_RUN_START && (rc = feed_run_start(c, index, &info)) != 0)
		goto done;
	if (info.kind == EV_CHECKPOINT && (rc = feed_checkpoint(c, index, &info.ck, info.run)) != 0)
		goto done;
	rc = observe(&c->sum, index, leaf, len, &info);
done:
	ckpt_clear(&info.ck);
	json_decref(parsed);
	return rc ? fail(c, rc) : 0;
}

static int finish_runs(cr_attest_checker *c)
{
	char a[80];

	for (size_t i = 0; i < c->n_runs; i++) {
		const run *want = &c->want_runs[i];
		const run *have = run_find(&c->sum.runs, want->id);
		const char *id = shown(a, want->id, strlen(want->id));

		if (!have)
			return cr_error_set(CR_EVERIFY, "attestation: run %s is not in the log",
			                    id);
		if (!str_eq(want->end, have->end))
			return cr_error_set(CR_EVERIFY,
			                    "attestation: run %s: end is %s in the statement, "
			                    "%s in the log",
			                    id, want->end ? want->end : "null",
			                    have->end ? have->end : "null");
		if (want->has_exit != have->has_exit ||
		    (have->has_exit && want->exit_status != have->exit_status))
			return cr_error_set(CR_EVERIFY,
			                    "attestation: run %s: exit_status differs (the "
			                    "statement has %" PRId64 "%s, the log %" PRId64 "%s)",
			                    id, want->exit_status, want->has_exit ? "" : " (null)",
			                    have->exit_status, have->has_exit ? "" : " (null)");
		if (want->checkpoints != have->checkpoints)
			return cr_error_set(CR_EVERIFY,
			                    "attestation: run %s: %" PRIu64 " checkpoints in the "
			                    "statement, %" PRIu64 " in the log",
			                    id, want->checkpoints, have->checkpoints);
		if (want->inputs != have->inputs)
			return cr_error_set(CR_EVERIFY,
			                    "attestation: run %s: %" PRIu64 " inputs in the "
			                    "statement, %" PRIu64 " in the log",
			                    id, want->inputs, have->inputs);
	}
	return 0;
}

int cr_attest_checker_finish(cr_attest_checker *c)
{
	uint8_t root[CR_HASH_SIZE];
	int rc;

	if (c->rc)
		return cr_error_set(c->rc, "%s", c->msg ? c->msg : "attestation check failed");
	if (c->sum.events != c->tree_size) {
		rc = cr_error_set(CR_EVERIFY,
		                  "attestation: the log has %" PRIu64 " events, the "
		                  "statement attests %" PRIu64,
		                  c->sum.events, c->tree_size);
		return fail(c, rc);
	}
	if (c->next_ckpt < c->n_ckpts) {
		const ckpt *want = &c->want_ckpts[c->next_ckpt];
		char nm[80];

		return fail(c,
		            cr_error_set(CR_EVERIFY,
		                         "attestation: subject \"%s\" (checkpoint event "
		                         "%" PRIu64 ") is not in the log",
		                         shown(nm, want->name, strlen(want->name)), want->index));
	}
	if ((rc = finish_runs(c)) != 0)
		return fail(c, rc);
	if (c->sum.inputs != c->want_inputs)
		return fail(c, cr_error_set(CR_EVERIFY,
		                            "attestation: inputs.count is %" PRIu64 ", the "
		                            "log has %" PRIu64 " input events",
		                            c->want_inputs, c->sum.inputs));
	if (c->sum.input_bytes != c->want_bytes)
		return fail(c, cr_error_set(CR_EVERIFY,
		                            "attestation: inputs.bytes is %" PRIu64 ", the "
		                            "log's input events sum to %" PRIu64,
		                            c->want_bytes, c->sum.input_bytes));
	if (c->sum.first_input != c->want_first || c->sum.last_input != c->want_last)
		return fail(c,
		            cr_error_set(CR_EVERIFY, "attestation: inputs.first_index/last_index "
		                                     "differ from the log"));
	cr_merkle_state_root(&c->sum.input_tree, root);
	if (CRYPTO_memcmp(root, c->want_input_root, CR_HASH_SIZE) != 0)
		return fail(c, cr_error_set(CR_EVERIFY,
		                            "attestation: inputs.root differs from the root "
		                            "over the log's input events"));
	cr_merkle_state_root(&c->sum.log, root);
	if (CRYPTO_memcmp(root, c->root, CR_HASH_SIZE) != 0)
		return fail(c,
		            cr_error_set(CR_EVERIFY, "attestation: log.root differs from the root "
		                                     "of the events"));
	return 0;
}

void cr_attest_checker_free(cr_attest_checker *c)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < c->n_ckpts; i++)
		ckpt_clear(&c->want_ckpts[i]);
	for (i = 0; i < c->n_runs; i++)
		run_clear(&c->want_runs[i]);
	free(c->want_ckpts);
	free(c->want_runs);
	run_table_free(&c->sum.runs);
	json_decref(c->doc);
	free(c->msg);
	free(c);
}

typedef struct check_walk {
	cr_attest_checker *c;
	uint64_t limit;
} check_walk;

static int check_event(void *ctx, uint64_t index, const char *leaf, size_t len)
{
	check_walk *w = ctx;

	if (index >= w->limit)
		return 1; /* the statement's tree ends here */
	return cr_attest_checker_feed(w->c, index, leaf, len, NULL);
}

int cr_attest_check(cr_store *store, const char *statement, size_t len, const char *note,
                    size_t note_len)
{
	cr_attest_checker *c = NULL;
	check_walk w;
	int rc;

	if ((rc = cr_attest_checker_new(&c, statement, len, note, note_len)) != 0)
		return rc;
	w.c = c;
	w.limit = c->tree_size;
	rc = cr_store_foreach_event(store, 0, check_event, &w);
	if (rc == 1 || rc == 0)
		rc = cr_attest_checker_finish(c);
	cr_attest_checker_free(c);
	return rc;
}
