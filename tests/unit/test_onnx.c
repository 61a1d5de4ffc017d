/*
 * Unit tests: the ONNX reader (recorder/tensors/onnx.c) on models built here
 * with a small protobuf encoder: raw_data and every typed field, packed and
 * unpacked, merged graphs, external data beside the model and refused
 * outside it, notes for what is not listed, and hostile files (every
 * truncation of a valid model, bad varints, lengths past the end, deep
 * groups, shapes that disagree with the data).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/hash.h"
#include "cleanroom/tensors.h"
#include "harness.h"
#include "util/buf.h"

/* ------------------------------------------------------------ encoder -- */

static void pb_varint(cr_buf *b, uint64_t v)
{
	do {
		uint8_t c = v & 0x7f;

		v >>= 7;
		if (v)
			c |= 0x80;
		cr_buf_put(b, &c, 1);
	} while (v);
}

static void pb_tag(cr_buf *b, unsigned field, unsigned wt)
{
	pb_varint(b, (uint64_t)field << 3 | wt);
}

static void pb_uint(cr_buf *b, unsigned field, uint64_t v)
{
	pb_tag(b, field, 0);
	pb_varint(b, v);
}

static void pb_bytes(cr_buf *b, unsigned field, const void *data, size_t n)
{
	pb_tag(b, field, 2);
	pb_varint(b, n);
	cr_buf_put(b, data, n);
}

static void pb_str(cr_buf *b, unsigned field, const char *s)
{
	pb_bytes(b, field, s, strlen(s));
}

/* Append sub as a length-delimited field and empty it. */
static void pb_msg(cr_buf *b, unsigned field, cr_buf *sub)
{
	pb_bytes(b, field, sub->ptr, sub->len);
	cr_buf_clear(sub);
}

static void pb_fixed32(cr_buf *b, uint32_t v)
{
	uint8_t c[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};

	cr_buf_put(b, c, 4);
}

static void pb_fixed64(cr_buf *b, uint64_t v)
{
	pb_fixed32(b, (uint32_t)v);
	pb_fixed32(b, (uint32_t)(v >> 32));
}

/* A model around graph (the bytes of a GraphProto). */
static void model(cr_buf *out, const cr_buf *graph)
{
	cr_buf_clear(out);
	pb_uint(out, 1, 8);               /* ir_version */
	pb_str(out, 2, "cleanroom-test"); /* producer_name */
	pb_bytes(out, 7, graph->ptr, graph->len);
}

/* ------------------------------------------------------------- running -- */

static char tmpdir[512];

static void make_tmpdir(void)
{
	const char *base = getenv("CR_TMP");

	if (tmpdir[0])
		return;
	snprintf(tmpdir, sizeof(tmpdir), "%s/onnx-XXXXXX", base ? base : "/tmp");
	if (!mkdtemp(tmpdir))
		abort();
}

static void write_file(const char *name, const void *data, size_t n)
{
	char path[700];
	FILE *f;

	make_tmpdir();
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "wb");
	if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0)
		abort();
}

/* Read bytes as model.onnx in the scratch folder; rc of cr_manifest_read. */
static int read_model(const void *data, size_t n, cr_manifest **out)
{
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	char path[700];
	int fd, rc;

	write_file("model.onnx", data, n);
	snprintf(path, sizeof(path), "%s/model.onnx", tmpdir);
	if ((fd = open(path, O_RDONLY)) < 0)
		abort();
	o.name = "model.onnx";
	o.want_file_sha256 = 1;
	*out = NULL;
	rc = cr_manifest_read(fd, &o, out, NULL, NULL);
	close(fd);
	return rc;
}

static const cr_tensor *find(const cr_manifest *m, const char *name)
{
	for (size_t i = 0; m && i < m->n; i++)
		if (strcmp(m->tensors[i].name, name) == 0)
			return &m->tensors[i];
	return NULL;
}

static int hash_is(const cr_tensor *t, const void *bytes, size_t n)
{
	uint8_t want[CR_SHA256_SIZE];

	if (!t || t->length != n)
		return 0;
	cr_sha256(want, bytes, n);
	return memcmp(want, t->sha256, CR_SHA256_SIZE) == 0;
}

static void tensor_head(cr_buf *t, const char *name, int dtype, const uint64_t *dims, size_t nd)
{
	cr_buf_clear(t);
	for (size_t i = 0; i < nd; i++)
		pb_uint(t, 1, dims[i]);
	pb_uint(t, 2, (uint64_t)dtype);
	pb_str(t, 8, name);
}

/* --------------------------------------------------------------- tests -- */

