/*
 * Unit tests: data-shard member manifests (recorder/shards.c) on archives
 * written here with libarchive: every format, links and special files,
 * duplicates, names that are not UTF-8, sparse members, the JSON form and
 * its digest, and hostile archives (truncated, garbage, compression bombs,
 * member count, name length and total caps, zip inside gzip, encryption).
 */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "cleanroom/shards.h"
#include "harness.h"
#include "util/buf.h"
#include "util/codec.h"

/* ------------------------------------------------------------ archives -- */

typedef struct item {
	const char *name;
	int type; /* AE_IFREG, AE_IFDIR, AE_IFLNK, AE_IFIFO; 0 = hardlink */
	const void *data;
	size_t len;
	const char *link;
} item;

enum { F_TAR, F_TGZ, F_TZST, F_ZIP, F_ZIP_GZ, F_ZIP_CRYPT, F_GNUTAR, F_TXZ };

static int64_t writer_cb(struct archive *a, void *ctx, const void *buf, size_t n)
{
	(void)a;
	return cr_buf_put(ctx, buf, n) == 0 ? (int64_t)n : -1;
}

static int open_cb(struct archive *a, void *ctx)
{
	(void)a;
	(void)ctx;
	return ARCHIVE_OK;
}

/* Write items as an archive into out; 0 on success, -1 when libarchive cannot. */
static int make_archive(cr_buf *out, int fmt, const item *items, size_t n)
{
	struct archive *a = archive_write_new();
	int rc = -1;

	cr_buf_clear(out);
	if (fmt == F_ZIP || fmt == F_ZIP_GZ || fmt == F_ZIP_CRYPT)
		archive_write_set_format_zip(a);
	else if (fmt == F_GNUTAR)
		archive_write_set_format_gnutar(a); /* raw name bytes, as old tars store them */
	else
		archive_write_set_format_pax_restricted(a);
	if (fmt == F_TGZ || fmt == F_ZIP_GZ)
		archive_write_add_filter_gzip(a);
	if (fmt == F_TZST && archive_write_add_filter_zstd(a) != ARCHIVE_OK)
		goto done;
	if (fmt == F_TXZ && archive_write_add_filter_xz(a) != ARCHIVE_OK)
		goto done;
	if (fmt == F_ZIP_CRYPT &&
	    (archive_write_set_options(a, "zip:encryption=zipcrypt") != ARCHIVE_OK ||
	     archive_write_set_passphrase(a, "secret") != ARCHIVE_OK))
		goto done;
	archive_write_set_bytes_in_last_block(a, 1); /* no padding to 10 KiB */
	if (archive_write_open2(a, out, open_cb, writer_cb, NULL, NULL) != ARCHIVE_OK)
		goto done;
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *e = archive_entry_new();

		archive_entry_copy_pathname(e, items[i].name);
		archive_entry_set_perm(e, 0644);
		if (items[i].type == 0) {
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_copy_hardlink(e, items[i].link);
		} else {
			archive_entry_set_filetype(e, (unsigned)items[i].type);
			if (items[i].type == AE_IFLNK)
				archive_entry_copy_symlink(e, items[i].link);
			if (items[i].type == AE_IFREG)
				archive_entry_set_size(e, (la_int64_t)items[i].len);
		}
		if (archive_write_header(a, e) != ARCHIVE_OK ||
		    (items[i].len && archive_write_data(a, items[i].data, items[i].len) !=
		                         (la_ssize_t)items[i].len)) {
			fprintf(stderr, "  libarchive: %s\n", archive_error_string(a));
			archive_entry_free(e);
			goto done;
		}
		archive_entry_free(e);
	}
	if (archive_write_close(a) == ARCHIVE_OK)
		rc = 0;
done:
	archive_write_free(a);
	return rc;
}

/* ------------------------------------------------------------- running -- */

static char tmpdir[512];

static int open_bytes(const char *name, const void *data, size_t n)
{
	const char *base = getenv("CR_TMP");
	char path[800];
	int fd;

	if (!tmpdir[0]) {
		snprintf(tmpdir, sizeof(tmpdir), "%s/shards-XXXXXX", base ? base : "/tmp");
		if (!mkdtemp(tmpdir))
			abort();
	}
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || (n && write(fd, data, n) != (ssize_t)n))
		abort();
	return fd;
}

