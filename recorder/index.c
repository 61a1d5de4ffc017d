/*
 * The SQLite index. Statements are prepared once and reused; every write
 * happens inside a transaction the store opens and closes around a segment,
 * so the index is either at a segment boundary or rolled back to one.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "recorder/index.h"
#include "util/buf.h"
#include "util/codec.h"

/*
 * The schema version, kept in PRAGMA user_version. Version 1 kept `files`
 * as a rowid table with an index on the full SHA-256 (random keys: every
 * insert a random B-tree page); version 2 keys `files` by (path, idx) and
 * finds a SHA-256 by scanning. An index of an older version is migrated
 * (derived tables dropped and made again, empty) and then rebuilt from the
 * log by the store; see docs/formats/index.md.
 */
#define SCHEMA_VERSION 2

/*
 * Page cache per connection, in KiB (negative cache_size). SQLite's 2 MiB
 * default spills dirty pages to the WAL in the middle of a segment's
 * transaction once the index is large; a segment (CR_STORE_SEGMENT_BYTES of
 * events) dirties about as many bytes of index pages as its events take,
 * so this holds one with room to spare. Pages are only allocated as used.
 */
#define CACHE_KIB 65536

/*
 * Page size of a new index (an existing one keeps its own). 8 KiB pages
 * appended 1,000,000 events 13% faster than SQLite's default 4 KiB, at the
 * same size on disk (bench/append_events, docs/formats/index.md).
 */
#define PAGE_SIZE 8192

enum {
	ST_ADD_EVENT,
	ST_ADD_FILE,
	ST_ADD_SEGMENT,
	ST_ADD_NODE,
	ST_LEAF,
	ST_LEAF_RANGE,
	ST_NODE,
	ST_CACHE_GET,
	ST_CACHE_PUT,
	ST_META_GET,
	ST_META_PUT,
	ST_SEGMENT_OF,
	ST_FILE_RECORDED,
	ST_TYPE_GET,
	ST_TYPE_ADD,
	ST_CACHE_DEVICE,
	ST_RECORDED_UNDER,
	ST_COUNT
};

static const char *const statements[ST_COUNT] = {
    [ST_ADD_EVENT] = "INSERT INTO events(idx, type, leaf) VALUES (?1, ?2, ?3)",
    [ST_ADD_FILE] = "INSERT INTO files(path, idx, sha256, size) VALUES (?2, ?1, ?3, ?4)",
    [ST_ADD_SEGMENT] =
        "INSERT INTO segments(first, count, path, git_commit) VALUES (?1, ?2, ?3, ?4)",
    [ST_ADD_NODE] = "INSERT OR REPLACE INTO nodes(level, pos, hash) VALUES (?1, ?2, ?3)",
    [ST_LEAF] = "SELECT leaf FROM events WHERE idx = ?1",
    [ST_LEAF_RANGE] = "SELECT idx, leaf FROM events WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
    [ST_NODE] = "SELECT hash FROM nodes WHERE level = ?1 AND pos = ?2",
    [ST_CACHE_GET] = "SELECT sha256 FROM hash_cache WHERE dev = ?1 AND ino = ?2 AND size = ?3 "
                     "AND mtime_ns = ?4 AND ctime_ns = ?5",
    [ST_CACHE_PUT] =
        "INSERT OR REPLACE INTO hash_cache(dev, ino, size, mtime_ns, ctime_ns, sha256) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [ST_META_GET] = "SELECT value FROM meta WHERE key = ?1",
    [ST_META_PUT] = "INSERT OR REPLACE INTO meta(key, value) VALUES (?1, ?2)",
    [ST_FILE_RECORDED] = "SELECT 1 FROM files WHERE path = ?2 AND sha256 = ?1 LIMIT 1",
    [ST_SEGMENT_OF] =
        "SELECT first, path FROM segments WHERE first <= ?1 ORDER BY first DESC LIMIT 1",
    [ST_TYPE_GET] = "SELECT code FROM types WHERE name = ?1",
    [ST_TYPE_ADD] = "INSERT INTO types(name) VALUES (?1)",
    [ST_CACHE_DEVICE] = "SELECT 1 FROM hash_cache WHERE dev = ?1 LIMIT 1",
    /* ?1 = "folder/", ?2 = "folder0" ('0' follows '/'): every path below the folder. */
    [ST_RECORDED_UNDER] = "SELECT 1 FROM files WHERE path >= ?1 AND path < ?2 LIMIT 1",
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value BLOB) WITHOUT ROWID;"
    /* Derived from the log: */
    /* Event types by number, in the order the log first names them (1, 2, ...):
     * a 1-byte code in each event row instead of the name. */
    "CREATE TABLE IF NOT EXISTS types(code INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
    "CREATE TABLE IF NOT EXISTS events(idx INTEGER PRIMARY KEY, type INTEGER NOT NULL,"
    " leaf BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS segments(first INTEGER PRIMARY KEY, count INTEGER NOT NULL,"
    " path TEXT NOT NULL, git_commit TEXT NOT NULL);"
    /* Keyed by path: inserts land next to the same folder's earlier files,
     * and a lookup by path (or path and hash) is a key prefix. */
    "CREATE TABLE IF NOT EXISTS files(path TEXT NOT NULL, idx INTEGER NOT NULL,"
    " sha256 BLOB NOT NULL, size INTEGER, PRIMARY KEY(path, idx)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS nodes(level INTEGER NOT NULL, pos INTEGER NOT NULL,"
    " hash BLOB NOT NULL, PRIMARY KEY(level, pos)) WITHOUT ROWID;"
    /* Not derived; kept across rebuilds: */
    "CREATE TABLE IF NOT EXISTS hash_cache(dev INTEGER NOT NULL, ino INTEGER NOT NULL,"
    " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL,"
    " sha256 BLOB NOT NULL, PRIMARY KEY(dev, ino)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS witness(size INTEGER PRIMARY KEY, root BLOB NOT NULL,"
    " git_commit TEXT NOT NULL);";

