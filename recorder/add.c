/*
 * `cleanroom add`: collect regular files, hash the ones the cache does not
 * know on a thread pool, append one input event per new file. Paths are
 * recorded absolute, with the folder named by the user resolved by
 * realpath() and the names below it as they are on disk.
 *
 * On a folder of small files the work per file is what counts, and the
 * main thread's share of it is the critical path, so the main thread only
 * lists and writes. Folders are listed by descriptor with the types their
 * entries come with (no stat per file), and kept open so that files are
 * opened by name. Each hashing thread does the rest of a file's work beside
 * it: its identity (fstat of the open file), the hash-cache lookup and the
 * "already recorded?" lookup through a read-only connection of its own, the
 * hashing, and the encoding of its event. The main thread puts the cache
 * entries, appends the events in path order and commits one segment per
 * batch, with the pool kept busy a batch ahead meanwhile.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanroom/add.h"
#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "cleanroom/shards.h"
#include "recorder/ckpt_worker.h"
#include "util/buf.h"
#include "util/thread.h"

#define DEFAULT_BATCH 4096
#define MAX_DEPTH 256

/*
 * Files looked up and queued ahead of the next one to append: two batches,
 * so the pool has a batch of work while the previous one is committed.
 */
#define WINDOW_BATCHES 2

/*
 * Results taken per wake-up once the main thread has caught up with the
 * hashing: one at a time would cost a wake-up (and a switch away from a
 * hashing thread) per file.
 */
#define WAKE_GROUP 32

/*
 * Folders are kept open while their files are hashed, up to this many (and
 * half the descriptor limit), so that a worker opens a file by its name in
 * the folder instead of looking up every folder of its path again.
 */
#define MAX_OPEN_DIRS 4096
#define NO_DIR        UINT32_MAX

/*
 * A file to add: its path (an offset into the list's arena until the walk
 * is over, then a pointer), and the folder it was listed in (an index into
 * the list's open folders, or NO_DIR) with the offset of its name in path.
 */
typedef struct file_ent {
	union {
		size_t off;
		const char *ptr;
	};
	uint32_t dir;
	uint32_t name_off;
} file_ent;

typedef struct file_list {
	file_ent *items;
	size_t n, cap;
	cr_buf arena; /* every path, NUL-terminated */
	int *dirs;    /* open folders (-1 once closed) */
	size_t *last; /* the last file of each, in the final order */
	size_t n_dirs, max_dirs;
} file_list;

/* Add dir/name (or dir alone when name is NULL), listed in folder d. */
static int list_push(file_list *l, const char *dir, size_t dir_len, const char *name, uint32_t d)
{
	size_t off = l->arena.len;
	int rc;

	if (l->n == l->cap) {
		size_t cap = l->cap ? 2 * l->cap : 1024;
		file_ent *p = realloc(l->items, cap * sizeof(*p));

		if (!p)
			return cr_error_set(CR_ENOMEM, "out of memory listing files");
		l->items = p;
		l->cap = cap;
	}
	if ((rc = cr_buf_put(&l->arena, dir, dir_len)) != 0 ||
	    (name && ((rc = cr_buf_putc(&l->arena, '/')) != 0 ||
	              (rc = cr_buf_puts(&l->arena, name)) != 0)) ||
	    (rc = cr_buf_putc(&l->arena, '\0')) != 0)
		return rc;
	l->items[l->n].off = off;
	l->items[l->n].dir = name && dir_len < UINT32_MAX ? d : NO_DIR;
	l->items[l->n].name_off = l->items[l->n].dir == NO_DIR ? 0 : (uint32_t)dir_len + 1;
	l->n++;
	return 0;
}