/* Read bytes as a shard named name, with limits opts (may be NULL). */
static int read_shard(const char *name, const void *data, size_t n, const cr_shard_opts *opts,
                      cr_shard **out)
{
	int fd = open_bytes(name, data, n);
	int rc = cr_shard_read_ext(fd, name, opts, out);

	close(fd);
	return rc;
}

static int sha_is(const uint8_t *h, const void *data, size_t n)
{
	uint8_t want[CR_SHA256_SIZE];

	cr_sha256(want, data, n);
	return memcmp(want, h, CR_SHA256_SIZE) == 0;
}

static int fails_with(const char *name, const cr_buf *b, const cr_shard_opts *opts, int code,
                      const char *what)
{
	cr_shard *s = NULL;
	int rc = read_shard(name, b->ptr, b->len, opts, &s);

	cr_shard_free(s);
	if (rc != code || s != NULL || !strstr(cr_error_last(), name) ||
	    !strstr(cr_error_last(), what)) {
		fprintf(stderr, "  %s: want %d '%s', got %d '%s'\n", name, code, what, rc,
		        cr_error_last());
		return 0;
	}
	return 1;
}

/* --------------------------------------------------------------- tests -- */

static const char jpg[] = "\xff\xd8\xff\xe0 not really a jpeg";
static const char cls[] = "7\n";
static const char txt[] = "a caption";

static void check_samples(const cr_shard *s, const cr_buf *file)
{
	REQUIRE(s->n == 3);
	CHECK(strcmp(s->members[0].name, "000001.jpg") == 0 && s->members[0].kind == CR_SHARD_FILE);
	CHECK(s->members[0].size == sizeof(jpg) - 1 &&
	      sha_is(s->members[0].sha256, jpg, sizeof(jpg) - 1));
	CHECK(strcmp(s->members[1].name, "000001.cls") == 0 &&
	      sha_is(s->members[1].sha256, cls, 2));
	CHECK(strcmp(s->members[2].name, "sub/000001.txt") == 0 && s->members[2].size == 9);
	CHECK(s->file_size == file->len && sha_is(s->file_sha256, file->ptr, file->len));
	CHECK(s->n_duplicates == 0 && s->n_skipped == 0 &&
	      s->total_size == sizeof(jpg) - 1 + 2 + 9);
}

static void test_formats(void)
{
	static const item items[] = {
	    {"000001.jpg", AE_IFREG, jpg, sizeof(jpg) - 1, NULL},
	    {"000001.cls", AE_IFREG, cls, 2, NULL},
	    {"sub/", AE_IFDIR, NULL, 0, NULL},
	    {"sub/000001.txt", AE_IFREG, txt, 9, NULL},
	};
	static const struct {
		int fmt;
		const char *name, *format;
	} cases[] = {
	    {F_TAR, "s.tar", "tar"},
	    {F_TGZ, "s.tar.gz", "tar.gz"},
	    {F_TZST, "s.tar.zst", "tar.zst"},
	    {F_ZIP, "s.zip", "zip"},
	};
	cr_buf b = CR_BUF_INIT;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_shard *s = NULL;
		int fd;

		REQUIRE(make_archive(&b, cases[i].fmt, items, 4) == 0);
		CHECK(cr_shard_probe((const uint8_t *)b.ptr, b.len < 4096 ? b.len : 4096, NULL) ==
		      1);
		fd = open_bytes(cases[i].name, b.ptr, b.len);
		CHECK(lseek(fd, 7, SEEK_SET) == 7); /* the descriptor's offset is not used */
		CHECK(cr_shard_read(fd, cases[i].name, &s) == 0);
		CHECK(lseek(fd, 0, SEEK_CUR) == 7);
		close(fd);
		REQUIRE(s != NULL);
		CHECK(strcmp(s->format, cases[i].format) == 0);
		check_samples(s, &b);
		cr_shard_free(s);
	}
	cr_buf_free(&b);
}