/* The type codes seen, so that appending an event rarely asks SQLite. */
#define TYPE_CACHE    32
#define TYPE_NAME_MAX 48

struct cr_index {
	sqlite3 *db;
	sqlite3_stmt *st[ST_COUNT];
	struct {
		char name[TYPE_NAME_MAX];
		sqlite3_int64 code;
	} types[TYPE_CACHE];
	size_t n_types;
	cr_index_entry entry; /* reused by cr_index_add_event */
	int node_error;
	char node_message[256];
};

static int db_fail(cr_index *idx, const char *what)
{
	return cr_error_set(CR_ESQLITE, "index: %s: %s", what, sqlite3_errmsg(idx->db));
}

static sqlite3_stmt *stmt(cr_index *idx, int which)
{
	sqlite3_stmt *s = idx->st[which];

	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	return s;
}

static int exec(cr_index *idx, const char *sql)
{
	if (sqlite3_exec(idx->db, sql, NULL, NULL, NULL) != SQLITE_OK)
		return db_fail(idx, sql);
	return 0;
}

/*
 * Tables derived from the log in any older schema, dropped on a migration;
 * meta keeps its non-derived rows. The hash cache and the witness have the
 * same shape in every version so far and are kept.
 */
static const char drop_derived[] =
    "DROP TABLE IF EXISTS events; DROP TABLE IF EXISTS files; DROP TABLE IF EXISTS segments;"
    "DROP TABLE IF EXISTS nodes; DROP TABLE IF EXISTS types;"
    "DELETE FROM meta WHERE key IN ('size','frontier','head');";

static int schema_version(cr_index *idx, int *out)
{
	sqlite3_stmt *v = NULL;
	int rc = 0;

	if (sqlite3_prepare_v2(idx->db, "PRAGMA user_version", -1, &v, NULL) != SQLITE_OK ||
	    sqlite3_step(v) != SQLITE_ROW)
		rc = db_fail(idx, "reading the schema version");
	else
		*out = sqlite3_column_int(v, 0);
	sqlite3_finalize(v);
	return rc;
}

/*
 * Make the schema current; *old_version gets the version found (0: a new
 * file). An index already current is only read: a reader must not wait for
 * the write lock while a recording holds a segment's transaction open.
 */
static int set_up_schema(cr_index *idx, const char *path, unsigned flags, int *old_version)
{
	char sql[64];
	int v = 0, rc = 0, pass;

	for (pass = 0; pass < 2; pass++) {
		/* The second pass holds the write lock: nobody else migrates meanwhile. */
		if (pass == 1 && (rc = exec(idx, "BEGIN IMMEDIATE")) != 0)
			return rc;
		if ((rc = schema_version(idx, &v)) != 0)
			goto fail;
		*old_version = v;
		if (v == SCHEMA_VERSION)
			return pass == 1 ? exec(idx, "COMMIT") : 0;
		if (v > SCHEMA_VERSION) {
			/* Not damage: the wrong build for this store (an environment problem). */
			rc = cr_error_set(
			    CR_ERROR,
			    "index %s has schema version %d, newer than this "
			    "build's %d (use a newer cleanroom, or delete index.sqlite to have "
			    "it rebuilt from the log)",
			    path, v, SCHEMA_VERSION);
			goto fail;
		}
		if (v > 0 && !(flags & CR_INDEX_MIGRATE)) {
			rc = cr_error_set(CR_ECORRUPT,
			                  "index %s has schema version %d, this build uses %d: "
			                  "it must be rebuilt from the log",
			                  path, v, SCHEMA_VERSION);
			goto fail;
		}
	}
	if (v > 0 && (rc = exec(idx, drop_derived)) != 0)
		goto fail;
	snprintf(sql, sizeof(sql), "PRAGMA user_version=%d", SCHEMA_VERSION);
	if ((rc = exec(idx, schema)) != 0 || (rc = exec(idx, sql)) != 0 ||
	    (rc = exec(idx, "COMMIT")) != 0)
		goto fail;
	return 0;
fail:
	cr_index_rollback(idx);
	return rc;
}

