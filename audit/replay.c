/*
 * cr_replay: checkpoint history checked against the files on disk.
 *
 * Two passes over the events (from a store, or from a bundle that first
 * verifies): the first collects the checkpoints' paths, so each recorded
 * path can be mapped under --checkpoints the way `cleanroom verify` maps
 * them (relative to the checkpoints' common parent folder) and a checkpoint
 * overwritten later by another of the same name is known as superseded;
 * the second checks each checkpoint in log order. Each file is read once:
 * the same pass gives its SHA-256, its tensor manifest, the delta from the
 * checkpoint before it and a base file for the next delta.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "cleanroom/replay.h"
#include "cleanroom/store.h"
#include "cleanroom/tensors.h"
#include "cleanroom/verify.h"
#include "util/buf.h"
#include "util/codec.h"

/* ---- the events: from a store or a bundle ------------------------------------- */

typedef int (*event_fn)(void *ctx, uint64_t index, const char *leaf, size_t len);

static int bundle_events(const char *path, event_fn fn, void *ctx)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	cr_buf line = CR_BUF_INIT;
	uint64_t index = 0;
	int found = 0, rc = 0, r;

	if (!a)
		return cr_error_set(CR_ENOMEM, "out of memory");
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_format_tar(a);
	if (archive_read_open_filename(a, path, 65536) != ARCHIVE_OK) {
		rc = cr_error_set(CR_EARCHIVE, "%s: %s", path, archive_error_string(a));
		goto done;
	}
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		char buf[65536];
		ssize_t n;

		if (strcmp(archive_entry_pathname(e), "events.jsonl") != 0 ||
		    archive_entry_filetype(e) != AE_IFREG)
			continue;
		found = 1;
		while ((n = archive_read_data(a, buf, sizeof(buf))) > 0) {
			const char *p = buf, *end = buf + n;

			while (p < end) {
				const char *nl = memchr(p, '\n', (size_t)(end - p));
				size_t take = nl ? (size_t)(nl - p) : (size_t)(end - p);

				if (line.len + take > CR_EVENT_MAX_SIZE) {
					rc = cr_error_set(CR_EINVAL, "%s: event %" PRIu64 " is longer than %u bytes",
					                  path, index, CR_EVENT_MAX_SIZE);
					goto done;
				}
				if ((rc = cr_buf_put(&line, p, take)) != 0)
					goto done;
				p += take;
				if (nl) {
					p++;
					if ((rc = fn(ctx, index++, line.ptr, line.len)) != 0)
						goto done;
					cr_buf_clear(&line);
				}
			}
		}
		if (n < 0) {
			rc = cr_error_set(CR_EARCHIVE, "%s: %s", path, archive_error_string(a));
			goto done;
		}
		break;
	}
	if (r != ARCHIVE_OK && r != ARCHIVE_EOF && !found) {
		rc = cr_error_set(CR_EARCHIVE, "%s: %s", path, archive_error_string(a));
		goto done;
	}
	if (!found)
		rc = cr_error_set(CR_EINVAL, "%s: no events.jsonl in the bundle", path);
	else if (line.len)
		rc = cr_error_set(CR_EINVAL, "%s: events.jsonl does not end with a newline", path);
done:
	cr_buf_free(&line);
	archive_read_free(a);
	return rc;
}

typedef struct source {
	cr_store *store;
	const char *bundle;
} source;

static int foreach_event(source *s, event_fn fn, void *ctx)
{
	if (s->store)
		return cr_store_foreach_event(s->store, 0, fn, ctx);
	return bundle_events(s->bundle, fn, ctx);
}

/* ---- pass 1: the checkpoints' paths ------------------------------------------- */

typedef struct entry {
	uint64_t index;
	char *path;
	const char *rel;        /* path below the common parent */
	uint64_t superseded_by; /* UINT64_MAX when none */
} entry;

typedef struct collect {
	entry *v;
	size_t n, cap;
} collect;

