/*
 * The GGUF reader (versions 2 and 3, little-endian).
 *
 * Layout: "GGUF", u32 version, u64 tensor_count, u64 metadata_kv_count, the
 * metadata (key string, u32 value type, value; arrays carry an element type
 * and a u64 count and may nest), the tensor infos (name string, u32 n_dims,
 * u64 dims[n_dims] with ne[0] innermost, u32 ggml type, u64 offset relative
 * to the data section), padding to general.alignment (default 32), then the
 * data section. A tensor's manifest offset is its file offset; its shape is
 * the dims as stored (ne[0] first); its dtype is the ggml type's name.
 *
 * Metadata is skipped, never kept: only general.alignment is read. Every
 * count is checked against the bytes left in the file before it drives a
 * loop (each element takes at least a known number of bytes), so the work
 * is linear in the file size; strings and nesting depth are capped. Byte
 * sizes of quantised types come from the ggml block table below; ne[0]
 * must be a whole number of blocks.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "recorder/tensors/tensors_internal.h"
#include "util/codec.h"

#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_ALIGNMENT     (1u << 30)
/* Metadata strings (tokenizer merges, chat templates) can be long, not absurd. */
#define GGUF_MAX_STRING (64u * 1024 * 1024)
#define GGUF_MAX_KEY    65535u
#define GGUF_MAX_DEPTH  8
#define GGUF_MAX_KV     10000000u

/* clang-format off */
enum {
	GT_UINT8 = 0, GT_INT8, GT_UINT16, GT_INT16, GT_UINT32, GT_INT32, GT_FLOAT32, GT_BOOL,
	GT_STRING, GT_ARRAY, GT_UINT64, GT_INT64, GT_FLOAT64, GT_COUNT
};
/* clang-format on */

