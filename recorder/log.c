/*
 * The git-backed append-only log (libgit2). Writing: one blob per segment,
 * the trees above it rewritten with git_tree_create_updated (only the
 * segment's ancestors change), one commit, then a compare-and-swap of the
 * branch: the branch moving is the commit point of a segment. Reading and
 * checking replay the first-parent chain oldest first. libgit2 errors are
 * translated here and nowhere else.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <git2.h>
#include <openssl/crypto.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "recorder/log.h"
#include "util/codec.h"

#define MAX_PROBLEMS 100

struct cr_log {
	git_repository *repo;
};

static int git_fail(const char *what)
{
	const git_error *e = git_error_last();

	return cr_error_set(CR_EGIT, "%s: %s", what, e && e->message ? e->message : "git error");
}

static int libgit2_ready(void)
{
	static int done;

	if (!done) {
		if (git_libgit2_init() < 0)
			return git_fail("initialising libgit2");
		/* A machine crash must not leave a branch pointing at unwritten objects. */
		git_libgit2_opts(GIT_OPT_ENABLE_FSYNC_GITDIR, 1);
		done = 1;
	}
	return 0;
}

void cr_log_segment_path(char out[CR_LOG_PATH_MAX], uint64_t first)
{
	snprintf(out, CR_LOG_PATH_MAX, "events/%06" PRIu64 "/%03" PRIu64 "/%016" PRIu64 ".jsonl",
	         first / 1000000, first / 1000 % 1000, first);
}

int cr_log_init(const char *git_dir)
{
	git_repository_init_options opts;
	git_repository *repo = NULL;
	git_config *cfg = NULL;
	int rc = 0;

	if ((rc = libgit2_ready()) != 0)
		return rc;
	git_repository_init_options_init(&opts, GIT_REPOSITORY_INIT_OPTIONS_VERSION);
	opts.flags = GIT_REPOSITORY_INIT_BARE | GIT_REPOSITORY_INIT_MKPATH |
	             GIT_REPOSITORY_INIT_NO_REINIT;
	opts.initial_head = "main";
	opts.description = "cleanroom lineage log: append-only, one segment per commit\n";
	if (git_repository_init_ext(&repo, git_dir, &opts) < 0)
		return git_fail(git_dir);
	/* Keep a reflog of every head so plain git shows what the branch was. */
	if (git_repository_config(&cfg, repo) < 0 ||
	    git_config_set_bool(cfg, "core.logAllRefUpdates", 1) < 0)
		rc = git_fail("configuring the log repository");
	git_config_free(cfg);
	git_repository_free(repo);
	return rc;
}

int cr_log_open(cr_log **out, const char *git_dir)
{
	cr_log *log;
	int rc;

	*out = NULL;
	if ((rc = libgit2_ready()) != 0)
		return rc;
	if ((log = calloc(1, sizeof(*log))) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	if (git_repository_open_bare(&log->repo, git_dir) < 0) {
		rc = git_fail(git_dir);
		free(log);
		return rc;
	}
	*out = log;
	return 0;
}

void cr_log_free(cr_log *log)
{
	if (!log)
		return;
	git_repository_free(log->repo);
	free(log);
}

/* The trailers of a segment commit message. */
typedef struct trailers {
	char path[CR_LOG_PATH_MAX];
	uint64_t first, count, size;
	uint8_t root[CR_HASH_SIZE];
	unsigned have;
} trailers;

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
		return -1;
	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
			return -1;
	}
	*out = v;
	return 0;
}

static int parse_trailers(const char *msg, trailers *t)
{
	const char *p = msg;

	memset(t, 0, sizeof(*t));
	while (p && *p) {
		const char *eol = strchr(p, '\n');
		size_t n = eol ? (size_t)(eol - p) : strlen(p);
		const char *v;
		size_t vn;

#define TRAILER(name) (n > sizeof(name) - 1 && memcmp(p, name, sizeof(name) - 1) == 0 && \
                       (v = p + sizeof(name) - 1, vn = n - (sizeof(name) - 1), 1))
		if (TRAILER("Cleanroom-Segment: ")) {
			if (vn >= CR_LOG_PATH_MAX)
				return -1;
			memcpy(t->path, v, vn);
			t->path[vn] = '\0';
			t->have |= 1;
		} else if (TRAILER("Cleanroom-First: ")) {
			if (parse_u64(v, vn, &t->first))
				return -1;
			t->have |= 2;
		} else if (TRAILER("Cleanroom-Count: ")) {
			if (parse_u64(v, vn, &t->count))
				return -1;
			t->have |= 4;
		} else if (TRAILER("Cleanroom-Tree-Size: ")) {
			if (parse_u64(v, vn, &t->size))
				return -1;
			t->have |= 8;
		} else if (TRAILER("Cleanroom-Root: ")) {
			if (cr_hex_decode(t->root, CR_HASH_SIZE, v, vn))
				return -1;
			t->have |= 16;
		}
#undef TRAILER
		p = eol ? eol + 1 : NULL;
	}
	return t->have == 31 ? 0 : -1;
}