int cr_index_open(cr_index **out, const char *path, unsigned flags, int *old_version)
{
	cr_index *idx;
	char sql[64];
	int rc = 0, i, v = 0;

	*out = NULL;
	if (old_version)
		*old_version = 0;
	if ((idx = calloc(1, sizeof(*idx))) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	if (sqlite3_open_v2(path, &idx->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
		rc = cr_error_set(CR_ESQLITE, "index %s: %s", path,
		                  idx->db ? sqlite3_errmsg(idx->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(idx->db, 10000);
	/* WAL lets readers run during a recording; NORMAL is durable against
	 * process crashes, and after a power loss the index catches up from the log. */
	/* Before anything else: it only takes on a database not yet written. */
	snprintf(sql, sizeof(sql), "PRAGMA page_size=%d;", PAGE_SIZE);
	if ((rc = exec(idx, sql)) != 0)
		goto fail;
	snprintf(sql, sizeof(sql), "PRAGMA cache_size=-%d;", CACHE_KIB);
	if ((rc = exec(idx, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
	                    "PRAGMA foreign_keys=OFF;")) != 0 ||
	    (rc = exec(idx, sql)) != 0 || (rc = set_up_schema(idx, path, flags, &v)) != 0)
		goto fail;
	if (old_version && v != SCHEMA_VERSION)
		*old_version = v; /* migrated from it */
	for (i = 0; i < ST_COUNT; i++) {
		if (sqlite3_prepare_v3(idx->db, statements[i], -1, SQLITE_PREPARE_PERSISTENT,
		                       &idx->st[i], NULL) != SQLITE_OK) {
			rc = db_fail(idx, statements[i]);
			goto fail;
		}
	}
	*out = idx;
	return 0;
fail:
	if (old_version && v > 0 && v < SCHEMA_VERSION)
		*old_version = v; /* not migrated: the caller may retry with CR_INDEX_MIGRATE */
	cr_index_free(idx);
	return rc;
}

void cr_index_free(cr_index *idx)
{
	int i;

	if (!idx)
		return;
	for (i = 0; i < ST_COUNT; i++)
		sqlite3_finalize(idx->st[i]);
	sqlite3_close(idx->db);
	cr_index_entry_free(&idx->entry);
	free(idx);
}

sqlite3 *cr_index_db(cr_index *idx)
{
	return idx->db;
}

int cr_index_begin(cr_index *idx)
{
	idx->node_error = 0;
	return exec(idx, "BEGIN IMMEDIATE");
}

int cr_index_commit(cr_index *idx)
{
	return exec(idx, "COMMIT");
}

void cr_index_rollback(cr_index *idx)
{
	/* Codes of types first named in the transaction go with it. */
	idx->n_types = 0;
	if (!sqlite3_get_autocommit(idx->db))
		sqlite3_exec(idx->db, "ROLLBACK", NULL, NULL, NULL);
}

/* The code of an event type, given one when the log names it first. */
static int type_code(cr_index *idx, const char *name, sqlite3_int64 *out)
{
	size_t len = strlen(name), i;
	sqlite3_stmt *s;
	int rc;

	for (i = 0; i < idx->n_types; i++) {
		if (strcmp(idx->types[i].name, name) == 0) {
			*out = idx->types[i].code;
			return 0;
		}
	}
	s = stmt(idx, ST_TYPE_GET);
	sqlite3_bind_text(s, 1, name, (int)len, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*out = sqlite3_column_int64(s, 0);
		sqlite3_reset(s);
	} else {
		sqlite3_reset(s);
		if (rc != SQLITE_DONE)
			return db_fail(idx, "reading event types");
		s = stmt(idx, ST_TYPE_ADD);
		sqlite3_bind_text(s, 1, name, (int)len, SQLITE_STATIC);
		rc = sqlite3_step(s);
		sqlite3_reset(s);
		if (rc != SQLITE_DONE)
			return db_fail(idx, "adding an event type");
		*out = sqlite3_last_insert_rowid(idx->db);
	}
	if (len < TYPE_NAME_MAX && idx->n_types < TYPE_CACHE) {
		memcpy(idx->types[idx->n_types].name, name, len + 1);
		idx->types[idx->n_types++].code = *out;
	}
	return 0;
}

static int meta_get(cr_index *idx, const char *key, cr_buf *out, int *found)
{
	sqlite3_stmt *s = stmt(idx, ST_META_GET);
	int rc;

	*found = 0;
	cr_buf_clear(out);
	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*found = 1;
		rc = cr_buf_put(out, sqlite3_column_blob(s, 0), (size_t)sqlite3_column_bytes(s, 0));
	} else if (rc == SQLITE_DONE) {
		rc = 0;
	} else {
		rc = db_fail(idx, "reading meta");
	}
	sqlite3_reset(s);
	return rc;
}

static int meta_put(cr_index *idx, const char *key, const void *value, size_t len)
{
	sqlite3_stmt *s = stmt(idx, ST_META_PUT);

	sqlite3_bind_text(s, 1, key, -1, SQLITE_STATIC);
	sqlite3_bind_blob(s, 2, value, (int)len, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		return db_fail(idx, "writing meta");
	sqlite3_reset(s);
	return 0;
}

int cr_index_state(cr_index *idx, cr_merkle_state *tree, char commit[41])
{
	cr_buf b = CR_BUF_INIT;
	uint64_t size = 0;
	int found, rc;

	cr_merkle_state_init(tree);
	commit[0] = '\0';
	if ((rc = meta_get(idx, "size", &b, &found)) != 0)
		goto done;
	if (!found)
		goto done;
	if (b.len != 8) {
		rc = cr_error_set(CR_ECORRUPT, "index: bad stored tree size");
		goto done;
	}
	for (int i = 0; i < 8; i++)
		size = size << 8 | (uint8_t)b.ptr[i];
	if ((rc = meta_get(idx, "frontier", &b, &found)) != 0)
		goto done;
	if ((rc = cr_merkle_state_load(tree, size, (const uint8_t *)b.ptr, b.len)) != 0) {
		rc = cr_error_set(CR_ECORRUPT, "index: bad stored tree state: %s", cr_error_last());
		goto done;
	}
	if ((rc = meta_get(idx, "head", &b, &found)) != 0)
		goto done;
	if (found && b.len < 41) {
		memcpy(commit, b.ptr, b.len);
		commit[b.len] = '\0';
	}
done:
	cr_buf_free(&b);
	return rc;
}

int cr_index_set_state(cr_index *idx, const cr_merkle_state *tree, const char *commit)
{
	uint8_t size[8], frontier[64 * CR_HASH_SIZE];
	size_t len;
	int rc, i;

	for (i = 0; i < 8; i++)
		size[i] = (uint8_t)(tree->size >> (56 - 8 * i));
	cr_merkle_state_save(tree, frontier, &len);
	if ((rc = meta_put(idx, "size", size, 8)) != 0 ||
	    (rc = meta_put(idx, "frontier", frontier, len)) != 0 ||
	    (rc = meta_put(idx, "head", commit, strlen(commit))) != 0)
		return rc;
	return 0;
}

void cr_index_entry_free(cr_index_entry *e)
{
	cr_buf_free(&e->type);
	cr_buf_free(&e->path);
	memset(e, 0, sizeof(*e));
}

/*
 * 64 hex digits into 32 bytes; -1 on anything else. cr_hex_decode's
 * branches on every character show up in append profiles: a table here.
 */
static int decode_digest(uint8_t out[CR_SHA256_SIZE], const char *hex)
{
	/* A digit's value plus one; 0 for anything that is not a hex digit. */
	static const uint8_t val1[256] = {
	    ['0'] = 1,  ['1'] = 2,  ['2'] = 3,  ['3'] = 4,  ['4'] = 5,  ['5'] = 6,
	    ['6'] = 7,  ['7'] = 8,  ['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12,
	    ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12,
	    ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
	};
	unsigned bad = 0;

	for (size_t i = 0; i < CR_SHA256_SIZE; i++) {
		/* Unsigned: a non-digit wraps to a huge value instead of going negative. */
		unsigned hi = val1[(unsigned char)hex[2 * i]] - 1u,
		         lo = val1[(unsigned char)hex[2 * i + 1]] - 1u;

		bad |= (hi | lo) > 15u;
		out[i] = (uint8_t)((hi << 4 | lo) & 0xffu);
	}
	return bad ? -1 : 0;
}

int cr_index_entry_set(cr_index_entry *e, const json_t *ev)
{
	const char *sha;
	json_t *size;
	int rc;

	cr_buf_clear(&e->type);
	e->is_file = 0;
	e->has_size = 0;
	if ((rc = cr_buf_puts(&e->type, cr_event_type(ev))) != 0)
		return rc;
	/* Events naming a file by path and content hash also go into files. */
	sha = json_string_value(json_object_get(ev, "sha256"));
	if (!sha || strlen(sha) != 64)
		return 0;
	if (decode_digest(e->sha256, sha) != 0)
		return 0;
	if ((rc = cr_event_get_path(ev, "path", &e->path)) != 0) {
		if (rc == CR_ENOMEM)
			return rc;
		cr_error_clear();
		return 0;
	}
	e->is_file = 1;
	size = json_object_get(ev, "size");
	if (json_is_integer(size)) {
		e->has_size = 1;
		e->size = json_integer_value(size);
	}
	return 0;
}

int cr_index_add_entry(cr_index *idx, uint64_t i, const cr_index_entry *e,
                       const uint8_t leaf[CR_HASH_SIZE])
{
	sqlite3_stmt *s;
	sqlite3_int64 code = 0;
	int rc;

	if ((rc = type_code(idx, e->type.ptr ? e->type.ptr : "", &code)) != 0)
		return rc;
	s = stmt(idx, ST_ADD_EVENT);
	sqlite3_bind_int64(s, 1, (sqlite3_int64)i);
	sqlite3_bind_int64(s, 2, code);
	sqlite3_bind_blob(s, 3, leaf, CR_HASH_SIZE, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return db_fail(idx, "adding an event");
	if (!e->is_file)
		return 0;
	s = stmt(idx, ST_ADD_FILE);
	sqlite3_bind_int64(s, 1, (sqlite3_int64)i);
	sqlite3_bind_text(s, 2, e->path.ptr ? e->path.ptr : "", (int)e->path.len, SQLITE_STATIC);
	sqlite3_bind_blob(s, 3, e->sha256, CR_SHA256_SIZE, SQLITE_STATIC);
	if (e->has_size)
		sqlite3_bind_int64(s, 4, e->size);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc != SQLITE_DONE)
		return db_fail(idx, "adding a file");
	return 0;
}

int cr_index_add_event(cr_index *idx, uint64_t i, const json_t *ev,
                       const uint8_t leaf[CR_HASH_SIZE])
{
	int rc;

	if ((rc = cr_index_entry_set(&idx->entry, ev)) != 0)
		return rc;
	return cr_index_add_entry(idx, i, &idx->entry, leaf);
}

int cr_index_add_segment(cr_index *idx, uint64_t first, uint64_t count, const char *path,
                         const char *commit)
{
	sqlite3_stmt *s = stmt(idx, ST_ADD_SEGMENT);

	sqlite3_bind_int64(s, 1, (sqlite3_int64)first);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)count);
	sqlite3_bind_text(s, 3, path, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 4, commit, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		return db_fail(idx, "adding a segment");
	sqlite3_reset(s);
	return 0;
}

void cr_index_node_cb(void *ctx, unsigned level, uint64_t pos, const uint8_t hash[CR_HASH_SIZE])
{
	cr_index *idx = ctx;
	sqlite3_stmt *s;

	if (level < CR_INDEX_NODE_LEVEL || idx->node_error)
		return;
	s = stmt(idx, ST_ADD_NODE);
	sqlite3_bind_int(s, 1, (int)level);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)pos);
	sqlite3_bind_blob(s, 3, hash, CR_HASH_SIZE, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE) {
		idx->node_error = CR_ESQLITE;
		snprintf(idx->node_message, sizeof(idx->node_message), "%s", sqlite3_errmsg(idx->db));
	}
	sqlite3_reset(s);
}

int cr_index_node_error(cr_index *idx)
{
	int rc = idx->node_error;

	idx->node_error = 0;
	if (rc)
		cr_error_set(rc, "index: adding a tree node: %s", idx->node_message);
	return rc;
}

int cr_index_leaf(cr_index *idx, uint64_t i, uint8_t out[CR_HASH_SIZE])
{
	sqlite3_stmt *s = stmt(idx, ST_LEAF);
	int rc;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)i);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && sqlite3_column_bytes(s, 0) == CR_HASH_SIZE) {
		memcpy(out, sqlite3_column_blob(s, 0), CR_HASH_SIZE);
		rc = 0;
	} else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
		rc = cr_error_set(CR_ENOTFOUND, "index has no leaf %" PRIu64, i);
	} else {
		rc = db_fail(idx, "reading a leaf");
	}
	sqlite3_reset(s);
	return rc;
}

