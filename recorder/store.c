/*
 * The store ties the log (git, source of truth) and the index (SQLite,
 * derived) together. Appends go to a pending segment and, in the same
 * breath, into an open index transaction; a flush commits the segment to
 * git first (the commit point) and the index transaction second. On open
 * the index is reconciled with the log: caught up when it is merely
 * behind, refused when they disagree.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/store.h"
#include "recorder/index.h"
#include "recorder/log.h"
#include "util/buf.h"
#include "util/codec.h"

/* An event ready to append: its leaf, leaf hash and index entry. */
struct cr_store_prepared {
	cr_buf leaf;
	uint8_t hash[CR_HASH_SIZE];
	cr_index_entry entry;
	int ready;
};

struct cr_store {
	char *path;
	char *git_dir;
	int lock_fd;
	unsigned flags;
	cr_log *log;
	cr_index *index;
	cr_log_head head;          /* committed */
	cr_merkle_state tree;      /* committed */
	cr_merkle_state pending_tree;
	cr_buf segment;            /* pending leaves, each + "\n" */
	uint64_t pending;
	int in_txn;
	char notice[256];                 /* for the user, from the open; "" when none */
	struct cr_store_prepared scratch; /* cr_store_append's, reused */
};

static char *join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

int cr_store_init(const char *path)
{
	char *git_dir = NULL, *index_path = NULL, *lock = NULL;
	cr_index *idx = NULL;
	struct stat st;
	int rc = 0, fd;

	if (mkdir(path, 0700) != 0 && errno != EEXIST)
		return cr_error_set_errno(CR_EIO, errno, "cannot create store %s", path);
	if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
		return cr_error_set(CR_EINVAL, "%s is not a folder", path);
	if ((git_dir = join(path, "log.git")) == NULL || (index_path = join(path, "index.sqlite")) == NULL ||
	    (lock = join(path, "lock")) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	if (stat(git_dir, &st) == 0) {
		rc = cr_error_set(CR_EEXISTS, "%s already holds a store", path);
		goto done;
	}
	if ((fd = open(lock, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) < 0) {
		rc = cr_error_set_errno(CR_EIO, errno, "cannot create %s", lock);
		goto done;
	}
	close(fd);
	if ((rc = cr_log_init(git_dir)) != 0 ||
	    (rc = cr_index_open(&idx, index_path, CR_INDEX_MIGRATE, NULL)) != 0)
		goto done;
done:
	cr_index_free(idx);
	free(git_dir);
	free(index_path);
	free(lock);
	return rc;
}

static int take_lock(cr_store *s)
{
	char *lock = join(s->path, "lock");
	char pid[32];
	int n;

	if (!lock)
		return cr_error_set(CR_ENOMEM, "out of memory");
	s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (s->lock_fd < 0) {
		int e = errno;

		free(lock);
		return cr_error_set_errno(CR_EIO, e, "cannot open the store lock");
	}
	if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		char other[32] = "";

		n = (int)pread(s->lock_fd, other, sizeof(other) - 1, 0);
		other[n > 0 ? n : 0] = '\0';
		other[strcspn(other, "\n")] = '\0';
		free(lock);
		/* lock_fd >= 0 means "locked" from here on. */
		close(s->lock_fd);
		s->lock_fd = -1;
		return cr_error_set(CR_ELOCKED, "store %s is being written by another cleanroom process%s%s%s",
		                    s->path, other[0] ? " (pid " : "", other, other[0] ? ")" : "");
	}
	free(lock);
	n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(s->lock_fd, 0) != 0 || pwrite(s->lock_fd, pid, (size_t)n, 0) != n)
		return cr_error_set_errno(CR_EIO, errno, "cannot write the store lock");
	return 0;
}

/*
 * Indexing commits from the log (a catch-up or a rebuild) goes through the
 * same checks as `cleanroom check`: a commit is indexed only if it adds
 * exactly the next segment, changes nothing else, and records the root its
 * leaves give. The first problem stops it.
 */
typedef struct catchup {
	cr_store *store;
	cr_merkle_state nodes;  /* a second tree, to give the index its interior nodes */
	int in_txn;
	int failed;
	int rc;
	char problem[768];
} catchup;

static void catchup_problem(void *ctx, const char *where, const char *what)
{
	catchup *c = ctx;

	if (!c->failed)
		snprintf(c->problem, sizeof(c->problem), "%s: %s", where, what);
	c->failed = 1;
}