static int commit_trailers(git_commit *commit, trailers *t)
{
	char id[CR_LOG_OID_HEX];

	if (parse_trailers(git_commit_message(commit), t) == 0)
		return 0;
	git_oid_tostr(id, sizeof(id), git_commit_id(commit));
	return cr_error_set(CR_ECORRUPT, "commit %s: message lacks the Cleanroom trailers "
	                    "(run `cleanroom check`)", id);
}

int cr_log_head_read(cr_log *log, cr_log_head *out)
{
	git_reference *ref = NULL;
	git_commit *commit = NULL;
	trailers t;
	int rc = 0, err;

	memset(out, 0, sizeof(*out));
	err = git_reference_name_to_id(&(git_oid){0}, log->repo, CR_LOG_BRANCH);
	if (err == GIT_ENOTFOUND) {
		out->empty = 1;
		cr_merkle_empty_root(out->root);
		return 0;
	}
	if (err < 0 || git_reference_lookup(&ref, log->repo, CR_LOG_BRANCH) < 0)
		return git_fail("reading " CR_LOG_BRANCH);
	if (git_commit_lookup(&commit, log->repo, git_reference_target(ref)) < 0) {
		rc = git_fail("reading the head commit");
		goto done;
	}
	git_oid_tostr(out->commit, sizeof(out->commit), git_commit_id(commit));
	if ((rc = commit_trailers(commit, &t)) != 0)
		goto done;
	out->size = t.size;
	memcpy(out->root, t.root, CR_HASH_SIZE);
done:
	git_commit_free(commit);
	git_reference_free(ref);
	return rc;
}

int cr_log_commit_state(cr_log *log, const char *commit_hex, uint64_t *size,
                        uint8_t root[CR_HASH_SIZE])
{
	git_oid oid;
	git_commit *commit = NULL;
	trailers t;
	int rc;

	if (git_oid_fromstr(&oid, commit_hex) < 0)
		return cr_error_set(CR_EINVAL, "not a commit id: %s", commit_hex);
	if (git_commit_lookup(&commit, log->repo, &oid) < 0)
		return cr_error_set(CR_ENOTFOUND, "commit %s is not in the log", commit_hex);
	rc = commit_trailers(commit, &t);
	if (rc == 0) {
		*size = t.size;
		memcpy(root, t.root, CR_HASH_SIZE);
	}
	git_commit_free(commit);
	return rc;
}

int cr_log_contains(cr_log *log, const char *ancestor)
{
	git_oid head, anc;

	if (git_reference_name_to_id(&head, log->repo, CR_LOG_BRANCH) < 0 ||
	    git_oid_fromstr(&anc, ancestor) < 0)
		return 0;
	if (git_oid_equal(&head, &anc))
		return 1;
	return git_graph_descendant_of(log->repo, &head, &anc) == 1;
}