int cr_index_segment_of(cr_index *idx, uint64_t i, uint64_t *first, char path[64])
{
	sqlite3_stmt *s = stmt(idx, ST_SEGMENT_OF);
	int rc;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)i);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		*first = (uint64_t)sqlite3_column_int64(s, 0);
		snprintf(path, 64, "%s", (const char *)sqlite3_column_text(s, 1));
		rc = 0;
	} else if (rc == SQLITE_DONE) {
		rc = cr_error_set(CR_ENOTFOUND, "index has no segment for leaf %" PRIu64, i);
	} else {
		rc = db_fail(idx, "finding a segment");
	}
	sqlite3_reset(s);
	return rc;
}

/* Subtree hash for proofs: a kept node, one leaf, or computed from leaves. */
static int index_subtree(void *ctx, unsigned level, uint64_t pos, uint8_t out[CR_HASH_SIZE])
{
	cr_index *idx = ctx;
	sqlite3_stmt *s;
	uint64_t first, n, got = 0;
	cr_merkle_state tree;
	int rc;

	if (level == 0)
		return cr_index_leaf(idx, pos, out);
	if (level >= CR_INDEX_NODE_LEVEL) {
		s = stmt(idx, ST_NODE);
		sqlite3_bind_int(s, 1, (int)level);
		sqlite3_bind_int64(s, 2, (sqlite3_int64)pos);
		rc = sqlite3_step(s);
		if (rc == SQLITE_ROW && sqlite3_column_bytes(s, 0) == CR_HASH_SIZE) {
			memcpy(out, sqlite3_column_blob(s, 0), CR_HASH_SIZE);
			sqlite3_reset(s);
			return 0;
		}
		sqlite3_reset(s);
		if (rc != SQLITE_DONE && rc != SQLITE_ROW)
			return db_fail(idx, "reading a tree node");
		if (level >= 63)
			return cr_error_set(CR_ENOTFOUND, "index has no tree node %u/%" PRIu64, level, pos);
		/* Not kept (an older index): fall back to the two children. */
		{
			uint8_t l[CR_HASH_SIZE], r[CR_HASH_SIZE];

			if ((rc = index_subtree(ctx, level - 1, 2 * pos, l)) != 0 ||
			    (rc = index_subtree(ctx, level - 1, 2 * pos + 1, r)) != 0)
				return rc;
			cr_merkle_node_hash(out, l, r);
			return 0;
		}
	}
	n = 1ull << level;
	first = pos << level;
	cr_merkle_state_init(&tree);
	s = stmt(idx, ST_LEAF_RANGE);
	sqlite3_bind_int64(s, 1, (sqlite3_int64)first);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)(first + n));
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		if ((uint64_t)sqlite3_column_int64(s, 0) != first + got ||
		    sqlite3_column_bytes(s, 1) != CR_HASH_SIZE)
			break;
		if ((rc = cr_merkle_state_append(&tree, sqlite3_column_blob(s, 1), NULL, NULL)) != 0) {
			sqlite3_reset(s);
			return rc;
		}
		got++;
	}
	sqlite3_reset(s);
	if (got != n)
		return cr_error_set(CR_ENOTFOUND, "index lacks leaves %" PRIu64 "..%" PRIu64, first,
		                    first + n - 1);
	cr_merkle_state_root(&tree, out);
	return 0;
}

