/*
 * Unit tests for recorder/tensors: the manifest engine (routing of fed
 * bytes, shared ranges, gaps, the file hash on its thread, the fallback,
 * digest and JSON round trip), the numeric delta (against the file in place
 * and against a base file after the checkpoint was overwritten), and the
 * safetensors and GGUF readers on good files and on every malformed case
 * they must refuse with CR_EINVAL and a message naming the file.
 *
 * Files are built in memory here, byte by byte, and written to a mkdtemp
 * folder under $CR_TMP (or /tmp), removed at exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "cleanroom/tensors.h"
#include "harness.h"
#include "recorder/tensors/tensors_internal.h"
#include "util/buf.h"
#include "util/codec.h"



/* Write data to a fresh file name and return it open for reading (or -1). */
static int file_with(const char *name, const void *data, size_t len)
{
	const char *path = harness_tmp_path(name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	const uint8_t *p = data;

	if (fd < 0)
		return -1;
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n <= 0) {
			close(fd);
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	close(fd);
	return open(path, O_RDONLY);
}

/* ------------------------------------------------------ file builders -- */

static void put_le(cr_buf *b, uint64_t v, int n)
{
	for (int i = 0; i < n; i++)
		cr_buf_putc(b, (char)(v >> (8 * i)));
}

typedef struct st_tensor {
	const char *name;
	const char *dtype;
	int ndim;
	uint64_t shape[4];
	const void *data;
	size_t len;
} st_tensor;

/* A safetensors file of the tensors in order; extra JSON appended to the header if given. */
static void build_st(cr_buf *out, const st_tensor *t, size_t n, const char *extra)
{
	cr_buf h = CR_BUF_INIT;
	uint64_t off = 0;

	cr_buf_putc(&h, '{');
	for (size_t i = 0; i < n; i++) {
		cr_buf_printf(&h, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", t[i].name,
		              t[i].dtype);
		for (int k = 0; k < t[i].ndim; k++)
			cr_buf_printf(&h, "%s%llu", k ? "," : "",
			              (unsigned long long)t[i].shape[k]);
		cr_buf_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
		              (unsigned long long)(off + t[i].len));
		off += t[i].len;
	}
	if (extra)
		cr_buf_printf(&h, "%s%s", n ? "," : "", extra);
	cr_buf_putc(&h, '}');
	while (h.len % 8)
		cr_buf_putc(&h, ' ');
	cr_buf_clear(out);
	put_le(out, h.len, 8);
	cr_buf_put(out, h.ptr, h.len);
	for (size_t i = 0; i < n; i++)
		cr_buf_put(out, t[i].data, t[i].len);
	cr_buf_free(&h);
}

/* A safetensors file from a literal header and data. */
static void raw_st(cr_buf *out, const char *header, const void *data, size_t len)
{
	cr_buf_clear(out);
	put_le(out, strlen(header), 8);
	cr_buf_puts(out, header);
	cr_buf_put(out, data, len);
}

/* Read a manifest from bytes; returns the code, *m set on success. */
static int manifest_of(const char *name, const cr_buf *b, cr_manifest **m, int want_file)
{
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	int fd = file_with(name, b->ptr, b->len), rc;

	if (fd < 0)
		return -999;
	o.name = name;
	o.want_file_sha256 = want_file;
	rc = cr_manifest_read(fd, &o, m, NULL, NULL);
	close(fd);
	return rc;
}

/* Expect CR_EINVAL with a message naming the file and containing what. */
static int refused(const char *name, const cr_buf *b, const char *what)
{
	cr_manifest *m = NULL;
	int rc = manifest_of(name, b, &m, 0);
	const char *msg = cr_error_last();

	if (rc != CR_EINVAL || m != NULL || !strstr(msg, name) || (what && !strstr(msg, what))) {
		fprintf(stderr, "  %s: rc %d, message: %s\n", name, rc, msg);
		cr_manifest_free(m);
		return 0;
	}
	return 1;
}

static const cr_tensor *find_tensor(const cr_manifest *m, const char *name)
{
	for (size_t i = 0; i < m->n; i++)
		if (strcmp(m->tensors[i].name, name) == 0)
			return &m->tensors[i];
	return NULL;
}

static int hash_is(const uint8_t *h, const void *data, size_t len)
{
	uint8_t want[CR_SHA256_SIZE];

	cr_sha256(want, data, len);
	return memcmp(h, want, CR_SHA256_SIZE) == 0;
}

/* ------------------------------------------------------- safetensors -- */

static float f32a[6] = {1, 2, 3, 4, 5, 6};
static int64_t i64a[3] = {7, 8, -9};
static uint16_t f16a[4] = {0x3c00, 0x4000, 0xbc00, 0x0000}; /* 1, 2, -1, 0 */

static void test_safetensors_basic(void)
{
	st_tensor t[] = {
	    {"w", "F32", 2, {2, 3}, f32a, sizeof(f32a)},
	    {"b.idx", "I64", 1, {3}, i64a, sizeof(i64a)},
	    {"h", "F16", 2, {2, 2}, f16a, sizeof(f16a)},
	};
	cr_buf b = CR_BUF_INIT, enc = CR_BUF_INIT;
	cr_manifest *m = NULL, *back = NULL;
	json_t *j = NULL;
	const cr_tensor *w;
	uint64_t hlen;

	build_st(&b, t, 3, "\"__metadata__\":{\"format\":\"pt\"}");
	REQUIRE(manifest_of("basic.safetensors", &b, &m, 1) == 0);
	hlen = 0;
	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | (uint8_t)b.ptr[i];
	CHECK(strcmp(m->format, "safetensors") == 0);
	CHECK(m->note == NULL);
	CHECK(m->n == 3);
	CHECK(m->file_size == b.len);
	CHECK(m->have_file_sha256 && hash_is(m->file_sha256, b.ptr, b.len));
	w = find_tensor(m, "w");
	REQUIRE(w != NULL);
	CHECK(strcmp(w->dtype, "F32") == 0 && w->fkind == CR_FLOAT_F32);
	CHECK(w->ndim == 2 && w->shape[0] == 2 && w->shape[1] == 3);
	CHECK(w->offset == 8 + hlen && w->length == sizeof(f32a));
	CHECK(hash_is(w->sha256, f32a, sizeof(f32a)));
	CHECK(find_tensor(m, "b.idx") &&
	      hash_is(find_tensor(m, "b.idx")->sha256, i64a, sizeof(i64a)));
	CHECK(find_tensor(m, "h") && find_tensor(m, "h")->fkind == CR_FLOAT_F16);
	/* data order */
	CHECK(strcmp(m->tensors[0].name, "w") == 0 && strcmp(m->tensors[2].name, "h") == 0);
	/* digest = SHA-256 of the canonical JSON */
	REQUIRE(cr_manifest_json(m, &j) == 0);
	REQUIRE(cr_event_encode(j, &enc) == 0);
	CHECK(hash_is(m->digest, enc.ptr, enc.len));
	CHECK(strstr(enc.ptr, "\"format\":\"safetensors\"") != NULL);
	/* round trip through JSON */
	REQUIRE(cr_manifest_from_json(j, &back) == 0);
	CHECK(back->n == 3 && memcmp(back->digest, m->digest, CR_SHA256_SIZE) == 0);
	CHECK(strcmp(back->tensors[0].name, "w") == 0 && back->tensors[0].fkind == CR_FLOAT_F32);
	cr_manifest_free(back);
	back = NULL;
	/* a tampered hash in the JSON changes the digest; a bad field is refused */
	json_object_set_new(json_array_get(json_object_get(j, "tensors"), 0), "sha256",
	                    json_string("00000000000000000000000000000000"
	                                "00000000000000000000000000000000"));
	REQUIRE(cr_manifest_from_json(j, &back) == 0);
	CHECK(memcmp(back->digest, m->digest, CR_SHA256_SIZE) != 0);
	cr_manifest_free(back);
	back = NULL;
	{
		/* a repeated name is refused */
		json_t *j2 = json_deep_copy(j);

		json_object_set_new(json_array_get(json_object_get(j2, "tensors"), 1), "name",
		                    json_string("w"));
		CHECK(cr_manifest_from_json(j2, &back) == CR_EINVAL && back == NULL);
		CHECK(strstr(cr_error_last(), "appears twice") != NULL);
		json_decref(j2);
	}
	json_object_set_new(json_array_get(json_object_get(j, "tensors"), 0), "sha256",
	                    json_string("XYZ"));
	CHECK(cr_manifest_from_json(j, &back) == CR_EINVAL && back == NULL);
	json_object_set_new(json_array_get(json_object_get(j, "tensors"), 0), "shape",
	                    json_integer(3));
	CHECK(cr_manifest_from_json(j, &back) == CR_EINVAL);
	json_decref(j);
	cr_buf_free(&enc);
	cr_manifest_free(m);
	cr_buf_free(&b);
}