/* Keep a copy of the folder open at fd for the hashing; NO_DIR when not. */
static uint32_t list_keep_dir(file_list *l, int fd)
{
	int copy;

	if (l->n_dirs >= l->max_dirs)
		return NO_DIR;
	if (!l->dirs && (l->dirs = malloc(l->max_dirs * sizeof(*l->dirs))) == NULL)
		return NO_DIR;
	if ((copy = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
		return NO_DIR;
	l->dirs[l->n_dirs] = copy;
	return (uint32_t)l->n_dirs++;
}

static void list_free(file_list *l)
{
	for (size_t i = 0; i < l->n_dirs; i++) {
		if (l->dirs[i] >= 0)
			close(l->dirs[i]);
	}
	free(l->dirs);
	free(l->last);
	free(l->items);
	cr_buf_free(&l->arena);
}

static int cmp_ent(const void *a, const void *b)
{
	return strcmp(((const file_ent *)a)->ptr, ((const file_ent *)b)->ptr);
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

/*
 * One folder's entries: each its d_type byte then its NUL-terminated name,
 * in one buffer; off[] points at the names, sorted.
 */
typedef struct names {
	cr_buf buf;
	size_t *off;
	size_t n, cap;
} names;

static int cmp_name(const void *a, const void *b, void *base)
{
	return strcmp((const char *)base + *(const size_t *)a,
	              (const char *)base + *(const size_t *)b);
}

static int read_names(DIR *d, names *out)
{
	struct dirent *e;
	int rc;

	for (;;) {
		errno = 0;
		if ((e = readdir(d)) == NULL)
			break;
		if (e->d_name[0] == '.' &&
		    (e->d_name[1] == '\0' || (e->d_name[1] == '.' && e->d_name[2] == '\0')))
			continue;
		if (out->n == out->cap) {
			size_t cap = out->cap ? 2 * out->cap : 64;
			size_t *p = realloc(out->off, cap * sizeof(*p));

			if (!p)
				return cr_error_set(CR_ENOMEM, "out of memory listing files");
			out->off = p;
			out->cap = cap;
		}
		if ((rc = cr_buf_putc(&out->buf, (char)e->d_type)) != 0)
			return rc;
		out->off[out->n++] = out->buf.len;
		if ((rc = cr_buf_put(&out->buf, e->d_name, strlen(e->d_name) + 1)) != 0)
			return rc;
	}
	if (errno)
		return cr_error_set_errno(CR_EIO, errno, "reading a folder");
	if (out->n)
		qsort_r(out->off, out->n, sizeof(*out->off), cmp_name, out->buf.ptr);
	return 0;
}

typedef struct walker {
	file_list *out;
	const cr_add_options *o;
	cr_add_stats *st;
	cr_buf path; /* the folder being read */
} walker;

/* Report a problem with dir/name (name may be NULL). */
static void walk_problem(walker *w, const char *name, const char *what, int failed)
{
	size_t len = w->path.len;

	/* Out of memory for the name: the folder's path still says where. */
	if (name && (cr_buf_putc(&w->path, '/') != 0 || cr_buf_puts(&w->path, name) != 0))
		cr_error_clear();
	problem(w->o, w->st, w->path.ptr, what, failed);
	w->path.len = len;
	w->path.ptr[len] = '\0';
}

/* List the folder open at fd (w->path names it; fd is closed here). */
static int walk(walker *w, int fd, int depth)
{
	DIR *d;
	names nm = {CR_BUF_INIT, NULL, 0, 0};
	uint32_t kept = NO_DIR;
	int rc = 0;

	if (depth > MAX_DEPTH) {
		close(fd);
		walk_problem(w, NULL, "folders nested too deep; not descended", 1);
		return 0;
	}
	if ((d = fdopendir(fd)) == NULL) {
		close(fd);
		walk_problem(w, NULL, strerror(errno), 1);
		return 0;
	}
	if ((rc = read_names(d, &nm)) != 0)
		goto done;
	for (size_t i = 0; i < nm.n; i++) {
		if (kept == NO_DIR && (unsigned char)nm.buf.ptr[nm.off[i] - 1] != DT_DIR)
			kept = list_keep_dir(w->out, dirfd(d));
	}
	for (size_t i = 0; i < nm.n; i++) {
		const char *name = nm.buf.ptr + nm.off[i];
		unsigned char type = (unsigned char)name[-1];
		struct stat sb;

		/*
		 * The folder's listing says what an entry is on the common file
		 * systems; only where it does not is the entry stat'ed. A file's
		 * identity is taken when it is opened to be hashed.
		 */
		if (type == DT_UNKNOWN) {
			if (fstatat(dirfd(d), name, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
				walk_problem(w, name, strerror(errno), 1);
				continue;
			}
			type = S_ISDIR(sb.st_mode)   ? DT_DIR
			       : S_ISREG(sb.st_mode) ? DT_REG
			       : S_ISLNK(sb.st_mode) ? DT_LNK
			                             : DT_FIFO;
		}
		if (type == DT_DIR) {
			/* O_NOFOLLOW: a folder swapped for a link meanwhile is not followed. */
			int child =
			    openat(dirfd(d), name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			size_t len = w->path.len;

			if (child < 0) {
				walk_problem(w, name, strerror(errno), 1);
				continue;
			}
			if ((rc = cr_buf_putc(&w->path, '/')) != 0 ||
			    (rc = cr_buf_puts(&w->path, name)) != 0) {
				close(child);
				goto done;
			}
			rc = walk(w, child, depth + 1);
			w->path.len = len;
			w->path.ptr[len] = '\0';
			if (rc)
				goto done;
		} else if (type == DT_REG) {
			if ((rc = list_push(w->out, w->path.ptr, w->path.len, name, kept)) != 0)
				goto done;
		} else {
			walk_problem(w, name,
			             type == DT_LNK ? "symbolic link inside a folder; not followed"
			                            : "not a regular file; skipped",
			             0);
		}
	}
done:
	closedir(d);
	cr_buf_free(&nm.buf);
	free(nm.off);
	return rc;
}

static int collect(const char *const *paths, size_t n, file_list *out, const cr_add_options *o,
                   cr_add_stats *st)
{
	walker w = {out, o, st, CR_BUF_INIT};
	int rc = 0, sorted = 1;
	size_t i, keep;

	for (i = 0; i < n && !rc; i++) {
		char *abs = realpath(paths[i], NULL);
		struct stat sb;
		int fd;

		if (!abs) {
			rc = cr_error_set_errno(errno == ENOENT ? CR_ENOTFOUND : CR_EIO, errno,
			                        "%s", paths[i]);
			break;
		}
		if (stat(abs, &sb) != 0) {
			rc = cr_error_set_errno(CR_EIO, errno, "%s", paths[i]);
		} else if (S_ISDIR(sb.st_mode)) {
			cr_buf_clear(&w.path);
			/* "/" lists as "" so that its children are "/name". */
			if ((rc = cr_buf_puts(&w.path, strcmp(abs, "/") ? abs : "")) == 0) {
				if ((fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
					rc = cr_error_set_errno(CR_EIO, errno, "%s", paths[i]);
				else
					rc = walk(&w, fd, 0);
			}
		} else if (S_ISREG(sb.st_mode)) {
			rc = list_push(out, abs, strlen(abs), NULL, NO_DIR);
		} else {
			rc = cr_error_set(CR_EINVAL, "%s is neither a regular file nor a folder", paths[i]);
		}
		free(abs);
	}
	cr_buf_free(&w.path);
	if (rc)
		return rc;
	/* The arena no longer moves: offsets become pointers. */
	for (i = 0; i < out->n; i++)
		out->items[i].ptr = out->arena.ptr + out->items[i].off;
	/*
	 * Folders are listed in name order, which is path order except where a
	 * name sorts below '/' ("a.txt" before "a/x"); sort only then.
	 */
	for (i = 1; i < out->n && sorted; i++)
		sorted = strcmp(out->items[i - 1].ptr, out->items[i].ptr) < 0;
	if (!sorted)
		qsort(out->items, out->n, sizeof(*out->items), cmp_ent);
	/* The same file named twice (or inside a named folder) is added once. */
	for (i = 0, keep = 0; i < out->n; i++) {
		if (keep && strcmp(out->items[keep - 1].ptr, out->items[i].ptr) == 0)
			continue;
		out->items[keep++] = out->items[i];
	}
	out->n = keep;
	/* Each folder is closed once its last file is done with. */
	if (out->n_dirs) {
		if ((out->last = calloc(out->n_dirs, sizeof(*out->last))) == NULL)
			return cr_error_set(CR_ENOMEM, "out of memory");
		for (i = 0; i < out->n; i++) {
			if (out->items[i].dir != NO_DIR)
				out->last[out->items[i].dir] = i;
		}
	}
	return 0;
}

/* What is known of a file in the window. */
enum { PENDING = 0, SETTLED = 1, FAILED = -1 };

/*
 * One file in the window. The worker that hashed it fills unchanged, prep
 * and fatal (in the done hook) before its result is queued; the main thread
 * reads them after collecting the result.
 */
typedef struct slot {
	signed char state;
	signed char unchanged; /* recorded before with this path and content */
	signed char cache;     /* put id -> sha in the hash cache with the append */
	signed char shard;     /* the event carries a member manifest (or its digest) */
	cr_file_id id;
	uint8_t sha[CR_SHA256_SIZE];
	cr_store_prepared *prep; /* the input event, when not unchanged (made by the worker) */
	struct timespec time;    /* its time: when the batch began */
	int fatal;               /* the store could not be read: stop */
	char *message;           /* why (malloc'ed) */
} slot;

#define RETRY_TAG (1ull << 63)

/*
 * What each hashing thread keeps. Lookups that cannot hit are skipped: of a
 * device the hash cache knows nothing about, of a folder nothing below which
 * is recorded (the answers are remembered for the last device and folder
 * seen; files arrive folder by folder). Nothing this add records can make
 * them wrong: it records each path once.
 */
typedef struct worker_state {
	cr_store_reader *reader;
	uint64_t dev;
	int dev_known; /* the cache holds files of dev: 1, 0; -1 not asked */
	uint32_t dir;
	int dir_recorded; /* files are recorded below dir: 1, 0; -1 not asked */
} worker_state;

typedef struct adder {
	slot *win;
	size_t window;
	const file_ent *files;
	const int *dirs;  /* the list's open folders */
	worker_state *workers;
	unsigned n_workers; /* with a reader */
} adder;

static slot *slot_of(adder *a, uint64_t tag)
{
	return &a->win[(size_t)(tag & ~RETRY_TAG) % a->window];
}

static void slot_fail(slot *s, int rc)
{
	s->fatal = rc;
	free(s->message);
	s->message = strdup(cr_error_last()); /* NULL: the code still says what */
}

/* Worker: the hash cache, through this worker's reader. */
static int known_hook(void *ctx, unsigned worker, uint64_t tag, const char *path,
                      const cr_file_id *id, uint8_t sha[CR_SHA256_SIZE])
{
	adder *a = ctx;
	worker_state *w;
	int rc;

	(void)path;
	if (worker >= a->n_workers)
		return 0;
	w = &a->workers[worker];
	if (w->dev_known < 0 || w->dev != id->dev) {
		if ((rc = cr_store_reader_cache_has_device(w->reader, id->dev)) < 0) {
			slot_fail(slot_of(a, tag), rc);
			return rc;
		}
		w->dev = id->dev;
		w->dev_known = rc;
	}
	if (!w->dev_known)
		return 0;
	rc = cr_store_reader_cache_get(w->reader, id, sha);
	if (rc == 0)
		return 1;
	if (rc == CR_ENOTFOUND) {
		cr_error_clear();
		return 0;
	}
	slot_fail(slot_of(a, tag), rc);
	return rc;
}

/* A problem with this file alone: the main thread reports it (and retries a change once). */
static void file_problem(cr_hash_result *r, int rc)
{
	r->rc = rc;
	snprintf(r->error, sizeof(r->error), "%s", cr_error_last());
}

/*
 * Worker: the input event of a file named as an archive, with its member
 * manifest (docs/formats/shards.md) as `cleanroom record` makes it. The
 * archive is read again for its members; it must still be the file that
 * was hashed. Not an archive after all, or a damaged one: the event says
 * why in shard_error and keeps the file's hash. Returns nonzero only when
 * the event cannot be made (the add stops); a problem with the file is
 * left in r.
 */
static int prepare_shard_input(adder *a, const file_ent *f, const char *path, size_t len,
                               cr_hash_result *r, slot *s)
{
	const int flags = O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK | O_CLOEXEC;
	cr_shard *sh = NULL;
	json_t *ev = NULL, *members = NULL;
	uint8_t digest[CR_SHA256_SIZE];
	char why[512] = "";
	struct stat st;
	cr_file_id id;
	int fd, rc = 0, dropped = 0;

	fd = f->dir != NO_DIR && a->dirs[f->dir] >= 0 ? openat(a->dirs[f->dir], path + f->name_off, flags)
	                                              : open(path, flags);
	if (fd < 0) {
		file_problem(r, cr_error_set_errno(CR_EIO, errno, "%s", path));
		return 0;
	}
	if (fstat(fd, &st) != 0) {
		file_problem(r, cr_error_set_errno(CR_EIO, errno, "fstat %s", path));
		goto done;
	}
	cr_file_id_from_stat(&id, &st);
	if (memcmp(&id, &r->id, sizeof(id)) != 0) {
		file_problem(r, cr_error_set(CR_HASH_CHANGED, "%s changed while it was read", path));
		goto done;
	}
	rc = cr_shard_read(fd, path, &sh);
	if (rc == CR_ENOMEM)
		goto done; /* the add stops */
	/* Whatever the reader said, the file must still be the one that was hashed. */
	if (fstat(fd, &st) != 0) {
		file_problem(r, cr_error_set_errno(CR_EIO, errno, "fstat %s", path));
		rc = 0;
		goto done;
	}
	cr_file_id_from_stat(&id, &st);
	if (memcmp(&id, &r->id, sizeof(id)) != 0 ||
	    (rc == 0 && (sh->file_size != r->id.size ||
	                 memcmp(sh->file_sha256, r->sha256, CR_SHA256_SIZE) != 0))) {
		file_problem(r, cr_error_set(CR_HASH_CHANGED, "%s changed while it was read", path));
		rc = 0;
		goto done;
	}
	if (rc == CR_EIO) {
		/* Could not be read (not a question of its format): not recorded. */
		file_problem(r, rc);
		rc = 0;
		goto done;
	}
	if (rc != 0) {
		snprintf(why, sizeof(why), "%s", cr_error_last());
		cr_error_clear();
		rc = 0;
	} else if (cr_shard_json(sh, &members) != 0) {
		snprintf(why, sizeof(why), "%s", cr_error_last());
		cr_error_clear();
	} else {
		memcpy(digest, sh->digest, sizeof(digest));
		dropped = cr_manifest_too_large(&members, "member manifest", sh->n, why, sizeof(why));
	}
	if ((rc = cr_event_new(&ev, "input")) != 0 ||
	    (rc = cr_event_set_path(ev, "path", path, len)) != 0 ||
	    (rc = cr_event_set_hex(ev, "sha256", r->sha256, CR_SHA256_SIZE)) != 0 ||
	    (rc = cr_event_set_int(ev, "size", (int64_t)r->id.size)) != 0 ||
	    (rc = cr_event_set_time(ev, "time", &s->time)) != 0 ||
	    (rc = cr_event_set_str(ev, "via", "add")) != 0)
		goto done;
	if (members && json_object_set(ev, "shard", members) != 0) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	if ((members || dropped) &&
	    (rc = cr_event_set_hex(ev, "shard_sha256", digest, CR_SHA256_SIZE)) != 0)
		goto done;
	if (why[0] && (rc = cr_event_set_str(ev, "shard_error", why)) != 0)
		goto done;
	if ((rc = cr_store_prepare(s->prep, ev)) == 0)
		s->shard = members || dropped;
done:
	json_decref(members);
	json_decref(ev);
	cr_shard_free(sh);
	close(fd);
	return rc;
}

/*
 * Worker: whether the file is recorded already and, when it is not, its
 * input event, encoded, so that the main thread only appends it.
 */
static void done_hook(void *ctx, unsigned worker, const char *path, cr_hash_result *r)
{
	adder *a = ctx;
	slot *s = slot_of(a, r->tag);
	const file_ent *f;
	worker_state *w;
	size_t len = strlen(path);
	int rc;

	if (r->rc != 0 || s->fatal || worker >= a->n_workers)
		return;
	w = &a->workers[worker];
	f = &a->files[(size_t)(r->tag & ~RETRY_TAG)];
	if (f->dir == NO_DIR || w->dir_recorded < 0 || w->dir != f->dir) {
		rc = f->dir == NO_DIR
		         ? 1
		         : cr_store_reader_recorded_under(w->reader, path, f->name_off - 1);
		if (rc < 0) {
			slot_fail(s, rc);
			return;
		}
		if (f->dir != NO_DIR) {
			w->dir = f->dir;
			w->dir_recorded = rc;
		}
	} else {
		rc = w->dir_recorded;
	}
	if (rc)
		rc = cr_store_reader_file_recorded(w->reader, path, len, r->sha256);
	if (rc < 0) {
		slot_fail(s, rc);
		return;
	}
	if (rc == 1) {
		s->unchanged = 1;
		return;
	}
	if (!s->prep && (rc = cr_store_prepared_new(&s->prep)) != 0) {
		slot_fail(s, rc);
		return;
	}
	if (cr_shard_name(path, len))
		rc = prepare_shard_input(a, f, path, len, r, s);
	else
		rc = cr_store_prepare_input(s->prep, path, len, r->sha256, r->id.size, &s->time, "add");
	if (rc)
		slot_fail(s, rc);
}

/*
 * Every file, in path order, one segment per batch. The main thread keeps
 * a window of files queued on the pool ahead of the next one to append;
 * each worker takes a file's identity, asks the hash cache, hashes on a
 * miss, asks whether the file is recorded already and encodes its event.
 * The main thread writes: cache entries, events in path order, and a
 * commit at each batch's end, while the window keeps the pool busy with
 * the next batch.
 */
/* Queue file f, by its name in its open folder when it has one. */
static int submit(cr_hash_pool *pool, const file_list *l, const file_ent *f, uint64_t tag)
{
	if (f->dir != NO_DIR)
		return cr_hash_pool_submit_at(pool, tag, l->dirs[f->dir], f->ptr, f->name_off);
	return cr_hash_pool_submit(pool, tag, f->ptr, -1);
}

static int add_files(cr_store *store, cr_hash_pool *pool, adder *a, file_list *l, size_t batch,
                     const cr_add_options *o, cr_add_stats *st)
{
	const file_ent *files = l->items;
	size_t n = l->n;
	size_t ahead = 0, next = 0, i;
	cr_hash_result res[64];
	struct timespec now;
	int rc = 0;

	clock_gettime(CLOCK_REALTIME, &now);
	while (next < n) {
		size_t got, before = next;

		/* Fill the window. */
		for (; ahead < n && ahead - next < a->window; ahead++) {
			slot *s = &a->win[ahead % a->window];

			st->files++;
			s->state = PENDING;
			s->unchanged = 0;
			s->cache = 0;
			s->shard = 0;
			s->fatal = 0;
			s->time = now;
			if ((rc = submit(pool, l, &files[ahead], ahead)) != 0)
				return rc;
		}
		got = cr_hash_pool_collect(pool, res, sizeof(res) / sizeof(res[0]));
		for (size_t k = 0; k < got; k++) {
			cr_hash_result *r = &res[k];
			slot *s = slot_of(a, r->tag);

			i = (size_t)(r->tag & ~RETRY_TAG);
			if (s->fatal)
				return cr_error_set(s->fatal, "%s",
				                    s->message ? s->message
				                               : cr_error_name(s->fatal));
			if (r->rc == CR_HASH_CHANGED && !(r->tag & RETRY_TAG)) {
				/* A second look: a file being written right now is not recorded. */
				if ((rc = submit(pool, l, &files[i], r->tag | RETRY_TAG)) != 0)
					return rc;
				continue;
			}
			if (r->rc != 0) {
				problem(o, st, files[i].ptr,
				        r->rc == CR_HASH_CHANGED
				            ? "changed while being read; not recorded"
				        : r->error[0] ? r->error
				                      : "cannot be read",
				        1);
				s->state = FAILED;
				continue;
			}
			st->bytes += r->id.size;
			if (r->cached) {
				st->cached_files++;
			} else {
				st->hashed_files++;
				st->hashed_bytes += r->id.size;
				s->cache = !cr_file_id_racy(&r->id);
				s->id = r->id;
				memcpy(s->sha, r->sha256, CR_SHA256_SIZE);
			}
			s->state = SETTLED;
		}
		/* Append what is settled, in order; commit at each batch's end. */
		while (next < n && a->win[next % a->window].state != PENDING) {
			slot *s = &a->win[next % a->window];
			const file_ent *f = &files[next];

			/* No job of its folder is left: close it now rather than all at the end. */
			if (f->dir != NO_DIR && l->last[f->dir] == next) {
				close(l->dirs[f->dir]);
				l->dirs[f->dir] = -1;
			}
			next++;
			/* In the batch's transaction, so that a crash keeps the cache and the log
			 * in step. */
			if (s->state == SETTLED && s->cache &&
			    (rc = cr_store_cache_put(store, &s->id, s->sha)) != 0)
				return rc;
			if (s->state == SETTLED && s->unchanged) {
				st->unchanged++;
			} else if (s->state == SETTLED) {
				if ((rc = cr_store_append_prepared(store, s->prep, NULL)) != 0)
					return rc;
				st->recorded++;
				st->shards += s->shard;
			}
			if (next % batch == 0 || next == n) {
				if ((rc = cr_store_flush(store)) != 0)
					return rc;
				if (o->progress)
					o->progress(o->ctx, st);
				clock_gettime(CLOCK_REALTIME, &now);
				break; /* refill the window before the next batch */
			}
		}
		/* Nothing moved: wait for a group of results. */
		if (next < n && got == 0 && next == before)
			cr_hash_pool_wait(pool, WAKE_GROUP, 100);
	}
	return 0;
}

int cr_add_paths(cr_store *store, const char *const *paths, size_t n, const cr_add_options *opts,
                 cr_add_stats *stats)
{
	cr_add_options o = {0};
	file_list files = {NULL, 0, 0, CR_BUF_INIT, NULL, NULL, 0, 0};
	struct rlimit lim;
	cr_hash_pool *pool = NULL;
	cr_hash_hooks hooks = {known_hook, done_hook, NULL, O_NOFOLLOW};
	adder a = {NULL, 0, NULL, NULL, NULL, 0};
	worker_state *w;
	unsigned threads;
	size_t batch, i;
	int rc;

	if (opts)
		o = *opts;
	batch = o.batch ? o.batch : DEFAULT_BATCH;
	memset(stats, 0, sizeof(*stats));
	/* Half the descriptors at most: the store, the pool and the walk need some. */
	files.max_dirs = MAX_OPEN_DIRS;
	if (getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY &&
	    lim.rlim_cur / 2 < files.max_dirs)
		files.max_dirs = lim.rlim_cur / 2 > 64 ? lim.rlim_cur / 2 - 64 : 0;
	if ((rc = collect(paths, n, &files, &o, stats)) != 0)
		goto done;
	if (files.n == 0) {
		rc = cr_store_flush(store);
		goto done;
	}
	a.window = batch * WINDOW_BATCHES;
	if ((a.win = calloc(a.window, sizeof(*a.win))) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	/* The workers use the hooks only for jobs, and the readers are open before the first. */
	hooks.ctx = &a;
	if ((rc = cr_hash_pool_new_with(&pool, o.threads, &hooks)) != 0)
		goto done;
	/*
	 * This thread (lookups in order, the index, the log) is what the run
	 * waits for at the end; hashing threads at a lower priority let it
	 * keep up, and still take every CPU it leaves.
	 */
	if (o.nice > 0) {
		int nice = cr_thread_nice() + o.nice;

		cr_hash_pool_set_nice(pool, nice > 19 ? 19 : nice);
	}
	threads = cr_hash_pool_threads(pool);
	if ((a.workers = calloc(threads, sizeof(*a.workers))) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	a.files = files.items;
	a.dirs = files.dirs;
	for (; a.n_workers < threads; a.n_workers++) {
		w = &a.workers[a.n_workers];
		w->dev_known = -1;
		w->dir_recorded = -1;
		if ((rc = cr_store_reader_open(store, &w->reader)) != 0)
			goto done;
	}
	rc = add_files(store, pool, &a, &files, batch, &o, stats);
done:
	/* Jobs not started are dropped; the workers are gone before their readers. */
	cr_hash_pool_free(pool);
	for (i = 0; i < a.n_workers; i++)
		cr_store_reader_free(a.workers[i].reader);
	free(a.workers);
	if (a.win) {
		for (i = 0; i < a.window; i++) {
			cr_store_prepared_free(a.win[i].prep);
			free(a.win[i].message);
		}
		free(a.win);
	}
	list_free(&files);
	return rc;
}