int cr_log_append(cr_log *log, const cr_log_head *expected, uint64_t first, uint64_t count,
                  const char *data, size_t len, const uint8_t new_root[CR_HASH_SIZE],
                  cr_log_head *out)
{
	git_oid blob_id, tree_id, commit_id, parent_id;
	git_commit *parent = NULL;
	git_tree *base = NULL, *tree = NULL;
	git_treebuilder *tb = NULL;
	git_signature *sig = NULL;
	git_reference *ref = NULL;
	git_tree_entry *existing = NULL;
	git_tree_update upd;
	char path[CR_LOG_PATH_MAX], roothex[2 * CR_HASH_SIZE + 1], msg[512];
	const git_commit *parents[1];
	uint64_t new_size;
	int rc = 0;

	if (count == 0 || first != expected->size || __builtin_add_overflow(first, count, &new_size))
		return cr_error_set(CR_EINVAL, "segment at %" PRIu64 " does not follow the log (size %" PRIu64 ")",
		                    first, expected->size);
	cr_log_segment_path(path, first);
	if (git_blob_create_from_buffer(&blob_id, log->repo, data, len) < 0)
		return git_fail("writing a segment");
	if (!expected->empty) {
		if (git_oid_fromstr(&parent_id, expected->commit) < 0 ||
		    git_commit_lookup(&parent, log->repo, &parent_id) < 0 ||
		    git_commit_tree(&base, parent) < 0) {
			rc = git_fail("reading the head commit");
			goto done;
		}
	} else {
		if (git_treebuilder_new(&tb, log->repo, NULL) < 0 ||
		    git_treebuilder_write(&tree_id, tb) < 0 ||
		    git_tree_lookup(&base, log->repo, &tree_id) < 0) {
			rc = git_fail("writing the empty tree");
			goto done;
		}
	}
	if (git_tree_entry_bypath(&existing, base, path) == 0) {
		git_tree_entry_free(existing);
		rc = cr_error_set(CR_ECORRUPT, "segment %s already exists in the log", path);
		goto done;
	}
	memset(&upd, 0, sizeof(upd));
	upd.action = GIT_TREE_UPDATE_UPSERT;
	upd.id = blob_id;
	upd.filemode = GIT_FILEMODE_BLOB;
	upd.path = path;
	if (git_tree_create_updated(&tree_id, log->repo, base, 1, &upd) < 0 ||
	    git_tree_lookup(&tree, log->repo, &tree_id) < 0) {
		rc = git_fail("writing the log tree");
		goto done;
	}
	cr_hex_encode(roothex, new_root, CR_HASH_SIZE);
	snprintf(msg, sizeof(msg),
	         "Append events %" PRIu64 "..%" PRIu64 "\n\n"
	         "Cleanroom-Segment: %s\n"
	         "Cleanroom-First: %" PRIu64 "\n"
	         "Cleanroom-Count: %" PRIu64 "\n"
	         "Cleanroom-Tree-Size: %" PRIu64 "\n"
	         "Cleanroom-Root: %s\n",
	         first, new_size - 1, path, first, count, new_size, roothex);
	if (git_signature_now(&sig, "cleanroom", "cleanroom@localhost") < 0) {
		rc = git_fail("making the commit signature");
		goto done;
	}
	parents[0] = parent;
	if (git_commit_create(&commit_id, log->repo, NULL, sig, sig, NULL, msg, tree,
	                      parent ? 1 : 0, parents) < 0) {
		rc = git_fail("writing the segment commit");
		goto done;
	}
	/* The commit point: move the branch only if nobody else moved it. */
	if (parent) {
		if (git_reference_create_matching(&ref, log->repo, CR_LOG_BRANCH, &commit_id, 1,
		                                  &parent_id, msg) < 0) {
			rc = git_fail("moving " CR_LOG_BRANCH " (did another writer append?)");
			goto done;
		}
	} else if (git_reference_create(&ref, log->repo, CR_LOG_BRANCH, &commit_id, 0, msg) < 0) {
		rc = git_fail("creating " CR_LOG_BRANCH);
		goto done;
	}
	out->empty = 0;
	git_oid_tostr(out->commit, sizeof(out->commit), &commit_id);
	out->size = new_size;
	memcpy(out->root, new_root, CR_HASH_SIZE);
done:
	git_reference_free(ref);
	git_signature_free(sig);
	git_tree_free(tree);
	git_tree_free(base);
	git_treebuilder_free(tb);
	git_commit_free(parent);
	return rc;
}

/*
 * A revwalk over the branch, oldest first, first parents only; with
 * `after`, only the commits that follow that one.
 */
static int walk_start_after(cr_log *log, const char *after, git_revwalk **out, int *empty)
{
	git_oid head, hide;
	int err;

	*out = NULL;
	*empty = 0;
	err = git_reference_name_to_id(&head, log->repo, CR_LOG_BRANCH);
	if (err == GIT_ENOTFOUND) {
		*empty = 1;
		return 0;
	}
	if (err < 0 || git_revwalk_new(out, log->repo) < 0 ||
	    git_revwalk_sorting(*out, GIT_SORT_TOPOLOGICAL | GIT_SORT_REVERSE) < 0 ||
	    git_revwalk_simplify_first_parent(*out) < 0 || git_revwalk_push(*out, &head) < 0 ||
	    (after && *after &&
	     (git_oid_fromstr(&hide, after) < 0 || git_revwalk_hide(*out, &hide) < 0))) {
		git_revwalk_free(*out);
		*out = NULL;
		return git_fail("walking the log");
	}
	return 0;
}