void cr_index_merkle_source(cr_index *idx, cr_merkle_source *src)
{
	src->subtree = index_subtree;
	src->ctx = idx;
}

int cr_index_clear_derived(cr_index *idx)
{
	idx->n_types = 0;
	return exec(idx, "DELETE FROM events; DELETE FROM files; DELETE FROM segments;"
	                 "DELETE FROM nodes; DELETE FROM types;"
	                 "DELETE FROM meta WHERE key IN ('size','frontier','head');");
}

/* The hash cache lookup on a connection's reset statement s (ST_CACHE_GET). */
static int cache_get_with(sqlite3 *db, sqlite3_stmt *s, const cr_file_id *id,
                          uint8_t out[CR_SHA256_SIZE])
{
	int rc;

	sqlite3_bind_int64(s, 1, (sqlite3_int64)id->dev);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)id->ino);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)id->size);
	sqlite3_bind_int64(s, 4, id->mtime_ns);
	sqlite3_bind_int64(s, 5, id->ctime_ns);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW && sqlite3_column_bytes(s, 0) == CR_SHA256_SIZE) {
		memcpy(out, sqlite3_column_blob(s, 0), CR_SHA256_SIZE);
		rc = 0;
	} else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
		rc = CR_ENOTFOUND;
	} else {
		rc = cr_error_set(CR_ESQLITE, "index: reading the hash cache: %s",
		                  sqlite3_errmsg(db));
	}
	sqlite3_reset(s);
	return rc;
}