static void test_safetensors_empty_and_zero(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_manifest *m = NULL;
	st_tensor t[] = {
	    {"z", "F32", 2, {0, 5}, "", 0},
	    {"w", "F32", 2, {2, 3}, f32a, sizeof(f32a)},
	};

	raw_st(&b, "{}      ", NULL, 0);
	REQUIRE(manifest_of("empty.safetensors", &b, &m, 1) == 0);
	CHECK(m->n == 0 && strcmp(m->format, "safetensors") == 0);
	CHECK(hash_is(m->file_sha256, b.ptr, b.len));
	cr_manifest_free(m);
	m = NULL;
	build_st(&b, t, 2, NULL);
	REQUIRE(manifest_of("zero.safetensors", &b, &m, 0) == 0);
	CHECK(m->n == 2 && find_tensor(m, "z") && find_tensor(m, "z")->length == 0);
	CHECK(hash_is(find_tensor(m, "z")->sha256, "", 0));
	CHECK(!m->have_file_sha256);
	cr_manifest_free(m);
	cr_buf_free(&b);
}

static void test_safetensors_malformed(void)
{
	cr_buf b = CR_BUF_INIT;
	uint8_t data[64] = {0};

	/* truncated: fewer than 8 bytes */
	cr_buf_clear(&b);
	cr_buf_put(&b, "\x10\0\0\0\0\0", 6);
	/* a 6-byte file is no safetensors by its probe: it falls back, so force the format */
	{
		cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
		cr_manifest *m = NULL;
		int fd = file_with("short.safetensors", b.ptr, b.len);

		o.name = "short.safetensors";
		o.format = "safetensors";
		CHECK(cr_manifest_read(fd, &o, &m, NULL, NULL) == CR_EINVAL);
		CHECK(strstr(cr_error_last(), "short.safetensors") &&
		      strstr(cr_error_last(), "truncated"));
		close(fd);
	}
	/* header length beyond the file */
	raw_st(&b, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", data, 4);
	b.ptr[0] = (char)0xff;
	b.ptr[1] = 0x01; /* 511 bytes of header in a ~70-byte file */
	CHECK(refused("hlen-file.safetensors", &b, "exceeds the file"));
	/* header length beyond the cap */
	memcpy(b.ptr, "\x00\x00\x00\x10\x00\x00\x00\x00", 8); /* 256 MiB */
	{
		cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
		cr_manifest *m = NULL;
		int fd = file_with("hlen-cap.safetensors", b.ptr, b.len);

		o.name = "hlen-cap.safetensors";
		o.format = "safetensors";
		CHECK(cr_manifest_read(fd, &o, &m, NULL, NULL) == CR_EINVAL);
		CHECK(strstr(cr_error_last(), "cap") != NULL);
		close(fd);
	}
	raw_st(&b, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}", data, 4);
	CHECK(refused("badjson.safetensors", &b, "not valid JSON"));
	raw_st(&b,
	       "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	       "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}",
	       data, 8);
	CHECK(refused("dupkey.safetensors", &b, "not valid JSON"));
	raw_st(&b, "{\"a\":{\"dtype\":\"Q4\",\"shape\":[4],\"data_offsets\":[0,4]}}", data, 4);
	CHECK(refused("dtype.safetensors", &b, "unknown dtype"));
	raw_st(&b, "{\"a\":{\"shape\":[4],\"data_offsets\":[0,4]}}", data, 4);
	CHECK(refused("nodtype.safetensors", &b, "dtype"));
	raw_st(&b,
	       "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
	       data, 6);
	CHECK(refused("overlap.safetensors", &b, "overlap"));
	raw_st(&b,
	       "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
	       "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
	       data, 4);
	CHECK(refused("same-range.safetensors", &b, "overlap"));
	raw_st(&b, "{\"a\":{\"dtype\":\"U8\",\"shape\":[40],\"data_offsets\":[0,40]}}", data, 8);
	CHECK(refused("range.safetensors", &b, "beyond the data section"));
	raw_st(&b, "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", data, 4);
	CHECK(refused("begin-end.safetensors", &b, "begin"));
	raw_st(&b, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", data, 4);
	CHECK(refused("length.safetensors", &b, "needs 8"));
	raw_st(&b,
	       "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],"
	       "\"data_offsets\":[0,4]}}",
	       data, 4);
	CHECK(refused("absurd.safetensors", &b, "absurd"));
	raw_st(&b,
	       "{\"a\":{\"dtype\":\"F32\",\"shape\":[9223372036854775807,3],"
	       "\"data_offsets\":[0,4]}}",
	       data, 4);
	CHECK(refused("absurd2.safetensors", &b, "absurd"));
	raw_st(&b, "{\"a\":{\"dtype\":\"U8\",\"shape\":[-4],\"data_offsets\":[0,4]}}", data, 4);
	CHECK(refused("negdim.safetensors", &b, "dimension"));
	raw_st(&b,
	       "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,4],"
	       "\"data_offsets\":[0,4]}}",
	       data, 4);
	CHECK(refused("ndim.safetensors", &b, "dimensions"));
	raw_st(&b, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4.0]}}", data, 4);
	CHECK(refused("realoff.safetensors", &b, "data_offsets"));
	raw_st(&b, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", data, 8);
	CHECK(refused("trailing.safetensors", &b, "after the last tensor"));
	raw_st(&b, "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", data, 8);
	CHECK(refused("hole.safetensors", &b, "belong to no tensor"));
	raw_st(&b, "{\"a\":[1,2]}", data, 0);
	CHECK(refused("notobj.safetensors", &b, "not a JSON object"));
	raw_st(&b, "{\"__metadata__\":[1]}", data, 0);
	CHECK(refused("meta.safetensors", &b, "__metadata__"));
	raw_st(&b, "{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]}}", data, 1);
	CHECK(refused("f4.safetensors", &b, "whole bytes"));
	raw_st(&b, "{\"a\":{\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,2]}}", data, 2);
	{
		cr_manifest *m = NULL;

		CHECK(manifest_of("f4ok.safetensors", &b, &m, 0) == 0 && m &&
		      m->tensors[0].length == 2);
		cr_manifest_free(m);
	}
	/* a name that is not valid UTF-8 is refused by jansson already */
	raw_st(&b, "{\"\xff\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", data, 4);
	CHECK(refused("utf8.safetensors", &b, NULL));
	cr_buf_free(&b);
}