static int collect_cb(void *ctx, uint64_t index, const char *leaf, size_t len)
{
	collect *c = ctx;
	cr_buf path = CR_BUF_INIT;
	json_t *ev = NULL;
	int rc;

	/* A cheap filter before parsing: most events are inputs. */
	if (!memmem(leaf, len, "\"type\":\"checkpoint\"", 19))
		return 0;
	if ((rc = cr_event_parse(&ev, leaf, len)) != 0)
		return cr_error_set(rc, "event %" PRIu64 ": %s", index, cr_error_last());
	if (strcmp(cr_event_type(ev), "checkpoint") != 0 || cr_event_get_path(ev, "path", &path) != 0) {
		cr_error_clear();
		json_decref(ev);
		return 0;
	}
	json_decref(ev);
	if (c->n == c->cap) {
		size_t cap = c->cap ? 2 * c->cap : 64;
		entry *v = realloc(c->v, cap * sizeof(*v));

		if (!v) {
			cr_buf_free(&path);
			return cr_error_set(CR_ENOMEM, "out of memory");
		}
		c->v = v;
		c->cap = cap;
	}
	c->v[c->n].index = index;
	c->v[c->n].path = cr_buf_detach(&path);
	c->v[c->n].superseded_by = UINT64_MAX;
	c->n++;
	return 0;
}

static void map_paths(collect *c)
{
	size_t plen = 0;

	/* The longest folder prefix shared by every path. */
	if (c->n) {
		const char *first = c->v[0].path;
		const char *slash = strrchr(first, '/');

		plen = slash ? (size_t)(slash - first) : 0;
		for (size_t i = 1; i < c->n; i++) {
			size_t k = 0;

			while (k < plen && c->v[i].path[k] == first[k])
				k++;
			while (k > 0 && !(first[k] == '/' && c->v[i].path[k] == '/'))
				k--;
			plen = k;
		}
	}
	for (size_t i = 0; i < c->n; i++) {
		const char *p = c->v[i].path + plen;

		c->v[i].rel = *p == '/' ? p + 1 : p;
	}
	/* Quadratic in checkpoints, which number in the hundreds at most. */
	for (size_t i = 0; i < c->n; i++)
		for (size_t j = i + 1; j < c->n; j++)
			if (strcmp(c->v[i].rel, c->v[j].rel) == 0)
				c->v[i].superseded_by = c->v[j].index;
}

/* ---- pass 2: each checkpoint against its file ----------------------------------- */

typedef struct base {
	uint64_t index;         /* UINT64_MAX: none */
	cr_manifest *m;
	int fd;
	uint64_t *offsets;
} base;

typedef struct replay {
	const cr_replay_options *opts;
	collect c;
	size_t next;            /* next entry of c */
	base last;              /* the previous checkpoint, when its file matched its record */
	uint64_t last_bad;      /* the last checkpoint whose file did not match, or UINT64_MAX */
	cr_replay_fn fn;
	void *ctx;
	cr_replay_summary *sum;
	json_t *row;
	json_t *problems;
} replay;

static void base_clear(base *b)
{
	cr_manifest_free(b->m);
	free(b->offsets);
	if (b->fd >= 0)
		close(b->fd);
	b->m = NULL;
	b->offsets = NULL;
	b->fd = -1;
	b->index = UINT64_MAX;
}