static void test_links_specials_duplicates(void)
{
	static const item items[] = {
	    {"a.txt", AE_IFREG, "one", 3, NULL},   {"link", AE_IFLNK, NULL, 0, "a.txt"},
	    {"hard", 0, NULL, 0, "a.txt"},         {"pipe", AE_IFIFO, NULL, 0, NULL},
	    {"a.txt", AE_IFREG, "two", 3, NULL},   {"b.txt", AE_IFREG, "", 0, NULL},
	    {"a.txt", AE_IFREG, "three", 5, NULL},
	};
	cr_buf b = CR_BUF_INIT;
	cr_shard *s = NULL;

	REQUIRE(make_archive(&b, F_TAR, items, sizeof(items) / sizeof(items[0])) == 0);
	REQUIRE(read_shard("links.tar", b.ptr, b.len, NULL, &s) == 0);
	REQUIRE(s->n == 6);
	CHECK(s->members[1].kind == CR_SHARD_SYMLINK && strcmp(s->members[1].target, "a.txt") == 0);
	CHECK(s->members[2].kind == CR_SHARD_HARDLINK &&
	      strcmp(s->members[2].target, "a.txt") == 0);
	CHECK(s->members[1].size == 0 && s->members[2].size == 0);
	CHECK(s->n_skipped == 1);
	CHECK(!s->members[0].duplicate && s->members[3].duplicate && s->members[5].duplicate);
	CHECK(!s->members[4].duplicate && s->members[4].size == 0 &&
	      sha_is(s->members[4].sha256, "", 0));
	CHECK(s->n_duplicates == 2);
	CHECK(sha_is(s->members[5].sha256, "three", 5));
	cr_shard_free(s);
	cr_buf_free(&b);
}

static void test_json_and_digest(void)
{
	static const item items[] = {
	    {"caf\xe9.jpg", AE_IFREG, "latin-1 name", 12, NULL},
	    {"ok.txt", AE_IFREG, "x", 1, NULL},
	    {"ok.txt", AE_IFREG, "y", 1, NULL},
	    {"l", AE_IFLNK, NULL, 0, "\xff"},
	    {"dev", AE_IFCHR, NULL, 0, NULL},
	};
	cr_buf b = CR_BUF_INIT, enc = CR_BUF_INIT, raw = CR_BUF_INIT;
	cr_shard *s = NULL;
	json_t *j = NULL, *m;
	uint8_t d[CR_SHA256_SIZE];
	char hex[65];

	REQUIRE(make_archive(&b, F_GNUTAR, items, sizeof(items) / sizeof(items[0])) == 0);
	REQUIRE(read_shard("json.tar", b.ptr, b.len, NULL, &s) == 0);
	REQUIRE(s->n == 4);
	CHECK(s->members[0].name_len == 8 && memcmp(s->members[0].name, "caf\xe9.jpg", 8) == 0);
	REQUIRE(cr_shard_json(s, &j) == 0);
	REQUIRE(cr_event_encode(j, &enc) == 0);
	cr_sha256(d, enc.ptr, enc.len);
	CHECK(memcmp(d, s->digest, CR_SHA256_SIZE) == 0);
	CHECK(strcmp(json_string_value(json_object_get(j, "type")), "shard_manifest") == 0);
	CHECK(strcmp(json_string_value(json_object_get(j, "format")), "tar") == 0);
	CHECK(json_integer_value(json_object_get(j, "size")) == (json_int_t)b.len);
	CHECK(json_integer_value(json_object_get(j, "skipped")) == 1);
	cr_hex_encode(hex, s->file_sha256, CR_SHA256_SIZE);
	CHECK(strcmp(json_string_value(json_object_get(j, "sha256")), hex) == 0);
	m = json_array_get(json_object_get(j, "members"), 0);
	/* Not UTF-8: base64 of the raw bytes, read back losslessly. */
	CHECK(json_object_get(m, "name") == NULL);
	CHECK(strcmp(json_string_value(json_object_get(m, "name_b64")), "Y2Fm6S5qcGc=") == 0);
	CHECK(cr_event_get_path(m, "name", &raw) == 0 && raw.len == 8 &&
	      memcmp(raw.ptr, "caf\xe9.jpg", 8) == 0);
	CHECK(json_integer_value(json_object_get(m, "size")) == 12);
	CHECK(json_object_get(m, "duplicate") == NULL);
	m = json_array_get(json_object_get(j, "members"), 2);
	CHECK(json_is_true(json_object_get(m, "duplicate")));
	m = json_array_get(json_object_get(j, "members"), 3);
	CHECK(strcmp(json_string_value(json_object_get(m, "kind")), "symlink") == 0);
	CHECK(strcmp(json_string_value(json_object_get(m, "target_b64")), "/w==") == 0);
	CHECK(json_object_get(m, "sha256") == NULL && json_object_get(m, "size") == NULL);
	/* The digest covers the content: another byte in a member changes it. */
	{
		cr_shard *s2 = NULL;
		item other[5];

		memcpy(other, items, sizeof(other));
		other[1].data = "z";
		REQUIRE(make_archive(&b, F_GNUTAR, other, 5) == 0);
		REQUIRE(read_shard("json2.tar", b.ptr, b.len, NULL, &s2) == 0);
		CHECK(memcmp(s2->digest, s->digest, CR_SHA256_SIZE) != 0);
		cr_shard_free(s2);
	}
	json_decref(j);
	cr_shard_free(s);
	cr_buf_free(&b);
	cr_buf_free(&enc);
	cr_buf_free(&raw);
}