/* ------------------------------------------------------------ fallback -- */

static void test_fallback(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_manifest *m = NULL;
	json_t *j = NULL;

	cr_buf_puts(&b, "just some text, not a checkpoint\n");
	REQUIRE(manifest_of("notes.txt", &b, &m, 1) == 0);
	CHECK(strcmp(m->format, "file") == 0);
	CHECK(m->note && strstr(m->note, "whole file"));
	CHECK(m->n == 1 && strcmp(m->tensors[0].name, "(file)") == 0);
	CHECK(m->tensors[0].length == b.len && m->tensors[0].offset == 0);
	CHECK(hash_is(m->tensors[0].sha256, b.ptr, b.len));
	CHECK(m->have_file_sha256 && hash_is(m->file_sha256, b.ptr, b.len));
	REQUIRE(cr_manifest_json(m, &j) == 0);
	CHECK(json_is_string(json_object_get(j, "note")));
	json_decref(j);
	cr_manifest_free(m);
	m = NULL;
	/* an empty file */
	cr_buf_clear(&b);
	REQUIRE(manifest_of("empty.bin", &b, &m, 1) == 0);
	CHECK(m->n == 1 && m->tensors[0].length == 0 && hash_is(m->file_sha256, "", 0));
	cr_manifest_free(m);
	m = NULL;
	/* GGUF v1 is said plainly */
	cr_buf_clear(&b);
	cr_buf_put(&b, "GGUF\x01\0\0\0\0\0\0\0\0\0\0\0", 16);
	REQUIRE(manifest_of("old.gguf", &b, &m, 0) == 0);
	CHECK(strcmp(m->format, "file") == 0 && m->note && strstr(m->note, "GGUF version 1"));
	cr_manifest_free(m);
	m = NULL;
	/* two opaque files: the delta says the one pseudo-tensor changed */
	{
		int a = file_with("a.bin", "aaaa", 4), c = file_with("c.bin", "cccc", 4);
		cr_manifest *ma = NULL, *mc = NULL;
		cr_delta *d = NULL;

		REQUIRE(cr_delta_files(a, "a.bin", c, "c.bin", &ma, &mc, &d) == 0);
		CHECK(d->n_changed == 1 && strcmp(d->changed[0].name, "(file)") == 0 &&
		      !d->changed[0].numeric);
		CHECK(hash_is(d->changed[0].old_sha256, "aaaa", 4) &&
		      hash_is(d->changed[0].new_sha256, "cccc", 4));
		cr_delta_free(d);
		cr_manifest_free(ma);
		cr_manifest_free(mc);
		close(a);
		close(c);
	}
	/* not a regular file */
	{
		cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
		int fd = open(harness_tmp_dir, O_RDONLY | O_DIRECTORY);

		o.name = "a folder";
		CHECK(cr_manifest_read(fd, &o, &m, NULL, NULL) == CR_EINVAL && m == NULL);
		close(fd);
	}
	cr_buf_free(&b);
}

/* ------------------------------------------------- large: file thread -- */

static void test_large_threaded(void)
{
	/* > 8 read blocks so the file hash runs on its thread; odd tensor sizes straddle blocks. */
	size_t na = (5u << 20) / 4 + 3, nb = (7u << 20) / 2 + 1;
	float *a = malloc(na * 4);
	uint16_t *bb = malloc(nb * 2);
	cr_buf f = CR_BUF_INIT;
	cr_manifest *m = NULL;

	REQUIRE(a && bb);
	for (size_t i = 0; i < na; i++)
		a[i] = (float)i * 0.5f;
	for (size_t i = 0; i < nb; i++)
		bb[i] = (uint16_t)(i * 7);
	{
		st_tensor t[] = {
		    {"a", "F32", 1, {na}, a, na * 4},
		    {"b", "BF16", 1, {nb}, bb, nb * 2},
		    {"c", "F32", 2, {2, 3}, f32a, sizeof(f32a)},
		};

		build_st(&f, t, 3, NULL);
	}
	REQUIRE(manifest_of("large.safetensors", &f, &m, 1) == 0);
	CHECK(m->n == 3);
	CHECK(hash_is(find_tensor(m, "a")->sha256, a, na * 4));
	CHECK(hash_is(find_tensor(m, "b")->sha256, bb, nb * 2));
	CHECK(hash_is(find_tensor(m, "c")->sha256, f32a, sizeof(f32a)));
	CHECK(m->have_file_sha256 && hash_is(m->file_sha256, f.ptr, f.len));
	cr_manifest_free(m);
	free(a);
	free(bb);
	cr_buf_free(&f);
}

/* ------------------------------------------------------------- delta -- */

static double bf16_val(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;

	memcpy(&f, &u, 4);
	return f;
}