static void problem(replay *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(replay *r, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_array_append_new(r->problems, json_string(msg));
	r->sum->problems++;
}

/* A name -> entry index over a list of {"name": ...} objects (the first of a name wins). */
static json_t *name_index(const json_t *list)
{
	json_t *idx = json_object(), *t;
	size_t i;

	json_array_foreach(list, i, t) {
		const char *name = json_string_value(json_object_get(t, "name"));

		if (name && !json_object_get(idx, name))
			json_object_set(idx, name, t);
	}
	return idx;
}

static const json_t *by_name(const json_t *idx, const char *name)
{
	return json_object_get(idx, name);
}

/* Two decimal strings equal within 1e-6 relative (or both absent). */
static int same_number(const json_t *a, const json_t *b)
{
	const char *x = json_string_value(a), *y = json_string_value(b);
	double u, v;

	if (!x || !y)
		return !x && !y;
	if (strcmp(x, y) == 0)
		return 1;
	u = strtod(x, NULL);
	v = strtod(y, NULL);
	return fabs(u - v) <= 1e-6 * fmax(fabs(u), fabs(v)) + 1e-30;
}

/* The recorded manifest against the one read from the file. */
static void compare_manifest(replay *r, const char *file, const json_t *rec, const json_t *disk)
{
	const json_t *rl = json_object_get(rec, "tensors"), *dl = json_object_get(disk, "tensors"), *t;
	const char *rf = json_string_value(json_object_get(rec, "format")) ?: "?";
	const char *df = json_string_value(json_object_get(disk, "format")) ?: "?";
	json_t *ri = name_index(rl), *di = name_index(dl);
	size_t i;

	if (strcmp(rf, df) != 0)
		problem(r, "%s: read as %s, recorded as %s", file, df, rf);
	json_array_foreach(rl, i, t) {
		const char *name = json_string_value(json_object_get(t, "name")) ?: "?";
		const json_t *u = by_name(di, name);
		const char *keys[] = {"dtype", "shape", "offset", "length", "member"};

		if (!u) {
			problem(r, "%s: tensor %s: recorded, not in the file", file, name);
			continue;
		}
		if (!json_equal(json_object_get(t, "sha256"), json_object_get(u, "sha256")))
			problem(r, "%s: tensor %s: SHA-256 %s in the file, recorded %s", file, name,
			        json_string_value(json_object_get(u, "sha256")) ?: "?",
			        json_string_value(json_object_get(t, "sha256")) ?: "?");
		for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
			json_t *a = json_object_get(t, keys[k]), *b = json_object_get(u, keys[k]);

			if ((a || b) && !(a && b && json_equal(a, b)))
				problem(r, "%s: tensor %s: %s differs from the recorded one", file, name, keys[k]);
		}
	}
	json_array_foreach(dl, i, t) {
		const char *name = json_string_value(json_object_get(t, "name")) ?: "?";

		if (!by_name(ri, name))
			problem(r, "%s: tensor %s: in the file, not recorded", file, name);
	}
	json_decref(ri);
	json_decref(di);
}

static int name_set_equal(const json_t *a, const json_t *b)
{
	size_t i;
	const json_t *x;

	if (json_array_size(a) != json_array_size(b))
		return 0;
	json_array_foreach(a, i, x) {
		size_t j;
		const json_t *y;
		int hit = 0;

		json_array_foreach(b, j, y)
			if (json_equal(x, y))
				hit = 1;
		if (!hit)
			return 0;
	}
	return 1;
}

/* The recorded delta against the one recomputed from the files. */
static void compare_delta(replay *r, const char *file, const json_t *rec, const json_t *disk)
{
	const json_t *rc = json_object_get(rec, "changed"), *dc = json_object_get(disk, "changed"), *t;
	json_t *ri = name_index(rc), *di = name_index(dc);
	size_t i;

	if (!name_set_equal(json_object_get(rec, "added"), json_object_get(disk, "added")))
		problem(r, "%s: delta: tensors added differ from the recorded delta", file);
	if (!name_set_equal(json_object_get(rec, "removed"), json_object_get(disk, "removed")))
		problem(r, "%s: delta: tensors removed differ from the recorded delta", file);
	json_array_foreach(rc, i, t) {
		const char *name = json_string_value(json_object_get(t, "name")) ?: "?";
		const json_t *u = by_name(di, name);
		const char *nums[] = {"l2", "max_abs", "rel"};

		if (!u) {
			problem(r, "%s: delta: tensor %s recorded as changed, unchanged in the files", file, name);
			continue;
		}
		if (!json_equal(json_object_get(t, "old"), json_object_get(u, "old")) ||
		    !json_equal(json_object_get(t, "new"), json_object_get(u, "new")))
			problem(r, "%s: delta: tensor %s: hashes differ from the recorded delta", file, name);
		for (size_t k = 0; k < 3; k++)
			if (!same_number(json_object_get(t, nums[k]), json_object_get(u, nums[k])))
				problem(r, "%s: delta: tensor %s: %s %s recomputed, recorded %s", file, name, nums[k],
				        json_string_value(json_object_get(u, nums[k])) ?: "-",
				        json_string_value(json_object_get(t, nums[k])) ?: "-");
	}
	json_array_foreach(dc, i, t) {
		const char *name = json_string_value(json_object_get(t, "name")) ?: "?";

		if (!by_name(ri, name))
			problem(r, "%s: delta: tensor %s changed in the files, not in the recorded delta", file, name);
	}
	json_decref(ri);
	json_decref(di);
	/* The totals too: what the timeline shows must be what the files give. */
	if (!same_number(json_object_get(rec, "l2"), json_object_get(disk, "l2")))
		problem(r, "%s: delta: update L2 %s recomputed, recorded %s", file,
		        json_string_value(json_object_get(disk, "l2")) ?: "-",
		        json_string_value(json_object_get(rec, "l2")) ?: "-");
	if (!same_number(json_object_get(rec, "rel"), json_object_get(disk, "rel")))
		problem(r, "%s: delta: relative update %s recomputed, recorded %s", file,
		        json_string_value(json_object_get(disk, "rel")) ?: "-",
		        json_string_value(json_object_get(rec, "rel")) ?: "-");
	if (!json_equal(json_object_get(rec, "unchanged"), json_object_get(disk, "unchanged")))
		problem(r, "%s: delta: %lld tensors unchanged in the files, recorded %lld", file,
		        (long long)json_integer_value(json_object_get(disk, "unchanged")),
		        (long long)json_integer_value(json_object_get(rec, "unchanged")));
}