/* Set a tar header's checksum. */
static void tar_checksum(uint8_t *h)
{
	unsigned sum = 0;

	memset(h + 148, ' ', 8);
	for (int i = 0; i < 512; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
}

/*
 * An old-GNU sparse member ('S'), written by hand from the GNU tar format:
 * 3 MiB of which only 4 bytes at 1 MiB are stored. Holes are hashed as the
 * zeros an extractor writes.
 */
static void test_sparse_member(void)
{
	const size_t size = 3 << 20;
	uint8_t *full = calloc(1, size), tar[512 * 4];
	cr_shard *s = NULL;

	REQUIRE(full != NULL);
	memset(tar, 0, sizeof(tar));
	memcpy(tar, "sparse.bin", 10);
	memcpy(tar + 100, "0000644", 7);
	memcpy(tar + 108, "0000000", 7);
	memcpy(tar + 116, "0000000", 7);
	snprintf((char *)tar + 124, 12, "%011o", 4u); /* bytes stored */
	memcpy(tar + 136, "00000000000", 11);
	tar[156] = 'S';
	memcpy(tar + 257, "ustar  ", 8);                          /* old GNU magic and version */
	snprintf((char *)tar + 386, 12, "%011o", 1u << 20);       /* sparse[0].offset */
	snprintf((char *)tar + 398, 12, "%011o", 4u);             /* sparse[0].numbytes */
	snprintf((char *)tar + 483, 12, "%011o", (unsigned)size); /* realsize */
	tar_checksum(tar);
	memcpy(tar + 512, "data", 4);
	memcpy(full + (1 << 20), "data", 4);
	REQUIRE(read_shard("sparse.tar", tar, sizeof(tar), NULL, &s) == 0);
	REQUIRE(s->n == 1);
	CHECK(strcmp(s->members[0].name, "sparse.bin") == 0);
	CHECK(s->members[0].size == size);
	CHECK(sha_is(s->members[0].sha256, full, size));
	cr_shard_free(s);
	/* The same sparse map claiming 8 GiB is stopped by the ratio check. */
	memcpy(tar + 483, "77777777777", 11);
	tar_checksum(tar);
	CHECK(read_shard("sparse-bomb.tar", tar, sizeof(tar), NULL, &s) == CR_EINVAL && s == NULL);
	CHECK(strstr(cr_error_last(), "sparse-bomb.tar") != NULL);
	free(full);
}

static void test_truncated(void)
{
	static char big[200000];
	static const item items[] = {
	    {"a.bin", AE_IFREG, big, sizeof(big), NULL},
	    {"b.bin", AE_IFREG, big, 1000, NULL},
	};
	cr_buf b = CR_BUF_INIT, cut = CR_BUF_INIT;
	int fmts[3] = {F_TAR, F_TGZ, F_TZST};

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7 + i / 1000);
	for (int f = 0; f < 3; f++) {
		REQUIRE(make_archive(&b, fmts[f], items, 2) == 0);
		/* Cut inside the first member's data, inside a header, inside the second's data. */
		size_t at[3] = {b.len / 3, f == F_TAR ? 512 + 100 : 30,
		                b.len - (f == F_TAR ? 2048 : 10)};

		for (int k = 0; k < 3; k++) {
			cr_buf_clear(&cut);
			cr_buf_put(&cut, b.ptr, at[k]);
			CHECK(fails_with("cut.tar", &cut, NULL, CR_EINVAL, "not a readable shard"));
		}
	}
	/* A zip cut in its first member. */
	REQUIRE(make_archive(&b, F_ZIP, items, 2) == 0);
	cr_buf_clear(&cut);
	cr_buf_put(&cut, b.ptr, b.len / 3);
	CHECK(fails_with("cut.zip", &cut, NULL, CR_EINVAL, "not a readable shard"));
	cr_buf_free(&b);
	cr_buf_free(&cut);
}