static void test_delta(void)
{
	float o32[6] = {1, 2, 3, 4, 5, 6}, n32[6] = {1, 2.5f, 3, 4, 5, 2};
	double o64[2] = {1e10, -3}, n64[2] = {1e10, -3};
	uint16_t ob[2] = {0x3f80, 0x4000}, nb[2] = {0x4040, 0x4000}; /* bf16 1,2 -> 3,2 */
	uint16_t oh[2] = {0x3c00, 0x3c00}, nh[2] = {0x3c00, 0x7e00}; /* f16 1,1 -> 1,NaN */
	int32_t oi[2] = {1, 2}, ni[2] = {1, 3};
	uint8_t gone[4] = {1, 2, 3, 4}, fresh[2] = {9, 9};
	st_tensor ot[] = {
	    {"w", "F32", 2, {2, 3}, o32, sizeof(o32)},     {"d", "F64", 1, {2}, o64, sizeof(o64)},
	    {"bf", "BF16", 1, {2}, ob, sizeof(ob)},        {"h", "F16", 1, {2}, oh, sizeof(oh)},
	    {"i", "I32", 1, {2}, oi, sizeof(oi)},          {"gone", "U8", 1, {4}, gone, 4},
	    {"reshaped", "F32", 1, {6}, o32, sizeof(o32)},
	};
	st_tensor nt[] = {
	    {"fresh", "U8", 1, {2}, fresh, 2},
	    {"w", "F32", 2, {2, 3}, n32, sizeof(n32)},
	    {"d", "F64", 1, {2}, n64, sizeof(n64)},
	    {"bf", "BF16", 1, {2}, nb, sizeof(nb)},
	    {"h", "F16", 1, {2}, nh, sizeof(nh)},
	    {"i", "I32", 1, {2}, ni, sizeof(ni)},
	    {"reshaped", "F32", 2, {3, 2}, o32, sizeof(o32)},
	};
	cr_buf ob_ = CR_BUF_INIT, nb_ = CR_BUF_INIT;
	cr_manifest *om = NULL, *nm = NULL, *om2 = NULL, *nm2 = NULL;
	cr_delta *d = NULL, *d2 = NULL;
	uint64_t *offsets = NULL;
	int ofd, nfd, bfd;
	double want_w = sqrt(0.25 + 16), want_bf = 2.0;
	double old_l2_all;

	build_st(&ob_, ot, 7, NULL);
	build_st(&nb_, nt, 7, NULL);
	ofd = file_with("old.safetensors", ob_.ptr, ob_.len);
	nfd = file_with("new.safetensors", nb_.ptr, nb_.len);
	REQUIRE(ofd >= 0 && nfd >= 0);
	REQUIRE(cr_delta_files(ofd, "old.safetensors", nfd, "new.safetensors", &om, &nm, &d) == 0);
	CHECK(d->n_added == 1 && strcmp(d->added[0], "fresh") == 0);
	CHECK(d->n_removed == 1 && strcmp(d->removed[0], "gone") == 0);
	CHECK(d->n_unchanged == 1); /* d */
	CHECK(d->n_changed == 5);   /* w bf h i reshaped */
	for (size_t i = 0; i < d->n_changed; i++) {
		const cr_tensor_delta *c = &d->changed[i];

		if (strcmp(c->name, "w") == 0) {
			CHECK(c->numeric && fabs(c->l2 - want_w) < 1e-12 && c->max_abs == 4.0);
			CHECK(fabs(c->old_l2 - sqrt(91.0)) < 1e-12 && !c->nonfinite);
			CHECK(hash_is(c->old_sha256, o32, sizeof(o32)) &&
			      hash_is(c->new_sha256, n32, sizeof(n32)));
		} else if (strcmp(c->name, "bf") == 0) {
			CHECK(c->numeric && fabs(c->l2 - want_bf) < 1e-12 && c->max_abs == 2.0);
			CHECK(fabs(c->old_l2 - sqrt(bf16_val(0x3f80) * bf16_val(0x3f80) + 4)) <
			      1e-12);
		} else if (strcmp(c->name, "h") == 0) {
			CHECK(c->numeric && c->nonfinite && c->l2 == 0 && c->old_l2 == 1.0);
		} else if (strcmp(c->name, "i") == 0 || strcmp(c->name, "reshaped") == 0) {
			CHECK(!c->numeric);
		} else {
			CHECK(0);
		}
	}
	old_l2_all = sqrt(91.0 + 1e20 + 9 + 5 + 1);
	CHECK(fabs(d->l2 - sqrt(16.25 + 4)) < 1e-12);
	CHECK(fabs(d->old_l2 - old_l2_all) / old_l2_all < 1e-15);
	{
		json_t *j = NULL, *c0;

		REQUIRE(cr_delta_json(d, &j) == 0);
		CHECK(json_integer_value(json_object_get(j, "unchanged")) == 1);
		CHECK(json_array_size(json_object_get(j, "changed")) == 5);
		c0 = json_array_get(json_object_get(j, "changed"), 0);
		CHECK(strcmp(json_string_value(json_object_get(c0, "name")), "w") == 0);
		CHECK(strcmp(json_string_value(json_object_get(c0, "max_abs")),
		             "4.000000000e+00") == 0);
		CHECK(json_is_string(json_object_get(j, "l2")) &&
		      json_is_string(json_object_get(j, "rel")));
		CHECK(json_object_get(json_array_get(json_object_get(j, "changed"), 2),
		                      "nonfinite") == json_true());
		{
			cr_buf enc = CR_BUF_INIT;

			json_object_set_new(j, "v", json_integer(1));
			json_object_set_new(j, "type", json_string("t"));
			CHECK(cr_event_encode(j, &enc) == 0); /* integers and strings only */
			cr_buf_free(&enc);
		}
		json_decref(j);
	}
	cr_delta_free(d);
	d = NULL;

	/* The base-file path: keep the old floats, overwrite the old file, delta still right. */
	bfd = open(harness_tmp_path("base.bin"), O_RDWR | O_CREAT | O_TRUNC, 0600);
	REQUIRE(bfd >= 0);
	{
		cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
		cr_delta_base base;

		o.name = "old.safetensors";
		o.base_out_fd = bfd;
		REQUIRE(cr_manifest_read(ofd, &o, &om2, NULL, &offsets) == 0);
		CHECK(offsets[0] != UINT64_MAX); /* w */
		CHECK(offsets[4] == UINT64_MAX); /* i: not float */
		/* the old file is overwritten in place with the new bytes */
		close(ofd);
		ofd = file_with("old.safetensors", nb_.ptr, nb_.len);
		memset(&base, 0, sizeof(base));
		base.manifest = om2;
		base.fd = bfd;
		base.offsets = offsets;
		o = (cr_manifest_opts)CR_MANIFEST_OPTS_INIT;
		o.name = "new.safetensors";
		o.prev = &base;
		REQUIRE(cr_manifest_read(nfd, &o, &nm2, &d2, NULL) == 0);
		CHECK(d2->n_changed == 5 && d2->n_unchanged == 1);
		CHECK(fabs(d2->l2 - sqrt(16.25 + 4)) < 1e-12);
		CHECK(d2->changed[0].numeric && d2->changed[0].max_abs == 4.0);
		CHECK(memcmp(nm2->digest, nm->digest, CR_SHA256_SIZE) == 0);
	}
	cr_delta_free(d2);
	close(bfd);
	free(offsets);
	close(ofd);
	close(nfd);
	cr_manifest_free(om);
	cr_manifest_free(nm);
	cr_manifest_free(om2);
	cr_manifest_free(nm2);
	cr_buf_free(&ob_);
	cr_buf_free(&nb_);
}

/* Delta across a large tensor whose elements straddle read blocks (carry path). */
static void test_delta_large(void)
{
	size_t n = (3u << 20) + 7; /* F64: 24 MiB + 56 */
	double *a = malloc(n * 8), *b = malloc(n * 8);
	cr_buf fa = CR_BUF_INIT, fb = CR_BUF_INIT;
	cr_manifest *ma = NULL, *mb = NULL;
	cr_delta *d = NULL;
	double sd = 0, mx = 0;
	int afd, bfd;

	REQUIRE(a && b);
	for (size_t i = 0; i < n; i++) {
		a[i] = sin((double)i);
		b[i] = a[i] + ((i % 1000) == 3 ? 0.001 * (double)(i % 7) : 0);
		sd += (b[i] - a[i]) * (b[i] - a[i]);
		if (fabs(b[i] - a[i]) > mx)
			mx = fabs(b[i] - a[i]);
	}
	{
		/* an odd-length U8 first so the F64 tensor starts at an odd offset */
		static uint8_t pad[3] = {1, 2, 3};
		st_tensor ta[] = {{"pad", "U8", 1, {3}, pad, 3}, {"x", "F64", 1, {n}, a, n * 8}};
		st_tensor tb[] = {{"pad", "U8", 1, {3}, pad, 3}, {"x", "F64", 1, {n}, b, n * 8}};

		build_st(&fa, ta, 2, NULL);
		build_st(&fb, tb, 2, NULL);
	}
	afd = file_with("la.safetensors", fa.ptr, fa.len);
	bfd = file_with("lb.safetensors", fb.ptr, fb.len);
	REQUIRE(cr_delta_files(afd, "la", bfd, "lb", &ma, &mb, &d) == 0);
	REQUIRE(d->n_changed == 1 && d->changed[0].numeric);
	CHECK(fabs(d->changed[0].l2 - sqrt(sd)) / sqrt(sd) < 1e-12);
	CHECK(d->changed[0].max_abs == mx);
	cr_delta_free(d);
	cr_manifest_free(ma);
	cr_manifest_free(mb);
	close(afd);
	close(bfd);
	free(a);
	free(b);
	cr_buf_free(&fa);
	cr_buf_free(&fb);
}