static int walk_start(cr_log *log, git_revwalk **out, int *empty)
{
	return walk_start_after(log, NULL, out, empty);
}

static int read_blob_at(cr_log *log, git_commit *commit, const char *path, git_blob **out)
{
	git_tree *tree = NULL;
	git_tree_entry *entry = NULL;
	char id[CR_LOG_OID_HEX];
	int rc = 0;

	*out = NULL;
	git_oid_tostr(id, sizeof(id), git_commit_id(commit));
	if (git_commit_tree(&tree, commit) < 0)
		return git_fail("reading a log tree");
	if (git_tree_entry_bypath(&entry, tree, path) < 0)
		rc = cr_error_set(CR_ECORRUPT, "commit %s: segment %s named in its message is missing", id, path);
	else if (git_tree_entry_type(entry) != GIT_OBJECT_BLOB ||
	         git_blob_lookup(out, log->repo, git_tree_entry_id(entry)) < 0)
		rc = cr_error_set(CR_ECORRUPT, "commit %s: segment %s is not readable", id, path);
	git_tree_entry_free(entry);
	git_tree_free(tree);
	return rc;
}

int cr_log_walk(cr_log *log, uint64_t from, cr_log_segment_fn fn, void *ctx)
{
	git_revwalk *walk = NULL;
	git_oid oid;
	int empty, rc, err;

	if ((rc = walk_start(log, &walk, &empty)) != 0 || empty)
		return rc;
	while ((err = git_revwalk_next(&oid, walk)) == 0) {
		git_commit *commit = NULL;
		git_blob *blob = NULL;
		cr_log_segment seg;
		char id[CR_LOG_OID_HEX];
		trailers t;

		if (git_commit_lookup(&commit, log->repo, &oid) < 0) {
			rc = git_fail("reading a log commit");
			break;
		}
		if ((rc = commit_trailers(commit, &t)) != 0) {
			git_commit_free(commit);
			break;
		}
		if (t.first + t.count <= from) {
			git_commit_free(commit);
			continue;
		}
		if ((rc = read_blob_at(log, commit, t.path, &blob)) != 0) {
			git_commit_free(commit);
			break;
		}
		git_oid_tostr(id, sizeof(id), &oid);
		seg.commit = id;
		seg.path = t.path;
		seg.first = t.first;
		seg.count = t.count;
		seg.tree_size = t.size;
		memcpy(seg.root, t.root, CR_HASH_SIZE);
		seg.data = git_blob_rawcontent(blob);
		seg.len = (size_t)git_blob_rawsize(blob);
		rc = fn(ctx, &seg);
		git_blob_free(blob);
		git_commit_free(commit);
		if (rc)
			break;
	}
	if (!rc && err != GIT_ITEROVER)
		rc = git_fail("walking the log");
	git_revwalk_free(walk);
	return rc;
}

/* State of a history check. */
typedef struct check_state {
	cr_log *log;
	cr_log_problem_fn problem;
	cr_log_leaf_fn leaf;
	cr_log_commit_fn done;
	void *ctx;
	cr_merkle_state tree;
	uint64_t problems;
	char seg_path[CR_LOG_PATH_MAX]; /* the segment the current commit added */
	uint64_t seg_first, seg_count;
} check_state;