int cr_index_cache_get(cr_index *idx, const cr_file_id *id, uint8_t out[CR_SHA256_SIZE])
{
	return cache_get_with(idx->db, stmt(idx, ST_CACHE_GET), id, out);
}

int cr_index_cache_put(cr_index *idx, const cr_file_id *id, const uint8_t sha[CR_SHA256_SIZE])
{
	sqlite3_stmt *s = stmt(idx, ST_CACHE_PUT);

	sqlite3_bind_int64(s, 1, (sqlite3_int64)id->dev);
	sqlite3_bind_int64(s, 2, (sqlite3_int64)id->ino);
	sqlite3_bind_int64(s, 3, (sqlite3_int64)id->size);
	sqlite3_bind_int64(s, 4, id->mtime_ns);
	sqlite3_bind_int64(s, 5, id->ctime_ns);
	sqlite3_bind_blob(s, 6, sha, CR_SHA256_SIZE, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		return db_fail(idx, "writing the hash cache");
	sqlite3_reset(s);
	return 0;
}

int cr_index_witness_add(cr_index *idx, uint64_t size, const uint8_t root[CR_HASH_SIZE],
                         const char *commit)
{
	sqlite3_stmt *s = NULL;
	int rc = 0;

	if (sqlite3_prepare_v2(idx->db,
	                       "INSERT OR IGNORE INTO witness(size, root, git_commit) VALUES (?1, ?2, ?3)",
	                       -1, &s, NULL) != SQLITE_OK)
		return db_fail(idx, "preparing the witness");
	sqlite3_bind_int64(s, 1, (sqlite3_int64)size);
	sqlite3_bind_blob(s, 2, root, CR_HASH_SIZE, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, commit, -1, SQLITE_STATIC);
	if (sqlite3_step(s) != SQLITE_DONE)
		rc = db_fail(idx, "writing the witness");
	sqlite3_finalize(s);
	return rc;
}

int cr_index_witness_foreach(cr_index *idx, cr_index_witness_fn fn, void *ctx)
{
	sqlite3_stmt *s = NULL;
	int rc = 0, step;

	if (sqlite3_prepare_v2(idx->db, "SELECT size, root, git_commit FROM witness ORDER BY size", -1,
	                       &s, NULL) != SQLITE_OK)
		return db_fail(idx, "reading the witness");
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		if (sqlite3_column_bytes(s, 1) != CR_HASH_SIZE) {
			rc = cr_error_set(CR_ECORRUPT, "index: malformed witness row");
			break;
		}
		rc = fn(ctx, (uint64_t)sqlite3_column_int64(s, 0), sqlite3_column_blob(s, 1),
		        (const char *)sqlite3_column_text(s, 2));
		if (rc)
			break;
	}
	if (!rc && step != SQLITE_DONE)
		rc = db_fail(idx, "reading the witness");
	sqlite3_finalize(s);
	return rc;
}