/* --------------------------------------------- the engine, by a test reader -- */

/*
 * A container-like reader: the file is "TEST" + two members, each the bytes
 * of the file after the magic, split at byte 20. Tensors share ranges (tied
 * weights) and overlap; bytes are fed in awkward chunks.
 */
static int test_mode;

static int tr_probe(const uint8_t *head, size_t n, const char *name)
{
	(void)name;
	return n >= 4 && memcmp(head, "TEST", 4) == 0;
}

static int tr_read(cr_tpass *p, int fd)
{
	uint8_t buf[64];
	uint64_t size = cr_tpass_size(p);
	cr_tensor t;
	int rc;

	if (size > sizeof(buf) || size < 44)
		return cr_error_set(CR_EINVAL, "%s: test file size", cr_tpass_name(p));
	if ((rc = cr_tpass_pread(p, fd, buf, (size_t)size, 0)) != 0)
		return rc;
	memset(&t, 0, sizeof(t));
	snprintf(t.dtype, sizeof(t.dtype), "F32");
	t.ndim = 1;
	t.shape[0] = 4;
	t.length = 16;
	t.member = "m0";
	t.name = "tied.a";
	t.offset = 0;
	if ((rc = cr_tpass_add(p, &t)) != 0)
		return rc;
	t.name = "tied.b"; /* same range */
	if ((rc = cr_tpass_add(p, &t)) != 0)
		return rc;
	t.name = "view"; /* overlaps both, in m0 */
	t.offset = 4;
	if ((rc = cr_tpass_add(p, &t)) != 0)
		return rc;
	t.name = "other";
	t.member = "m1";
	t.offset = 0;
	if (test_mode == 2) {
		t.name = "view"; /* a duplicate name */
	}
	if ((rc = cr_tpass_add(p, &t)) != 0 || (rc = cr_tpass_begin(p)) != 0)
		return rc;
	if ((rc = cr_tpass_note(p, "first %d", 1)) != 0 || (rc = cr_tpass_note(p, "second")) != 0)
		return rc;
	if ((rc = cr_tpass_file(p, buf, 3)) != 0 || (rc = cr_tpass_file(p, buf + 3, size - 3)) != 0)
		return rc;
	/* m0 = buf[4..24), m1 = buf[24..44); fed in chunks of 3 and 7 */
	if (test_mode == 1) {
		/* a gap: the first chunk skipped */
		return cr_tpass_feed(p, "m0", 3, buf + 7, 17);
	}
	for (uint64_t pos = 0; pos < 20;) {
		size_t n = pos % 2 ? 7 : 3;

		if (n > 20 - pos)
			n = (size_t)(20 - pos);
		if ((rc = cr_tpass_feed(p, "m0", pos, buf + 4 + pos, n)) != 0)
			return rc;
		pos += n;
	}
	if ((rc = cr_tpass_feed(p, "m0", 0, buf + 4, 8)) != 0) /* repeated bytes are ignored */
		return rc;
	if ((rc = cr_tpass_feed(p, "unknown", 0, buf + 4, 8)) != 0) /* nobody's bytes */
		return rc;
	if (test_mode == 3)
		return 0; /* m1 never fed: "other" misses its bytes */
	return cr_tpass_feed(p, "m1", 0, buf + 24, 20);
}

static const cr_tensor_reader test_reader = {"test", tr_probe, tr_read};

static void test_engine_routing(void)
{
	uint8_t f[44];
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	cr_manifest *m = NULL, *m2 = NULL;
	uint64_t *offsets = NULL;
	cr_delta *d = NULL;
	int fd, bfd;

	memcpy(f, "TEST", 4);
	for (int i = 4; i < 44; i++)
		f[i] = (uint8_t)(i * 13);
	fd = file_with("routing.test", f, sizeof(f));
	bfd = open(harness_tmp_path("routing.base"), O_RDWR | O_CREAT | O_TRUNC, 0600);
	REQUIRE(fd >= 0 && bfd >= 0);
	o.name = "routing.test";
	o.want_file_sha256 = 1;
	o.base_out_fd = bfd;
	test_mode = 0;
	REQUIRE(cr_manifest_read_with(fd, &o, &test_reader, &m, NULL, &offsets) == 0);
	CHECK(strcmp(m->format, "test") == 0 && m->n == 4);
	CHECK(hash_is(find_tensor(m, "tied.a")->sha256, f + 4, 16));
	CHECK(hash_is(find_tensor(m, "tied.b")->sha256, f + 4, 16));
	CHECK(hash_is(find_tensor(m, "view")->sha256, f + 8, 16));
	CHECK(hash_is(find_tensor(m, "other")->sha256, f + 24, 16));
	CHECK(strcmp(find_tensor(m, "other")->member, "m1") == 0);
	CHECK(hash_is(m->file_sha256, f, sizeof(f)));
	CHECK(m->note && strcmp(m->note, "first 1; second") == 0);
	/* tied weights share one copy in the base: 3 distinct ranges of 16 bytes */
	CHECK(offsets[0] == offsets[1]);
	{
		struct stat st;

		CHECK(fstat(bfd, &st) == 0 && st.st_size == 48);
	}
	/* a delta against the base, all unchanged and numeric */
	{
		cr_delta_base base = {m, bfd, 0, offsets};

		o.base_out_fd = -1;
		o.prev = &base;
		REQUIRE(cr_manifest_read_with(fd, &o, &test_reader, &m2, &d, NULL) == 0);
		CHECK(d->n_unchanged == 4 && d->n_changed == 0 && d->l2 == 0 && d->old_l2 > 0);
		cr_delta_free(d);
		cr_manifest_free(m2);
		o.prev = NULL;
	}
	cr_manifest_free(m);
	m = NULL;
	/* Bytes out of order come from the file: CR_EINVAL (exit 1), not an internal error. */
	test_mode = 1;
	CHECK(cr_manifest_read_with(fd, &o, &test_reader, &m, NULL, NULL) == CR_EINVAL && !m);
	CHECK(strstr(cr_error_last(), "arrive before") != NULL);
	test_mode = 2;
	CHECK(cr_manifest_read_with(fd, &o, &test_reader, &m, NULL, NULL) == CR_EINVAL && !m);
	CHECK(strstr(cr_error_last(), "appears twice") != NULL);
	test_mode = 3;
	CHECK(cr_manifest_read_with(fd, &o, &test_reader, &m, NULL, NULL) == CR_EINVAL && !m);
	CHECK(strstr(cr_error_last(), "missing") && strstr(cr_error_last(), "m1"));
	test_mode = 0;
	free(offsets);
	close(fd);
	close(bfd);
}