/* An unlinked temporary file for a delta base. */
static int temp_file(void)
{
	const char *dir = getenv("TMPDIR");
	char tmpl[4096];
	int fd;

	if (!dir || !*dir)
		dir = "/tmp";
	if ((fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) >= 0)
		return fd;
	snprintf(tmpl, sizeof(tmpl), "%s/cleanroom-replay-XXXXXX", dir);
	if ((fd = mkostemp(tmpl, O_CLOEXEC)) >= 0)
		unlink(tmpl);
	return fd;
}

static const char *status_of(replay *r, const char *dflt)
{
	return json_array_size(r->problems) ? "mismatch" : dflt;
}

static void check_file(replay *r, const entry *e, const json_t *ev, const char *file)
{
	const char *sha = json_string_value(json_object_get(ev, "sha256"));
	const json_t *rec_m = json_object_get(ev, "tensors"), *rec_d = json_object_get(ev, "delta");
	const json_t *prev = json_object_get(rec_d, "previous");
	cr_manifest_opts o;
	cr_delta_base pb;
	cr_manifest *m = NULL;
	cr_delta *d = NULL;
	uint64_t *offsets = NULL;
	json_t *mj = NULL, *dj = NULL;
	char hex[65];
	int fd, bfd, rc, use_base;

	if ((fd = open(file, O_RDONLY | O_CLOEXEC)) < 0) {
		problem(r, "missing: %s (recorded as %s)", file, e->path);
		json_object_set_new(r->row, "status", json_string("missing"));
		base_clear(&r->last);
		return;
	}
	memset(&o, 0, sizeof(o));
	o.name = file;
	o.want_file_sha256 = 1;
	o.base_out_fd = bfd = temp_file();
	use_base = rec_d && json_is_integer(prev) && r->last.m &&
	           r->last.index == (uint64_t)json_integer_value(prev);
	if (use_base) {
		memset(&pb, 0, sizeof(pb));
		pb.manifest = r->last.m;
		pb.fd = r->last.fd;
		pb.offsets = r->last.offsets;
		o.prev = &pb;
	}
	rc = cr_manifest_read(fd, &o, &m, use_base ? &d : NULL, bfd >= 0 ? &offsets : NULL);
	close(fd);
	if (rc != 0) {
		problem(r, "%s: cannot read its tensors: %s", file, cr_error_last());
		cr_error_clear();
		json_object_set_new(r->row, "status", json_string("mismatch"));
		base_clear(&r->last);
		r->last_bad = e->index;
		if (bfd >= 0)
			close(bfd);
		return;
	}
	cr_hex_encode(hex, m->file_sha256, 32);
	if (!sha) {
		problem(r, "%s: recorded without a hash (changed while it was written)", file);
	} else if (strcmp(hex, sha) != 0) {
		problem(r, "%s: SHA-256 %s, recorded %s", file, hex, sha);
	}
	json_object_set_new(r->row, "format", json_string(m->format));
	json_object_set_new(r->row, "tensors", json_integer((json_int_t)m->n));
	if (rec_m) {
		cr_buf enc = CR_BUF_INIT;
		uint8_t dg[32];
		const char *want = json_string_value(json_object_get(ev, "tensors_sha256"));

		if (cr_event_encode(rec_m, &enc) == 0) {
			cr_sha256(dg, enc.ptr, enc.len);
			cr_hex_encode(hex, dg, 32);
			if (!want || strcmp(want, hex) != 0)
				problem(r, "event %" PRIu64 ": the recorded manifest's digest is %s, the event says %s",
				        e->index, hex, want ? want : "nothing");
		}
		cr_buf_free(&enc);
		if (cr_manifest_json(m, &mj) == 0)
			compare_manifest(r, file, rec_m, mj);
	}
	if (rec_d) {
		if (d && cr_delta_json(d, &dj) == 0) {
			compare_delta(r, file, rec_d, dj);
			json_object_set_new(r->row, "delta_checked", json_true());
			json_object_set(r->row, "l2", json_object_get(dj, "l2") ?: json_null());
			json_object_set(r->row, "rel", json_object_get(dj, "rel") ?: json_null());
			r->sum->deltas_checked++;
		} else {
			json_object_set_new(r->row, "delta_checked", json_false());
			json_object_set_new(r->row, "delta_note",
			                    json_string(json_is_integer(prev) && (uint64_t)json_integer_value(prev) == r->last_bad
			                                ? "not recomputed: the previous checkpoint does not match its record"
			                                : "not recomputed: the previous checkpoint's file is not on disk"));
		}
	}
	json_object_set_new(r->row, "status", json_string(status_of(r, sha ? "ok" : "unverifiable")));
	base_clear(&r->last);
	if (json_array_size(r->problems) || !sha) {
		r->last_bad = e->index; /* a base that is not what was recorded would blame the next one */
	} else if (bfd >= 0 && offsets) {
		r->last.index = e->index;
		r->last.m = m;
		r->last.fd = bfd;
		r->last.offsets = offsets;
		m = NULL;
		offsets = NULL;
		bfd = -1;
	}
	if (bfd >= 0)
		close(bfd);
	free(offsets);
	cr_manifest_free(m);
	cr_delta_free(d);
	json_decref(mj);
	json_decref(dj);
}