static void test_raw_data(void)
{
	cr_buf g = CR_BUF_INIT, t = CR_BUF_INIT, f = CR_BUF_INIT;
	cr_manifest *m = NULL;
	float w[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
	const uint64_t dims[2] = {2, 3};
	uint8_t fsha[CR_SHA256_SIZE];
	const cr_tensor *x;
	const char *at;

	tensor_head(&t, "layer.weight", 1, dims, 2);
	pb_bytes(&t, 9, w, sizeof(w));
	pb_msg(&g, 5, &t);
	pb_str(&g, 2, "main");
	model(&f, &g);
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	CHECK(strcmp(m->format, "onnx") == 0);
	REQUIRE(m->n == 1);
	x = &m->tensors[0];
	CHECK(strcmp(x->name, "layer.weight") == 0);
	CHECK(strcmp(x->dtype, "F32") == 0);
	CHECK(x->ndim == 2 && x->shape[0] == 2 && x->shape[1] == 3);
	CHECK(x->member == NULL);
	at = memmem(f.ptr, f.len, w, sizeof(w));
	CHECK(at && x->offset == (uint64_t)(at - f.ptr));
	CHECK(hash_is(x, w, sizeof(w)));
	cr_sha256(fsha, f.ptr, f.len);
	CHECK(m->have_file_sha256 && memcmp(fsha, m->file_sha256, CR_SHA256_SIZE) == 0);
	CHECK(m->note == NULL);
	cr_manifest_free(m);
	cr_buf_free(&g);
	cr_buf_free(&t);
	cr_buf_free(&f);
}

static void test_typed_fields(void)
{
	cr_buf g = CR_BUF_INIT, t = CR_BUF_INIT, p = CR_BUF_INIT, f = CR_BUF_INIT;
	cr_manifest *m = NULL;
	const uint64_t d4[1] = {4}, d3[1] = {3}, d2x2[2] = {2, 2};
	const int32_t i8v[4] = {-1, 127, -128, 300}; /* 300 wraps to 44 as numpy's astype does */
	const uint8_t i8b[4] = {0xff, 0x7f, 0x80, 44};
	const uint16_t u16v[3] = {1, 65535, 513};
	const uint8_t boolb[4] = {1, 0, 1, 1};
	const int64_t i64v[3] = {-5, INT64_MAX, 0};
	const uint32_t u32v[2] = {7, 0xfffffffe};
	const uint16_t f16v[4] = {0x3c00, 0xc000, 0x7c00, 0x0001};
	const uint16_t bf16v[4] = {0x3f80, 0xbf80, 0x4049, 0x0000};
	const double dv[3] = {1.5, -2.25, 1e300};
	const float fv[4] = {0.5f, -1, 2, 1e10f};
	const float cv[4] = {1, 2, 3, 4};
	uint8_t buf[64];
	const cr_tensor *x;

	/* INT8 from packed int32_data, negatives as 10-byte varints. */
	tensor_head(&t, "i8", 3, d4, 1);
	for (int i = 0; i < 4; i++)
		pb_varint(&p, (uint64_t)(int64_t)i8v[i]);
	pb_msg(&t, 5, &p);
	pb_msg(&g, 5, &t);
	/* UINT16 from unpacked int32_data (one field per element). */
	tensor_head(&t, "u16", 4, d3, 1);
	for (int i = 0; i < 3; i++)
		pb_uint(&t, 5, u16v[i]);
	pb_msg(&g, 5, &t);
	/* BOOL: any nonzero is true; packed and unpacked mixed, concatenated in order. */
	tensor_head(&t, "flags", 9, d4, 1);
	pb_uint(&t, 5, 5);
	pb_varint(&p, 0);
	pb_varint(&p, (uint64_t)-7);
	pb_msg(&t, 5, &p);
	pb_uint(&t, 5, 1);
	pb_msg(&g, 5, &t);
	/* INT64 from int64_data. */
	tensor_head(&t, "i64", 7, d3, 1);
	for (int i = 0; i < 3; i++)
		pb_varint(&p, (uint64_t)i64v[i]);
	pb_msg(&t, 7, &p);
	pb_msg(&g, 5, &t);
	/* UINT32 from uint64_data. */
	tensor_head(&t, "u32", 12, d2x2, 1);
	for (int i = 0; i < 2; i++)
		pb_uint(&t, 11, u32v[i]);
	pb_msg(&g, 5, &t);
	/* FLOAT16 and BFLOAT16: bit patterns in int32_data. */
	tensor_head(&t, "half", 10, d2x2, 2);
	for (int i = 0; i < 4; i++)
		pb_varint(&p, f16v[i]);
	pb_msg(&t, 5, &p);
	pb_msg(&g, 5, &t);
	tensor_head(&t, "bf", 16, d4, 1);
	for (int i = 0; i < 4; i++)
		pb_uint(&t, 5, bf16v[i]);
	pb_msg(&g, 5, &t);
	/* DOUBLE from unpacked double_data (fixed64 elements). */
	tensor_head(&t, "dbl", 11, d3, 1);
	for (int i = 0; i < 3; i++) {
		uint64_t bits;

		memcpy(&bits, &dv[i], 8);
		pb_tag(&t, 10, 1);
		pb_fixed64(&t, bits);
	}
	pb_msg(&g, 5, &t);
	/* FLOAT from one packed float_data: the payload is the tensor, at its file offset. */
	tensor_head(&t, "f32", 1, d4, 1);
	pb_bytes(&t, 4, fv, sizeof(fv));
	pb_msg(&g, 5, &t);
	/* COMPLEX64 from unpacked float_data: two floats an element. */
	tensor_head(&t, "cplx", 14, d2x2, 1);
	for (int i = 0; i < 4; i++) {
		uint32_t bits;

		memcpy(&bits, &cv[i], 4);
		pb_tag(&t, 4, 5);
		pb_fixed32(&t, bits);
	}
	pb_msg(&g, 5, &t);
	model(&f, &g);
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	REQUIRE(m->n == 10);
	CHECK(strcmp(m->tensors[0].name, "i8") == 0 && strcmp(m->tensors[9].name, "cplx") == 0);

	x = find(m, "i8");
	CHECK(x && strcmp(x->dtype, "I8") == 0 && hash_is(x, i8b, 4));
	CHECK(x && x->member && strcmp(x->member, "onnx:typed") == 0 && x->offset == 0);
	x = find(m, "u16");
	for (int i = 0; i < 3; i++) {
		buf[2 * i] = (uint8_t)u16v[i];
		buf[2 * i + 1] = (uint8_t)(u16v[i] >> 8);
	}
	CHECK(x && strcmp(x->dtype, "U16") == 0 && hash_is(x, buf, 6));
	CHECK(x && x->offset == 4); /* after i8's 4 bytes in the typed member */
	x = find(m, "flags");
	CHECK(x && strcmp(x->dtype, "BOOL") == 0 && hash_is(x, boolb, 4));
	x = find(m, "i64");
	CHECK(x && strcmp(x->dtype, "I64") == 0 && hash_is(x, i64v, sizeof(i64v)));
	x = find(m, "u32");
	CHECK(x && strcmp(x->dtype, "U32") == 0 && x->ndim == 1 && x->shape[0] == 2 &&
	      hash_is(x, u32v, sizeof(u32v)));
	x = find(m, "half");
	CHECK(x && strcmp(x->dtype, "F16") == 0 && x->fkind == CR_FLOAT_F16 &&
	      hash_is(x, f16v, sizeof(f16v)));
	x = find(m, "bf");
	CHECK(x && strcmp(x->dtype, "BF16") == 0 && hash_is(x, bf16v, sizeof(bf16v)));
	x = find(m, "dbl");
	CHECK(x && strcmp(x->dtype, "F64") == 0 && hash_is(x, dv, sizeof(dv)));
	x = find(m, "f32");
	CHECK(x && strcmp(x->dtype, "F32") == 0 && hash_is(x, fv, sizeof(fv)) && x->member == NULL);
	CHECK(x && memmem(f.ptr, f.len, fv, sizeof(fv)) == f.ptr + x->offset);
	x = find(m, "cplx");
	CHECK(x && strcmp(x->dtype, "C64") == 0 && hash_is(x, cv, sizeof(cv)) && x->member != NULL);
	cr_manifest_free(m);
	cr_buf_free(&g);
	cr_buf_free(&t);
	cr_buf_free(&p);
	cr_buf_free(&f);
}

/* Repeated graphs merge (initializers concatenate); the last raw_data and name win. */
static void test_protobuf_merging_and_unknown_fields(void)
{
	cr_buf g = CR_BUF_INIT, t = CR_BUF_INIT, f = CR_BUF_INIT;
	cr_manifest *m = NULL;
	const uint64_t d2[1] = {2};
	const uint8_t a[2] = {1, 2}, b[2] = {3, 4}, c[2] = {5, 6};

	tensor_head(&t, "first-name", 2, d2, 1);
	pb_bytes(&t, 9, a, 2);
	pb_str(&t, 8, "a");
	pb_bytes(&t, 9, b, 2); /* wins over a */
	/* Unknown fields of every wire type, a group among them, and doc_string. */
	pb_tag(&t, 99, 5);
	pb_fixed32(&t, 0xdeadbeef);
	pb_tag(&t, 98, 1);
	pb_fixed64(&t, 1);
	pb_tag(&t, 97, 3);
	pb_uint(&t, 1, 5);
	pb_tag(&t, 96, 3);
	pb_tag(&t, 96, 4);
	pb_tag(&t, 97, 4);
	pb_str(&t, 12, "docs");
	/* data_type as a length-delimited field: a wrong wire type is an unknown field. */
	pb_bytes(&t, 2, "xx", 2);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	cr_buf_clear(&g);
	tensor_head(&t, "c", 2, d2, 1);
	pb_bytes(&t, 9, c, 2);
	pb_msg(&g, 5, &t);
	pb_bytes(&f, 7, g.ptr, g.len);        /* a second graph field */
	pb_str(&f, 14, "metadata_props-ish"); /* unknown to us */
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	REQUIRE(m->n == 2);
	CHECK(strcmp(m->tensors[0].name, "a") == 0 && hash_is(&m->tensors[0], b, 2));
	CHECK(strcmp(m->tensors[1].name, "c") == 0 && hash_is(&m->tensors[1], c, 2));
	cr_manifest_free(m);
	cr_buf_free(&g);
	cr_buf_free(&t);
	cr_buf_free(&f);
}

static void test_notes(void)
{
	cr_buf g = CR_BUF_INIT, t = CR_BUF_INIT, f = CR_BUF_INIT;
	cr_manifest *m = NULL;
	const uint64_t d1[1] = {1}, d0[1] = {0};
	const uint8_t one = 1;

	tensor_head(&t, "vocab", 8, d1, 1);
	pb_str(&t, 6, "hello");
	pb_msg(&g, 5, &t);
	tensor_head(&t, "future", 200, d1, 1);
	pb_bytes(&t, 9, &one, 1);
	pb_msg(&g, 5, &t);
	tensor_head(&t, "empty", 1, d0, 1); /* no data, and none needed */
	pb_msg(&g, 5, &t);
	pb_str(&t, 1, "sparse");
	pb_msg(&g, 15, &t);
	model(&f, &g);
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	REQUIRE(m->n == 1);
	CHECK(strcmp(m->tensors[0].name, "empty") == 0 && m->tensors[0].length == 0);
	REQUIRE(m->note != NULL);
	CHECK(strstr(m->note, "string initializers not listed: vocab") != NULL);
	CHECK(strstr(m->note, "unknown data_type not listed: future") != NULL);
	CHECK(strstr(m->note, "1 sparse initializers not listed") != NULL);
	cr_manifest_free(m);
	cr_buf_free(&g);
	cr_buf_free(&t);
	cr_buf_free(&f);
}

/* An external tensor of elems elements of dtype (TensorProto.DataType). */
static void ext_tensor_of(cr_buf *g, const char *name, int dtype, uint64_t elems, const char *loc,
                          const char *off, const char *len)
{
	cr_buf t = CR_BUF_INIT, e = CR_BUF_INIT;

	tensor_head(&t, name, dtype, &elems, 1);
	pb_str(&e, 1, "location");
	pb_str(&e, 2, loc);
	pb_msg(&t, 13, &e);
	if (off) {
		pb_str(&e, 1, "offset");
		pb_str(&e, 2, off);
		pb_msg(&t, 13, &e);
	}
	if (len) {
		pb_str(&e, 1, "length");
		pb_str(&e, 2, len);
		pb_msg(&t, 13, &e);
	}
	pb_str(&e, 1, "checksum");
	pb_str(&e, 2, "ignored");
	pb_msg(&t, 13, &e);
	pb_uint(&t, 14, 1); /* data_location = EXTERNAL */
	pb_msg(g, 5, &t);
	cr_buf_free(&t);
	cr_buf_free(&e);
}

/* An external F32 tensor of 8 elements (32 bytes, the shortest range hashed). */
static void ext_tensor(cr_buf *g, const char *name, const char *loc, const char *off,
                       const char *len)
{
	ext_tensor_of(g, name, 1, 8, loc, off, len);
}

static void test_external_data(void)
{
	cr_buf g = CR_BUF_INIT, f = CR_BUF_INIT;
	cr_manifest *m = NULL;
	float data[24];
	const cr_tensor *x;
	char outside[700];

	for (int i = 0; i < 24; i++)
		data[i] = 9.0f - (float)i;
	make_tmpdir();
	write_file("weights.bin", data, sizeof(data));
	mkdir(strcat(strcpy(outside, tmpdir), "/sub"), 0755);
	write_file("sub/more.bin", data, sizeof(data));
	ext_tensor(&g, "a", "weights.bin", NULL, NULL);
	ext_tensor(&g, "b", "weights.bin", "64", "32");
	ext_tensor(&g, "c", "sub/more.bin", "32", NULL);
	ext_tensor(&g, "escape", "../onnx-elsewhere.bin", NULL, NULL);
	ext_tensor(&g, "absolute", "/etc/passwd", NULL, NULL);
	ext_tensor(&g, "missing", "nope.bin", NULL, NULL);
	ext_tensor(&g, "short", "sub/more.bin", "80", NULL);
	model(&f, &g);
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	REQUIRE(m->n == 3);
	x = find(m, "a");
	CHECK(x && x->member && strcmp(x->member, "weights.bin") == 0 && x->offset == 0 &&
	      hash_is(x, data, 32));
	x = find(m, "b");
	CHECK(x && x->offset == 64 && hash_is(x, data + 16, 32));
	x = find(m, "c");
	CHECK(x && strcmp(x->member, "sub/more.bin") == 0 && hash_is(x, data + 8, 32));
	REQUIRE(m->note != NULL);
	CHECK(strstr(m->note, "4 external-data initializers not listed (data not followed)") !=
	      NULL);
	CHECK(strstr(m->note, "escape in ../onnx-elsewhere.bin (a step of the location starts "
	                      "with '.')") != NULL);
	CHECK(strstr(m->note, "absolute in /etc/passwd (location is not a relative path)") != NULL);
	CHECK(strstr(m->note, "missing in nope.bin (no such file)") != NULL);
	CHECK(strstr(m->note, "short in sub/more.bin (file too short)") != NULL);
	cr_manifest_free(m);

	/* A symlink out of the folder is refused too. */
	{
		char target[700], link[700];

		snprintf(target, sizeof(target), "%s/weights.bin", tmpdir);
		snprintf(link, sizeof(link), "%s/sub/up", tmpdir);
		unlink(link);
		CHECK(symlink("../..", link) == 0);
		cr_buf_clear(&g);
		ext_tensor(&g, "via-link", "sub/up/etc/passwd", NULL, NULL);
		model(&f, &g);
		REQUIRE(read_model(f.ptr, f.len, &m) == 0);
		CHECK(m->n == 0 && m->note &&
		      strstr(m->note,
		             "via-link in sub/up/etc/passwd (outside the model's folder)") != NULL);
		cr_manifest_free(m);
	}

	/* A length that disagrees with the shape is an error, not a note. */
	cr_buf_clear(&g);
	ext_tensor(&g, "bad", "weights.bin", NULL, "12");
	model(&f, &g);
	CHECK(read_model(f.ptr, f.len, &m) == CR_EINVAL && m == NULL);
	CHECK(strstr(cr_error_last(), "external data length 12") != NULL);
	CHECK(strstr(cr_error_last(), "model.onnx") != NULL);
	cr_buf_clear(&g);
	ext_tensor(&g, "bad", "weights.bin", "-1", NULL);
	model(&f, &g);
	CHECK(read_model(f.ptr, f.len, &m) == CR_EINVAL);
	cr_buf_free(&g);
	cr_buf_free(&f);
}

/* No hash of m equals the SHA-256 of n bytes of secret at any offset. */
static int leaks(const cr_manifest *m, const uint8_t *secret, size_t len, size_t n)
{
	uint8_t h[CR_SHA256_SIZE];

	for (size_t off = 0; off + n <= len; off++) {
		cr_sha256(h, secret + off, n);
		for (size_t i = 0; i < m->n; i++)
			if (memcmp(h, m->tensors[i].sha256, CR_SHA256_SIZE) == 0)
				return 1;
	}
	return 0;
}

/*
 * Regression: a model could name the store's key beside it (".cleanroom/
 * cleanroom.key", inside the folder) in 1-byte initializers, and each
 * tensor's SHA-256 gave one byte of the key away. Hidden steps, symlinks to
 * hidden files, private files, short ranges and overlapping windows are all
 * refused with a note, and no hash is computed over the secret.
 */
static void test_external_secrets(void)
{
	cr_buf g = CR_BUF_INIT, f = CR_BUF_INIT;
	cr_manifest *m = NULL;
	uint8_t secret[64];
	char path[700], name[32], off[32];

	for (size_t i = 0; i < sizeof(secret); i++)
		secret[i] = (uint8_t)(i * 37 + 11);
	make_tmpdir();
	snprintf(path, sizeof(path), "%s/.cleanroom", tmpdir);
	mkdir(path, 0755);
	write_file(".cleanroom/cleanroom.key", secret, sizeof(secret));
	write_file(".hidden.bin", secret, sizeof(secret));
	write_file("secret.bin", secret, sizeof(secret));
	/* World-readable, so only the hidden step refuses them. */
	snprintf(path, sizeof(path), "%s/.cleanroom/cleanroom.key", tmpdir);
	chmod(path, 0644);

	/* The reviewer's model: one byte per initializer. */
	for (int i = 0; i < 32; i++) {
		snprintf(name, sizeof(name), "b%d", i);
		snprintf(off, sizeof(off), "%d", i);
		ext_tensor_of(&g, name, 2, 1, ".cleanroom/cleanroom.key", off, "1");
	}
	/* Whole 32-byte windows of hidden files. */
	ext_tensor_of(&g, "key", 2, 32, ".cleanroom/cleanroom.key", NULL, NULL);
	ext_tensor_of(&g, "hidden", 2, 32, ".hidden.bin", NULL, NULL);
	ext_tensor_of(&g, "dot", 2, 32, "./secret.bin", "32", NULL);
	ext_tensor_of(&g, "dotdot", 2, 32, "sub/../.cleanroom/cleanroom.key", NULL, NULL);
	model(&f, &g);
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	CHECK(m->n == 0);
	CHECK(!leaks(m, secret, sizeof(secret), 1) && !leaks(m, secret, sizeof(secret), 32));
	REQUIRE(m->note != NULL);
	CHECK(strstr(m->note, "36 external-data initializers not listed") != NULL);
	CHECK(strstr(m->note, "b0 in .cleanroom/cleanroom.key (a step of the location starts "
	                      "with '.')") != NULL);
	cr_manifest_free(m);

	/* A symlink inside the folder to a hidden file, and a private (0600) file. */
	snprintf(path, sizeof(path), "%s/alias.bin", tmpdir);
	unlink(path);
	CHECK(symlink(".cleanroom/cleanroom.key", path) == 0);
	write_file("private.bin", secret, sizeof(secret));
	snprintf(path, sizeof(path), "%s/private.bin", tmpdir);
	chmod(path, 0600);
	cr_buf_clear(&g);
	ext_tensor_of(&g, "via-alias", 2, 32, "alias.bin", NULL, NULL);
	ext_tensor_of(&g, "private", 2, 32, "private.bin", NULL, NULL);
	model(&f, &g);
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	CHECK(m->n == 0 && !leaks(m, secret, sizeof(secret), 32));
	REQUIRE(m->note != NULL);
	CHECK(strstr(m->note, "via-alias in alias.bin (resolves outside the model's folder or "
	                      "to a hidden file)") != NULL);
	CHECK(strstr(m->note, "private in private.bin (a private file") != NULL);
	cr_manifest_free(m);

	/* An ordinary file: short ranges are not hashed; 32 bytes and more are. */
	cr_buf_clear(&g);
	for (int i = 0; i < 31; i++) {
		snprintf(name, sizeof(name), "s%d", i);
		snprintf(off, sizeof(off), "%d", i);
		ext_tensor_of(&g, name, 2, 1, "secret.bin", off, "1");
	}
	ext_tensor_of(&g, "w", 2, 32, "secret.bin", "32", NULL);
	ext_tensor_of(&g, "none", 2, 0, "secret.bin", "7", NULL);
	model(&f, &g);
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	REQUIRE(m->n == 2);
	CHECK(hash_is(find(m, "w"), secret + 32, 32));
	CHECK(find(m, "none") && find(m, "none")->length == 0);
	CHECK(!leaks(m, secret, 32, 1));
	REQUIRE(m->note != NULL);
	CHECK(strstr(m->note, "s0 in secret.bin (under 32 bytes: not hashed alone)") != NULL);
	cr_manifest_free(m);

	/*
	 * Windows shifted by one byte: knowing bytes 0..30, the hash of 1..32
	 * gives byte 32 away. A file whose ranges overlap is not hashed at all,
	 * also when two spellings of its location name it.
	 */
	snprintf(path, sizeof(path), "%s/sub", tmpdir);
	mkdir(path, 0755);
	write_file("sub/secret.bin", secret, sizeof(secret));
	cr_buf_clear(&g);
	ext_tensor_of(&g, "w0", 2, 32, "secret.bin", "0", NULL);
	ext_tensor_of(&g, "w1", 2, 32, "secret.bin", "1", NULL);
	ext_tensor_of(&g, "v0", 2, 32, "sub/secret.bin", "0", NULL);
	ext_tensor_of(&g, "v1", 2, 32, "sub//secret.bin", "1", NULL);
	model(&f, &g);
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	CHECK(m->n == 0 && !leaks(m, secret, sizeof(secret), 32));
	REQUIRE(m->note != NULL);
	CHECK(strstr(m->note, "w1 in secret.bin (ranges in the file overlap)") != NULL);
	CHECK(strstr(m->note, "v1 in sub//secret.bin (ranges in the file overlap)") != NULL);
	cr_manifest_free(m);
	cr_buf_free(&g);
	cr_buf_free(&f);
}

/*
 * Regression: ranges were read tensor by tensor in declaration order, so a
 * range declared after one starting later made the engine fail ("bytes at 4
 * arrive before those at 0", exit 3). Now each file is read once in offset
 * order; equal ranges are shared, and any other overlap is a note.
 */
static void test_external_shared_ranges(void)
{
	cr_buf g = CR_BUF_INIT, f = CR_BUF_INIT, t = CR_BUF_INIT;
	cr_manifest *m = NULL;
	uint8_t data[128];
	const uint64_t d4[1] = {4};
	const float w[4] = {1, 2, 3, 4};
	const char *names[] = {"inline0", "u", "t1", "inline1", "t2", "t3", "z"};

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(255 - i);
	write_file("shared.bin", data, sizeof(data));

	/* The reviewer's layout, at sizes now hashed: C lies inside A, declared first. */
	ext_tensor_of(&g, "C", 2, 32, "shared.bin", "32", NULL);
	ext_tensor_of(&g, "A", 2, 64, "shared.bin", "0", NULL);
	model(&f, &g);
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	CHECK(m->n == 0);
	CHECK(m->note && strstr(m->note, "C in shared.bin (ranges in the file overlap)") != NULL);
	cr_manifest_free(m);

	/* Equal ranges declared out of order, between inline tensors: file order is kept. */
	cr_buf_clear(&g);
	tensor_head(&t, "inline0", 1, d4, 1);
	pb_bytes(&t, 9, w, sizeof(w));
	pb_msg(&g, 5, &t);
	ext_tensor_of(&g, "u", 2, 32, "shared.bin", "64", NULL);
	ext_tensor_of(&g, "t1", 2, 64, "shared.bin", "0", NULL);
	tensor_head(&t, "inline1", 1, d4, 1);
	pb_bytes(&t, 9, w, sizeof(w));
	pb_msg(&g, 5, &t);
	ext_tensor_of(&g, "t2", 2, 64, "shared.bin", "0", NULL);
	ext_tensor_of(&g, "t3", 2, 64, "shared.bin", NULL, "64");
	ext_tensor_of(&g, "z", 2, 0, "shared.bin", "100", NULL);
	model(&f, &g);
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	REQUIRE(m->n == 7);
	for (size_t i = 0; i < 7; i++)
		CHECK(strcmp(m->tensors[i].name, names[i]) == 0);
	CHECK(hash_is(find(m, "inline0"), w, sizeof(w)) && hash_is(find(m, "inline1"), w, 16));
	CHECK(hash_is(find(m, "u"), data + 64, 32) && find(m, "u")->offset == 64);
	CHECK(hash_is(find(m, "t1"), data, 64) && hash_is(find(m, "t2"), data, 64) &&
	      hash_is(find(m, "t3"), data, 64));
	CHECK(find(m, "z")->length == 0 && find(m, "z")->offset == 100);
	CHECK(m->note == NULL);
	cr_manifest_free(m);
	cr_buf_free(&g);
	cr_buf_free(&t);
	cr_buf_free(&f);
}

/* A valid model with a bit of everything, for the hostile tests. */
static void sample(cr_buf *f)
{
	cr_buf g = CR_BUF_INIT, t = CR_BUF_INIT, p = CR_BUF_INIT;
	const uint64_t d3[1] = {3};
	const float w[3] = {1, 2, 3};

	tensor_head(&t, "w", 1, d3, 1);
	pb_bytes(&t, 9, w, sizeof(w));
	pb_msg(&g, 5, &t);
	tensor_head(&t, "k", 7, d3, 1);
	pb_varint(&p, 1);
	pb_varint(&p, 300);
	pb_varint(&p, (uint64_t)-1);
	pb_msg(&t, 7, &p);
	pb_msg(&g, 5, &t);
	tensor_head(&t, "u", 2, d3, 1);
	pb_uint(&t, 5, 1);
	pb_uint(&t, 5, 2);
	pb_uint(&t, 5, 3);
	pb_msg(&g, 5, &t);
	model(f, &g);
	cr_buf_free(&g);
	cr_buf_free(&t);
	cr_buf_free(&p);
}

static void test_every_truncation_fails_cleanly(void)
{
	cr_buf f = CR_BUF_INIT;
	cr_manifest *m = NULL;
	size_t ok = 0;

	sample(&f);
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	CHECK(m->n == 3);
	cr_manifest_free(m);
	for (size_t n = 1; n < f.len; n++) {
		int rc = read_model(f.ptr, n, &m);

		/* A cut exactly between two top-level fields is a smaller valid model. */
		if (rc == 0) {
			ok++;
			CHECK(m->n < 3);
			cr_manifest_free(m);
			continue;
		}
		CHECK(rc == CR_EINVAL);
		CHECK(m == NULL);
		CHECK(strstr(cr_error_last(), "model.onnx") != NULL);
	}
	CHECK(ok == 2); /* after ir_version, after producer_name */
	cr_buf_free(&f);
}

static int fails_with(const cr_buf *f, const char *what)
{
	cr_manifest *m = NULL;
	int rc = read_model(f->ptr, f->len, &m);

	cr_manifest_free(m);
	if (rc != CR_EINVAL || !strstr(cr_error_last(), what)) {
		fprintf(stderr, "  want CR_EINVAL '%s', got %d '%s'\n", what, rc, cr_error_last());
		return 0;
	}
	return 1;
}

static void test_hostile(void)
{
	cr_buf f = CR_BUF_INIT, g = CR_BUF_INIT, t = CR_BUF_INIT, p = CR_BUF_INIT;
	const uint64_t d3[1] = {3}, big[2] = {1ull << 40, 1ull << 40};
	const uint8_t nine[9] = {0};

	CHECK(fails_with(&f, "empty file"));
	/* Eleven continuation bytes: no varint is that long. */
	cr_buf_put(&f, "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12);
	CHECK(fails_with(&f, "overflows 64 bits"));
	cr_buf_clear(&f);
	cr_buf_put(&f, "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 11);
	CHECK(fails_with(&f, "overflows 64 bits"));
	/* A graph whose length runs past the file. */
	cr_buf_clear(&f);
	pb_tag(&f, 7, 2);
	pb_varint(&f, 1000);
	cr_buf_put(&f, "\x2a\x00", 2);
	CHECK(fails_with(&f, "runs past the end"));
	/* An initializer whose length runs past the graph (but not the file). */
	cr_buf_clear(&f);
	pb_tag(&f, 7, 2);
	pb_varint(&f, 2);
	pb_tag(&f, 5, 2);
	pb_varint(&f, 3);
	pb_uint(&f, 1, 1);
	pb_uint(&f, 1, 1);
	CHECK(fails_with(&f, "runs past the end of its message"));
	/* Field number 0, wire types 6 and 7. */
	cr_buf_clear(&f);
	cr_buf_put(&f, "\x00\x01", 2);
	CHECK(fails_with(&f, "invalid field tag"));
	cr_buf_clear(&f);
	cr_buf_put(&f, "\x0e\x01", 2);
	CHECK(fails_with(&f, "invalid field tag"));
	/* Groups nested past the cap, an end-group with no start, a mismatched end. */
	cr_buf_clear(&f);
	for (int i = 0; i < 200; i++)
		pb_tag(&f, 9, 3);
	for (int i = 0; i < 200; i++)
		pb_tag(&f, 9, 4);
	CHECK(fails_with(&f, "nested deeper"));
	cr_buf_clear(&f);
	pb_tag(&f, 9, 4);
	CHECK(fails_with(&f, "unexpected end-group"));
	cr_buf_clear(&f);
	pb_tag(&f, 9, 3);
	pb_tag(&f, 8, 4);
	CHECK(fails_with(&f, "closed by end-group"));
	/* Data that disagrees with the shape. */
	tensor_head(&t, "w", 1, d3, 1);
	pb_bytes(&t, 9, nine, 9);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "raw_data holds 9 bytes but its shape needs 12"));
	cr_buf_clear(&g);
	tensor_head(&t, "k", 7, d3, 1);
	for (int i = 0; i < 4; i++)
		pb_varint(&p, 1);
	pb_msg(&t, 7, &p);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "k holds more elements than its shape"));
	cr_buf_clear(&g);
	tensor_head(&t, "k", 7, d3, 1);
	pb_uint(&t, 7, 1);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "k holds 8 bytes of elements but its shape needs 24"));
	cr_buf_clear(&g);
	tensor_head(&t, "k", 7, d3, 1);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "k holds no data"));
	/* A packed varint array ending inside a varint. */
	cr_buf_clear(&g);
	tensor_head(&t, "k", 7, d3, 1);
	pb_varint(&p, 1);
	pb_varint(&p, 1);
	cr_buf_putc(&p, (char)0x81);
	pb_msg(&t, 7, &p);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "truncated varint in initializer k"));
	/* A packed varint longer than 64 bits. */
	cr_buf_clear(&g);
	tensor_head(&t, "k", 7, d3, 1);
	pb_varint(&p, 1);
	cr_buf_put(&p, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 10);
	pb_varint(&p, 1);
	pb_msg(&t, 7, &p);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "varint overflows 64 bits in initializer k"));
	/* Packed floats that are not a whole number of elements. */
	cr_buf_clear(&g);
	tensor_head(&t, "w", 1, d3, 1);
	pb_bytes(&t, 4, nine, 9);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "not a whole number of elements"));
	/* Absurd shapes, negative and too many dimensions, no name, no data_type. */
	cr_buf_clear(&g);
	tensor_head(&t, "huge", 1, big, 2);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "huge"));
	cr_buf_clear(&g);
	cr_buf_clear(&t);
	pb_uint(&t, 1, (uint64_t)-3);
	pb_uint(&t, 2, 1);
	pb_str(&t, 8, "neg");
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "negative dimension -3"));
	cr_buf_clear(&g);
	for (int i = 0; i < 9; i++)
		pb_uint(&t, 1, 1);
	pb_uint(&t, 2, 1);
	pb_str(&t, 8, "deep");
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "more than 8 dimensions"));
	cr_buf_clear(&g);
	pb_uint(&t, 2, 1);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "initializer 0 has no name"));
	cr_buf_clear(&g);
	pb_str(&t, 8, "x");
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "x has no data_type"));
	cr_buf_clear(&g);
	pb_str(&t, 8, "a\xff");
	pb_uint(&t, 2, 1);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "not UTF-8"));
	cr_buf_clear(&g);
	pb_bytes(&t, 8, "a\0b", 3);
	pb_uint(&t, 2, 1);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(fails_with(&f, "NUL"));
	/* Two initializers of one name. */
	cr_buf_clear(&g);
	tensor_head(&t, "same", 2, d3, 1);
	pb_bytes(&t, 9, nine, 3);
	pb_bytes(&g, 5, t.ptr, t.len);
	pb_bytes(&g, 5, t.ptr, t.len);
	model(&f, &g);
	CHECK(fails_with(&f, "appears twice"));
	cr_buf_free(&f);
	cr_buf_free(&g);
	cr_buf_free(&t);
	cr_buf_free(&p);
}