/*
 * Many tensors over one member: "ALIA" + a payload, fed as member "m" in
 * blocks of 64 KiB. alias_mode 0: alias_n aliases "a<i>" of the whole
 * payload (F32) and "half" over its first half; 1: alias_n views "v<i>"
 * over [4 i, end) (U8), each overlapping the ones before.
 */
static int alias_mode;
static size_t alias_n;

static int alias_read(cr_tpass *p, int fd)
{
	uint64_t size = cr_tpass_size(p), plen = size - 4;
	uint8_t *buf = malloc((size_t)size);
	char name[32];
	cr_tensor t;
	int rc;

	if (!buf)
		return cr_error_set(CR_ENOMEM, "out of memory");
	if ((rc = cr_tpass_pread(p, fd, buf, (size_t)size, 0)) != 0)
		goto done;
	memset(&t, 0, sizeof(t));
	t.name = name;
	t.member = "m";
	t.ndim = 1;
	for (size_t i = 0; i < alias_n; i++) {
		if (alias_mode == 0) {
			snprintf(name, sizeof(name), "a%zu", i);
			snprintf(t.dtype, sizeof(t.dtype), "F32");
			t.length = plen;
			t.shape[0] = plen / 4;
		} else {
			snprintf(name, sizeof(name), "v%zu", i);
			snprintf(t.dtype, sizeof(t.dtype), "U8");
			t.offset = 4 * i;
			t.length = plen - t.offset;
			t.shape[0] = t.length;
		}
		if ((rc = cr_tpass_add(p, &t)) != 0)
			goto done;
	}
	if (alias_mode == 0) {
		snprintf(name, sizeof(name), "half");
		t.length = plen / 2;
		t.shape[0] = plen / 8;
		if ((rc = cr_tpass_add(p, &t)) != 0)
			goto done;
	}
	if ((rc = cr_tpass_begin(p)) != 0 || (rc = cr_tpass_file(p, buf, (size_t)size)) != 0)
		goto done;
	for (uint64_t pos = 0; pos < plen; pos += 65536) {
		size_t n = plen - pos < 65536 ? (size_t)(plen - pos) : 65536;

		if ((rc = cr_tpass_feed(p, "m", pos, buf + 4 + pos, n)) != 0)
			goto done;
	}
done:
	free(buf);
	return rc;
}

static const cr_tensor_reader alias_reader = {"alias", tr_probe, alias_read};

static double cpu_seconds(void)
{
	return (double)clock() / CLOCKS_PER_SEC;
}

/*
 * 5000 aliases of one 4 MiB range (tied weights taken to the extreme): the
 * range is hashed, kept in the base and compared once, not 5000 times
 * (20 GB), and every alias gets the hash and the delta figures.
 */
static void test_engine_aliases(void)
{
	size_t plen = 4u << 20, n = plen / 4;
	float *f = malloc(4 + plen);
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	cr_manifest *m = NULL, *m2 = NULL;
	uint64_t *offsets = NULL;
	cr_delta *d = NULL;
	int fd, fd2, bfd;
	double t0;
	struct stat st;

	REQUIRE(f);
	memcpy(f, "ALIA", 4);
	for (size_t i = 0; i < n; i++)
		f[i + 1] = (float)(i % 100);
	fd = file_with("aliases.test", f, 4 + plen);
	bfd = open(harness_tmp_path("aliases.base"), O_RDWR | O_CREAT | O_TRUNC, 0600);
	REQUIRE(fd >= 0 && bfd >= 0);
	alias_mode = 0;
	alias_n = 5000;
	o.name = "aliases.test";
	o.base_out_fd = bfd;
	t0 = cpu_seconds();
	REQUIRE(cr_manifest_read_with(fd, &o, &alias_reader, &m, NULL, &offsets) == 0);
	CHECK(cpu_seconds() - t0 < 3.0);
	REQUIRE(m->n == 5001);
	for (size_t i = 0; i < 5000; i++) {
		CHECK(memcmp(m->tensors[i].sha256, m->tensors[0].sha256, CR_SHA256_SIZE) == 0);
		CHECK(offsets[i] == offsets[0]);
	}
	CHECK(hash_is(m->tensors[0].sha256, f + 1, plen));
	CHECK(hash_is(m->tensors[5000].sha256, f + 1, plen / 2));
	CHECK(offsets[5000] != offsets[0]);
	/* one copy of the whole range, one of its half */
	CHECK(fstat(bfd, &st) == 0 && (size_t)st.st_size == plen + plen / 2);

	/* One element moves by 3: every alias reports it, computed once. */
	f[1] += 3;
	fd2 = file_with("aliases2.test", f, 4 + plen);
	REQUIRE(fd2 >= 0);
	{
		cr_delta_base base = {m, bfd, 0, offsets};
		double l2 = 0;

		o.name = "aliases2.test";
		o.base_out_fd = -1;
		o.prev = &base;
		t0 = cpu_seconds();
		REQUIRE(cr_manifest_read_with(fd2, &o, &alias_reader, &m2, &d, NULL) == 0);
		CHECK(cpu_seconds() - t0 < 3.0);
		REQUIRE(d->n_changed == 5001);
		for (size_t i = 0; i < d->n_changed; i++) {
			const cr_tensor_delta *c = &d->changed[i];

			CHECK(c->numeric && c->l2 == 3.0 && c->max_abs == 3.0);
			l2 += c->l2 * c->l2;
		}
		CHECK(fabs(d->l2 - sqrt(l2)) < 1e-9);
	}
	cr_delta_free(d);
	cr_manifest_free(m2);
	cr_manifest_free(m);
	free(offsets);
	close(fd);
	close(fd2);
	close(bfd);
	free(f);
}

/*
 * Ranges that overlap a little are hashed each; ranges that overlap so much
 * that hashing them would cost more than 4x the bytes read + 64 MiB are
 * refused, naming the file (1000 views over [4 i, 1 MiB) ask for ~1 GB).
 */
static void test_engine_overlap_cap(void)
{
	size_t plen = 1u << 20;
	uint8_t *f = malloc(4 + plen);
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	cr_manifest *m = NULL;
	int fd, rc;

	REQUIRE(f);
	memcpy(f, "ALIA", 4);
	for (size_t i = 0; i < plen; i++)
		f[4 + i] = (uint8_t)(i * 7);
	fd = file_with("overlap.test", f, 4 + plen);
	REQUIRE(fd >= 0);
	o.name = "overlap.test";
	alias_mode = 1;
	alias_n = 8;
	REQUIRE(cr_manifest_read_with(fd, &o, &alias_reader, &m, NULL, NULL) == 0);
	REQUIRE(m->n == 8);
	CHECK(hash_is(m->tensors[3].sha256, f + 4 + 12, plen - 12));
	cr_manifest_free(m);
	m = NULL;
	alias_n = 1000;
	rc = cr_manifest_read_with(fd, &o, &alias_reader, &m, NULL, NULL);
	CHECK(rc == CR_EINVAL && !m);
	CHECK(strstr(cr_error_last(), "overlap.test") &&
	      strstr(cr_error_last(), "too many overlapping tensors"));
	alias_mode = 0;
	close(fd);
	free(f);
}