/* Size of a fixed-size metadata value type, 0 for strings and arrays. */
static const uint8_t value_size[GT_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

/* ggml tensor types: name, elements per block, bytes per block. */
/* clang-format off */
static const struct {
	const char *name;
	uint32_t block;
	uint32_t bytes;
} ggml_types[] = {
	[0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},        [2] = {"Q4_0", 32, 18},
	[3] = {"Q4_1", 32, 20},      [6] = {"Q5_0", 32, 22},     [7] = {"Q5_1", 32, 24},
	[8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 36},     [10] = {"Q2_K", 256, 84},
	[11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},  [13] = {"Q5_K", 256, 176},
	[14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66},
	[17] = {"IQ2_XS", 256, 74},  [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
	[20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},
	[23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},        [25] = {"I16", 1, 2},
	[26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},
	[29] = {"IQ1_M", 256, 56},   [30] = {"BF16", 1, 2},      [34] = {"TQ1_0", 256, 54},
	[35] = {"TQ2_0", 256, 66},   [39] = {"MXFP4", 32, 17},
};
/* clang-format on */
#define N_GGML_TYPES (sizeof(ggml_types) / sizeof(ggml_types[0]))

/* A buffered reader over the file with pread; pos is the next byte's offset. */
typedef struct cursor {
	cr_tpass *p;
	int fd;
	uint64_t pos, size;
	uint64_t bstart;
	size_t blen;
	uint8_t buf[64 * 1024];
} cursor;

typedef struct ginfo {
	char *name;
	uint32_t ndim, type;
	uint64_t dims[CR_TENSOR_MAX_DIMS];
	uint64_t offset, length;
} ginfo;

static int truncated(cursor *c, const char *what)
{
	return cr_error_set(CR_EINVAL,
	                    "%s: GGUF truncated: %s at offset %llu runs past the end of "
	                    "the file (%llu bytes)",
	                    cr_tpass_name(c->p), what, (unsigned long long)c->pos,
	                    (unsigned long long)c->size);
}

static int cur_read(cursor *c, void *out, size_t n, const char *what)
{
	uint8_t *o = out;

	if (n > c->size - c->pos)
		return truncated(c, what);
	while (n > 0) {
		size_t take;

		if (c->pos < c->bstart || c->pos >= c->bstart + c->blen) {
			uint64_t left = c->size - c->pos;
			size_t want = left < sizeof(c->buf) ? (size_t)left : sizeof(c->buf);
			int rc = cr_tpass_pread(c->p, c->fd, c->buf, want, c->pos);

			if (rc)
				return rc;
			c->bstart = c->pos;
			c->blen = want;
		}
		take = (size_t)(c->bstart + c->blen - c->pos);
		if (take > n)
			take = n;
		memcpy(o, c->buf + (c->pos - c->bstart), take);
		o += take;
		n -= take;
		c->pos += take;
	}
	return 0;
}

static int cur_skip(cursor *c, uint64_t n, const char *what)
{
	if (n > c->size - c->pos)
		return truncated(c, what);
	c->pos += n;
	return 0;
}

static int cur_u32(cursor *c, uint32_t *v, const char *what)
{
	uint8_t b[4];
	int rc = cur_read(c, b, 4, what);

	if (!rc)
		*v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
		     (uint32_t)b[3] << 24;
	return rc;
}

static int cur_u64(cursor *c, uint64_t *v, const char *what)
{
	uint8_t b[8];
	int rc = cur_read(c, b, 8, what);

	if (!rc) {
		*v = 0;
		for (int i = 7; i >= 0; i--)
			*v = *v << 8 | b[i];
	}
	return rc;
}

static uint64_t left(const cursor *c)
{
	return c->size - c->pos;
}

/* Skip one value of type t (depth: array nesting so far). */
static int skip_value(cursor *c, uint32_t t, int depth, uint64_t kv)
{
	const char *fn = cr_tpass_name(c->p);
	uint64_t n;
	int rc;

	if (t >= GT_COUNT)
		return cr_error_set(CR_EINVAL,
		                    "%s: GGUF metadata entry %llu has unknown value type %u", fn,
		                    (unsigned long long)kv, t);
	if (value_size[t]) {
		if (t == GT_BOOL && depth == 0) {
			uint8_t b;

			if ((rc = cur_read(c, &b, 1, "a bool value")) != 0)
				return rc;
			if (b > 1)
				return cr_error_set(
				    CR_EINVAL,
				    "%s: GGUF metadata entry %llu: bool value %u is "
				    "neither 0 nor 1",
				    fn, (unsigned long long)kv, b);
			return 0;
		}
		return cur_skip(c, value_size[t], "a metadata value");
	}
	if (t == GT_STRING) {
		if ((rc = cur_u64(c, &n, "a string length")) != 0)
			return rc;
		if (n > GGUF_MAX_STRING)
			return cr_error_set(CR_EINVAL,
			                    "%s: GGUF metadata entry %llu: string of %llu bytes "
			                    "(at most %u)",
			                    fn, (unsigned long long)kv, (unsigned long long)n,
			                    GGUF_MAX_STRING);
		return cur_skip(c, n, "a metadata string");
	}
	/* An array: element type, count, elements. */
	{
		uint32_t et;
		uint64_t min, total;

		if (depth >= GGUF_MAX_DEPTH)
			return cr_error_set(CR_EINVAL,
			                    "%s: GGUF metadata entry %llu: arrays nested deeper "
			                    "than %d",
			                    fn, (unsigned long long)kv, GGUF_MAX_DEPTH);
		if ((rc = cur_u32(c, &et, "an array type")) != 0 ||
		    (rc = cur_u64(c, &n, "an array length")) != 0)
			return rc;
		if (et >= GT_COUNT)
			return cr_error_set(CR_EINVAL,
			                    "%s: GGUF metadata entry %llu: array of unknown type "
			                    "%u",
			                    fn, (unsigned long long)kv, et);
		/* Each element takes at least min bytes: a count beyond the file is a lie. */
		min = value_size[et] ? value_size[et] : (et == GT_STRING ? 8 : 12);
		if (__builtin_mul_overflow(n, min, &total) || total > left(c))
			return cr_error_set(CR_EINVAL,
			                    "%s: GGUF metadata entry %llu: array of %llu "
			                    "elements cannot fit in the %llu bytes left",
			                    fn, (unsigned long long)kv, (unsigned long long)n,
			                    (unsigned long long)left(c));
		if (value_size[et])
			return cur_skip(c, total, "an array");
		for (uint64_t i = 0; i < n; i++)
			if ((rc = skip_value(c, et, depth + 1, kv)) != 0)
				return rc;
		return 0;
	}
}

static int read_metadata(cursor *c, uint64_t n_kv, uint32_t *alignment)
{
	const char *fn = cr_tpass_name(c->p);
	int seen_alignment = 0;

	for (uint64_t i = 0; i < n_kv; i++) {
		uint64_t klen;
		uint32_t type;
		char key[18];
		int is_align = 0;
		int rc;

		if ((rc = cur_u64(c, &klen, "a metadata key length")) != 0)
			return rc;
		if (klen == 0 || klen > GGUF_MAX_KEY)
			return cr_error_set(CR_EINVAL,
			                    "%s: GGUF metadata entry %llu: key of %llu bytes "
			                    "(1 to %u)",
			                    fn, (unsigned long long)i, (unsigned long long)klen,
			                    GGUF_MAX_KEY);
		if (klen == 17) {
			if ((rc = cur_read(c, key, 17, "a metadata key")) != 0)
				return rc;
			key[17] = '\0';
			is_align = memcmp(key, "general.alignment", 17) == 0;
		} else if ((rc = cur_skip(c, klen, "a metadata key")) != 0) {
			return rc;
		}
		if ((rc = cur_u32(c, &type, "a metadata value type")) != 0)
			return rc;
		if (!is_align) {
			if ((rc = skip_value(c, type, 0, i)) != 0)
				return rc;
			continue;
		}
		if (seen_alignment)
			return cr_error_set(CR_EINVAL, "%s: GGUF general.alignment appears twice",
			                    fn);
		seen_alignment = 1;
		if (type != GT_UINT32)
			return cr_error_set(CR_EINVAL,
			                    "%s: GGUF general.alignment has value type %u, not "
			                    "uint32",
			                    fn, type);
		if ((rc = cur_u32(c, alignment, "general.alignment")) != 0)
			return rc;
		if (*alignment == 0 || *alignment > GGUF_MAX_ALIGNMENT ||
		    (*alignment & (*alignment - 1)) != 0)
			return cr_error_set(CR_EINVAL,
			                    "%s: GGUF general.alignment %u is not a power of two "
			                    "up to %u",
			                    fn, *alignment, GGUF_MAX_ALIGNMENT);
	}
	return 0;
}

static int read_info(cursor *c, uint64_t idx, ginfo *g)
{
	const char *fn = cr_tpass_name(c->p);
	uint64_t nlen, row, rows = 1;
	int rc;

	if ((rc = cur_u64(c, &nlen, "a tensor name length")) != 0)
		return rc;
	if (nlen > CR_TENSOR_MAX_NAME)
		return cr_error_set(
		    CR_EINVAL, "%s: GGUF tensor %llu: name of %llu bytes (at most %u)", fn,
		    (unsigned long long)idx, (unsigned long long)nlen, CR_TENSOR_MAX_NAME);
	if ((g->name = malloc((size_t)nlen + 1)) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	if ((rc = cur_read(c, g->name, (size_t)nlen, "a tensor name")) != 0)
		return rc;
	g->name[nlen] = '\0';
	if (memchr(g->name, '\0', (size_t)nlen) || !cr_utf8_valid((uint8_t *)g->name, (size_t)nlen))
		return cr_error_set(CR_EINVAL,
		                    "%s: GGUF tensor %llu: name holds a NUL byte or is not "
		                    "UTF-8",
		                    fn, (unsigned long long)idx);
	if ((rc = cur_u32(c, &g->ndim, "a tensor's n_dims")) != 0)
		return rc;
	if (g->ndim > CR_TENSOR_MAX_DIMS)
		return cr_error_set(CR_EINVAL,
		                    "%s: GGUF tensor '%s' has %u dimensions (at most %d)", fn,
		                    g->name, g->ndim, CR_TENSOR_MAX_DIMS);
	for (uint32_t k = 0; k < g->ndim; k++) {
		if ((rc = cur_u64(c, &g->dims[k], "a tensor dimension")) != 0)
			return rc;
		if (g->dims[k] > (uint64_t)CR_EVENT_INT_MAX)
			return cr_error_set(CR_EINVAL,
			                    "%s: GGUF tensor '%s': absurd dimension %llu", fn,
			                    g->name, (unsigned long long)g->dims[k]);
	}
	if ((rc = cur_u32(c, &g->type, "a tensor type")) != 0 ||
	    (rc = cur_u64(c, &g->offset, "a tensor offset")) != 0)
		return rc;
	if (g->type >= N_GGML_TYPES || !ggml_types[g->type].name)
		return cr_error_set(CR_EINVAL, "%s: GGUF tensor '%s' has unknown ggml type %u", fn,
		                    g->name, g->type);
	/* ne[0] is the innermost dimension: whole blocks of it make a row. */
	{
		uint64_t ne0 = g->ndim ? g->dims[0] : 1;
		uint32_t blk = ggml_types[g->type].block;

		if (ne0 % blk)
			return cr_error_set(CR_EINVAL,
			                    "%s: GGUF tensor '%s': first dimension %llu is not a "
			                    "multiple of the %s block size %u",
			                    fn, g->name, (unsigned long long)ne0,
			                    ggml_types[g->type].name, blk);
		row = ne0 / blk * ggml_types[g->type].bytes;
	}
	for (uint32_t k = 1; k < g->ndim; k++)
		if (__builtin_mul_overflow(rows, g->dims[k], &rows))
			return cr_error_set(CR_EINVAL,
			                    "%s: GGUF tensor '%s': absurd shape (size overflows)",
			                    fn, g->name);
	if (__builtin_mul_overflow(row, rows, &g->length))
		return cr_error_set(
		    CR_EINVAL, "%s: GGUF tensor '%s': absurd shape (size overflows)", fn, g->name);
	return 0;
}

static int gguf_probe(const uint8_t *head, size_t n, const char *name)
{
	(void)name;
	return n >= 8 && memcmp(head, "GGUF", 4) == 0 && (head[4] == 2 || head[4] == 3) &&
	       head[5] == 0 && head[6] == 0 && head[7] == 0;
}

static int info_cmp(const void *x, const void *y)
{
	const ginfo *a = *(const ginfo *const *)x, *b = *(const ginfo *const *)y;

	if (a->offset != b->offset)
		return a->offset < b->offset ? -1 : 1;
	return a->length < b->length ? -1 : (a->length > b->length);
}

static int gguf_read(cr_tpass *p, int fd)
{
	const char *fn = cr_tpass_name(p);
	cursor *c;
	ginfo *infos = NULL;
	ginfo **sorted = NULL;
	const ginfo *last = NULL;
	uint64_t n_tensors = 0, n_kv, data_start, data_len, end = 0;
	uint32_t version, alignment = GGUF_DEFAULT_ALIGNMENT;
	uint8_t magic[4];
	int rc;

	if ((c = calloc(1, sizeof(*c))) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	c->p = p;
	c->fd = fd;
	c->size = cr_tpass_size(p);
	if ((rc = cur_read(c, magic, 4, "the magic")) != 0 ||
	    (rc = cur_u32(c, &version, "the version")) != 0)
		goto done;
	if (memcmp(magic, "GGUF", 4) != 0 || (version != 2 && version != 3)) {
		rc = cr_error_set(CR_EINVAL, "%s: not a GGUF v2/v3 file", fn);
		goto done;
	}
	if ((rc = cur_u64(c, &n_tensors, "the tensor count")) != 0 ||
	    (rc = cur_u64(c, &n_kv, "the metadata count")) != 0)
		goto done;
	/* A tensor info takes at least 24 bytes, a metadata entry at least 13. */
	if (n_tensors > CR_TENSOR_MAX_COUNT || n_tensors * 24 > left(c)) {
		rc = cr_error_set(CR_EINVAL,
		                  "%s: GGUF tensor count %llu is absurd for a %llu-byte file", fn,
		                  (unsigned long long)n_tensors, (unsigned long long)c->size);
		goto done;
	}
	if (n_kv > GGUF_MAX_KV || n_kv * 13 > left(c)) {
		rc = cr_error_set(CR_EINVAL,
		                  "%s: GGUF metadata count %llu is absurd for a %llu-byte "
		                  "file",
		                  fn, (unsigned long long)n_kv, (unsigned long long)c->size);
		goto done;
	}
	if ((rc = read_metadata(c, n_kv, &alignment)) != 0)
		goto done;
	if (n_tensors * 24 > left(c)) {
		rc = truncated(c, "the tensor infos");
		goto done;
	}
	if ((infos = calloc((size_t)n_tensors + 1, sizeof(*infos))) == NULL ||
	    (sorted = calloc((size_t)n_tensors + 1, sizeof(*sorted))) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	for (uint64_t i = 0; i < n_tensors; i++)
		if ((rc = read_info(c, i, &infos[i])) != 0)
			goto done;
	data_start = (c->pos + alignment - 1) / alignment * alignment;
	if (data_start > c->size) {
		if (n_tensors == 0) {
			data_start = c->size; /* no data section: nothing to align */
		} else {
			rc = cr_error_set(CR_EINVAL,
			                  "%s: GGUF truncated: the data section would start at "
			                  "%llu, beyond the end of the file",
			                  fn, (unsigned long long)data_start);
			goto done;
		}
	}
	data_len = c->size - data_start;
	for (uint64_t i = 0; i < n_tensors; i++) {
		ginfo *g = &infos[i];

		if (g->offset % alignment) {
			rc = cr_error_set(CR_EINVAL,
			                  "%s: GGUF tensor '%s': offset %llu is not a multiple of "
			                  "the alignment %u",
			                  fn, g->name, (unsigned long long)g->offset, alignment);
			goto done;
		}
		if (g->offset > data_len || g->length > data_len - g->offset) {
			rc = cr_error_set(
			    CR_EINVAL,
			    "%s: GGUF tensor '%s': bytes %llu..+%llu of the data "
			    "section lie beyond the end of the file (%llu bytes of data)",
			    fn, g->name, (unsigned long long)g->offset,
			    (unsigned long long)g->length, (unsigned long long)data_len);
			goto done;
		}
		sorted[i] = g;
	}
	if (n_tensors > 1)
		qsort(sorted, (size_t)n_tensors, sizeof(*sorted), info_cmp);
	for (uint64_t i = 0; i < n_tensors; i++) {
		if (sorted[i]->length == 0)
			continue;
		if (last && sorted[i]->offset < end) {
			rc = cr_error_set(CR_EINVAL, "%s: GGUF tensors '%s' and '%s' overlap", fn,
			                  sorted[i]->name, last->name);
			goto done;
		}
		end = sorted[i]->offset + sorted[i]->length;
		last = sorted[i];
	}
	for (uint64_t i = 0; i < n_tensors; i++) {
		ginfo *g = &infos[i];
		cr_tensor t;

		memset(&t, 0, sizeof(t));
		t.name = g->name;
		snprintf(t.dtype, sizeof(t.dtype), "%s", ggml_types[g->type].name);
		t.ndim = g->ndim;
		memcpy(t.shape, g->dims, sizeof(t.shape));
		t.offset = data_start + g->offset;
		t.length = g->length;
		if ((rc = cr_tpass_add(p, &t)) != 0)
			goto done;
	}
	if ((rc = cr_tpass_begin(p)) != 0)
		goto done;
	rc = cr_tpass_stream_fd(p, fd);
done:
	if (infos)
		for (uint64_t i = 0; i < n_tensors; i++)
			free(infos[i].name);
	free(infos);
	free(sorted);
	free(c);
	return rc;
}

const cr_tensor_reader cr_reader_gguf = {"gguf", gguf_probe, gguf_read};