static void test_many_chunks(void)
{
	/* Typed elements spanning several 1 MiB read blocks, decoded as they stream past. */
	cr_buf g = CR_BUF_INIT, t = CR_BUF_INIT, p = CR_BUF_INIT, f = CR_BUF_INIT;
	const size_t n = 700000;
	uint64_t d[1] = {n};
	int64_t *want = malloc(n * sizeof(*want));
	uint8_t *raw = malloc(3 * n);
	cr_manifest *m = NULL;

	REQUIRE(want && raw);
	memset(raw, 0x5a, 3 * n);
	tensor_head(&t, "big", 7, d, 1);
	for (size_t i = 0; i < n; i++) {
		want[i] = (int64_t)(i * 2654435761u) - (int64_t)n;
		if (i < n / 2)
			pb_varint(&p, (uint64_t)want[i]);
		else
			pb_uint(&t, 7, (uint64_t)want[i]);
		if (i == n / 2 - 1)
			pb_msg(&t, 7, &p);
	}
	pb_msg(&g, 5, &t);
	d[0] = 3 * n;
	tensor_head(&t, "raw", 2, d, 1);
	pb_bytes(&t, 9, raw, 3 * n);
	pb_msg(&g, 5, &t);
	model(&f, &g);
	CHECK(f.len > 4u << 20);
	REQUIRE(read_model(f.ptr, f.len, &m) == 0);
	REQUIRE(m->n == 2);
	CHECK(hash_is(find(m, "big"), want, n * sizeof(*want)));
	CHECK(hash_is(find(m, "raw"), raw, 3 * n));
	cr_manifest_free(m);
	free(want);
	free(raw);
	cr_buf_free(&g);
	cr_buf_free(&t);
	cr_buf_free(&p);
	cr_buf_free(&f);
}