/* Declarations the engine refuses whatever the reader. */
static int add_mode;

static int bad_read(cr_tpass *p, int fd)
{
	cr_tensor t;

	(void)fd;
	memset(&t, 0, sizeof(t));
	t.name = "t";
	snprintf(t.dtype, sizeof(t.dtype), "F32");
	t.ndim = 1;
	t.shape[0] = 1;
	t.length = 4;
	switch (add_mode) {
	case 0: t.ndim = CR_TENSOR_MAX_DIMS + 1; break;
	case 1: t.length = 8; break;   /* disagrees with F32 x [1] */
	case 2: t.offset = 100; break; /* beyond the file */
	case 3:
		t.shape[0] = (uint64_t)1 << 60;
		t.length = 0;
		break; /* absurd dimension */
	case 4: t.dtype[0] = '\0'; break;
	case 5: t.name = "\xc3"; break;           /* not UTF-8 */
	case 6: t.offset = UINT64_MAX - 1; break; /* overflows */
	}
	return cr_tpass_add(p, &t);
}

static void test_engine_refuses(void)
{
	static const cr_tensor_reader bad = {"bad", tr_probe, bad_read};
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	cr_manifest *m = NULL;
	int fd = file_with("bad.test", "TEST0123", 8);

	o.name = "bad.test";
	for (add_mode = 0; add_mode <= 6; add_mode++) {
		int rc = cr_manifest_read_with(fd, &o, &bad, &m, NULL, NULL);

		CHECK(rc == CR_EINVAL && m == NULL);
		if (rc != CR_EINVAL)
			fprintf(stderr, "  add_mode %d: rc %d\n", add_mode, rc);
	}
	close(fd);
	CHECK(cr_dtype_size("F32") == 4 && cr_dtype_size("BF16") == 2 &&
	      cr_dtype_size("Q4_K") == 0);
	CHECK(cr_dtype_size("BOOL") == 1 && cr_dtype_size("I64") == 8 && cr_dtype_size(NULL) == 0);
}

/* ---------------------------------------------------------------- GGUF -- */

typedef struct gg_tensor {
	const char *name;
	uint32_t ndim;
	uint64_t dims[4];
	uint32_t type;
	const void *data;
	size_t len;
} gg_tensor;

static void gg_str(cr_buf *b, const char *s)
{
	put_le(b, strlen(s), 8);
	cr_buf_puts(b, s);
}

/*
 * A GGUF file: every metadata value type (nested arrays too), alignment
 * (0: none written), tensors laid out in order at aligned offsets.
 */
static void build_gguf(cr_buf *b, uint32_t version, uint32_t alignment, const gg_tensor *t,
                       size_t n)
{
	uint32_t al = alignment ? alignment : 32;
	uint64_t off = 0;

	cr_buf_clear(b);
	cr_buf_put(b, "GGUF", 4);
	put_le(b, version, 4);
	put_le(b, n, 8);
	put_le(b, alignment ? 6 : 5, 8);
	gg_str(b, "general.architecture");
	put_le(b, 8, 4);
	gg_str(b, "llama");
	gg_str(b, "test.scalars");
	put_le(b, 9, 4); /* array of u8 */
	put_le(b, 0, 4);
	put_le(b, 3, 8);
	cr_buf_put(b, "\1\2\3", 3);
	gg_str(b, "test.nested");
	put_le(b, 9, 4); /* array of 2 arrays of strings */
	put_le(b, 9, 4);
	put_le(b, 2, 8);
	put_le(b, 8, 4);
	put_le(b, 2, 8);
	gg_str(b, "ab");
	gg_str(b, "");
	put_le(b, 8, 4);
	put_le(b, 0, 8);
	gg_str(b, "test.f64");
	put_le(b, 12, 4);
	put_le(b, 0x400921fb54442d18ull, 8);
	gg_str(b, "test.bool");
	put_le(b, 7, 4);
	cr_buf_putc(b, 1);
	if (alignment) {
		gg_str(b, "general.alignment");
		put_le(b, 4, 4);
		put_le(b, alignment, 4);
	}
	for (size_t i = 0; i < n; i++) {
		gg_str(b, t[i].name);
		put_le(b, t[i].ndim, 4);
		for (uint32_t k = 0; k < t[i].ndim; k++)
			put_le(b, t[i].dims[k], 8);
		put_le(b, t[i].type, 4);
		put_le(b, off, 8);
		off += (t[i].len + al - 1) / al * al;
	}
	while (b->len % al)
		cr_buf_putc(b, 0);
	for (size_t i = 0; i < n; i++) {
		cr_buf_put(b, t[i].data, t[i].len);
		while ((b->len) % al)
			cr_buf_putc(b, 0);
	}
}

static uint8_t q4[2 * 18 * 2]; /* Q4_0: [64, 2] = 2 rows of 2 blocks */
static uint8_t q6k[210];       /* Q6_K: [256] */

static void test_gguf(void)
{
	gg_tensor t[] = {
	    {"tok_embd.weight", 2, {3, 2}, 0, f32a, sizeof(f32a)},
	    {"blk.0.q4", 2, {64, 2}, 2, q4, sizeof(q4)},
	    {"blk.0.q6k", 1, {256}, 14, q6k, sizeof(q6k)},
	    {"blk.0.h", 1, {4}, 1, f16a, sizeof(f16a)},
	};
	uint32_t versions[2] = {3, 2}, aligns[3] = {0, 64, 8};
	cr_buf b = CR_BUF_INIT;

	for (size_t i = 0; i < sizeof(q4); i++)
		q4[i] = (uint8_t)(i * 3 + 1);
	for (size_t i = 0; i < sizeof(q6k); i++)
		q6k[i] = (uint8_t)(i * 5 + 2);
	for (int v = 0; v < 2; v++) {
		for (int a = 0; a < 3; a++) {
			cr_manifest *m = NULL;
			uint32_t al = aligns[a] ? aligns[a] : 32;
			const cr_tensor *q;

			build_gguf(&b, versions[v], aligns[a], t, 4);
			REQUIRE(manifest_of("model.gguf", &b, &m, 1) == 0);
			CHECK(strcmp(m->format, "gguf") == 0 && m->n == 4);
			CHECK(strcmp(m->tensors[0].name, "tok_embd.weight") == 0);
			CHECK(strcmp(m->tensors[1].dtype, "Q4_0") == 0 &&
			      m->tensors[1].length == sizeof(q4));
			CHECK(strcmp(m->tensors[2].dtype, "Q6_K") == 0 &&
			      m->tensors[2].length == 210);
			CHECK(strcmp(m->tensors[3].dtype, "F16") == 0 &&
			      m->tensors[3].fkind == CR_FLOAT_F16);
			CHECK(m->tensors[0].shape[0] == 3 && m->tensors[0].shape[1] == 2);
			for (int k = 0; k < 4; k++) {
				CHECK(m->tensors[k].offset % al == 0);
				CHECK(memcmp(b.ptr + m->tensors[k].offset, t[k].data, t[k].len) ==
				      0);
				CHECK(hash_is(m->tensors[k].sha256, t[k].data, t[k].len));
			}
			q = find_tensor(m, "blk.0.q4");
			CHECK(q && q->ndim == 2);
			CHECK(hash_is(m->file_sha256, b.ptr, b.len));
			cr_manifest_free(m);
		}
	}
	cr_buf_free(&b);
}