static int count_query(cr_index *idx, const char *sql, uint64_t *out)
{
	sqlite3_stmt *s = NULL;
	int rc = 0;

	if (sqlite3_prepare_v2(idx->db, sql, -1, &s, NULL) != SQLITE_OK)
		return db_fail(idx, sql);
	if (sqlite3_step(s) == SQLITE_ROW)
		*out = (uint64_t)sqlite3_column_int64(s, 0);
	else
		rc = db_fail(idx, sql);
	sqlite3_finalize(s);
	return rc;
}

int cr_index_counts_get(cr_index *idx, cr_index_counts *out)
{
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = count_query(idx, "SELECT count(*) FROM events", &out->events)) != 0 ||
	    (rc = count_query(idx, "SELECT count(*) FROM segments", &out->segments)) != 0 ||
	    (rc = count_query(idx, "SELECT count(*) FROM files", &out->files)) != 0 ||
	    (rc = count_query(idx, "SELECT coalesce(sum(size), 0) FROM files", &out->file_bytes)) != 0 ||
	    (rc = count_query(idx, "SELECT count(*) FROM hash_cache", &out->cache_entries)) != 0)
		return rc;
	return 0;
}

int cr_index_type_counts(cr_index *idx, int (*fn)(void *ctx, const char *type, uint64_t n),
                         void *ctx)
{
	sqlite3_stmt *s = NULL;
	int rc = 0, step;

	if (sqlite3_prepare_v2(idx->db,
	                       "SELECT t.name, count(*) FROM events e JOIN types t "
	                       "ON t.code = e.type GROUP BY e.type ORDER BY t.name",
	                       -1, &s, NULL) != SQLITE_OK)
		return db_fail(idx, "counting events");
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		if ((rc = fn(ctx, (const char *)sqlite3_column_text(s, 0),
		             (uint64_t)sqlite3_column_int64(s, 1))) != 0)
			break;
	}
	if (!rc && step != SQLITE_DONE)
		rc = db_fail(idx, "counting events");
	sqlite3_finalize(s);
	return rc;
}

/* The recorded-file lookup on a connection's reset statement s (ST_FILE_RECORDED). */
static int file_recorded_with(sqlite3 *db, sqlite3_stmt *s, const char *path, size_t len,
                              const uint8_t sha[CR_SHA256_SIZE])
{
	int rc;

	sqlite3_bind_blob(s, 1, sha, CR_SHA256_SIZE, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, path, (int)len, SQLITE_STATIC);
	rc = sqlite3_step(s);
	sqlite3_reset(s);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return cr_error_set(CR_ESQLITE, "index: looking up a file: %s", sqlite3_errmsg(db));
}

int cr_index_file_recorded(cr_index *idx, const char *path, size_t len,
                           const uint8_t sha[CR_SHA256_SIZE])
{
	return file_recorded_with(idx->db, stmt(idx, ST_FILE_RECORDED), path, len, sha);
}

/*
 * A reader: its own read-only connection, for one thread at a time. Its
 * statements share read transactions, each ended after READER_TXN_OPS
 * statements: one per statement would take the WAL's locks every time,
 * one for good would keep the writer's checkpoints from finishing.
 */
#define READER_TXN_OPS   4096
#define READER_CACHE_KIB 8192

/* The statements a reader prepares. */
static const int reader_statements[] = {ST_CACHE_GET, ST_FILE_RECORDED, ST_CACHE_DEVICE,
                                        ST_RECORDED_UNDER};
#define N_READER_STATEMENTS (sizeof(reader_statements) / sizeof(reader_statements[0]))

struct cr_index_reader {
	sqlite3 *db;
	sqlite3_stmt *st[N_READER_STATEMENTS]; /* as reader_statements */
	unsigned ops;
};

void cr_index_reader_free(cr_index_reader *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < N_READER_STATEMENTS; i++)
		sqlite3_finalize(r->st[i]);
	sqlite3_close(r->db); /* ends an open read transaction */
	free(r);
}