static int replay_cb(void *ctx, uint64_t index, const char *leaf, size_t len)
{
	replay *r = ctx;
	const entry *e;
	const json_t *d, *lin;
	json_t *ev = NULL;
	char file[8192];
	const char *status;
	int escapes;

	if (r->next >= r->c.n || r->c.v[r->next].index != index)
		return 0;
	e = &r->c.v[r->next++];
	if (cr_event_parse(&ev, leaf, len) != 0)
		return cr_error_set(CR_ECORRUPT, "event %" PRIu64 ": %s", index, cr_error_last());
	d = json_object_get(ev, "delta");
	lin = json_object_get(ev, "lineage");
	r->row = json_object();
	r->problems = json_array();
	snprintf(file, sizeof(file), "%s/%s", r->opts->checkpoints_dir, e->rel);
	escapes = strcmp(e->rel, "..") == 0 || strncmp(e->rel, "../", 3) == 0 || strstr(e->rel, "/../") ||
	          (strlen(e->rel) >= 3 && strcmp(e->rel + strlen(e->rel) - 3, "/..") == 0) || !*e->rel;
	json_object_set_new(r->row, "index", json_integer((json_int_t)index));
	json_object_set_new(r->row, "path", json_string(e->path));
	json_object_set_new(r->row, "file", json_string(file));
	json_object_set(r->row, "time", json_object_get(ev, "time") ?: json_null());
	json_object_set(r->row, "run", json_object_get(ev, "run") ?: json_null());
	json_object_set(r->row, "inputs", json_object_get(lin, "input_count") ?: json_null());
	json_object_set_new(r->row, "changed", json_integer((json_int_t)json_array_size(json_object_get(d, "changed"))));
	json_object_set_new(r->row, "added", json_integer((json_int_t)json_array_size(json_object_get(d, "added"))));
	json_object_set_new(r->row, "removed", json_integer((json_int_t)json_array_size(json_object_get(d, "removed"))));
	json_object_set(r->row, "l2", json_object_get(d, "l2") ?: json_null());
	json_object_set(r->row, "rel", json_object_get(d, "rel") ?: json_null());
	if (!d && json_object_get(ev, "tensors")) {
		const char *why = json_string_value(json_object_get(ev, "tensors_error"));

		json_object_set_new(r->row, "delta_note",
		                    json_string(why ? why
		                                : json_is_integer(json_object_get(lin, "previous"))
		                                      ? "none recorded (deltas were off)"
		                                      : "first checkpoint of its run"));
	}
	if (e->superseded_by != UINT64_MAX) {
		json_object_set_new(r->row, "status", json_string("superseded"));
		json_object_set_new(r->row, "superseded_by", json_integer((json_int_t)e->superseded_by));
		base_clear(&r->last);
	} else if (escapes) {
		problem(r, "recorded path %s does not map to a file below %s", e->path, r->opts->checkpoints_dir);
		json_object_set_new(r->row, "status", json_string("mismatch"));
		base_clear(&r->last);
		r->last_bad = index;
	} else {
		check_file(r, e, ev, file);
	}
	json_object_set_new(r->row, "problems", r->problems);
	status = json_string_value(json_object_get(r->row, "status"));
	r->sum->checkpoints++;
	if (strcmp(status, "ok") == 0)
		r->sum->ok++;
	else if (strcmp(status, "superseded") == 0)
		r->sum->superseded++;
	else
		r->sum->failed++;
	if (r->fn)
		r->fn(r->ctx, r->row);
	json_decref(r->row);
	json_decref(ev);
	r->row = r->problems = NULL;
	return 0;
}

