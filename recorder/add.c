/*
 * `cleanroom add`: collect regular files, hash the ones the cache does not
 * know on a thread pool, append one input event per new file. Paths are
 * recorded absolute, with the folder named by the user resolved by
 * realpath() and the names below it as they are on disk.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cleanroom/add.h"
#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "util/buf.h"

#define DEFAULT_BATCH 4096
#define MAX_DEPTH 256

/* A file to add: its path and its identity as listed (for the hash cache). */
typedef struct file_ent {
	char *path;
	cr_file_id id;
} file_ent;

typedef struct path_list {
	file_ent *items;
	size_t n, cap;
} path_list;

static int list_push(path_list *l, const char *path, const struct stat *sb)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 1024;
		file_ent *p = realloc(l->items, cap * sizeof(*p));

		if (!p)
			return cr_error_set(CR_ENOMEM, "out of memory listing files");
		l->items = p;
		l->cap = cap;
	}
	if ((l->items[l->n].path = strdup(path)) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory listing files");
	if (sb)
		cr_file_id_from_stat(&l->items[l->n].id, sb);
	else
		memset(&l->items[l->n].id, 0, sizeof(cr_file_id));
	l->n++;
	return 0;
}

static void list_free(path_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->items[i].path);
	free(l->items);
}

static int cmp_ent(const void *a, const void *b)
{
	return strcmp(((const file_ent *)a)->path, ((const file_ent *)b)->path);
}

static void problem(const cr_add_options *o, cr_add_stats *st, const char *path, const char *what,
                    int failed)
{
	if (failed)
		st->failed++;
	else
		st->skipped++;
	if (o->problem)
		o->problem(o->ctx, path, what);
}

static int walk(const char *dir, int depth, path_list *out, const cr_add_options *o, cr_add_stats *st)
{
	DIR *d;
	struct dirent *e;
	path_list names = {0};
	cr_buf child = CR_BUF_INIT;
	int rc = 0;

	if (depth > MAX_DEPTH) {
		problem(o, st, dir, "folders nested too deep; not descended", 1);
		return 0;
	}
	if ((d = opendir(dir)) == NULL) {
		problem(o, st, dir, strerror(errno), 1);
		return 0;
	}
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if ((rc = list_push(&names, e->d_name, NULL)) != 0)
			break;
	}
	closedir(d);
	if (rc)
		goto done;
	if (names.n)
		qsort(names.items, names.n, sizeof(*names.items), cmp_ent);
	for (size_t i = 0; i < names.n; i++) {
		struct stat sb;

		cr_buf_clear(&child);
		if ((rc = cr_buf_printf(&child, "%s/%s", strcmp(dir, "/") ? dir : "",
		                        names.items[i].path)) != 0)
			goto done;
		if (lstat(child.ptr, &sb) != 0) {
			problem(o, st, child.ptr, strerror(errno), 1);
			continue;
		}
		if (S_ISDIR(sb.st_mode)) {
			if ((rc = walk(child.ptr, depth + 1, out, o, st)) != 0)
				goto done;
		} else if (S_ISREG(sb.st_mode)) {
			if ((rc = list_push(out, child.ptr, &sb)) != 0)
				goto done;
		} else {
			problem(o, st, child.ptr,
			        S_ISLNK(sb.st_mode) ? "symbolic link inside a folder; not followed"
			                            : "not a regular file; skipped", 0);
		}
	}
done:
	cr_buf_free(&child);
	list_free(&names);
	return rc;
}

static int collect(const char *const *paths, size_t n, path_list *out, const cr_add_options *o,
                   cr_add_stats *st)
{
	int rc;

	for (size_t i = 0; i < n; i++) {
		char *abs = realpath(paths[i], NULL);
		struct stat sb;

		if (!abs)
			return cr_error_set_errno(errno == ENOENT ? CR_ENOTFOUND : CR_EIO, errno, "%s", paths[i]);
		if (stat(abs, &sb) != 0) {
			rc = cr_error_set_errno(CR_EIO, errno, "%s", paths[i]);
			free(abs);
			return rc;
		}
		if (S_ISDIR(sb.st_mode))
			rc = walk(abs, 0, out, o, st);
		else if (S_ISREG(sb.st_mode))
			rc = list_push(out, abs, &sb);
		else
			rc = cr_error_set(CR_EINVAL, "%s is neither a regular file nor a folder", paths[i]);
		free(abs);
		if (rc)
			return rc;
	}
	if (out->n)
		qsort(out->items, out->n, sizeof(*out->items), cmp_ent);
	/* The same file named twice (or inside a named folder) is added once. */
	{
		size_t w = 0;

		for (size_t i = 0; i < out->n; i++) {
			if (w && strcmp(out->items[w - 1].path, out->items[i].path) == 0) {
				free(out->items[i].path);
				continue;
			}
			out->items[w++] = out->items[i];
		}
		out->n = w;
	}
	return 0;
}

static int append_input(cr_store *store, const char *path, const uint8_t sha[32], uint64_t size,
                        const struct timespec *now)
{
	json_t *ev = NULL;
	int rc;

	if ((rc = cr_event_new(&ev, "input")) == 0 &&
	    (rc = cr_event_set_path(ev, "path", path, strlen(path))) == 0 &&
	    (rc = cr_event_set_hex(ev, "sha256", sha, 32)) == 0 &&
	    (rc = cr_event_set_int(ev, "size", (int64_t)size)) == 0 &&
	    (rc = cr_event_set_time(ev, "time", now)) == 0 &&
	    (rc = cr_event_set_str(ev, "via", "add")) == 0)
		rc = cr_store_append(store, ev, NULL);
	json_decref(ev);
	return rc;
}

