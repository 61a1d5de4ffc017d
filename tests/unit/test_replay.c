/*
 * cr_replay on stores holding events no honest recording writes: paths that
 * climb out of the checkpoints folder, and no checkpoint at all.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/replay.h"
#include "cleanroom/store.h"
#include "cleanroom/tensors.h"
#include "util/codec.h"
#include "harness.h"

static char tmpdir[256], store_dir[300], ckpt_dir[300];

static void setup(void)
{
	const char *base = getenv("CR_TMP");
	char p[400];
	FILE *f;

	if (!base)
		base = "/tmp";
	mkdir(base, 0700);
	snprintf(tmpdir, sizeof(tmpdir), "%s/replay-XXXXXX", base);
	if (!mkdtemp(tmpdir))
		abort();
	snprintf(store_dir, sizeof(store_dir), "%s/store", tmpdir);
	snprintf(ckpt_dir, sizeof(ckpt_dir), "%s/ck", tmpdir);
	mkdir(ckpt_dir, 0700);
	/* a file the escaping path would reach, and an honest checkpoint */
	snprintf(p, sizeof(p), "%s/secret.pt", tmpdir);
	if ((f = fopen(p, "wb")) == NULL)
		abort();
	fputs("outside the checkpoints folder", f);
	fclose(f);
	snprintf(p, sizeof(p), "%s/a.pt", ckpt_dir);
	if ((f = fopen(p, "wb")) == NULL)
		abort();
	fputs("a checkpoint", f);
	fclose(f);
}

static void teardown(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	(void)!system(cmd);
}

static void append_checkpoint(cr_store *s, const char *path)
{
	json_t *ev = NULL;
	uint64_t at;

	REQUIRE(cr_event_new(&ev, "checkpoint") == 0);
	REQUIRE(cr_event_set_str(ev, "path", path) == 0);
	REQUIRE(cr_event_set_str(ev, "sha256", "0000000000000000000000000000000000000000000000000000000000000000") == 0);
	CHECK(cr_store_append(s, ev, &at) == 0);
	json_decref(ev);
}

typedef struct rows {
	int n;
	char status[4][32];
	char problem[4][512];
} rows;

static void on_row(void *ctx, const json_t *row)
{
	rows *r = ctx;
	const json_t *p = json_array_get(json_object_get(row, "problems"), 0);

	if (r->n >= 4)
		return;
	snprintf(r->status[r->n], sizeof(r->status[0]), "%s",
	         json_string_value(json_object_get(row, "status")) ?: "");
	snprintf(r->problem[r->n], sizeof(r->problem[0]), "%s", p ? json_string_value(p) : "");
	r->n++;
}

static void test_path_climbing_out(void)
{
	cr_replay_options o = {0};
	cr_replay_summary sum;
	cr_store *s = NULL;
	rows r = {0};
	char a[400], evil[400];

	setup();
	REQUIRE(cr_store_init(store_dir) == 0);
	REQUIRE(cr_store_open(&s, store_dir, CR_STORE_WRITE) == 0);
	/* recorded under /r/ck: the common folder is /r/ck, the second climbs out to a real file */
	snprintf(a, sizeof(a), "/r/ck/a.pt");
	snprintf(evil, sizeof(evil), "/r/ck/../secret.pt");
	append_checkpoint(s, a);
	append_checkpoint(s, evil);
	CHECK(cr_store_flush(s) == 0);
	cr_store_free(s);

	o.store = store_dir;
	o.checkpoints_dir = ckpt_dir;
	CHECK(cr_replay(&o, on_row, &r, &sum) == CR_EVERIFY);
	CHECK(r.n == 2);
	CHECK(strcmp(r.status[1], "mismatch") == 0);
	CHECK(strstr(r.problem[1], "does not map to a file below") != NULL);
	CHECK(sum.failed == 2); /* a.pt's recorded hash is zeros: a mismatch as well */
	teardown();
}

static void test_nothing_to_replay(void)
{
	cr_replay_options o = {0};
	cr_replay_summary sum;
	rows r = {0};

	setup();
	REQUIRE(cr_store_init(store_dir) == 0);
	o.store = store_dir;
	o.checkpoints_dir = ckpt_dir;
	CHECK(cr_replay(&o, on_row, &r, &sum) == CR_EVERIFY);
	CHECK(r.n == 0 && sum.checkpoints == 0);
	CHECK(strstr(cr_error_last(), "no checkpoint") != NULL);
	teardown();
}

/* An event whose manifest digest does not cover its manifest is named. */
static void test_manifest_digest(void)
{
	cr_manifest_opts mo = CR_MANIFEST_OPTS_INIT;
	cr_replay_options o = {0};
	cr_replay_summary sum;
	cr_manifest *m = NULL;
	cr_store *s = NULL;
	json_t *ev = NULL, *mj = NULL;
	rows r = {0};
	char p[400], hex[65];
	uint64_t at;
	int fd;

	setup();
	snprintf(p, sizeof(p), "%s/a.pt", ckpt_dir);
	REQUIRE((fd = open(p, O_RDONLY)) >= 0);
	mo.want_file_sha256 = 1;
	REQUIRE(cr_manifest_read(fd, &mo, &m, NULL, NULL) == 0);
	close(fd);
	REQUIRE(cr_manifest_json(m, &mj) == 0);
	REQUIRE(cr_store_init(store_dir) == 0);
	REQUIRE(cr_store_open(&s, store_dir, CR_STORE_WRITE) == 0);
	REQUIRE(cr_event_new(&ev, "checkpoint") == 0);
	cr_event_set_str(ev, "path", "/r/ck/a.pt");
	cr_hex_encode(hex, m->file_sha256, 32);
	cr_event_set_str(ev, "sha256", hex);
	json_object_set_new(ev, "tensors", mj);
	m->digest[0] ^= 1; /* not the manifest's digest */
	cr_event_set_hex(ev, "tensors_sha256", m->digest, 32);
	CHECK(cr_store_append(s, ev, &at) == 0);
	CHECK(cr_store_flush(s) == 0);
	cr_store_free(s);
	json_decref(ev);
	cr_manifest_free(m);

	o.store = store_dir;
	o.checkpoints_dir = ckpt_dir;
	CHECK(cr_replay(&o, on_row, &r, &sum) == CR_EVERIFY);
	CHECK(r.n == 1 && strcmp(r.status[0], "mismatch") == 0);
	CHECK(strstr(r.problem[0], "the recorded manifest's digest") != NULL);
	teardown();
}

TEST_MAIN(TEST(test_path_climbing_out), TEST(test_nothing_to_replay), TEST(test_manifest_digest))
