/*
 * Unit tests for the store: append and flush, reopen resumes exactly,
 * proofs from the index equal proofs over the leaves in memory, the writer
 * lock, the index catching up after it fell behind the log, an index of an
 * older schema rebuilt on open, prepared appends, and readers.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/store.h"
#include "harness.h"
#include "util/buf.h"

static char tmpdir[256];

static void make_tmp(void)
{
	const char *base = getenv("CR_TMP");
	char cmd[300];

	if (!base)
		base = "/tmp";
	mkdir(base, 0700);
	snprintf(tmpdir, sizeof(tmpdir), "%s/store-XXXXXX", base);
	if (!mkdtemp(tmpdir))
		abort();
	snprintf(cmd, sizeof(cmd), "rmdir %s", tmpdir);
	(void)!system(cmd);
}

static void rm_tmp(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	(void)!system(cmd);
}

static int append_n(cr_store *s, int first, int n, uint8_t (*leaves)[32])
{
	for (int i = first; i < first + n; i++) {
		json_t *ev = NULL;
		cr_buf b = CR_BUF_INIT;
		uint64_t at;
		int rc;

		if ((rc = cr_event_new(&ev, "note")) != 0 || (rc = cr_event_set_int(ev, "n", i)) != 0)
			return rc;
		rc = cr_event_encode(ev, &b);
		if (!rc) {
			cr_merkle_leaf_hash(leaves[i], b.ptr, b.len);
			rc = cr_store_append(s, ev, &at);
		}
		if (!rc && at != (uint64_t)i)
			rc = CR_ERROR;
		cr_buf_free(&b);
		json_decref(ev);
		if (rc)
			return rc;
	}
	return 0;
}

#define N 700

static void test_append_reopen_prove(void)
{
	static uint8_t leaves[N][32];
	uint8_t path[CR_MERKLE_MAX_PATH][32], want[CR_MERKLE_MAX_PATH][32], root[32];
	size_t n, m;
	cr_store *s = NULL, *other = NULL;
	cr_store_state st;
	cr_merkle_source src;
	cr_merkle_memory mem;

	make_tmp();
	REQUIRE(cr_store_init(tmpdir) == 0);
	CHECK(cr_store_init(tmpdir) == CR_EEXISTS);
	REQUIRE(cr_store_open(&s, tmpdir, CR_STORE_WRITE) == 0);
	CHECK(cr_store_open(&other, tmpdir, CR_STORE_WRITE) == CR_ELOCKED);
	CHECK(strstr(cr_error_last(), "another cleanroom process") != NULL);
	REQUIRE(append_n(s, 0, 300, leaves) == 0);
	CHECK(cr_store_pending(s) == 300);
	cr_store_state_get(s, &st);
	CHECK(st.size == 0); /* nothing committed yet */
	REQUIRE(cr_store_flush(s) == 0);
	REQUIRE(append_n(s, 300, 5, leaves) == 0);
	cr_store_free(s); /* discards the 5 pending events */
	s = NULL;

	REQUIRE(cr_store_open(&s, tmpdir, CR_STORE_WRITE) == 0);
	cr_store_state_get(s, &st);
	CHECK(st.size == 300);
	REQUIRE(append_n(s, 300, N - 300, leaves) == 0);
	REQUIRE(cr_store_flush(s) == 0);
	cr_store_free(s);
	s = NULL;

	/* A reader sees the same state and proves against it. */
	REQUIRE(cr_store_open(&s, tmpdir, 0) == 0);
	mem.leaves = (const uint8_t (*)[32])leaves;
	mem.n = N;
	cr_merkle_memory_source(&src, &mem);
	cr_store_state_get(s, &st);
	CHECK(st.size == N);
	REQUIRE(cr_merkle_root(&src, N, root) == 0);
	CHECK_MEM(root, st.root, 32);
	for (uint64_t size = 1; size <= N; size += 37) {
		for (uint64_t i = 0; i < size; i += 13) {
			CHECK(cr_store_inclusion_proof(s, i, size, path, &n) == 0);
			CHECK(cr_merkle_inclusion_proof(&src, i, size, want, &m) == 0);
			CHECK(n == m && memcmp(path, want, n * 32) == 0);
		}
		CHECK(cr_store_consistency_proof(s, size, N, path, &n) == 0);
		CHECK(cr_merkle_consistency_proof(&src, size, N, want, &m) == 0);
		CHECK(n == m && memcmp(path, want, n * 32) == 0);
	}
	CHECK(cr_store_inclusion_proof(s, N, N, path, &n) != 0);
	CHECK(cr_store_root_at(s, N + 1, root) == CR_ERANGE);
	{
		json_t *ev = NULL;

		CHECK(cr_event_new(&ev, "note") == 0);
		CHECK(cr_store_append(s, ev, NULL) == CR_EINVAL); /* read-only */
		json_decref(ev);
	}
	cr_store_free(s);
	rm_tmp();
}