static void quiet_verify(void *ctx, const char *check, int ok, const char *detail)
{
	cr_buf *first = ctx;

	if (!ok && !first->len)
		cr_buf_printf(first, "%s: %s", check, detail);
}

int cr_replay(const cr_replay_options *opts, cr_replay_fn fn, void *ctx, cr_replay_summary *out)
{
	replay r;
	source s = {NULL, NULL};
	int rc;

	memset(out, 0, sizeof(*out));
	memset(&r, 0, sizeof(r));
	r.opts = opts;
	r.fn = fn;
	r.ctx = ctx;
	r.sum = out;
	r.last.fd = -1;
	r.last.index = UINT64_MAX;
	r.last_bad = UINT64_MAX;
	if (!opts->checkpoints_dir)
		return cr_error_set(CR_EINVAL, "no checkpoints folder given");
	if (opts->bundle) {
		cr_verify_options vo;
		cr_verify_summary vs;
		cr_buf first = CR_BUF_INIT;

		memset(&vo, 0, sizeof(vo));
		vo.bundle = opts->bundle;
		vo.public_pem = opts->public_pem;
		rc = cr_verify_bundle(&vo, quiet_verify, &first, &vs);
		if (rc == CR_EVERIFY)
			rc = cr_error_set(CR_EVERIFY, "%s does not verify (%s); see cleanroom verify", opts->bundle,
			                  first.ptr ? first.ptr : "?");
		cr_buf_free(&first);
		if (rc)
			return rc;
		s.bundle = opts->bundle;
	} else if ((rc = cr_store_open(&s.store, opts->store, 0)) != 0) {
		return rc;
	}
	if ((rc = foreach_event(&s, collect_cb, &r.c)) != 0)
		goto done;
	map_paths(&r.c);
	if ((rc = foreach_event(&s, replay_cb, &r)) != 0)
		goto done;
	if (out->checkpoints == 0)
		rc = cr_error_set(CR_EVERIFY, "%s records no checkpoint: nothing to replay",
		                  opts->bundle ? opts->bundle : opts->store);
	else if (out->failed)
		rc = cr_error_set(CR_EVERIFY, "%" PRIu64 " of %" PRIu64 " checkpoints do not match", out->failed,
		                  out->checkpoints);
	else
		rc = 0;
done:
	base_clear(&r.last);
	for (size_t i = 0; i < r.c.n; i++)
		free(r.c.v[i].path);
	free(r.c.v);
	json_decref(r.row);
	json_decref(r.problems);
	cr_store_free(s.store);
	return rc;
}