static int catchup_leaf(void *ctx, uint64_t index, const char *leaf, size_t len,
                        const uint8_t hash[CR_HASH_SIZE])
{
	catchup *c = ctx;
	cr_index *idx = c->store->index;
	json_t *ev = NULL;
	int rc;

	if (c->failed)
		return 0;
	if (!c->in_txn) {
		if ((rc = cr_index_begin(idx)) != 0)
			return rc;
		c->in_txn = 1;
	}
	if (cr_event_parse(&ev, leaf, len) != 0) {
		cr_error_clear(); /* reported by the check, with where */
		return 0;
	}
	rc = cr_index_add_event(idx, index, ev, hash);
	json_decref(ev);
	if (rc || (rc = cr_merkle_state_append(&c->nodes, hash, cr_index_node_cb, idx)) != 0 ||
	    (rc = cr_index_node_error(idx)) != 0)
		return rc;
	return 0;
}

static int catchup_commit(void *ctx, const char *commit, const char *path, uint64_t first,
                          uint64_t count, const cr_merkle_state *tree)
{
	catchup *c = ctx;
	cr_index *idx = c->store->index;
	uint8_t root[CR_HASH_SIZE];
	int rc;

	if (c->failed)
		return 0;
	if (!c->in_txn) {
		if ((rc = cr_index_begin(idx)) != 0)
			return rc;
		c->in_txn = 1;
	}
	cr_merkle_state_root(tree, root);
	if ((rc = cr_index_add_segment(idx, first, count, path, commit)) != 0 ||
	    (rc = cr_index_set_state(idx, tree, commit)) != 0 ||
	    (rc = cr_index_witness_add(idx, tree->size, root, commit)) != 0 ||
	    (rc = cr_index_commit(idx)) != 0)
		return rc;
	c->in_txn = 0;
	return 0;
}

/* Index every commit after `after` (all when ""), starting from tree. */
static int index_from_log(cr_store *s, const char *after, cr_merkle_state *tree)
{
	cr_log_check_result res;
	catchup c;
	int rc;

	memset(&c, 0, sizeof(c));
	c.store = s;
	c.nodes = *tree;
	rc = cr_log_check_range(s->log, after, tree, catchup_problem, catchup_leaf, catchup_commit, &c,
	                        &res);
	if (c.in_txn)
		cr_index_rollback(s->index);
	if (rc == CR_EVERIFY || (rc == 0 && c.failed))
		return cr_error_set(CR_ECORRUPT, "the log breaks its rules at %s (run `cleanroom check`)",
		                    c.problem);
	return rc;
}

/* Index everything the log holds beyond the index's state. */
static int catch_up(cr_store *s)
{
	cr_merkle_state tree;
	char commit[41];
	int rc;

	if ((rc = cr_index_state(s->index, &tree, commit)) != 0)
		return rc;
	if ((rc = index_from_log(s, commit, &tree)) != 0)
		return rc;
	return cr_index_state(s->index, &s->tree, commit);
}

static int reconcile(cr_store *s)
{
	cr_merkle_state tree;
	char commit[41];
	uint8_t root[CR_HASH_SIZE];
	int rc;

	if ((rc = cr_index_state(s->index, &tree, commit)) != 0)
		return rc;
	if (tree.size == s->head.size && strcmp(commit, s->head.commit) == 0) {
		cr_merkle_state_root(&tree, root);
		if (CRYPTO_memcmp(root, s->head.root, CR_HASH_SIZE) != 0)
			return cr_error_set(CR_ECORRUPT, "the index root differs from the log's at size %" PRIu64
			                    " (run `cleanroom check`)", tree.size);
		s->tree = tree;
		return 0;
	}
	if (tree.size < s->head.size && (tree.size == 0 || cr_log_contains(s->log, commit))) {
		if (!(s->flags & CR_STORE_WRITE)) {
			/* Catching up writes; a reader does it only when no writer is busy. */
			if (take_lock(s) != 0) {
				/* Show the state the index vouches for, head included. */
				cr_error_clear();
				s->tree = tree;
				if (tree.size == 0) {
					memset(&s->head, 0, sizeof(s->head));
					s->head.empty = 1;
					cr_merkle_empty_root(s->head.root);
					return 0;
				}
				if (cr_log_commit_state(s->log, commit, &s->head.size, s->head.root) != 0)
					return cr_error_set(CR_ECORRUPT, "the index's head %.12s is unreadable "
					                    "(run `cleanroom check`)", commit);
				snprintf(s->head.commit, sizeof(s->head.commit), "%s", commit);
				return 0;
			}
		}
		return catch_up(s);
	}
	return cr_error_set(CR_ECORRUPT,
	                    "the index (size %" PRIu64 ", head %.12s) does not match the log (size %" PRIu64
	                    ", head %.12s): run `cleanroom check`, then `cleanroom index rebuild`",
	                    tree.size, commit[0] ? commit : "none", s->head.size,
	                    s->head.commit[0] ? s->head.commit : "none");
}

/*
 * Open the index. One of an older schema is migrated (under the writer
 * lock, which a reader takes for this) and *old_version says so: the
 * caller then indexes the whole log again.
 */