static int copy_file(const char *from, const char *to)
{
	char cmd[700];

	snprintf(cmd, sizeof(cmd), "cp %s %s", from, to);
	return system(cmd);
}

static void test_index_catches_up(void)
{
	static uint8_t leaves[400][32];
	cr_store *s = NULL;
	cr_store_state before, after;
	char index[300], saved[300];

	make_tmp();
	snprintf(index, sizeof(index), "%s/index.sqlite", tmpdir);
	snprintf(saved, sizeof(saved), "%s/index.saved", tmpdir);
	REQUIRE(cr_store_init(tmpdir) == 0);
	REQUIRE(cr_store_open(&s, tmpdir, CR_STORE_WRITE) == 0);
	REQUIRE(append_n(s, 0, 100, leaves) == 0 && cr_store_flush(s) == 0);
	cr_store_free(s); /* closing checkpoints the WAL into index.sqlite */
	REQUIRE(copy_file(index, saved) == 0);
	REQUIRE(cr_store_open(&s, tmpdir, CR_STORE_WRITE) == 0);
	REQUIRE(append_n(s, 100, 300, leaves) == 0 && cr_store_flush(s) == 0);
	cr_store_state_get(s, &before);
	cr_store_free(s);
	/* The index as a crash after the second git commit would leave it. */
	REQUIRE(copy_file(saved, index) == 0);
	REQUIRE(cr_store_open(&s, tmpdir, 0) == 0);
	cr_store_state_get(s, &after);
	CHECK(after.size == 400 && before.size == 400);
	CHECK_MEM(after.root, before.root, 32);
	CHECK(strcmp(after.commit, before.commit) == 0);
	{
		uint8_t leaf[32];

		CHECK(cr_store_leaf_hash(s, 399, leaf) == 0);
		CHECK_MEM(leaf, leaves[399], 32);
	}
	cr_store_free(s);
	/* A rebuild gives the same state again. */
	REQUIRE(cr_store_open(&s, tmpdir, CR_STORE_WRITE | CR_STORE_RAW) == 0);
	REQUIRE(cr_store_rebuild_index(s) == 0);
	cr_store_state_get(s, &after);
	CHECK(after.size == before.size);
	CHECK_MEM(after.root, before.root, 32);
	cr_store_free(s);
	rm_tmp();
}

static void test_missing_store(void)
{
	cr_store *s = NULL;

	CHECK(cr_store_open(&s, "/nonexistent/cleanroom-store", 0) == CR_ENOTFOUND);
	CHECK(strstr(cr_error_last(), "cleanroom init") != NULL);
	CHECK(s == NULL);
}

/* The made-up SHA-256 of file n. */
static void fake_sha(int n, uint8_t sha[32])
{
	for (int k = 0; k < 32; k++)
		sha[k] = (uint8_t)(k < 4 ? n >> (8 * k) : n * 31 + k * 7);
}