static void report(check_state *st, const char *where, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void report(check_state *st, const char *where, const char *fmt, ...)
{
	char what[1024];
	va_list ap;

	st->problems++;
	if (st->problems > MAX_PROBLEMS)
		return;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (st->problems == MAX_PROBLEMS)
		snprintf(what + strlen(what), sizeof(what) - strlen(what),
		         " (further problems are counted, not listed)");
	st->problem(st->ctx, where, what);
}

/* Parse a segment path back to its first leaf index; -1 if it is not one. */
static int segment_first(const char *path, uint64_t *first)
{
	char want[CR_LOG_PATH_MAX];
	const char *base = strrchr(path, '/');
	uint64_t v = 0;
	size_t i;

	if (!base || strlen(base + 1) != 16 + 6 || strcmp(base + 1 + 16, ".jsonl") != 0)
		return -1;
	for (i = 1; i <= 16; i++) {
		if (base[i] < '0' || base[i] > '9')
			return -1;
		v = v * 10 + (uint64_t)(base[i] - '0'); /* 16 digits cannot overflow */
	}
	cr_log_segment_path(want, v);
	if (strcmp(want, path) != 0)
		return -1;
	*first = v;
	return 0;
}

static int replay_segment(check_state *st, const char *where, const char *path,
                          const char *data, size_t len, uint64_t *count)
{
	size_t pos = 0, line = 0;
	int rc;

	*count = 0;
	if (len == 0)
		report(st, where, "segment %s is empty", path);
	else if (data[len - 1] != '\n')
		report(st, where, "segment %s does not end with a newline (truncated?)", path);
	while (pos < len) {
		const char *eol = memchr(data + pos, '\n', len - pos);
		size_t n = eol ? (size_t)(eol - (data + pos)) : len - pos;
		uint8_t hash[CR_HASH_SIZE];
		json_t *ev = NULL;

		line++;
		if (cr_event_parse(&ev, data + pos, n) != 0)
			report(st, where, "segment %s line %zu (leaf %" PRIu64 "): %s", path, line,
			       st->tree.size, cr_error_last());
		json_decref(ev);
		cr_merkle_leaf_hash(hash, data + pos, n);
		if (st->leaf && (rc = st->leaf(st->ctx, st->tree.size, data + pos, n, hash)) != 0)
			return rc;
		if ((rc = cr_merkle_state_append(&st->tree, hash, NULL, NULL)) != 0)
			return rc;
		(*count)++;
		pos += n + 1;
	}
	return 0;
}

static int check_commit(check_state *st, git_commit *commit)
{
	git_commit *parent = NULL;
	git_tree *old_tree = NULL, *new_tree = NULL;
	git_diff *diff = NULL;
	git_diff_options opts;
	char where[CR_LOG_OID_HEX + 16];
	size_t i, added = 0;
	uint8_t root[CR_HASH_SIZE];
	trailers t;
	int rc = 0, have_trailers;

	git_diff_options_init(&opts, GIT_DIFF_OPTIONS_VERSION);
	snprintf(where, sizeof(where), "commit %.12s", git_oid_tostr_s(git_commit_id(commit)));
	have_trailers = parse_trailers(git_commit_message(commit), &t) == 0;
	if (!have_trailers)
		report(st, where, "message lacks the Cleanroom trailers (not written by cleanroom)");
	if (git_commit_parentcount(commit) > 1)
		report(st, where, "has %u parents: the log must be a single line of commits",
		       git_commit_parentcount(commit));
	if (git_commit_parentcount(commit) >= 1 && git_commit_parent(&parent, commit, 0) < 0) {
		rc = git_fail("reading a parent commit");
		goto done;
	}
	if ((parent && git_commit_tree(&old_tree, parent) < 0) ||
	    git_commit_tree(&new_tree, commit) < 0) {
		rc = git_fail("reading a log tree");
		goto done;
	}
	if (git_diff_tree_to_tree(&diff, st->log->repo, old_tree, new_tree, &opts) < 0) {
		rc = git_fail("comparing log trees");
		goto done;
	}
	for (i = 0; i < git_diff_num_deltas(diff); i++) {
		const git_diff_delta *d = git_diff_get_delta(diff, i);
		const char *path = d->new_file.path ? d->new_file.path : d->old_file.path;
		git_blob *blob = NULL;
		uint64_t first, count;

		switch (d->status) {
		case GIT_DELTA_ADDED:
			break;
		case GIT_DELTA_DELETED:
			report(st, where, "removes existing path %s", d->old_file.path);
			continue;
		case GIT_DELTA_MODIFIED:
			report(st, where, "modifies existing path %s", path);
			continue;
		case GIT_DELTA_TYPECHANGE:
			report(st, where, "changes the type of existing path %s", path);
			continue;
		default:
			report(st, where, "changes existing path %s (git status %d)", path, (int)d->status);
			continue;
		}
		if (segment_first(path, &first) != 0 || d->new_file.mode != GIT_FILEMODE_BLOB) {
			report(st, where, "adds %s, which is not a segment", path);
			continue;
		}
		if (++added > 1)
			report(st, where, "adds more than one segment (%s)", path);
		if (first != st->tree.size)
			report(st, where,
			       "segment %s starts at leaf %" PRIu64 " but the log holds %" PRIu64
			       " leaves before it (events missing, inserted or reordered)",
			       path, first, st->tree.size);
		if (have_trailers && strcmp(path, t.path) != 0)
			report(st, where, "adds %s but its message names %s", path, t.path);
		if (git_blob_lookup(&blob, st->log->repo, &d->new_file.id) < 0) {
			report(st, where, "segment %s cannot be read", path);
			continue;
		}
		rc = replay_segment(st, where, path, git_blob_rawcontent(blob),
		                    (size_t)git_blob_rawsize(blob), &count);
		snprintf(st->seg_path, sizeof(st->seg_path), "%s", path);
		st->seg_first = first;
		st->seg_count = count;
		git_blob_free(blob);
		if (rc)
			goto done;
		if (have_trailers && strcmp(path, t.path) == 0 && (t.first != first || t.count != count))
			report(st, where,
			       "message says segment %s holds leaves %" PRIu64 "+%" PRIu64
			       ", it holds %" PRIu64 "+%" PRIu64,
			       path, t.first, t.count, first, count);
	}
	if (added == 0)
		report(st, where, "adds no segment");
	if (have_trailers) {
		cr_merkle_state_root(&st->tree, root);
		if (t.size != st->tree.size)
			report(st, where, "records tree size %" PRIu64 ", its events give %" PRIu64,
			       t.size, st->tree.size);
		else if (CRYPTO_memcmp(t.root, root, CR_HASH_SIZE) != 0) {
			char a[65], b[65];

			cr_hex_encode(a, t.root, CR_HASH_SIZE);
			cr_hex_encode(b, root, CR_HASH_SIZE);
			report(st, where, "records root %s at size %" PRIu64 ", its events give %s", a,
			       t.size, b);
		}
	}
done:
	git_diff_free(diff);
	git_tree_free(old_tree);
	git_tree_free(new_tree);
	git_commit_free(parent);
	return rc;
}

int cr_log_check_range(cr_log *log, const char *after, cr_merkle_state *tree,
                       cr_log_problem_fn problem, cr_log_leaf_fn leaf, cr_log_commit_fn done,
                       void *ctx, cr_log_check_result *out)
{
	git_revwalk *walk = NULL;
	check_state st;
	git_oid oid;
	int empty, rc, err = 0;

	memset(out, 0, sizeof(*out));
	memset(&st, 0, sizeof(st));
	st.log = log;
	st.problem = problem;
	st.leaf = leaf;
	st.done = done;
	st.ctx = ctx;
	st.tree = *tree;
	if ((rc = walk_start_after(log, after, &walk, &empty)) != 0)
		return rc;
	while (!empty && (err = git_revwalk_next(&oid, walk)) == 0) {
		git_commit *commit = NULL;
		uint64_t before = st.problems;

		if (git_commit_lookup(&commit, log->repo, &oid) < 0) {
			rc = git_fail("reading a log commit");
			break;
		}
		out->commits++;
		st.seg_path[0] = '\0';
		rc = check_commit(&st, commit);
		if (!rc && done && st.problems == before && st.seg_path[0]) {
			char id[CR_LOG_OID_HEX];

			git_oid_tostr(id, sizeof(id), &oid);
			rc = done(ctx, id, st.seg_path, st.seg_first, st.seg_count, &st.tree);
		}
		git_commit_free(commit);
		if (rc)
			break;
	}
	if (!empty && !rc && err != GIT_ITEROVER)
		rc = git_fail("walking the log");
	git_revwalk_free(walk);
	*tree = st.tree;
	out->size = st.tree.size;
	cr_merkle_state_root(&st.tree, out->root);
	out->problems = st.problems;
	if (!rc && st.problems)
		rc = CR_EVERIFY;
	return rc;
}

int cr_log_check(cr_log *log, cr_log_problem_fn problem, cr_log_leaf_fn leaf, void *ctx,
                 cr_log_check_result *out)
{
	cr_merkle_state tree;

	cr_merkle_state_init(&tree);
	return cr_log_check_range(log, NULL, &tree, problem, leaf, NULL, ctx, out);
}

int cr_log_read_segment(cr_log *log, const char *path, char **out, size_t *len)
{
	git_commit *commit = NULL;
	git_blob *blob = NULL;
	git_oid head;
	int rc;

	*out = NULL;
	*len = 0;
	if (git_reference_name_to_id(&head, log->repo, CR_LOG_BRANCH) < 0 ||
	    git_commit_lookup(&commit, log->repo, &head) < 0)
		return git_fail("reading the head commit");
	rc = read_blob_at(log, commit, path, &blob);
	if (!rc) {
		size_t n = (size_t)git_blob_rawsize(blob);

		if ((*out = malloc(n + 1)) == NULL) {
			rc = cr_error_set(CR_ENOMEM, "out of memory");
		} else {
			memcpy(*out, git_blob_rawcontent(blob), n);
			(*out)[n] = '\0';
			*len = n;
		}
	}
	git_blob_free(blob);
	git_commit_free(commit);
	return rc;
}