static int open_index(cr_store *s, const char *index_path, int *old_version)
{
	int rc;

	rc = cr_index_open(&s->index, index_path, s->lock_fd >= 0 ? CR_INDEX_MIGRATE : 0,
	                   old_version);
	if (rc != CR_ECORRUPT || *old_version == 0)
		return rc;
	cr_error_clear();
	if ((rc = take_lock(s)) != 0)
		return cr_error_set(
		    rc,
		    "index.sqlite has an older schema (version %d) and must be rebuilt "
		    "from the log, but: %s",
		    *old_version, cr_error_last());
	return cr_index_open(&s->index, index_path, CR_INDEX_MIGRATE, old_version);
}

/*
 * Index the whole log into a just-migrated (empty) index, with the checks
 * of a catch-up. A check (CR_STORE_RAW) goes on when the log breaks its
 * rules: it says where, and the index holds every commit before that.
 */
static int reindex_migrated(cr_store *s, int old_version)
{
	cr_merkle_state tree;
	char commit[41];
	int rc;

	cr_merkle_state_init(&tree);
	rc = index_from_log(s, "", &tree);
	if (rc == CR_ECORRUPT && (s->flags & CR_STORE_RAW)) {
		cr_error_clear();
		rc = 0;
	}
	if (rc)
		return rc;
	if ((rc = cr_index_state(s->index, &tree, commit)) != 0)
		return rc;
	snprintf(s->notice, sizeof(s->notice),
	         "index.sqlite had schema version %d; rebuilt it from the log for this version of "
	         "cleanroom (%" PRIu64 " events)",
	         old_version, tree.size);
	return 0;
}