/* An input event for file n: path /data/<n % 7>/f<n>, sha256 fake_sha(n). */
static json_t *file_event(int n, uint8_t sha[32])
{
	char path[64];
	json_t *ev = NULL;

	fake_sha(n, sha);
	snprintf(path, sizeof(path), "/data/%d/f%06d.bin", n % 7, n);
	if (cr_event_new(&ev, "input") != 0 ||
	    cr_event_set_path(ev, "path", path, strlen(path)) != 0 ||
	    cr_event_set_hex(ev, "sha256", sha, 32) != 0 ||
	    cr_event_set_int(ev, "size", 100 + n) != 0) {
		json_decref(ev);
		return NULL;
	}
	return ev;
}

static int count_cb(void *ctx, uint64_t index)
{
	uint64_t *c = ctx;

	c[0]++;
	c[1] = index;
	return 0;
}

static int sql(const char *db_path, const char *statements)
{
	sqlite3 *db = NULL;
	int rc = sqlite3_open(db_path, &db);

	if (rc == SQLITE_OK)
		rc = sqlite3_exec(db, statements, NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		fprintf(stderr, "sqlite: %s\n", db ? sqlite3_errmsg(db) : "cannot open");
	sqlite3_close(db);
	return rc;
}

static int user_version(const char *db_path)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *st = NULL;
	int v = -1;

	if (sqlite3_open(db_path, &db) == SQLITE_OK &&
	    sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
	    sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

static void on_problem(void *ctx, const char *where, const char *what)
{
	(void)ctx;
	fprintf(stderr, "  problem: %s: %s\n", where, what);
}

/*
 * Schema version 1 as the previous build wrote it: the type by name, files
 * keyed by leaf index with an index on the full SHA-256. Its rows are
 * copied from the current tables, so it is a complete, up-to-date index.
 */
static const char to_version_1[] =
    "BEGIN;"
    "CREATE TABLE events1(idx INTEGER PRIMARY KEY, type TEXT NOT NULL, leaf BLOB NOT NULL);"
    "INSERT INTO events1 SELECT e.idx, t.name, e.leaf FROM events e JOIN types t ON t.code = "
    "e.type;"
    "CREATE TABLE files1(idx INTEGER PRIMARY KEY, path TEXT NOT NULL, sha256 BLOB NOT NULL, size "
    "INTEGER);"
    "INSERT INTO files1 SELECT idx, path, sha256, size FROM files;"
    "DROP TABLE events; DROP TABLE files; DROP TABLE types;"
    "ALTER TABLE events1 RENAME TO events; ALTER TABLE files1 RENAME TO files;"
    "CREATE INDEX files_by_sha256 ON files(sha256);"
    "PRAGMA user_version=1;"
    "COMMIT;";

#define MIGRATE_N 1000

static void test_old_schema_is_rebuilt(void)
{
	cr_store *s = NULL;
	cr_store_state before, after;
	cr_store_check_result res;
	cr_file_id id = {77, 1234, 5, 6, 7};
	uint8_t sha[32], got[32], cached[32];
	uint64_t found[2];
	char index[300], lock[300], hex[65];
	int fd;

	make_tmp();
	snprintf(index, sizeof(index), "%s/index.sqlite", tmpdir);
	snprintf(lock, sizeof(lock), "%s/lock", tmpdir);
	REQUIRE(cr_store_init(tmpdir) == 0);
	REQUIRE(cr_store_open(&s, tmpdir, CR_STORE_WRITE) == 0);
	CHECK(cr_store_notice(s) == NULL);
	for (int i = 0; i < MIGRATE_N; i++) {
		json_t *ev = file_event(i, sha);

		REQUIRE(ev != NULL);
		REQUIRE(cr_store_append(s, ev, NULL) == 0);
		json_decref(ev);
		if (i % 300 == 299)
			REQUIRE(cr_store_flush(s) == 0);
	}
	memset(cached, 0xab, sizeof(cached));
	REQUIRE(cr_store_cache_put(s, &id, cached) == 0);
	REQUIRE(cr_store_flush(s) == 0);
	cr_store_state_get(s, &before);
	cr_store_free(s);
	s = NULL;
	CHECK(user_version(index) == 2);

	REQUIRE(sql(index, to_version_1) == SQLITE_OK);
	CHECK(user_version(index) == 1);

	/* A reader must rebuild it, but not while a writer holds the store. */
	fd = open(lock, O_RDWR);
	REQUIRE(fd >= 0 && flock(fd, LOCK_EX) == 0);
	CHECK(cr_store_open(&s, tmpdir, 0) == CR_ELOCKED);
	CHECK(strstr(cr_error_last(), "older schema") != NULL);
	CHECK(s == NULL);
	close(fd);
	CHECK(user_version(index) == 1);

	REQUIRE(cr_store_open(&s, tmpdir, 0) == 0);
	REQUIRE(cr_store_notice(s) != NULL);
	CHECK(strstr(cr_store_notice(s), "schema version 1") != NULL);
	CHECK(strstr(cr_store_notice(s), "1000 events") != NULL);
	cr_store_state_get(s, &after);
	CHECK(after.size == MIGRATE_N && before.size == MIGRATE_N);
	CHECK_MEM(after.root, before.root, 32);
	CHECK(strcmp(after.commit, before.commit) == 0);
	/* The derived tables are back, the hash cache was kept. */
	memset(found, 0, sizeof(found));
	CHECK(cr_store_find_files(s, "/data/3/f000500.bin", NULL, count_cb, found) == 0);
	CHECK(found[0] == 1 && found[1] == 500);
	fake_sha(777, sha);
	for (int k = 0; k < 32; k++)
		snprintf(hex + 2 * k, 3, "%02x", sha[k]);
	memset(found, 0, sizeof(found));
	CHECK(cr_store_find_files(s, hex, "input", count_cb, found) == 0);
	CHECK(found[0] == 1 && found[1] == 777);
	memset(found, 0, sizeof(found));
	CHECK(cr_store_find_files(s, hex, "output", count_cb, found) == 0);
	CHECK(found[0] == 0);
	CHECK(cr_store_file_recorded(s, "/data/0/f000777.bin", 19, sha) == 1);
	CHECK(cr_store_file_recorded(s, "/data/0/f000776.bin", 19, sha) == 0);
	CHECK(cr_store_cache_get(s, &id, got) == 0);
	CHECK_MEM(got, cached, 32);
	cr_store_free(s);
	s = NULL;
	CHECK(user_version(index) == 2);

	/* Said once: the next open has nothing to do. */
	REQUIRE(cr_store_open(&s, tmpdir, 0) == 0);
	CHECK(cr_store_notice(s) == NULL);
	cr_store_free(s);
	s = NULL;

	/* The log and the rebuilt index check, the witness included. */
	REQUIRE(cr_store_open(&s, tmpdir, CR_STORE_RAW) == 0);
	CHECK(cr_store_check(s, on_problem, NULL, &res) == 0);
	CHECK(res.problems == 0 && res.size == MIGRATE_N);
	cr_store_free(s);
	s = NULL;

	/* A check of an old index rebuilds it too, then checks it. */
	REQUIRE(sql(index, to_version_1) == SQLITE_OK);
	REQUIRE(cr_store_open(&s, tmpdir, CR_STORE_RAW) == 0);
	CHECK(cr_store_notice(s) != NULL);
	CHECK(cr_store_check(s, on_problem, NULL, &res) == 0);
	CHECK(res.problems == 0);
	cr_store_free(s);
	s = NULL;
	CHECK(user_version(index) == 2);

	/* An index from a newer build is refused, never used or destroyed. */
	REQUIRE(sql(index, "PRAGMA user_version=3") == SQLITE_OK);
	CHECK(cr_store_open(&s, tmpdir, CR_STORE_WRITE) == CR_ERROR);
	CHECK(strstr(cr_error_last(), "newer") != NULL);
	CHECK(s == NULL);
	CHECK(user_version(index) == 3);
	rm_tmp();
}

static void test_prepared_and_readers(void)
{
	static char dir_a[300], dir_b[300];
	cr_store *a = NULL, *b = NULL;
	cr_store_prepared *p = NULL;
	cr_store_reader *r = NULL;
	cr_store_state sa, sb;
	cr_file_id id = {1, 2, 3, 4, 5};
	uint8_t sha[32], got[32];
	uint64_t at = 99;

	make_tmp();
	snprintf(dir_a, sizeof(dir_a), "%s-a", tmpdir);
	snprintf(dir_b, sizeof(dir_b), "%s-b", tmpdir);
	REQUIRE(cr_store_init(dir_a) == 0 && cr_store_init(dir_b) == 0);
	REQUIRE(cr_store_open(&a, dir_a, CR_STORE_WRITE) == 0);
	REQUIRE(cr_store_open(&b, dir_b, CR_STORE_WRITE) == 0);
	REQUIRE(cr_store_prepared_new(&p) == 0);
	/* Not prepared yet: refused. */
	CHECK(cr_store_append_prepared(b, p, NULL) == CR_EINVAL);
	for (int i = 0; i < 50; i++) {
		json_t *ev = file_event(i, sha);

		REQUIRE(ev != NULL);
		CHECK(cr_store_append(a, ev, NULL) == 0);
		CHECK(cr_store_prepare(p, ev) == 0);
		json_decref(ev); /* p holds none of it */
		CHECK(cr_store_append_prepared(b, p, &at) == 0);
		CHECK(at == (uint64_t)i);
		/* Appended once: p is empty until prepared again. */
		CHECK(cr_store_append_prepared(b, p, NULL) == CR_EINVAL);
	}
	CHECK(cr_store_flush(a) == 0 && cr_store_flush(b) == 0);
	cr_store_state_get(a, &sa);
	cr_store_state_get(b, &sb);
	CHECK(sa.size == 50 && sb.size == 50);
	CHECK_MEM(sa.root, sb.root, 32);
	fake_sha(12, sha);
	CHECK(cr_store_file_recorded(b, "/data/5/f000012.bin", 19, sha) == 1);

	/* An event whose "sha256" is not 64 hex digits names no file (and is kept all the same). */
	{
		static const char *const bad[] = {
		    "zz00000000000000000000000000000000000000000000000000000000000000",
		    "000000000000000000000000000000000000000000000000000000000000000g",
		    "00000000000000000000000000000000000000000000000000000000000000",
		};
		uint64_t found[2] = {0, 0};

		for (size_t k = 0; k < 3; k++) {
			json_t *ev = NULL;

			CHECK(cr_event_new(&ev, "input") == 0);
			CHECK(cr_event_set_path(ev, "path", "/odd/hash", 9) == 0);
			CHECK(cr_event_set_str(ev, "sha256", bad[k]) == 0);
			CHECK(cr_store_append(b, ev, NULL) == 0);
			json_decref(ev);
		}
		CHECK(cr_store_flush(b) == 0);
		CHECK(cr_store_find_files(b, "/odd/hash", NULL, count_cb, found) == 0);
		CHECK(found[0] == 0);
		memset(found, 0, sizeof(found));
		CHECK(cr_store_find_files(b, "/data/5/f000012.bin", NULL, count_cb, found) == 0);
		CHECK(found[0] == 1 && found[1] == 12);
	}

	/* A reader sees what is committed, not the writer's pending transaction. */
	REQUIRE(cr_store_reader_open(b, &r) == 0);
	CHECK(cr_store_reader_file_recorded(r, "/data/5/f000012.bin", 19, sha) == 1);
	CHECK(cr_store_reader_file_recorded(r, "/data/5/f000013.bin", 19, sha) == 0);
	memset(sha, 0x5a, sizeof(sha));
	CHECK(cr_store_cache_put(b, &id, sha) == 0);
	CHECK(cr_store_reader_cache_get(r, &id, got) == CR_ENOTFOUND);
	cr_store_reader_free(r);
	r = NULL;
	CHECK(cr_store_flush(b) == 0);
	REQUIRE(cr_store_reader_open(b, &r) == 0);
	CHECK(cr_store_reader_cache_get(r, &id, got) == 0);
	CHECK_MEM(got, sha, 32);
	id.mtime_ns++; /* another identity: a miss */
	CHECK(cr_store_reader_cache_get(r, &id, got) == CR_ENOTFOUND);
	cr_store_reader_free(r);
	cr_store_prepared_free(p);
	cr_store_free(a);
	cr_store_free(b);
	{
		char cmd[700];

		snprintf(cmd, sizeof(cmd), "rm -rf %s %s", dir_a, dir_b);
		(void)!system(cmd);
	}
}

/* The rows of the derived tables, as text, for comparing two indexes. */
static void dump_index(const char *dir, cr_buf *out)
{
	static const char *const queries[] = {
	    "SELECT idx, type, hex(leaf) FROM events ORDER BY idx",
	    "SELECT code, name FROM types ORDER BY code",
	    "SELECT hex(path), idx, hex(sha256), size FROM files ORDER BY idx",
	};
	char path[300];
	sqlite3 *db = NULL;

	cr_buf_clear(out);
	snprintf(path, sizeof(path), "%s/index.sqlite", dir);
	if (sqlite3_open(path, &db) != SQLITE_OK)
		return;
	for (size_t q = 0; q < sizeof(queries) / sizeof(queries[0]); q++) {
		sqlite3_stmt *st = NULL;

		if (sqlite3_prepare_v2(db, queries[q], -1, &st, NULL) != SQLITE_OK)
			continue;
		while (sqlite3_step(st) == SQLITE_ROW) {
			for (int c = 0; c < sqlite3_column_count(st); c++)
				cr_buf_printf(out, "%s|",
				              sqlite3_column_text(st, c)
				                  ? (const char *)sqlite3_column_text(st, c)
				                  : "NULL");
			cr_buf_putc(out, '\n');
		}
		sqlite3_finalize(st);
	}
	sqlite3_close(db);
}

/*
 * cr_store_prepare_input writes the input event straight to bytes: it must
 * give what building it with cr_event_* and cr_store_prepare() gives, for
 * every path (quotes, backslashes, controls, UTF-8, not UTF-8, NUL) and at
 * the edges of sizes and times.
 */
static void test_prepare_input_is_canonical(void)
{
	static char dir_a[300], dir_b[300];
	static const char *const fixed[] = {
	    "/data/plain.bin",
	    "/q\"uote",
	    "/back\\slash",
	    "/c\x01\x1f\t\n\r\b\f",
	    "/del\x7f",
	    "/caf\xc3\xa9",
	    "/\xf0\x9f\x98\x80.bin",
	    "/bad\xff\xfe",
	    "/overlong\xc0\xaf",
	    "/surrogate\xed\xa0\x80",
	    "",
	    "/sp ace/\u00e9t\u00e9",
	};
	cr_store *a = NULL, *b = NULL;
	cr_store_prepared *pa = NULL, *pb = NULL;
	cr_store_state sa, sb;
	cr_buf da = CR_BUF_INIT, db = CR_BUF_INIT;
	uint64_t rng = 0x1234567;
	int mismatches = 0, n = 0;

	make_tmp();
	snprintf(dir_a, sizeof(dir_a), "%s-a", tmpdir);
	snprintf(dir_b, sizeof(dir_b), "%s-b", tmpdir);
	REQUIRE(cr_store_init(dir_a) == 0 && cr_store_init(dir_b) == 0);
	REQUIRE(cr_store_open(&a, dir_a, CR_STORE_WRITE) == 0);
	REQUIRE(cr_store_open(&b, dir_b, CR_STORE_WRITE) == 0);
	REQUIRE(cr_store_prepared_new(&pa) == 0 && cr_store_prepared_new(&pb) == 0);
	for (int i = 0; i < 400; i++) {
		char path[64];
		size_t len;
		uint8_t sha[32];
		uint64_t size;
		struct timespec t;
		json_t *ev = NULL;
		int ra, rb;

		rng = rng * 6364136223846793005ull + 1442695040888963407ull;
		if (i < (int)(sizeof(fixed) / sizeof(fixed[0]))) {
			len = strlen(fixed[i]);
			memcpy(path, fixed[i], len);
		} else if (i == 50) {
			memcpy(path, "/nul\0inside", 11); /* not a C string: path_b64 */
			len = 11;
		} else {
			len = 1 + (size_t)(rng >> 58);
			for (size_t k = 0; k < len; k++) {
				rng = rng * 6364136223846793005ull + 1442695040888963407ull;
				/* Mostly printable ASCII, some controls and high bytes. */
				path[k] =
				    (char)(k % 5 == 4 ? (rng >> 56) : 0x20 + (rng >> 57) % 95);
			}
		}
		fake_sha(i, sha);
		size = i == 1   ? 0
		       : i == 2 ? (uint64_t)CR_EVENT_INT_MAX
		       : i == 3 ? (uint64_t)CR_EVENT_INT_MAX + 1
		                : (rng >> 20) % 100000;
		t.tv_sec = i == 4   ? 0
		           : i == 5 ? 253402300799
		           : i == 6 ? 253402300800
		                    : 1795000000 + i;
		t.tv_nsec = i == 7   ? 999999999
		            : i == 8 ? 1000000000
		                     : (long)((rng >> 8) % 1000000000);
		if (cr_event_new(&ev, "input") != 0)
			break;
		ra = cr_event_set_path(ev, "path", path, len);
		if (!ra)
			ra = cr_event_set_hex(ev, "sha256", sha, 32);
		if (!ra)
			ra = cr_event_set_int(ev, "size",
			                      size > (uint64_t)INT64_MAX ? -1 : (int64_t)size);
		if (!ra)
			ra = cr_event_set_time(ev, "time", &t);
		if (!ra)
			ra = cr_event_set_str(ev, "via", "add");
		if (!ra)
			ra = cr_store_prepare(pa, ev);
		json_decref(ev);
		rb = cr_store_prepare_input(pb, path, len, sha, size, &t, "add");
		if ((ra == 0) != (rb == 0)) {
			fprintf(stderr, "event %d: prepared %d by JSON, %d directly\n", i, ra, rb);
			mismatches++;
			continue;
		}
		if (ra)
			continue; /* refused both ways: sizes and times out of range */
		n++;
		CHECK(cr_store_append_prepared(a, pa, NULL) == 0);
		CHECK(cr_store_append_prepared(b, pb, NULL) == 0);
		cr_store_state_get(a, &sa);
		cr_store_state_get(b, &sb);
		CHECK(cr_store_flush(a) == 0 && cr_store_flush(b) == 0);
		cr_store_state_get(a, &sa);
		cr_store_state_get(b, &sb);
		if (memcmp(sa.root, sb.root, 32) != 0) {
			fprintf(stderr, "event %d (path of %zu bytes) encodes differently\n", i,
			        len);
			mismatches++;
			break;
		}
	}
	CHECK(mismatches == 0);
	CHECK(n > 350);
	/* The index rows are the same too (leaf, type, path bytes, hash, size). */
	cr_store_free(a);
	cr_store_free(b);
	dump_index(dir_a, &da);
	dump_index(dir_b, &db);
	CHECK(da.len > 0 && da.len == db.len && memcmp(da.ptr, db.ptr, da.len) == 0);
	cr_buf_free(&da);
	cr_buf_free(&db);
	cr_store_prepared_free(pa);
	cr_store_prepared_free(pb);
	{
		char cmd[700];

		snprintf(cmd, sizeof(cmd), "rm -rf %s %s", dir_a, dir_b);
		(void)!system(cmd);
	}
}

TEST_MAIN(TEST(test_append_reopen_prove), TEST(test_index_catches_up), TEST(test_missing_store),
          TEST(test_old_schema_is_rebuilt), TEST(test_prepared_and_readers),
          TEST(test_prepare_input_is_canonical))