static void test_not_archives(void)
{
	cr_buf b = CR_BUF_INIT;
	static const item items[] = {{"x", AE_IFREG, "x", 1, NULL}};

	CHECK(fails_with("empty.tar", &b, NULL, CR_EINVAL, "empty file"));
	cr_buf_puts(&b, "just some text, not an archive at all\n");
	CHECK(fails_with("text.tar", &b, NULL, CR_EINVAL, "not a readable shard"));
	/* A gzip of text is compressed, but not a tar. */
	{
		struct archive *a = archive_write_new();
		struct archive_entry *e = archive_entry_new();

		cr_buf_clear(&b);
		archive_write_set_format_raw(a);
		archive_write_add_filter_gzip(a);
		archive_write_open2(a, &b, open_cb, writer_cb, NULL, NULL);
		archive_entry_set_filetype(e, AE_IFREG);
		archive_write_header(a, e);
		archive_write_data(a, "hello hello hello\n", 18);
		archive_write_close(a);
		archive_write_free(a);
		archive_entry_free(e);
		CHECK(fails_with("text.gz", &b, NULL, CR_EINVAL, "not a readable shard"));
		CHECK(cr_shard_probe((const uint8_t *)b.ptr, b.len, "text.gz") == 0);
	}
	/* xz lets the file choose the decoder's memory (up to 4 GiB): not read. */
	REQUIRE(make_archive(&b, F_TXZ, items, 1) == 0);
	CHECK(fails_with("x.tar.xz", &b, NULL, CR_EINVAL, "not a readable shard"));
	CHECK(cr_shard_probe((const uint8_t *)b.ptr, b.len, "x.tar.xz") == 0);
	REQUIRE(make_archive(&b, F_ZIP_GZ, items, 1) == 0);
	CHECK(fails_with("zip.gz", &b, NULL, CR_EINVAL, "a zip inside gz"));
	if (make_archive(&b, F_ZIP_CRYPT, items, 1) == 0)
		CHECK(fails_with("crypt.zip", &b, NULL, CR_EINVAL, "encrypted"));
	else
		fprintf(stderr, "  (this libarchive cannot write encrypted zips: check skipped)\n");
	cr_buf_free(&b);
}