int cr_store_open(cr_store **out, const char *path, unsigned flags)
{
	cr_store *s = NULL;
	char *index_path = NULL;
	struct stat st;
	int rc = 0, old_version = 0;

	*out = NULL;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	s->lock_fd = -1;
	s->flags = flags;
	if ((s->path = strdup(path)) == NULL || (s->git_dir = join(path, "log.git")) == NULL ||
	    (index_path = join(path, "index.sqlite")) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto fail;
	}
	if (stat(s->git_dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
		rc = cr_error_set(CR_ENOTFOUND, "no store at %s (create one with `cleanroom init`)", path);
		goto fail;
	}
	if ((flags & CR_STORE_WRITE) && (rc = take_lock(s)) != 0)
		goto fail;
	if ((rc = cr_log_open(&s->log, s->git_dir)) != 0 ||
	    (rc = open_index(s, index_path, &old_version)) != 0)
		goto fail;
	if ((rc = cr_log_head_read(s->log, &s->head)) != 0) {
		/* A check must still run (and say what is wrong) on a damaged head. */
		if (!(flags & CR_STORE_RAW) || rc != CR_ECORRUPT)
			goto fail;
		cr_error_clear();
		rc = 0;
	}
	if (old_version && (rc = reindex_migrated(s, old_version)) != 0)
		goto fail;
	if (!(flags & CR_STORE_RAW) && (rc = reconcile(s)) != 0)
		goto fail;
	s->pending_tree = s->tree;
	free(index_path);
	*out = s;
	return 0;
fail:
	free(index_path);
	cr_store_free(s);
	return rc;
}

void cr_store_free(cr_store *s)
{
	if (!s)
		return;
	if (s->in_txn)
		cr_index_rollback(s->index);
	cr_index_free(s->index);
	cr_log_free(s->log);
	if (s->lock_fd >= 0)
		close(s->lock_fd); /* releases the flock */
	cr_buf_free(&s->segment);
	cr_buf_free(&s->scratch.leaf);
	cr_index_entry_free(&s->scratch.entry);
	free(s->git_dir);
	free(s->path);
	free(s);
}

const char *cr_store_path(const cr_store *s)
{
	return s->path;
}

const char *cr_store_notice(const cr_store *s)
{
	return s->notice[0] ? s->notice : NULL;
}

void cr_store_state_get(const cr_store *s, cr_store_state *out)
{
	out->size = s->tree.size;
	cr_merkle_state_root(&s->tree, out->root);
	snprintf(out->commit, sizeof(out->commit), "%s", s->head.commit);
}

uint64_t cr_store_pending(const cr_store *s)
{
	return s->pending;
}

static int writer_txn(cr_store *s);

/* After a segment from leaf first is committed to git: its index rows, and the index commit. */
static int index_committed(cr_store *s, uint64_t first, const uint8_t root[CR_HASH_SIZE])
{
	char path[CR_LOG_PATH_MAX];
	int rc;

	cr_log_segment_path(path, first);
	rc = cr_index_add_segment(s->index, first, s->tree.size - first, path, s->head.commit);
	if (!rc)
		rc = cr_index_set_state(s->index, &s->tree, s->head.commit);
	if (!rc)
		rc = cr_index_witness_add(s->index, s->tree.size, root, s->head.commit);
	if (!rc)
		rc = cr_index_commit(s->index);
	s->in_txn = 0;
	if (rc) {
		cr_index_rollback(s->index);
		return cr_error_set(rc,
		                    "events %" PRIu64 "..%" PRIu64
		                    " are committed to the log, but the "
		                    "index was not updated (%s); it catches up on the next open",
		                    first, s->tree.size - 1, cr_error_last());
	}
	return 0;
}

static void discard_pending(cr_store *s)
{
	if (s->in_txn)
		cr_index_rollback(s->index);
	s->in_txn = 0;
	s->pending = 0;
	s->pending_tree = s->tree;
	cr_buf_clear(&s->segment);
}

/*
 * Append an event, as its leaf, the leaf's hash and its index entry, to
 * the pending segment and the index transaction.
 */
static int append(cr_store *s, const char *leaf, size_t len, const uint8_t hash[CR_HASH_SIZE],
                  const cr_index_entry *entry, uint64_t *out_index)
{
	int rc;

	if ((rc = cr_buf_put(&s->segment, leaf, len)) == 0 &&
	    (rc = cr_buf_putc(&s->segment, '\n')) == 0 &&
	    (rc = cr_index_add_entry(s->index, s->pending_tree.size, entry, hash)) == 0 &&
	    (rc = cr_merkle_state_append(&s->pending_tree, hash, cr_index_node_cb, s->index)) == 0)
		rc = cr_index_node_error(s->index);
	if (rc) {
		/* The index transaction may hold part of this event: drop the segment. */
		discard_pending(s);
		return cr_error_set(rc, "%s (the pending segment was discarded)", cr_error_last());
	}
	if (out_index)
		*out_index = s->pending_tree.size - 1;
	s->pending++;
	if (s->segment.len >= CR_STORE_SEGMENT_BYTES || s->pending >= CR_STORE_SEGMENT_EVENTS)
		return cr_store_flush(s);
	return 0;
}

int cr_store_prepared_new(cr_store_prepared **out)
{
	if ((*out = calloc(1, sizeof(**out))) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	return 0;
}

void cr_store_prepared_free(cr_store_prepared *p)
{
	if (!p)
		return;
	cr_buf_free(&p->leaf);
	cr_index_entry_free(&p->entry);
	free(p);
}

int cr_store_prepare(cr_store_prepared *p, const json_t *ev)
{
	int rc;

	p->ready = 0;
	cr_buf_clear(&p->leaf);
	if ((rc = cr_event_encode(ev, &p->leaf)) != 0 ||
	    (rc = cr_index_entry_set(&p->entry, ev)) != 0)
		return rc;
	cr_merkle_leaf_hash(p->hash, p->leaf.ptr, p->leaf.len);
	p->ready = 1;
	return 0;
}

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

/* Append n bytes at *at; the caller made room. */
static char *put(char *at, const char *s, size_t n)
{
	memcpy(at, s, n);
	return at + n;
}
#define PUT_LIT(at, lit) put(at, lit, sizeof(lit) - 1)

/* A non-negative integer in decimal, as "%lld" writes it. */
static char *put_u64(char *at, uint64_t v)
{
	char tmp[20];
	size_t n = 0;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*at++ = tmp[--n];
	return at;
}

int cr_store_prepare_input(cr_store_prepared *p, const char *path, size_t len,
                           const uint8_t sha[CR_SHA256_SIZE], uint64_t size,
                           const struct timespec *time, const char *via)
{
	/* A batch of files shares its time: format it once per thread. */
	static _Thread_local struct {
		time_t sec;
		long usec;
		char text[64];
		int ok;
	} when;
	cr_buf *b = &p->leaf;
	char tail[256], *at = tail;
	int utf8 = cr_utf8_valid((const uint8_t *)path, len) && memchr(path, 0, len) == NULL;
	int rc;

	p->ready = 0;
	cr_buf_clear(b);
	/* The checks cr_event_set_int, _set_time and _set_str make. */
	if (size > (uint64_t)CR_EVENT_INT_MAX)
		return cr_error_set(CR_ERANGE, "\"size\": %" PRIu64 " is beyond 2^53-1", size);
	if (time->tv_nsec < 0 || time->tv_nsec >= 1000000000)
		return cr_error_set(CR_ERANGE, "time out of range");
	if (!when.ok || when.sec != time->tv_sec || when.usec != time->tv_nsec / 1000) {
		struct tm tm;
		time_t t = time->tv_sec;

		when.ok = 0;
		if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999)
			return cr_error_set(CR_ERANGE, "time out of range");
		snprintf(when.text, sizeof(when.text), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
		         tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		         tm.tm_sec, (long)(time->tv_nsec / 1000));
		when.sec = time->tv_sec;
		when.usec = time->tv_nsec / 1000;
		when.ok = 1;
	}
	if (strlen(via) > 64 || !cr_utf8_valid((const uint8_t *)via, strlen(via)))
		return cr_error_set(CR_EINVAL, "\"via\" is not valid UTF-8 of at most 64 bytes");
	/* Keys in canonical order; "path" and "path_b64" sort first either way. */
	if (utf8) {
		rc = cr_buf_put(b, "{\"path\":", 8);
		if (!rc)
			rc = cr_event_encode_string(b, path, len);
	} else {
		size_t n = cr_base64_len(len);

		if ((rc = cr_buf_put(b, "{\"path_b64\":\"", 13)) == 0 &&
		    (rc = cr_buf_grow(b, n + 1)) == 0) {
			cr_base64_encode(b->ptr + b->len, (const uint8_t *)path, len);
			b->len += n;
			rc = cr_buf_putc(b, '"');
		}
	}
	if (rc)
		return rc;
	at = PUT_LIT(at, ",\"sha256\":\"");
	cr_hex_encode(at, sha, CR_SHA256_SIZE);
	at += 2 * CR_SHA256_SIZE;
	at = PUT_LIT(at, "\",\"size\":");
	at = put_u64(at, size);
	at = PUT_LIT(at, ",\"time\":\"");
	at = put(at, when.text, strlen(when.text));
	at = PUT_LIT(at, "\",\"type\":\"input\",\"v\":" STRINGIFY(CR_EVENT_VERSION) ",\"via\":");
	if ((rc = cr_buf_put(b, tail, (size_t)(at - tail))) != 0 ||
	    (rc = cr_event_encode_string(b, via, strlen(via))) != 0 || (rc = cr_buf_putc(b, '}')) != 0)
		return rc;
	/* What cr_index_entry_set takes from such an event. */
	cr_buf_clear(&p->entry.type);
	cr_buf_clear(&p->entry.path);
	if ((rc = cr_buf_put(&p->entry.type, "input", 5)) != 0 ||
	    (rc = cr_buf_put(&p->entry.path, path, len)) != 0)
		return rc;
	p->entry.is_file = 1;
	memcpy(p->entry.sha256, sha, CR_SHA256_SIZE);
	p->entry.has_size = 1;
	p->entry.size = (int64_t)size;
	cr_merkle_leaf_hash(p->hash, b->ptr, b->len);
	p->ready = 1;
	return 0;
}

static int check_writable(cr_store *s)
{
	if (!(s->flags & CR_STORE_WRITE))
		return cr_error_set(CR_EINVAL, "store %s is open read-only", s->path);
	return writer_txn(s);
}

int cr_store_append(cr_store *s, const json_t *ev, uint64_t *out_index)
{
	cr_store_prepared *p = &s->scratch;
	int rc;

	if ((rc = check_writable(s)) != 0 || (rc = cr_store_prepare(p, ev)) != 0)
		return rc;
	p->ready = 0;
	return append(s, p->leaf.ptr, p->leaf.len, p->hash, &p->entry, out_index);
}

int cr_store_append_prepared(cr_store *s, cr_store_prepared *p, uint64_t *out_index)
{
	int rc;

	if (!p->ready)
		return cr_error_set(CR_EINVAL, "append: the event was not prepared");
	if ((rc = check_writable(s)) != 0)
		return rc;
	p->ready = 0;
	return append(s, p->leaf.ptr, p->leaf.len, p->hash, &p->entry, out_index);
}

int cr_store_flush(cr_store *s)
{
	cr_log_head head;
	uint8_t root[CR_HASH_SIZE];
	uint64_t first = s->tree.size;
	int rc;

	if (s->pending == 0) {
		if (s->in_txn) {
			/* Cache entries written without events still count. */
			s->in_txn = 0;
			return cr_index_commit(s->index);
		}
		return 0;
	}
	cr_merkle_state_root(&s->pending_tree, root);
	if ((rc = cr_log_append(s->log, &s->head, first, s->pending, s->segment.ptr, s->segment.len,
	                        root, &head)) != 0) {
		discard_pending(s);
		return rc;
	}
	/* Committed: from here on the events are in the log whatever happens. */
	s->head = head;
	s->tree = s->pending_tree;
	s->pending = 0;
	cr_buf_clear(&s->segment);
	return index_committed(s, first, root);
}

/*
 * A writer's lookups and cache entries ride in the pending segment's
 * transaction, begun here when none is open: outside one, every statement
 * is a transaction of its own, with the WAL's locking each time.
 */
static int writer_txn(cr_store *s)
{
	int rc;

	if (s->in_txn || !(s->flags & CR_STORE_WRITE))
		return 0;
	if ((rc = cr_index_begin(s->index)) != 0)
		return rc;
	s->in_txn = 1;
	return 0;
}

int cr_store_cache_get(cr_store *s, const cr_file_id *id, uint8_t sha[CR_SHA256_SIZE])
{
	int rc;

	if ((rc = writer_txn(s)) != 0)
		return rc;
	return cr_index_cache_get(s->index, id, sha);
}

int cr_store_cache_put(cr_store *s, const cr_file_id *id, const uint8_t sha[CR_SHA256_SIZE])
{
	int rc;

	if ((rc = writer_txn(s)) != 0)
		return rc;
	return cr_index_cache_put(s->index, id, sha);
}

int cr_store_file_recorded(cr_store *s, const char *path, size_t len,
                           const uint8_t sha[CR_SHA256_SIZE])
{
	int rc;

	if ((rc = writer_txn(s)) != 0)
		return rc;
	return cr_index_file_recorded(s->index, path, len, sha);
}

struct cr_store_reader {
	cr_index_reader *index;
};

int cr_store_reader_open(cr_store *s, cr_store_reader **out)
{
	cr_store_reader *r;
	char *index_path;
	int rc;

	*out = NULL;
	if ((r = calloc(1, sizeof(*r))) == NULL ||
	    (index_path = join(s->path, "index.sqlite")) == NULL) {
		free(r);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	rc = cr_index_reader_open(&r->index, index_path);
	free(index_path);
	if (rc) {
		free(r);
		return rc;
	}
	*out = r;
	return 0;
}

void cr_store_reader_free(cr_store_reader *r)
{
	if (!r)
		return;
	cr_index_reader_free(r->index);
	free(r);
}

int cr_store_reader_cache_get(cr_store_reader *r, const cr_file_id *id, uint8_t sha[CR_SHA256_SIZE])
{
	return cr_index_reader_cache_get(r->index, id, sha);
}

int cr_store_reader_file_recorded(cr_store_reader *r, const char *path, size_t len,
                                  const uint8_t sha[CR_SHA256_SIZE])
{
	return cr_index_reader_file_recorded(r->index, path, len, sha);
}

int cr_store_reader_cache_has_device(cr_store_reader *r, uint64_t dev)
{
	return cr_index_reader_cache_has_device(r->index, dev);
}

int cr_store_reader_recorded_under(cr_store_reader *r, const char *dir, size_t len)
{
	return cr_index_reader_recorded_under(r->index, dir, len);
}

static int resolve_size(cr_store *s, uint64_t *size)
{
	if (*size == 0)
		*size = s->tree.size;
	if (*size > s->tree.size)
		return cr_error_set(CR_ERANGE, "tree size %" PRIu64 " is beyond the log's %" PRIu64, *size,
		                    s->tree.size);
	return 0;
}

int cr_store_leaf_hash(cr_store *s, uint64_t index, uint8_t out[CR_HASH_SIZE])
{
	if (index >= s->tree.size)
		return cr_error_set(CR_ERANGE, "leaf %" PRIu64 " is beyond the log's %" PRIu64 " leaves",
		                    index, s->tree.size);
	return cr_index_leaf(s->index, index, out);
}

static int index_disagrees(void)
{
	return cr_error_set(CR_ECORRUPT, "the index disagrees with the log (run `cleanroom check`, "
	                                 "then `cleanroom index rebuild`)");
}

/*
 * The root of the first `size` leaves as the index gives it, vouched for
 * by the committed head: equal to it at the current size, and consistent
 * with it (by a proof from the same index) below. A tampered leaf or node
 * in the index cannot pass.
 */
static int trusted_root(cr_store *s, uint64_t size, uint8_t out[CR_HASH_SIZE])
{
	uint8_t head_root[CR_HASH_SIZE], path[CR_MERKLE_MAX_PATH][CR_HASH_SIZE];
	cr_merkle_source src;
	size_t n;
	int rc;

	cr_index_merkle_source(s->index, &src);
	if ((rc = cr_merkle_root(&src, size, out)) != 0)
		return rc == CR_ENOTFOUND ? index_disagrees() : rc;
	cr_merkle_state_root(&s->tree, head_root);
	if (size == s->tree.size)
		return CRYPTO_memcmp(out, head_root, CR_HASH_SIZE) ? index_disagrees() : 0;
	if (size == 0)
		return 0;
	if ((rc = cr_merkle_consistency_proof(&src, size, s->tree.size, path, &n)) != 0)
		return rc == CR_ENOTFOUND ? index_disagrees() : rc;
	if (cr_merkle_verify_consistency(size, s->tree.size, out, head_root,
	                                 (const uint8_t (*)[CR_HASH_SIZE])path, n) != 0)
		return index_disagrees();
	return 0;
}

int cr_store_root_at(cr_store *s, uint64_t size, uint8_t out[CR_HASH_SIZE])
{
	int rc;

	if ((rc = resolve_size(s, &size)) != 0)
		return rc;
	return trusted_root(s, size, out);
}

int cr_store_inclusion_proof(cr_store *s, uint64_t index, uint64_t size,
                             uint8_t path[][CR_HASH_SIZE], size_t *path_len)
{
	uint8_t root[CR_HASH_SIZE], leaf[CR_HASH_SIZE];
	cr_merkle_source src;
	int rc;

	if ((rc = resolve_size(s, &size)) != 0)
		return rc;
	cr_index_merkle_source(s->index, &src);
	if ((rc = cr_merkle_inclusion_proof(&src, index, size, path, path_len)) != 0)
		return rc == CR_ENOTFOUND ? index_disagrees() : rc;
	if ((rc = trusted_root(s, size, root)) != 0 || (rc = cr_index_leaf(s->index, index, leaf)) != 0)
		return rc;
	if (cr_merkle_verify_inclusion(leaf, index, size, (const uint8_t (*)[CR_HASH_SIZE])path,
	                               *path_len, root) != 0)
		return index_disagrees();
	return 0;
}

int cr_store_consistency_proof(cr_store *s, uint64_t size1, uint64_t size2,
                               uint8_t path[][CR_HASH_SIZE], size_t *path_len)
{
	uint8_t root1[CR_HASH_SIZE], root2[CR_HASH_SIZE];
	cr_merkle_source src;
	int rc;

	if ((rc = resolve_size(s, &size2)) != 0)
		return rc;
	cr_index_merkle_source(s->index, &src);
	if ((rc = cr_merkle_consistency_proof(&src, size1, size2, path, path_len)) != 0)
		return rc == CR_ENOTFOUND ? index_disagrees() : rc;
	if (size1 == 0 || size1 == size2)
		return 0;
	if ((rc = trusted_root(s, size1, root1)) != 0 || (rc = trusted_root(s, size2, root2)) != 0)
		return rc;
	if (cr_merkle_verify_consistency(size1, size2, root1, root2,
	                                 (const uint8_t (*)[CR_HASH_SIZE])path, *path_len) != 0)
		return index_disagrees();
	return 0;
}

typedef struct foreach_ctx {
	uint64_t from;
	uint64_t limit;
	cr_store_event_fn fn;
	void *ctx;
} foreach_ctx;

static int foreach_segment(void *ctx, const cr_log_segment *seg)
{
	foreach_ctx *f = ctx;
	size_t pos = 0;
	uint64_t i = seg->first;
	int rc;

	while (pos < seg->len && i < f->limit) {
		const char *eol = memchr(seg->data + pos, '\n', seg->len - pos);
		size_t n = eol ? (size_t)(eol - (seg->data + pos)) : seg->len - pos;

		if (i >= f->from && (rc = f->fn(f->ctx, i, seg->data + pos, n)) != 0)
			return rc;
		i++;
		pos += n + 1;
	}
	return 0;
}

int cr_store_foreach_event(cr_store *s, uint64_t from, cr_store_event_fn fn, void *ctx)
{
	foreach_ctx f = {from, s->tree.size, fn, ctx};

	return cr_log_walk(s->log, from, foreach_segment, &f);
}

/* State of a whole-store check. */
typedef struct check_ctx {
	cr_store *store;
	cr_store_problem_fn problem;
	void *ctx;
	uint64_t problems;
	uint64_t index_mismatches;
	uint64_t index_size;
} check_ctx;

static void check_problem(void *ctx, const char *where, const char *what)
{
	check_ctx *c = ctx;

	c->problems++;
	c->problem(c->ctx, where, what);
}

static int check_leaf(void *ctx, uint64_t index, const char *leaf, size_t len,
                      const uint8_t hash[CR_HASH_SIZE])
{
	check_ctx *c = ctx;
	uint8_t have[CR_HASH_SIZE];
	char where[64];

	(void)leaf;
	(void)len;
	if (index >= c->index_size)
		return 0; /* beyond the index: reported once, by size */
	if (cr_index_leaf(c->store->index, index, have) != 0 ||
	    CRYPTO_memcmp(have, hash, CR_HASH_SIZE) != 0) {
		cr_error_clear();
		if (++c->index_mismatches <= 10) {
			snprintf(where, sizeof(where), "index leaf %" PRIu64, index);
			check_problem(c, where, "the index's leaf hash differs from the log's event");
		}
	}
	return 0;
}

static int check_witness(void *ctx, uint64_t size, const uint8_t root[CR_HASH_SIZE],
                         const char *commit)
{
	check_ctx *c = ctx;
	uint64_t have_size;
	uint8_t have_root[CR_HASH_SIZE];
	char where[80];

	snprintf(where, sizeof(where), "head %.12s (size %" PRIu64 ")", commit, size);
	if (!cr_log_contains(c->store->log, commit)) {
		check_problem(c, where, "this store wrote this head, but the log's history no longer "
		                        "contains it (history rewritten or replaced)");
		return 0;
	}
	if (cr_log_commit_state(c->store->log, commit, &have_size, have_root) != 0) {
		check_problem(c, where, cr_error_last());
		cr_error_clear();
		return 0;
	}
	if (have_size != size || CRYPTO_memcmp(have_root, root, CR_HASH_SIZE) != 0)
		check_problem(c, where, "the commit no longer records the size and root this store wrote");
	return 0;
}

int cr_store_check(cr_store *s, cr_store_problem_fn problem, void *ctx, cr_store_check_result *out)
{
	cr_log_check_result lr;
	cr_merkle_state itree;
	char icommit[41];
	check_ctx c;
	int rc;

	memset(out, 0, sizeof(*out));
	memset(&c, 0, sizeof(c));
	c.store = s;
	c.problem = problem;
	c.ctx = ctx;
	if ((rc = cr_index_state(s->index, &itree, icommit)) != 0) {
		check_problem(&c, "index", cr_error_last());
		cr_merkle_state_init(&itree);
	}
	c.index_size = itree.size;
	rc = cr_log_check(s->log, check_problem, check_leaf, &c, &lr);
	if (rc != 0 && rc != CR_EVERIFY)
		return rc;
	if ((rc = cr_index_witness_foreach(s->index, check_witness, &c)) != 0)
		return rc;
	/* An index merely behind (a crash between the git commit and the index
	 * update) catches up on the next open; its leaves were compared above. */
	if ((itree.size > lr.size || strcmp(icommit, s->head.commit) != 0) &&
	    !(itree.size < lr.size && (!icommit[0] || cr_log_contains(s->log, icommit)))) {
		char what[256];

		snprintf(what, sizeof(what),
		         "the index reflects %" PRIu64 " events (head %.12s), the log holds %" PRIu64
		         " (head %.12s)",
		         itree.size, icommit[0] ? icommit : "none", lr.size,
		         s->head.commit[0] ? s->head.commit : "none");
		check_problem(&c, "index", what);
	}
	out->commits = lr.commits;
	out->size = lr.size;
	memcpy(out->root, lr.root, CR_HASH_SIZE);
	out->problems = c.problems;
	return c.problems ? CR_EVERIFY : 0;
}

int cr_store_rebuild_index(cr_store *s)
{
	cr_merkle_state tree;
	char commit[41];
	int rc;

	if (!(s->flags & CR_STORE_WRITE))
		return cr_error_set(CR_EINVAL, "store %s is open read-only", s->path);
	if ((rc = cr_index_begin(s->index)) != 0)
		return rc;
	if ((rc = cr_index_clear_derived(s->index)) != 0 || (rc = cr_index_commit(s->index)) != 0) {
		cr_index_rollback(s->index);
		return rc;
	}
	cr_merkle_state_init(&tree);
	if ((rc = index_from_log(s, "", &tree)) != 0)
		return rc;
	if ((rc = cr_index_state(s->index, &s->tree, commit)) != 0)
		return rc;
	s->pending_tree = s->tree;
	return 0;
}

int cr_store_counts_get(cr_store *s, cr_store_counts *out)
{
	cr_index_counts c;
	int rc = cr_index_counts_get(s->index, &c);

	if (rc)
		return rc;
	out->events = c.events;
	out->segments = c.segments;
	out->files = c.files;
	out->file_bytes = c.file_bytes;
	out->cache_entries = c.cache_entries;
	return 0;
}

int cr_store_type_counts(cr_store *s, int (*fn)(void *ctx, const char *type, uint64_t n), void *ctx)
{
	return cr_index_type_counts(s->index, fn, ctx);
}

int cr_store_event_get(cr_store *s, uint64_t index, char **out, size_t *len)
{
	char path[64], *data = NULL;
	uint64_t first, i;
	size_t n, pos = 0;
	int rc;

	*out = NULL;
	*len = 0;
	if (index >= s->tree.size)
		return cr_error_set(CR_ERANGE, "event %" PRIu64 " is beyond the log's %" PRIu64 " events",
		                    index, s->tree.size);
	if ((rc = cr_index_segment_of(s->index, index, &first, path)) != 0 ||
	    (rc = cr_log_read_segment(s->log, path, &data, &n)) != 0)
		return rc;
	for (i = first; pos < n; i++) {
		char *eol = memchr(data + pos, '\n', n - pos);
		size_t m = eol ? (size_t)(eol - (data + pos)) : n - pos;

		if (i == index) {
			memmove(data, data + pos, m);
			data[m] = '\0';
			*out = data;
			*len = m;
			return 0;
		}
		pos += m + 1;
	}
	free(data);
	return cr_error_set(CR_ECORRUPT, "segment %s does not hold event %" PRIu64, path, index);
}

int cr_store_find_files(cr_store *s, const char *key, const char *type,
                        int (*fn)(void *ctx, uint64_t index), void *ctx)
{
	uint8_t sha[CR_SHA256_SIZE];
	size_t n = strlen(key);

	if (n == 64 && cr_hex_decode(sha, sizeof(sha), key, n) == 0)
		return cr_index_find_files(s->index, NULL, 0, sha, type, fn, ctx);
	cr_error_clear();
	return cr_index_find_files(s->index, key, n, NULL, type, fn, ctx);
}
