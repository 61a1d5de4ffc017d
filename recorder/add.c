/*
 * `cleanroom add`: collect regular files, hash the ones the cache does not
 * know on a thread pool, append one input event per new file. Paths are
 * recorded absolute, with the folder named by the user resolved by
 * realpath() and the names below it as they are on disk.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
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

typedef struct path_list {
	char **items;
	size_t n, cap;
} path_list;

static int list_push(path_list *l, const char *path)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 1024;
		char **p = realloc(l->items, cap * sizeof(*p));

		if (!p)
			return cr_error_set(CR_ENOMEM, "out of memory listing files");
		l->items = p;
		l->cap = cap;
	}
	if ((l->items[l->n] = strdup(path)) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory listing files");
	l->n++;
	return 0;
}

static void list_free(path_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->items[i]);
	free(l->items);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
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
		if ((rc = list_push(&names, e->d_name)) != 0)
			break;
	}
	closedir(d);
	if (rc)
		goto done;
	qsort(names.items, names.n, sizeof(char *), cmp_str);
	for (size_t i = 0; i < names.n; i++) {
		struct stat sb;

		cr_buf_clear(&child);
		if ((rc = cr_buf_printf(&child, "%s/%s", strcmp(dir, "/") ? dir : "", names.items[i])) != 0)
			goto done;
		if (lstat(child.ptr, &sb) != 0) {
			problem(o, st, child.ptr, strerror(errno), 1);
			continue;
		}
		if (S_ISDIR(sb.st_mode)) {
			if ((rc = walk(child.ptr, depth + 1, out, o, st)) != 0)
				goto done;
		} else if (S_ISREG(sb.st_mode)) {
			if ((rc = list_push(out, child.ptr)) != 0)
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
			rc = list_push(out, abs);
		else
			rc = cr_error_set(CR_EINVAL, "%s is neither a regular file nor a folder", paths[i]);
		free(abs);
		if (rc)
			return rc;
	}
	qsort(out->items, out->n, sizeof(char *), cmp_str);
	/* The same file named twice (or inside a named folder) is added once. */
	{
		size_t w = 0;

		for (size_t i = 0; i < out->n; i++) {
			if (w && strcmp(out->items[w - 1], out->items[i]) == 0) {
				free(out->items[i]);
				continue;
			}
			out->items[w++] = out->items[i];
		}
		out->n = w;
	}
	return 0;
}

/*
 * A file modified within the timestamp granularity of being hashed could
 * change again without its mtime/ctime moving ("racy git"); such a file
 * is not cached, so the next add hashes it again.
 */
#define RACY_NS 100000000LL /* well above the kernel's coarse timestamp tick */

static int racy(const cr_file_id *id)
{
	struct timespec now;
	int64_t t;

	clock_gettime(CLOCK_REALTIME, &now);
	t = (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
	return t - id->mtime_ns < RACY_NS || t - id->ctime_ns < RACY_NS;
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

static int add_batch(cr_store *store, char **paths, size_t n, const cr_add_options *o, cr_add_stats *st)
{
	cr_hash_job *jobs = calloc(n ? n : 1, sizeof(*jobs));
	uint8_t (*sha)[32] = calloc(n ? n : 1, 32);
	uint64_t *size = calloc(n ? n : 1, sizeof(*size));
	signed char *state = calloc(n ? n : 1, 1); /* 0 pending, 1 cached, 2 hashed, -1 failed */
	size_t *job_of = calloc(n ? n : 1, sizeof(*job_of));
	size_t njobs = 0, i;
	struct timespec now;
	int rc = 0;

	if (!jobs || !sha || !size || !state || !job_of) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	for (i = 0; i < n; i++) {
		struct stat sb;
		cr_file_id id;

		if (stat(paths[i], &sb) != 0) {
			problem(o, st, paths[i], strerror(errno), 1);
			state[i] = -1;
			continue;
		}
		st->files++;
		st->bytes += (uint64_t)sb.st_size;
		id.dev = (uint64_t)sb.st_dev;
		id.ino = (uint64_t)sb.st_ino;
		id.size = (uint64_t)sb.st_size;
		id.mtime_ns = (int64_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
		id.ctime_ns = (int64_t)sb.st_ctim.tv_sec * 1000000000 + sb.st_ctim.tv_nsec;
		rc = cr_store_cache_get(store, &id, sha[i]);
		if (rc == 0) {
			state[i] = 1;
			size[i] = id.size;
			st->cached_files++;
			continue;
		}
		if (rc != CR_ENOTFOUND)
			goto done;
		rc = 0;
		jobs[njobs].path = paths[i];
		job_of[njobs++] = i;
	}
	if ((rc = cr_hash_many(jobs, njobs, o->threads, NULL, NULL)) != 0)
		goto done;
	for (size_t j = 0; j < njobs; j++) {
		cr_hash_job *jb = &jobs[j];

		i = job_of[j];
		if (jb->rc == CR_HASH_CHANGED) {
			/* A second look: a file being written right now is not recorded. */
			free(jb->error);
			jb->error = NULL;
			jb->rc = cr_hash_file(jb->path, jb->sha256, &jb->id);
			if (jb->rc < 0)
				jb->error = strdup(cr_error_last());
		}
		if (jb->rc == CR_HASH_CHANGED) {
			problem(o, st, jb->path, "changed while being read; not recorded", 1);
			state[i] = -1;
			continue;
		}
		if (jb->rc < 0) {
			problem(o, st, jb->path, jb->error ? jb->error : "cannot be read", 1);
			state[i] = -1;
			continue;
		}
		memcpy(sha[i], jb->sha256, 32);
		size[i] = jb->id.size;
		state[i] = 2;
		st->hashed_files++;
		st->hashed_bytes += jb->id.size;
		if (!racy(&jb->id) && (rc = cr_store_cache_put(store, &jb->id, jb->sha256)) != 0)
			goto done;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	for (i = 0; i < n; i++) {
		int seen;

		if (state[i] <= 0)
			continue;
		seen = cr_store_file_recorded(store, paths[i], strlen(paths[i]), sha[i]);
		if (seen < 0) {
			rc = seen;
			goto done;
		}
		if (seen) {
			st->unchanged++;
			continue;
		}
		if ((rc = append_input(store, paths[i], sha[i], size[i], &now)) != 0)
			goto done;
		st->recorded++;
	}
	rc = cr_store_flush(store);
done:
	for (i = 0; jobs && i < njobs; i++)
		free(jobs[i].error);
	free(jobs);
	free(sha);
	free(size);
	free(state);
	free(job_of);
	return rc;
}

int cr_add_paths(cr_store *store, const char *const *paths, size_t n, const cr_add_options *opts,
                 cr_add_stats *stats)
{
	cr_add_options o = {0};
	path_list files = {0};
	size_t batch, i;
	int rc;

	if (opts)
		o = *opts;
	batch = o.batch ? o.batch : DEFAULT_BATCH;
	memset(stats, 0, sizeof(*stats));
	if ((rc = collect(paths, n, &files, &o, stats)) != 0)
		goto done;
	for (i = 0; i < files.n; i += batch) {
		size_t m = files.n - i < batch ? files.n - i : batch;

		if ((rc = add_batch(store, files.items + i, m, &o, stats)) != 0)
			goto done;
		if (o.progress)
			o.progress(o.ctx, stats);
	}
	if (files.n == 0)
		rc = cr_store_flush(store);
done:
	list_free(&files);
	return rc;
}