static void test_probe(void)
{
	cr_buf f = CR_BUF_INIT;
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	cr_manifest *m = NULL;
	char path[700];
	int fd;

	/* Detected by its content under any name. */
	sample(&f);
	write_file("model.bin", f.ptr, f.len);
	snprintf(path, sizeof(path), "%s/model.bin", tmpdir);
	REQUIRE((fd = open(path, O_RDONLY)) >= 0);
	o.name = "model.bin";
	CHECK(cr_manifest_read(fd, &o, &m, NULL, NULL) == 0);
	CHECK(m && strcmp(m->format, "onnx") == 0 && m->n == 3);
	cr_manifest_free(m);
	close(fd);
	/* Text named .bin is not ONNX. */
	write_file("notes.bin", "hello world\n", 12);
	snprintf(path, sizeof(path), "%s/notes.bin", tmpdir);
	REQUIRE((fd = open(path, O_RDONLY)) >= 0);
	o.name = "notes.bin";
	CHECK(cr_manifest_read(fd, &o, &m, NULL, NULL) == 0);
	CHECK(m && strcmp(m->format, "file") == 0);
	cr_manifest_free(m);
	close(fd);
	cr_buf_free(&f);
}

TEST_MAIN(TEST(test_raw_data), TEST(test_typed_fields),
          TEST(test_protobuf_merging_and_unknown_fields), TEST(test_notes),
          TEST(test_external_data), TEST(test_external_secrets), TEST(test_external_shared_ranges),
          TEST(test_every_truncation_fails_cleanly), TEST(test_hostile), TEST(test_many_chunks),
          TEST(test_probe))