static void test_limits(void)
{
	static char zeros[4 << 20];
	static const item many[] = {
	    {"1", AE_IFREG, "1", 1, NULL},
	    {"2", AE_IFREG, "2", 1, NULL},
	    {"d/", AE_IFDIR, NULL, 0, NULL},
	    {"3", AE_IFREG, "3", 1, NULL},
	};
	static const item longname[] = {{"0123456789abcdefghij", AE_IFREG, "x", 1, NULL}};
	static const item bomb[] = {{"zeros.bin", AE_IFREG, zeros, sizeof(zeros), NULL}};
	cr_buf b = CR_BUF_INIT;
	cr_shard_opts o;
	cr_shard *s = NULL;

	/* Entries of every kind count, directories too. */
	memset(&o, 0, sizeof(o));
	o.max_members = 3;
	REQUIRE(make_archive(&b, F_TAR, many, 4) == 0);
	CHECK(fails_with("many.tar", &b, &o, CR_EINVAL, "more than 3 entries"));
	o.max_members = 4;
	CHECK(read_shard("many.tar", b.ptr, b.len, &o, &s) == 0 && s && s->n == 3);
	cr_shard_free(s);

	memset(&o, 0, sizeof(o));
	o.max_name = 19;
	REQUIRE(make_archive(&b, F_TAR, longname, 1) == 0);
	CHECK(fails_with("long.tar", &b, &o, CR_EINVAL, "name longer than 19 bytes"));
	o.max_name = 20;
	CHECK(read_shard("long.tar", b.ptr, b.len, &o, &s) == 0);
	cr_shard_free(s);

	/* 4 MiB of zeros compress about 1000:1 with gzip and far more with zstd. */
	REQUIRE(make_archive(&b, F_TZST, bomb, 1) == 0);
	CHECK(b.len < 4096);
	memset(&o, 0, sizeof(o));
	o.ratio_floor = 1 << 20;
	o.max_ratio = 100;
	CHECK(fails_with("bomb.tar.zst", &b, &o, CR_EINVAL, "compression bomb"));
	/* Under the floor, or within the ratio, it is read. */
	o.ratio_floor = 8 << 20;
	CHECK(read_shard("bomb.tar.zst", b.ptr, b.len, &o, &s) == 0 && s &&
	      s->members[0].size == sizeof(zeros) &&
	      sha_is(s->members[0].sha256, zeros, sizeof(zeros)));
	cr_shard_free(s);
	o.ratio_floor = 1 << 20;
	o.max_ratio = 1000000;
	CHECK(read_shard("bomb.tar.zst", b.ptr, b.len, &o, &s) == 0);
	cr_shard_free(s);
	/* The hard cap on total bytes, whatever the ratio. */
	REQUIRE(make_archive(&b, F_TAR, bomb, 1) == 0);
	memset(&o, 0, sizeof(o));
	o.max_total = 3 << 20;
	CHECK(fails_with("total.tar", &b, &o, CR_EINVAL, "uncompressed bytes (the limit)"));
	cr_buf_free(&b);
}

static void test_probe(void)
{
	static const item items[] = {{"x.txt", AE_IFREG, "x", 1, NULL}};
	uint8_t zeros[1024] = {0};
	cr_buf b = CR_BUF_INIT;
	char text[600];

	memset(text, 'a', sizeof(text));
	CHECK(cr_shard_probe((const uint8_t *)text, sizeof(text), "data.tar") == 0);
	CHECK(cr_shard_probe(zeros, sizeof(zeros), "empty.tar") == 1);
	CHECK(cr_shard_probe(zeros, sizeof(zeros), "zeros.bin") == 0);
	CHECK(cr_shard_probe((const uint8_t *)"PK\x03\x04", 4, NULL) == 1);
	CHECK(cr_shard_probe((const uint8_t *)"PK", 2, "x.zip") == 0);
	REQUIRE(make_archive(&b, F_TAR, items, 1) == 0);
	CHECK(cr_shard_probe((const uint8_t *)b.ptr, 512, "no-extension") == 1);
	b.ptr[150] ^= 1; /* the header checksum no longer matches */
	CHECK(cr_shard_probe((const uint8_t *)b.ptr, 512, "x.tar") == 0);
	REQUIRE(make_archive(&b, F_TZST, items, 1) == 0);
	CHECK(cr_shard_probe((const uint8_t *)b.ptr, b.len, NULL) == 1);
	REQUIRE(make_archive(&b, F_TGZ, items, 1) == 0);
	CHECK(cr_shard_probe((const uint8_t *)b.ptr, b.len, NULL) == 1);
	/* Too short a compressed head to inflate a block: the name decides. */
	CHECK(cr_shard_probe((const uint8_t *)b.ptr, 12, "x.tgz") == 1);
	CHECK(cr_shard_probe((const uint8_t *)b.ptr, 12, "x.gz") == 0);
	cr_buf_free(&b);
}

TEST_MAIN(TEST(test_formats), TEST(test_links_specials_duplicates), TEST(test_json_and_digest),
          TEST(test_sparse_member), TEST(test_truncated), TEST(test_not_archives),
          TEST(test_limits), TEST(test_probe))
