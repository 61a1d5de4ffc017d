/*
 * Unit tests for the store: append and flush, reopen resumes exactly,
 * proofs from the index equal proofs over the leaves in memory, the writer
 * lock, and the index catching up after it fell behind the log.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

TEST_MAIN(TEST(test_append_reopen_prove), TEST(test_index_catches_up), TEST(test_missing_store))