/*
 * One batch, one segment. The main thread looks every file up in the hash
 * cache and queues the misses on the pool at once, then appends events in
 * path order as hashes arrive, so hashing and appending overlap.
 */
#define RETRY_TAG (1ull << 63)

static int add_batch(cr_store *store, cr_hash_pool *pool, file_ent *files, size_t n,
                     const cr_add_options *o, cr_add_stats *st)
{
	uint8_t (*sha)[32] = calloc(n ? n : 1, 32);
	cr_file_id *ids = calloc(n ? n : 1, sizeof(*ids));
	signed char *state = calloc(n ? n : 1, 1); /* 0 pending, 1 cached, 2 hashed, -1 failed */
	cr_hash_result res[64];
	struct timespec now;
	size_t next = 0, i;
	int rc = 0, retried;

	if (!sha || !ids || !state) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	for (i = 0; i < n; i++) {
		st->files++;
		st->bytes += files[i].id.size;
		rc = cr_store_cache_get(store, &files[i].id, sha[i]);
		if (rc == 0) {
			state[i] = 1;
			ids[i] = files[i].id;
			st->cached_files++;
			continue;
		}
		if (rc != CR_ENOTFOUND)
			goto done;
		if ((rc = cr_hash_pool_submit(pool, i, files[i].path, -1)) != 0)
			goto done;
	}
	rc = 0;
	clock_gettime(CLOCK_REALTIME, &now);
	while (next < n) {
		size_t got = cr_hash_pool_collect(pool, res, sizeof(res) / sizeof(res[0]));

		for (size_t k = 0; k < got; k++) {
			cr_hash_result *r = &res[k];

			retried = (r->tag & RETRY_TAG) != 0;
			i = (size_t)(r->tag & ~RETRY_TAG);
			if (r->rc == CR_HASH_CHANGED && !retried) {
				/* A second look: a file being written right now is not recorded. */
				if ((rc = cr_hash_pool_submit(pool, r->tag | RETRY_TAG, files[i].path, -1)) != 0)
					goto done;
				continue;
			}
			if (r->rc == CR_HASH_CHANGED) {
				problem(o, st, files[i].path, "changed while being read; not recorded", 1);
				state[i] = -1;
				continue;
			}
			if (r->rc < 0) {
				problem(o, st, files[i].path, r->error[0] ? r->error : "cannot be read", 1);
				state[i] = -1;
				continue;
			}
			memcpy(sha[i], r->sha256, 32);
			ids[i] = r->id;
			state[i] = 2;
			st->hashed_files++;
			st->hashed_bytes += r->id.size;
			if (!cr_file_id_racy(&r->id) && (rc = cr_store_cache_put(store, &r->id, r->sha256)) != 0)
				goto done;
		}
		while (next < n && state[next] != 0) {
			int seen;

			i = next++;
			if (state[i] < 0)
				continue;
			seen = cr_store_file_recorded(store, files[i].path, strlen(files[i].path), sha[i]);
			if (seen < 0) {
				rc = seen;
				goto done;
			}
			if (seen) {
				st->unchanged++;
				continue;
			}
			if ((rc = append_input(store, files[i].path, sha[i], ids[i].size, &now)) != 0)
				goto done;
			st->recorded++;
		}
		if (next < n && got == 0) {
			struct pollfd pfd = {cr_hash_pool_eventfd(pool), POLLIN, 0};

			(void)poll(&pfd, 1, 100);
		}
	}
	rc = cr_store_flush(store);
done:
	if (rc) {
		/* Let the pool finish what it was given before the paths go away. */
		while (cr_hash_pool_busy(pool)) {
			struct pollfd pfd = {cr_hash_pool_eventfd(pool), POLLIN, 0};

			(void)poll(&pfd, 1, 100);
			while (cr_hash_pool_collect(pool, res, sizeof(res) / sizeof(res[0])) > 0)
				;
		}
	}
	free(sha);
	free(ids);
	free(state);
	return rc;
}

int cr_add_paths(cr_store *store, const char *const *paths, size_t n, const cr_add_options *opts,
                 cr_add_stats *stats)
{
	cr_add_options o = {0};
	path_list files = {0};
	cr_hash_pool *pool = NULL;
	size_t batch, i;
	int rc;

	if (opts)
		o = *opts;
	batch = o.batch ? o.batch : DEFAULT_BATCH;
	memset(stats, 0, sizeof(*stats));
	if ((rc = collect(paths, n, &files, &o, stats)) != 0)
		goto done;
	if ((rc = cr_hash_pool_new(&pool, o.threads)) != 0)
		goto done;
	for (i = 0; i < files.n; i += batch) {
		size_t m = files.n - i < batch ? files.n - i : batch;

		if ((rc = add_batch(store, pool, files.items + i, m, &o, stats)) != 0)
			goto done;
		if (o.progress)
			o.progress(o.ctx, stats);
	}
	if (files.n == 0)
		rc = cr_store_flush(store);
done:
	cr_hash_pool_free(pool);
	list_free(&files);
	return rc;
}