int cr_index_reader_open(cr_index_reader **out, const char *path)
{
	cr_index_reader *r;
	char sql[64];
	int v = 0, rc = 0;

	*out = NULL;
	if ((r = calloc(1, sizeof(*r))) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	if (sqlite3_open_v2(path, &r->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) !=
	    SQLITE_OK) {
		rc = cr_error_set(CR_ESQLITE, "index %s: %s", path,
		                  r->db ? sqlite3_errmsg(r->db) : "cannot open");
		goto fail;
	}
	sqlite3_busy_timeout(r->db, 10000);
	snprintf(sql, sizeof(sql), "PRAGMA cache_size=-%d", READER_CACHE_KIB);
	if (sqlite3_exec(r->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		rc = cr_error_set(CR_ESQLITE, "index %s: %s", path, sqlite3_errmsg(r->db));
		goto fail;
	}
	{
		sqlite3_stmt *s = NULL;

		if (sqlite3_prepare_v2(r->db, "PRAGMA user_version", -1, &s, NULL) == SQLITE_OK &&
		    sqlite3_step(s) == SQLITE_ROW)
			v = sqlite3_column_int(s, 0);
		sqlite3_finalize(s);
	}
	if (v != SCHEMA_VERSION) {
		rc = cr_error_set(CR_ECORRUPT, "index %s has schema version %d, not %d", path, v,
		                  SCHEMA_VERSION);
		goto fail;
	}
	for (size_t i = 0; i < N_READER_STATEMENTS; i++) {
		if (sqlite3_prepare_v3(r->db, statements[reader_statements[i]], -1,
		                       SQLITE_PREPARE_PERSISTENT, &r->st[i], NULL) != SQLITE_OK) {
			rc = cr_error_set(CR_ESQLITE, "index %s: %s", path, sqlite3_errmsg(r->db));
			goto fail;
		}
	}
	*out = r;
	return 0;
fail:
	cr_index_reader_free(r);
	return rc;
}

/* Open (or renew) the reader's read transaction before a statement. */
static int reader_txn(cr_index_reader *r)
{
	if (r->ops && r->ops % READER_TXN_OPS == 0 && !sqlite3_get_autocommit(r->db))
		sqlite3_exec(r->db, "COMMIT", NULL, NULL, NULL);
	r->ops++;
	if (sqlite3_get_autocommit(r->db) &&
	    sqlite3_exec(r->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
		return cr_error_set(CR_ESQLITE, "index: %s", sqlite3_errmsg(r->db));
	return 0;
}

int cr_index_reader_cache_get(cr_index_reader *r, const cr_file_id *id, uint8_t out[CR_SHA256_SIZE])
{
	int rc = reader_txn(r);

	return rc ? rc : cache_get_with(r->db, r->st[0], id, out);
}

int cr_index_reader_file_recorded(cr_index_reader *r, const char *path, size_t len,
                                  const uint8_t sha[CR_SHA256_SIZE])
{
	int rc = reader_txn(r);

	return rc ? rc : file_recorded_with(r->db, r->st[1], path, len, sha);
}

/* 1 when statement s (bound) has a row, 0 when not. */
static int has_row(sqlite3 *db, sqlite3_stmt *s, const char *what)
{
	int rc = sqlite3_step(s);

	sqlite3_reset(s);
	sqlite3_clear_bindings(s);
	if (rc == SQLITE_ROW)
		return 1;
	if (rc == SQLITE_DONE)
		return 0;
	return cr_error_set(CR_ESQLITE, "index: %s: %s", what, sqlite3_errmsg(db));
}

int cr_index_reader_cache_has_device(cr_index_reader *r, uint64_t dev)
{
	int rc = reader_txn(r);

	if (rc)
		return rc;
	sqlite3_bind_int64(r->st[2], 1, (sqlite3_int64)dev);
	return has_row(r->db, r->st[2], "reading the hash cache");
}

int cr_index_reader_recorded_under(cr_index_reader *r, const char *dir, size_t len)
{
	cr_buf lo = CR_BUF_INIT;
	int rc = reader_txn(r);

	if (rc)
		return rc;
	if ((rc = cr_buf_put(&lo, dir, len)) != 0 || (rc = cr_buf_putc(&lo, '/')) != 0)
		goto done;
	sqlite3_bind_text(r->st[3], 1, lo.ptr, (int)lo.len, SQLITE_TRANSIENT);
	lo.ptr[len] = '0';
	sqlite3_bind_text(r->st[3], 2, lo.ptr, (int)lo.len, SQLITE_TRANSIENT);
	rc = has_row(r->db, r->st[3], "looking up files");
done:
	cr_buf_free(&lo);
	return rc;
}

int cr_index_find_files(cr_index *idx, const char *path, size_t path_len, const uint8_t *sha,
                        const char *type, int (*fn)(void *ctx, uint64_t i), void *ctx)
{
	sqlite3_stmt *s = NULL;
	/* By path: a key prefix of files. By SHA-256: a scan of files (see
	 * docs/formats/index.md for why there is no index on it). */
	const char *sql = sha ? "SELECT f.idx FROM files f JOIN events e ON e.idx = f.idx "
	                        "WHERE f.sha256 = ?1 AND (?2 IS NULL OR e.type = "
	                        "(SELECT code FROM types WHERE name = ?2)) ORDER BY f.idx"
	                      : "SELECT f.idx FROM files f JOIN events e ON e.idx = f.idx "
	                        "WHERE f.path = ?1 AND (?2 IS NULL OR e.type = "
	                        "(SELECT code FROM types WHERE name = ?2)) ORDER BY f.idx";
	int rc = 0, step;

	if (sqlite3_prepare_v2(idx->db, sql, -1, &s, NULL) != SQLITE_OK)
		return db_fail(idx, "finding files");
	if (sha)
		sqlite3_bind_blob(s, 1, sha, CR_SHA256_SIZE, SQLITE_STATIC);
	else
		sqlite3_bind_text(s, 1, path, (int)path_len, SQLITE_STATIC);
	if (type)
		sqlite3_bind_text(s, 2, type, -1, SQLITE_STATIC);
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		if ((rc = fn(ctx, (uint64_t)sqlite3_column_int64(s, 0))) != 0)
			break;
	}
	if (!rc && step != SQLITE_DONE)
		rc = db_fail(idx, "finding files");
	sqlite3_finalize(s);
	return rc;
}