static void patch32(cr_buf *b, size_t at, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		b->ptr[at + i] = (char)(v >> (8 * i));
}

static void patch64(cr_buf *b, size_t at, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		b->ptr[at + i] = (char)(v >> (8 * i));
}

/* Offset of the tensor infos in a build_gguf file with alignment 64 (after the metadata). */
static size_t infos_at(const cr_buf *b)
{
	const char *k = memmem(b->ptr, b->len, "general.alignment", 17);

	return (size_t)(k - b->ptr) + 17 + 4 + 4;
}

static void test_gguf_malformed(void)
{
	gg_tensor t[] = {
	    {"a", 2, {3, 2}, 0, f32a, sizeof(f32a)},
	    {"q", 2, {64, 2}, 2, q4, sizeof(q4)},
	};
	cr_buf b = CR_BUF_INIT;
	size_t info, info_q;

	build_gguf(&b, 3, 64, t, 2);
	info = infos_at(&b);
	/* "a": name(8+1) ndim(4) dims(16) type(4) offset(8) */
	info_q = info + 9 + 4 + 16 + 4 + 8;
	{
		cr_manifest *m = NULL;

		REQUIRE(manifest_of("good.gguf", &b, &m, 0) == 0);
		cr_manifest_free(m);
	}
#define MUTATE(name, what, stmt)                                                                   \
	do {                                                                                       \
		build_gguf(&b, 3, 64, t, 2);                                                       \
		stmt;                                                                              \
		CHECK(refused(name, &b, what));                                                    \
	} while (0)
	MUTATE("trunc-head.gguf", "truncated", b.len = 20);
	MUTATE("trunc-meta.gguf", "truncated", b.len = info - 10);
	MUTATE("trunc-info.gguf", "truncated", b.len = info + 20);
	MUTATE("trunc-data.gguf", "beyond the end", b.len -= 64);
	MUTATE("count.gguf", "tensor count", patch64(&b, 8, 1ull << 40));
	MUTATE("count2.gguf", "tensor count", patch64(&b, 8, 100000));
	MUTATE("kvcount.gguf", "metadata count", patch64(&b, 16, 1ull << 62));
	MUTATE("align3.gguf", "alignment", patch32(&b, info - 4, 48));
	MUTATE("align0.gguf", "alignment", patch32(&b, info - 4, 0));
	MUTATE("aligntype.gguf", "alignment", patch32(&b, info - 8, 5));
	MUTATE("type.gguf", "unknown ggml type", patch32(&b, info + 9 + 4 + 16, 4));
	MUTATE("type2.gguf", "unknown ggml type", patch32(&b, info + 9 + 4 + 16, 1000));
	MUTATE("block.gguf", "block size", patch64(&b, info_q + 9 + 4, 48));
	MUTATE("unaligned.gguf", "multiple of the alignment",
	       patch64(&b, info_q + 9 + 4 + 16 + 4, 8));
	MUTATE("range.gguf", "beyond the end", patch64(&b, info_q + 9 + 4 + 16 + 4, 1ull << 20));
	MUTATE("range2.gguf", "beyond the end",
	       patch64(&b, info_q + 9 + 4 + 16 + 4, UINT64_MAX - 63));
	MUTATE("overlap.gguf", "overlap", patch64(&b, info_q + 9 + 4 + 16 + 4, 0));
	MUTATE("ndim.gguf", "dimensions", patch32(&b, info + 9, 9));
	MUTATE("dims.gguf", "absurd", patch64(&b, info + 9 + 4, 1ull << 62));
	MUTATE(
	    "dims2.gguf", "absurd",
	    (patch64(&b, info_q + 9 + 4, 1ull << 40), patch64(&b, info_q + 9 + 4 + 8, 1ull << 40)));
	MUTATE("name.gguf", "name", patch64(&b, info, 1ull << 40));
	MUTATE("name0.gguf", "NUL", b.ptr[info + 8] = '\0');
	/* metadata: the first key is general.architecture, a string value */
	MUTATE("vtype.gguf", "unknown value type", patch32(&b, 24 + 8 + 20, 13));
	MUTATE("strlen.gguf", "string of", patch64(&b, 24 + 8 + 20 + 4, 1ull << 40));
	MUTATE("keylen.gguf", "key of", patch64(&b, 24, 0));
	{
		/* test.scalars: array of 3 u8 -> claims 2^40 elements */
		size_t at =
		    (size_t)((char *)memmem(b.ptr, b.len, "test.scalars", 12) - b.ptr) + 12 + 4 + 4;

		MUTATE("arrcount.gguf", "cannot fit", patch64(&b, at, 1ull << 40));
		MUTATE("arrtype.gguf", "unknown type", patch32(&b, at - 4, 77));
	}
	{
		size_t at = (size_t)((char *)memmem(b.ptr, b.len, "test.bool", 9) - b.ptr) + 9 + 4;

		MUTATE("bool.gguf", "bool", b.ptr[at] = 2);
	}
	{
		/* duplicate tensor names */
		gg_tensor d[] = {t[0], t[0]};

		build_gguf(&b, 3, 64, d, 2);
		CHECK(refused("dupname.gguf", &b, "appears twice"));
	}
	{
		/* arrays nested deeper than the cap */
		cr_buf_clear(&b);
		cr_buf_put(&b, "GGUF", 4);
		put_le(&b, 3, 4);
		put_le(&b, 0, 8);
		put_le(&b, 1, 8);
		gg_str(&b, "deep");
		put_le(&b, 9, 4);
		for (int i = 0; i < 20; i++) {
			put_le(&b, 9, 4);
			put_le(&b, 1, 8);
		}
		put_le(&b, 0, 4);
		put_le(&b, 0, 8);
		for (int i = 0; i < 64; i++)
			cr_buf_putc(&b, 0);
		CHECK(refused("deep.gguf", &b, "nested deeper"));
	}
	{
		/* a GGUF with no tensors and nothing after the metadata is fine */
		cr_manifest *m = NULL;

		build_gguf(&b, 3, 0, t, 0);
		REQUIRE(manifest_of("empty.gguf", &b, &m, 0) == 0);
		CHECK(m->n == 0 && strcmp(m->format, "gguf") == 0);
		cr_manifest_free(m);
	}
#undef MUTATE
	cr_buf_free(&b);
}

TEST_MAIN(TEST(test_safetensors_basic), TEST(test_safetensors_empty_and_zero),
          TEST(test_safetensors_malformed), TEST(test_fallback), TEST(test_large_threaded),
          TEST(test_delta), TEST(test_delta_large), TEST(test_engine_routing),
          TEST(test_engine_aliases), TEST(test_engine_overlap_cap), TEST(test_engine_refuses),
          TEST(test_gguf), TEST(test_gguf_malformed))
