/*
 * ONNX reader: the initializers of a model's main graph as a tensor manifest.
 *
 * An ONNX file is one protobuf ModelProto (onnx.proto, ONNX 1.12). The wire
 * format is read here from the protobuf encoding spec alone: tags and
 * varints, fixed32/fixed64, length-delimited fields checked against the end
 * of their enclosing message, groups skipped with a nesting cap, unknown
 * fields (and known fields with an unexpected wire type, as protobuf itself
 * does) skipped. Only ModelProto.graph (7) -> GraphProto.initializer (5) ->
 * TensorProto is descended into; repeated occurrences of a message merge as
 * protobuf merges them (initializers concatenate, the last scalar wins).
 *
 * Two passes over the file, both with pread (no mmap: a checkpoint
 * truncated while mapped would kill the recorder with SIGBUS):
 *   1. metadata: every tag is read, but the payloads of raw_data and packed
 *      arrays are skipped over, only their file ranges noted;
 *   2. the bytes: one sequential read of the whole file through
 *      cr_tpass_file / cr_tpass_feed (raw_data tensors lie at their file
 *      offsets). Tensors held in typed fields (int32_data, int64_data, ...)
 *      are decoded from the same chunks as they pass and fed, converted to
 *      their dtype's little-endian bytes, under the virtual member
 *      CR_ONNX_TYPED_MEMBER. External data files beside the model are then
 *      read and fed under their location, each file once, in offset order.
 * External data is followed only where its hashes cannot give a secret
 * away (see "external data" below): tensors are therefore declared after
 * the metadata pass once a model names external data, in file order.
 * A tensor's bytes are what onnx.numpy_helper.to_array(t).tobytes() gives,
 * except BFLOAT16, which numpy_helper widens to float32: we keep its two
 * bytes per element (docs/formats/tensors.md, "ONNX").
 *
 * Memory is bounded by the tensor count and CR_ONNX_MAX_RANGES, never by the
 * size of a tensor.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<linux/openat2.h>)
#include <linux/openat2.h>
#define HAVE_OPENAT2_H 1
#endif
#endif

#include "cleanroom/error.h"
#include "recorder/tensors/tensors_internal.h"
#include "util/buf.h"
#include "util/codec.h"

/* The member typed-field tensors are fed under (see the file comment). */
#define CR_ONNX_TYPED_MEMBER "onnx:typed"
/* Nesting of protobuf groups skipped over. */
#define ONNX_MAX_DEPTH 64
/* Typed-field data ranges (packed arrays and runs of unpacked elements). */
#define ONNX_MAX_RANGES (1u << 20)
/* external_data entries of one tensor, and the length of their keys and values. */
#define ONNX_MAX_EXTERNAL 64
#define ONNX_MAX_STRING   4096u
/* Tensor names listed in a note before "and N more". */
#define NOTE_NAMES 8
/* Bytes of one name in a note, and of the whole note (the engine keeps 1023). */
#define NOTE_NAME_MAX 64
#define NOTE_MAX      1000

#define READ_BLOCK   (64u * 1024)
#define STREAM_BLOCK (1024u * 1024)

/* TensorProto fields (onnx.proto). */
enum {
	F_DIMS = 1,
	F_DATA_TYPE = 2,
	F_SEGMENT = 3,
	F_FLOAT_DATA = 4,
	F_INT32_DATA = 5,
	F_STRING_DATA = 6,
	F_INT64_DATA = 7,
	F_NAME = 8,
	F_RAW_DATA = 9,
	F_DOUBLE_DATA = 10,
	F_UINT64_DATA = 11,
	F_EXTERNAL_DATA = 13,
	F_DATA_LOCATION = 14
};

/* Protobuf wire types. */
enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_SGROUP = 3, WT_EGROUP = 4, WT_I32 = 5 };

/* How a typed field's elements become the dtype's bytes. */
enum { CONV_NONE = 0, CONV_FIXED, CONV_LOW, CONV_BOOL };

typedef struct dtype_info {
	int32_t code;     /* TensorProto.DataType */
	const char *name; /* manifest dtype */
	unsigned bits;    /* element size in bits */
	int field;        /* typed storage field, 0 when only raw_data/external */
	int conv;
} dtype_info;

static const dtype_info dtypes[] = {
    {1, "F32", 32, F_FLOAT_DATA, CONV_FIXED},
    {2, "U8", 8, F_INT32_DATA, CONV_LOW},
    {3, "I8", 8, F_INT32_DATA, CONV_LOW},
    {4, "U16", 16, F_INT32_DATA, CONV_LOW},
    {5, "I16", 16, F_INT32_DATA, CONV_LOW},
    {6, "I32", 32, F_INT32_DATA, CONV_LOW},
    {7, "I64", 64, F_INT64_DATA, CONV_LOW},
    {9, "BOOL", 8, F_INT32_DATA, CONV_BOOL},
    {10, "F16", 16, F_INT32_DATA, CONV_LOW},
    {11, "F64", 64, F_DOUBLE_DATA, CONV_FIXED},
    {12, "U32", 32, F_UINT64_DATA, CONV_LOW},
    {13, "U64", 64, F_UINT64_DATA, CONV_LOW},
    {14, "C64", 64, F_FLOAT_DATA, CONV_FIXED},
    {15, "C128", 128, F_DOUBLE_DATA, CONV_FIXED},
    {16, "BF16", 16, F_INT32_DATA, CONV_LOW},
    /* Newer ONNX: 8-bit floats (bit patterns in int32_data), 4-bit types (raw only). */
    {17, "F8_E4M3", 8, F_INT32_DATA, CONV_LOW},
    {18, "F8_E4M3FNUZ", 8, F_INT32_DATA, CONV_LOW},
    {19, "F8_E5M2", 8, F_INT32_DATA, CONV_LOW},
    {20, "F8_E5M2FNUZ", 8, F_INT32_DATA, CONV_LOW},
    {21, "U4", 4, 0, CONV_NONE},
    {22, "I4", 4, 0, CONV_NONE},
    {23, "F4_E2M1", 4, 0, CONV_NONE},
};

static const dtype_info *dtype_find(int32_t code)
{
	for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
		if (dtypes[i].code == code)
			return &dtypes[i];
	return NULL;
}

/* A file range holding elements of a typed field. */
enum { R_PACKED = 0, R_RUN = 1 };

typedef struct range {
	uint64_t off, len; /* in the file */
	uint32_t typed;    /* index into reader.typed (set once the tensor is kept) */
	uint8_t field;     /* TensorProto field number */
	uint8_t kind;      /* R_PACKED: a packed payload; R_RUN: unpacked elements */
	uint8_t wt;        /* element wire type: WT_VARINT, WT_I32 or WT_I64 */
	uint8_t taglen;    /* R_RUN: bytes of the tag before each element */
} range;

/* A tensor fed from typed fields. */
typedef struct typed_tensor {
	char *name;      /* for messages */
	uint64_t base;   /* position in CR_ONNX_TYPED_MEMBER */
	uint64_t length; /* bytes */
	unsigned esize;  /* bytes per element */
	int conv;
	size_t first, n; /* its ranges */
} typed_tensor;

/* A tensor whose bytes live in an external data file. */
typedef struct ext_tensor {
	size_t loc;  /* index into reader.locs */
	size_t file; /* index into reader.files (set by ext_resolve) */
	uint64_t offset, length;
	const char *why; /* why its bytes are not followed, or NULL */
} ext_tensor;

/* A location named by external tensors, opened once by ext_resolve. */
typedef struct ext_file {
	const char *loc; /* borrowed from reader.locs */
	uint64_t dev, ino, size;
	const char *why; /* why it is not followed, or NULL */
} ext_file;

/*
 * A followed external range. Sorted by (dev, ino, off, len, file), the spans
 * of one file on disk lie together, in the order the file is read.
 */
typedef struct span {
	uint64_t dev, ino, off, len;
	size_t file, ext;
} span;

/* A tensor declared after parsing (once a model names external data). */
typedef struct pending {
	cr_tensor t; /* t.name owned; member and offset of external tensors set late */
	size_t ext;  /* index into reader.ext, SIZE_MAX for none */
} pending;

/* One TensorProto while it is parsed. */
typedef struct tensor_pb {
	char *name;
	int have_name;
	int32_t data_type;
	int32_t data_location;
	int segment;
	uint32_t ndim;
	int too_many_dims;
	int64_t dims[CR_TENSOR_MAX_DIMS];
	int have_raw;
	uint64_t raw_off, raw_len;
	size_t first_range; /* ranges appended while parsing this tensor */
	char *ext_location;
	char *ext_offset;
	char *ext_length;
} tensor_pb;

/* The list of names behind one note. */
typedef struct name_list {
	size_t n;
	cr_buf names;
} name_list;

typedef struct reader {
	cr_tpass *p;
	int fd;
	uint64_t size;
	/* pass 1's read buffer */
	uint64_t pos;
	uint8_t *buf;
	uint64_t boff;
	size_t blen;
	size_t index; /* initializers seen */
	range *ranges;
	size_t n_ranges, cap_ranges;
	typed_tensor *typed;
	size_t n_typed, cap_typed;
	uint64_t typed_total;
	ext_tensor *ext;
	size_t n_ext, cap_ext;
	char **locs; /* external locations, one copy per run of equal ones */
	size_t n_locs, cap_locs;
	ext_file *files; /* distinct locations, sorted */
	size_t n_files;
	span *spans;
	size_t n_spans;
	pending *pending;
	size_t n_pending, cap_pending;
	size_t n_sparse;
	int dirfd;     /* the model's folder (external data), -1 when unknown */
	char *dirpath; /* its resolved path */
	int dir_state; /* 1 once dirfd was looked for */
	name_list skipped_string, skipped_dtype, skipped_segment, skipped_typed4, skipped_ext;
} reader;

static int bad(reader *r, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int bad(reader *r, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* A name cut short must not leave half a UTF-8 sequence behind. */
	if (strlen(msg) == sizeof(msg) - 1) {
		size_t k = sizeof(msg) - 1;

		while (k > 0 && ((unsigned char)msg[k - 1] & 0xc0) == 0x80)
			k--;
		if (k > 0 && (unsigned char)msg[k - 1] >= 0xc0)
			msg[k - 1] = '\0';
	}
	return cr_error_set(CR_EINVAL, "%s: not a valid ONNX model: %s", cr_tpass_name(r->p), msg);
}

/* ------------------------------------------------------------ wire format -- */

static int fill(reader *r)
{
	uint64_t left = r->size - r->pos;
	size_t n = left < READ_BLOCK ? (size_t)left : READ_BLOCK;
	int rc;

	if ((rc = cr_tpass_pread(r->p, r->fd, r->buf, n, r->pos)) != 0)
		return rc;
	r->boff = r->pos;
	r->blen = n;
	return 0;
}

static int get_byte(reader *r, uint64_t end, uint8_t *out)
{
	int rc;

	if (r->pos >= end)
		return bad(r, "field truncated at byte %" PRIu64, r->pos);
	if (r->pos < r->boff || r->pos >= r->boff + r->blen)
		if ((rc = fill(r)) != 0)
			return rc;
	*out = r->buf[r->pos - r->boff];
	r->pos++;
	return 0;
}

/* A base-128 varint of at most 10 bytes whose value fits in 64 bits. */
static int get_varint(reader *r, uint64_t end, uint64_t *out)
{
	uint64_t v = 0;
	uint64_t start = r->pos;
	uint8_t b = 0;
	int rc;

	for (unsigned shift = 0;; shift += 7) {
		if ((rc = get_byte(r, end, &b)) != 0)
			return rc;
		if (shift == 63 && b > 1)
			return bad(r, "varint at byte %" PRIu64 " overflows 64 bits", start);
		v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			break;
	}
	*out = v;
	return 0;
}

/* Copy n bytes at the current position (n already checked against end). */
static int get_bytes(reader *r, void *dst, size_t n)
{
	uint8_t *d = dst;
	int rc;

	while (n) {
		size_t k;

		if (r->pos < r->boff || r->pos >= r->boff + r->blen)
			if ((rc = fill(r)) != 0)
				return rc;
		k = (size_t)(r->boff + r->blen - r->pos);
		if (k > n)
			k = n;
		memcpy(d, r->buf + (r->pos - r->boff), k);
		d += k;
		n -= k;
		r->pos += k;
	}
	return 0;
}

static int get_tag(reader *r, uint64_t end, uint32_t *field, int *wt)
{
	uint64_t start = r->pos;
	uint64_t v;
	int rc;

	if ((rc = get_varint(r, end, &v)) != 0)
		return rc;
	if (v > UINT32_MAX || (v >> 3) == 0 || (v & 7) > 5)
		return bad(r, "invalid field tag %#" PRIx64 " at byte %" PRIu64, v, start);
	*field = (uint32_t)(v >> 3);
	*wt = (int)(v & 7);
	return 0;
}

/* The length of a length-delimited field, checked against its message's end. */
static int get_len(reader *r, uint64_t end, uint64_t *out)
{
	uint64_t start = r->pos;
	int rc;

	if ((rc = get_varint(r, end, out)) != 0)
		return rc;
	if (*out > end - r->pos)
		return bad(r,
		           "length %" PRIu64 " at byte %" PRIu64 " runs past the end of its message"
		           " (%" PRIu64 " bytes left)",
		           *out, start, end - r->pos);
	return 0;
}

static int advance(reader *r, uint64_t end, uint64_t n)
{
	if (n > end - r->pos)
		return bad(r, "field truncated at byte %" PRIu64, r->pos);
	r->pos += n;
	return 0;
}

/* Skip the value of a field whose tag was just read. */
static int skip_value(reader *r, uint64_t end, uint32_t field, int wt, unsigned depth)
{
	uint64_t v;
	uint32_t f;
	int w, rc;

	switch (wt) {
	case WT_VARINT: return get_varint(r, end, &v);
	case WT_I64: return advance(r, end, 8);
	case WT_I32: return advance(r, end, 4);
	case WT_LEN:
		if ((rc = get_len(r, end, &v)) != 0)
			return rc;
		r->pos += v;
		return 0;
	case WT_SGROUP:
		if (depth >= ONNX_MAX_DEPTH)
			return bad(r, "groups nested deeper than %d at byte %" PRIu64,
			           ONNX_MAX_DEPTH, r->pos);
		for (;;) {
			if ((rc = get_tag(r, end, &f, &w)) != 0)
				return rc;
			if (w == WT_EGROUP) {
				if (f != field)
					return bad(r, "group %u closed by end-group %u", field, f);
				return 0;
			}
			if ((rc = skip_value(r, end, f, w, depth + 1)) != 0)
				return rc;
		}
	default: return bad(r, "unexpected end-group %u at byte %" PRIu64, field, r->pos);
	}
}

/* A length-delimited string of at most max bytes, NUL-terminated, replacing *out. */
static int get_string(reader *r, uint64_t end, size_t max, const char *what, char **out)
{
	uint64_t len;
	char *s;
	int rc;

	if ((rc = get_len(r, end, &len)) != 0)
		return rc;
	if (len > max)
		return bad(r, "%s of %" PRIu64 " bytes exceeds the limit of %zu", what, len, max);
	if (!(s = malloc((size_t)len + 1)))
		return cr_error_set(CR_ENOMEM, "out of memory");
	if ((rc = get_bytes(r, s, (size_t)len)) != 0) {
		free(s);
		return rc;
	}
	s[len] = '\0';
	if (strlen(s) != len) {
		free(s);
		return bad(r, "%s holds a NUL byte", what);
	}
	free(*out);
	*out = s;
	return 0;
}

/* ------------------------------------------------------------ TensorProto -- */

static int add_range(reader *r, const range *g)
{
	if (r->n_ranges == r->cap_ranges) {
		size_t cap = r->cap_ranges ? r->cap_ranges * 2 : 64;
		range *n;

		if (r->n_ranges >= ONNX_MAX_RANGES)
			return bad(r, "more than %u typed-data fields", ONNX_MAX_RANGES);
		if (!(n = realloc(r->ranges, cap * sizeof(*n))))
			return cr_error_set(CR_ENOMEM, "out of memory");
		r->ranges = n;
		r->cap_ranges = cap;
	}
	r->ranges[r->n_ranges++] = *g;
	return 0;
}

/* One element of an unpacked repeated field: extend the current run or start one. */
static int typed_element(reader *r, tensor_pb *t, uint64_t end, uint32_t field, int wt,
                         uint64_t tag_start)
{
	uint64_t vstart = r->pos, v;
	uint8_t taglen = (uint8_t)(vstart - tag_start);
	range *last = r->n_ranges > t->first_range ? &r->ranges[r->n_ranges - 1] : NULL;
	int rc;

	if (wt == WT_VARINT)
		rc = get_varint(r, end, &v);
	else
		rc = advance(r, end, wt == WT_I32 ? 4 : 8);
	if (rc)
		return rc;
	if (last && last->kind == R_RUN && last->field == field && last->wt == wt &&
	    last->taglen == taglen && last->off + last->len == tag_start) {
		last->len = r->pos - last->off;
		return 0;
	}
	range g = {tag_start, r->pos - tag_start, 0, (uint8_t)field, R_RUN, (uint8_t)wt, taglen};
	return add_range(r, &g);
}

static int typed_packed(reader *r, uint64_t end, uint32_t field, int wt)
{
	uint64_t len;
	int rc;

	if ((rc = get_len(r, end, &len)) != 0)
		return rc;
	if ((wt == WT_I32 && len % 4) || (wt == WT_I64 && len % 8))
		return bad(r,
		           "packed field %u of %" PRIu64 " bytes at byte %" PRIu64
		           " is not a whole number of elements",
		           field, len, r->pos);
	range g = {r->pos, len, 0, (uint8_t)field, R_PACKED, (uint8_t)wt, 0};
	if ((rc = add_range(r, &g)) != 0)
		return rc;
	r->pos += len;
	return 0;
}

static int parse_dim(reader *r, tensor_pb *t, uint64_t v)
{
	(void)r;
	if (t->ndim == CR_TENSOR_MAX_DIMS) {
		t->too_many_dims = 1;
		return 0;
	}
	t->dims[t->ndim++] = (int64_t)v;
	return 0;
}

static int parse_external_entry(reader *r, tensor_pb *t, uint64_t end)
{
	char *key = NULL, *value = NULL;
	uint32_t field;
	int wt, rc = 0;

	while (r->pos < end) {
		if ((rc = get_tag(r, end, &field, &wt)) != 0)
			goto done;
		if (field == 1 && wt == WT_LEN)
			rc = get_string(r, end, ONNX_MAX_STRING, "external_data key", &key);
		else if (field == 2 && wt == WT_LEN)
			rc = get_string(r, end, ONNX_MAX_STRING, "external_data value", &value);
		else
			rc = skip_value(r, end, field, wt, 0);
		if (rc)
			goto done;
	}
	if (!key)
		goto done;
	if (!value && !(value = strdup("")))
		return cr_error_set(CR_ENOMEM, "out of memory");
	/* Later entries win, as for any map-like list read key by key. */
	if (strcmp(key, "location") == 0) {
		free(t->ext_location);
		t->ext_location = value;
		value = NULL;
	} else if (strcmp(key, "offset") == 0) {
		free(t->ext_offset);
		t->ext_offset = value;
		value = NULL;
	} else if (strcmp(key, "length") == 0) {
		free(t->ext_length);
		t->ext_length = value;
		value = NULL;
	}
done:
	free(key);
	free(value);
	return rc;
}

static int parse_tensor_fields(reader *r, tensor_pb *t, uint64_t end)
{
	size_t n_external = 0;
	uint32_t field;
	uint64_t v, tag_start;
	int wt, rc;

	while (r->pos < end) {
		tag_start = r->pos;
		if ((rc = get_tag(r, end, &field, &wt)) != 0)
			return rc;
		switch (field) {
		case F_DIMS:
			if (wt == WT_VARINT) {
				if ((rc = get_varint(r, end, &v)) != 0 ||
				    (rc = parse_dim(r, t, v)) != 0)
					return rc;
				continue;
			}
			if (wt == WT_LEN) {
				uint64_t len, stop;

				if ((rc = get_len(r, end, &len)) != 0)
					return rc;
				stop = r->pos + len;
				while (r->pos < stop)
					if ((rc = get_varint(r, stop, &v)) != 0 ||
					    (rc = parse_dim(r, t, v)) != 0)
						return rc;
				continue;
			}
			break;
		case F_DATA_TYPE:
			if (wt == WT_VARINT) {
				if ((rc = get_varint(r, end, &v)) != 0)
					return rc;
				t->data_type = (int32_t)(uint32_t)v;
				continue;
			}
			break;
		case F_DATA_LOCATION:
			if (wt == WT_VARINT) {
				if ((rc = get_varint(r, end, &v)) != 0)
					return rc;
				t->data_location = (int32_t)(uint32_t)v;
				continue;
			}
			break;
		case F_SEGMENT:
			if (wt == WT_LEN)
				t->segment = 1;
			break;
		case F_NAME:
			if (wt == WT_LEN) {
				if ((rc = get_string(r, end, CR_TENSOR_MAX_NAME, "tensor name",
				                     &t->name)) != 0)
					return rc;
				t->have_name = 1;
				continue;
			}
			break;
		case F_RAW_DATA:
			if (wt == WT_LEN) {
				if ((rc = get_len(r, end, &v)) != 0)
					return rc;
				t->have_raw = 1;
				t->raw_off = r->pos;
				t->raw_len = v;
				r->pos += v;
				continue;
			}
			break;
		case F_EXTERNAL_DATA:
			if (wt == WT_LEN) {
				if ((rc = get_len(r, end, &v)) != 0)
					return rc;
				if (++n_external > ONNX_MAX_EXTERNAL)
					return bad(
					    r, "more than %d external_data entries in one tensor",
					    ONNX_MAX_EXTERNAL);
				if ((rc = parse_external_entry(r, t, r->pos + v)) != 0)
					return rc;
				continue;
			}
			break;
		case F_FLOAT_DATA:
		case F_INT32_DATA:
		case F_INT64_DATA:
		case F_DOUBLE_DATA:
		case F_UINT64_DATA: {
			int ewt = field == F_FLOAT_DATA    ? WT_I32
			          : field == F_DOUBLE_DATA ? WT_I64
			                                   : WT_VARINT;

			if (wt == ewt) {
				if ((rc = typed_element(r, t, end, field, wt, tag_start)) != 0)
					return rc;
				continue;
			}
			if (wt == WT_LEN) {
				if ((rc = typed_packed(r, end, field, ewt)) != 0)
					return rc;
				continue;
			}
			break;
		}
		default: break;
		}
		/* Unknown field, or a known one with another wire type: protobuf skips it. */
		if ((rc = skip_value(r, end, field, wt, 0)) != 0)
			return rc;
	}
	return 0;
}

/* Append s, cut to at most max bytes on a UTF-8 boundary ("..." marks a cut). */
static int put_cut(cr_buf *b, const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n <= max)
		return cr_buf_put(b, s, n);
	while (max > 0 && ((unsigned char)s[max] & 0xc0) == 0x80)
		max--;
	if (cr_buf_put(b, s, max) != 0)
		return CR_ENOMEM;
	return cr_buf_puts(b, "...");
}

static int note_name(name_list *l, const char *name)
{
	l->n++;
	if (l->n > NOTE_NAMES)
		return 0;
	if ((l->names.len && cr_buf_puts(&l->names, ", ") != 0) ||
	    put_cut(&l->names, name, NOTE_NAME_MAX) != 0)
		return CR_ENOMEM;
	return 0;
}

/* Parse a decimal string as a uint64 (external_data offset and length). */
static int parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

/* Keep the typed ranges of field `field` among those the tensor added; drop the rest. */
static size_t keep_ranges(reader *r, size_t first, int field, uint32_t typed_index)
{
	size_t k = first;

	for (size_t i = first; i < r->n_ranges; i++)
		if (r->ranges[i].field == field) {
			r->ranges[k] = r->ranges[i];
			r->ranges[k].typed = typed_index;
			k++;
		}
	r->n_ranges = k;
	return k - first;
}

static int add_typed(reader *r, const typed_tensor *tt)
{
	if (r->n_typed == r->cap_typed) {
		size_t cap = r->cap_typed ? r->cap_typed * 2 : 16;
		typed_tensor *n = realloc(r->typed, cap * sizeof(*n));

		if (!n)
			return cr_error_set(CR_ENOMEM, "out of memory");
		r->typed = n;
		r->cap_typed = cap;
	}
	r->typed[r->n_typed++] = *tt;
	return 0;
}

/*
 * Note an external tensor's range; *location is taken (set to NULL). Runs of
 * tensors naming one location share one copy of it.
 */
static int add_ext(reader *r, char **location, uint64_t offset, uint64_t length)
{
	if (!r->n_locs || strcmp(r->locs[r->n_locs - 1], *location) != 0) {
		if (r->n_locs == r->cap_locs) {
			size_t cap = r->cap_locs ? r->cap_locs * 2 : 16;
			char **n = realloc(r->locs, cap * sizeof(*n));

			if (!n)
				return cr_error_set(CR_ENOMEM, "out of memory");
			r->locs = n;
			r->cap_locs = cap;
		}
		r->locs[r->n_locs++] = *location;
		*location = NULL; /* now owned by r->locs */
	}
	if (r->n_ext == r->cap_ext) {
		size_t cap = r->cap_ext ? r->cap_ext * 2 : 16;
		ext_tensor *n = realloc(r->ext, cap * sizeof(*n));

		if (!n)
			return cr_error_set(CR_ENOMEM, "out of memory");
		r->ext = n;
		r->cap_ext = cap;
	}
	memset(&r->ext[r->n_ext], 0, sizeof(r->ext[0]));
	r->ext[r->n_ext].loc = r->n_locs - 1;
	r->ext[r->n_ext].offset = offset;
	r->ext[r->n_ext].length = length;
	r->n_ext++;
	return 0;
}

/*
 * Declare a tensor, or keep it for later: once the model names external
 * data, every tensor after it waits until ext_resolve has decided which
 * external ranges are followed, so the manifest keeps the file's order.
 */
static int declare(reader *r, const cr_tensor *ct, size_t ext)
{
	pending *pd;

	if (!r->n_ext)
		return cr_tpass_add(r->p, ct);
	if (r->n_pending >= CR_TENSOR_MAX_COUNT)
		return bad(r, "more than %u initializers", CR_TENSOR_MAX_COUNT);
	if (r->n_pending == r->cap_pending) {
		size_t cap = r->cap_pending ? r->cap_pending * 2 : 16;
		pending *n;

		if (!(n = realloc(r->pending, cap * sizeof(*n))))
			return cr_error_set(CR_ENOMEM, "out of memory");
		r->pending = n;
		r->cap_pending = cap;
	}
	pd = &r->pending[r->n_pending];
	pd->t = *ct;
	pd->ext = ext;
	if (!(pd->t.name = strdup(ct->name)))
		return cr_error_set(CR_ENOMEM, "out of memory");
	r->n_pending++;
	return 0;
}

/* ------------------------------------------------------- external data -- */

/*
 * External data is followed only where hashing it cannot reveal a secret
 * (docs/formats/tensors.md, "ONNX", for the reasons): the model names a
 * file and a range, and the recorder would otherwise publish the SHA-256 of
 * any bytes the recording user can read. So a location is followed only
 * when it is a relative path beneath the model's folder, none of whose steps
 * (as written or as resolved) starts with '.', to a regular file readable by
 * group or others; a range under ONNX_MIN_EXTERNAL bytes is not hashed; and
 * a file whose ranges overlap (other than ranges equal to each other) is not
 * hashed at all: a window shifted by one byte would give a byte away.
 */

/* Shortest external range hashed on its own. */
#define ONNX_MIN_EXTERNAL 32u

/*
 * The folder the model was opened from, for its external data files: the
 * descriptor's own path, so a relative name given by the caller does not
 * matter. -1 when it cannot be known (a deleted file, a memfd, no /proc).
 */
static int model_dir(reader *r)
{
	char link[64], path[PATH_MAX + 1];
	ssize_t n;
	char *slash;

	if (r->dir_state)
		return r->dirfd;
	r->dir_state = 1;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", r->fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0 || (size_t)n >= sizeof(path) - 1)
		return -1;
	path[n] = '\0';
	if (path[0] != '/' || (n > 10 && strcmp(path + n - 10, " (deleted)") == 0))
		return -1;
	slash = strrchr(path, '/');
	if (slash == path)
		slash[1] = '\0';
	else
		*slash = '\0';
	if (!(r->dirpath = strdup(path)))
		return -1;
	r->dirfd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	return r->dirfd;
}

/* 1 when a step of the relative path s starts with '.' ("." and ".." too). */
static int has_dot_step(const char *s)
{
	while (*s) {
		size_t k = strcspn(s, "/");

		if (k > 0 && s[0] == '.')
			return 1;
		s += k;
		while (*s == '/')
			s++;
	}
	return 0;
}

/*
 * 1 when the open file fd lies beneath the model's folder by a path without
 * a step starting with '.': a symlink inside the folder may not lead to a
 * hidden file, and without openat2 this is what keeps the file inside.
 */
static int resolved_ok(const reader *r, int fd)
{
	char link[64], path[PATH_MAX + 1];
	size_t dlen = strlen(r->dirpath);
	const char *rest;
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0 || (size_t)n >= sizeof(path) - 1)
		return 0;
	path[n] = '\0';
	if (strcmp(r->dirpath, "/") == 0)
		rest = path + 1;
	else if (strncmp(path, r->dirpath, dlen) == 0 && path[dlen] == '/')
		rest = path + dlen + 1;
	else
		return 0;
	return *rest && !has_dot_step(rest);
}

/* Without openat2: refuse a symlink as the last step (resolved_ok checks the rest). */
static int open_beneath_fallback(int dirfd, const char *location)
{
	return openat(dirfd, location, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW);
}

/*
 * Open an external data file under the model's folder if it may be
 * followed (see above). Returns the descriptor, with *st its status, or -1
 * with *why saying what is wrong.
 */
static int ext_open(reader *r, const char *location, struct stat *st, const char **why)
{
	int dirfd, fd;

	if (!cr_utf8_valid((const uint8_t *)location, strlen(location))) {
		*why = "location is not UTF-8";
		return -1;
	}
	if (!*location || location[0] == '/') {
		*why = "location is not a relative path";
		return -1;
	}
	if (has_dot_step(location)) {
		*why = "a step of the location starts with '.'";
		return -1;
	}
	if (strcmp(location, CR_ONNX_TYPED_MEMBER) == 0) {
		*why = "location is a reserved name";
		return -1;
	}
	if ((dirfd = model_dir(r)) < 0) {
		*why = "the model's folder is unknown";
		return -1;
	}
#if defined(HAVE_OPENAT2_H) && defined(SYS_openat2)
	{
		struct open_how how;

		memset(&how, 0, sizeof(how));
		how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
		how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
		fd = (int)syscall(SYS_openat2, dirfd, location, &how, sizeof(how));
		if (fd < 0 && (errno == ENOSYS || errno == EPERM))
			fd = open_beneath_fallback(dirfd, location);
	}
#else
	fd = open_beneath_fallback(dirfd, location);
#endif
	if (fd < 0) {
		*why = errno == ENOENT                    ? "no such file"
		       : errno == EXDEV || errno == ELOOP ? "outside the model's folder"
		       : errno == EACCES                  ? "not readable"
		                                          : "cannot be opened";
		return -1;
	}
	if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
		close(fd);
		*why = "not a regular file";
		return -1;
	}
	/* Key files (ours, ssh's) are private to their owner; weights are not. */
	if (!(st->st_mode & (S_IRGRP | S_IROTH))) {
		close(fd);
		*why = "a private file, readable by its owner only";
		return -1;
	}
	if (!resolved_ok(r, fd)) {
		close(fd);
		*why = "resolves outside the model's folder or to a hidden file";
		return -1;
	}
	return fd;
}

static int note_ext(reader *r, const char *name, const char *location, const char *why)
{
	name_list *l = &r->skipped_ext;

	l->n++;
	if (l->n > NOTE_NAMES)
		return 0;
	if (!cr_utf8_valid((const uint8_t *)location, strlen(location)))
		location = "(a location not in UTF-8)";
	if ((l->names.len && cr_buf_puts(&l->names, ", ") != 0) ||
	    put_cut(&l->names, name, NOTE_NAME_MAX) != 0 || cr_buf_puts(&l->names, " in ") != 0 ||
	    put_cut(&l->names, location, NOTE_NAME_MAX) != 0 ||
	    cr_buf_printf(&l->names, " (%s)", why) != 0)
		return cr_error_set(CR_ENOMEM, "out of memory");
	return 0;
}

static int file_cmp(const void *x, const void *y)
{
	return strcmp(((const ext_file *)x)->loc, ((const ext_file *)y)->loc);
}

static int file_key_cmp(const void *key, const void *elem)
{
	return strcmp((const char *)key, ((const ext_file *)elem)->loc);
}

#define CMP_U64(a, b) ((a) < (b) ? -1 : (a) > (b))

static int span_cmp(const void *x, const void *y)
{
	const span *a = x, *b = y;
	int c;

	if ((c = CMP_U64(a->dev, b->dev)) || (c = CMP_U64(a->ino, b->ino)) ||
	    (c = CMP_U64(a->off, b->off)) || (c = CMP_U64(a->len, b->len)))
		return c;
	return CMP_U64(a->file, b->file);
}

/* 1 when two nonempty ranges of spans [i, j) (one file) overlap without being equal. */
static int spans_overlap(const span *s, size_t i, size_t j)
{
	const span *prev = NULL;
	uint64_t end = 0;

	for (size_t k = i; k < j; k++) {
		if (!s[k].len)
			continue;
		if (prev && s[k].off < end && !(s[k].off == prev->off && s[k].len == prev->len))
			return 1;
		prev = &s[k];
		if (s[k].off + s[k].len > end)
			end = s[k].off + s[k].len;
	}
	return 0;
}

/*
 * Decide which external ranges are followed: open each distinct location
 * once, refuse (setting ext[].why) what may not be hashed, and leave the
 * rest in r->spans, sorted for feed_external.
 */
static int ext_resolve(reader *r)
{
	size_t n;

	if (!r->n_ext)
		return 0;
	if (!(r->files = calloc(r->n_locs, sizeof(*r->files))) ||
	    !(r->spans = calloc(r->n_ext, sizeof(*r->spans))))
		return cr_error_set(CR_ENOMEM, "out of memory");
	for (size_t i = 0; i < r->n_locs; i++)
		r->files[i].loc = r->locs[i];
	qsort(r->files, r->n_locs, sizeof(*r->files), file_cmp);
	n = 0;
	for (size_t i = 0; i < r->n_locs; i++)
		if (!n || strcmp(r->files[n - 1].loc, r->files[i].loc) != 0)
			r->files[n++] = r->files[i];
	r->n_files = n;
	for (size_t i = 0; i < r->n_files; i++) {
		ext_file *f = &r->files[i];
		struct stat st;
		int fd = ext_open(r, f->loc, &st, &f->why);

		if (fd < 0)
			continue;
		close(fd);
		f->dev = (uint64_t)st.st_dev;
		f->ino = (uint64_t)st.st_ino;
		f->size = (uint64_t)st.st_size;
	}
	for (size_t i = 0; i < r->n_ext; i++) {
		ext_tensor *e = &r->ext[i];
		const ext_file *f =
		    bsearch(r->locs[e->loc], r->files, r->n_files, sizeof(*r->files), file_key_cmp);

		e->file = (size_t)(f - r->files);
		if (f->why)
			e->why = f->why;
		else if (f->size < e->offset + e->length)
			e->why = "file too short";
		else if (e->length && e->length < ONNX_MIN_EXTERNAL)
			e->why = "under 32 bytes: not hashed alone";
		if (e->why)
			continue;
		r->spans[r->n_spans++] = (span){f->dev, f->ino, e->offset, e->length, e->file, i};
	}
	qsort(r->spans, r->n_spans, sizeof(*r->spans), span_cmp);
	/* One file on disk at a time (several locations may name it). */
	n = 0;
	for (size_t i = 0, j; i < r->n_spans; i = j) {
		for (j = i + 1; j < r->n_spans && r->spans[j].dev == r->spans[i].dev &&
		                r->spans[j].ino == r->spans[i].ino;
		     j++)
			;
		if (spans_overlap(r->spans, i, j)) {
			for (size_t k = i; k < j; k++)
				r->ext[r->spans[k].ext].why = "ranges in the file overlap";
			continue;
		}
		for (size_t k = i; k < j; k++)
			if (r->spans[k].len)
				r->spans[n++] = r->spans[k];
	}
	r->n_spans = n;
	return 0;
}

/* ------------------------------------------------------ declaring tensors -- */

static int skip_note(reader *r, tensor_pb *t, name_list *l)
{
	r->n_ranges = t->first_range;
	return note_name(l, t->name) ? cr_error_set(CR_ENOMEM, "out of memory") : 0;
}

/* An external tensor: its range is checked here, its file by ext_resolve. */
static int declare_external(reader *r, tensor_pb *t, cr_tensor *ct)
{
	uint64_t off = 0, len = ct->length;
	int rc;

	if (!t->ext_location)
		return bad(r, "initializer %s: external data without a location", t->name);
	if (t->ext_offset && parse_u64(t->ext_offset, &off) != 0)
		return bad(r, "initializer %s: external data offset \"%.64s\" is not a number",
		           t->name, t->ext_offset);
	if (t->ext_length && parse_u64(t->ext_length, &len) != 0)
		return bad(r, "initializer %s: external data length \"%.64s\" is not a number",
		           t->name, t->ext_length);
	if (len != ct->length)
		return bad(r,
		           "initializer %s: external data length %" PRIu64
		           " but its shape needs %" PRIu64 " bytes",
		           t->name, len, ct->length);
	if (off > UINT64_MAX - len)
		return bad(r, "initializer %s: external data offset overflows", t->name);
	if ((rc = add_ext(r, &t->ext_location, off, len)) != 0)
		return rc;
	return declare(r, ct, r->n_ext - 1);
}

static int declare_typed(reader *r, tensor_pb *t, const dtype_info *dt, cr_tensor *ct)
{
	typed_tensor tt;
	size_t n;
	int rc;

	n = keep_ranges(r, t->first_range, dt->field, (uint32_t)r->n_typed);
	if (n == 0) {
		if (ct->length != 0)
			return bad(r, "initializer %s holds no data for its %" PRIu64 " bytes",
			           t->name, ct->length);
		return declare(r, ct, SIZE_MAX);
	}
	/* One packed array of little-endian floats or doubles is the tensor itself. */
	if (n == 1 && dt->conv == CONV_FIXED && r->ranges[t->first_range].kind == R_PACKED &&
	    r->ranges[t->first_range].len == ct->length) {
		ct->offset = r->ranges[t->first_range].off;
		r->n_ranges = t->first_range;
		return declare(r, ct, SIZE_MAX);
	}
	memset(&tt, 0, sizeof(tt));
	if (!(tt.name = strdup(t->name)))
		return cr_error_set(CR_ENOMEM, "out of memory");
	tt.base = r->typed_total;
	tt.length = ct->length;
	tt.esize = dt->conv == CONV_FIXED ? (dt->field == F_FLOAT_DATA ? 4 : 8) : dt->bits / 8;
	tt.conv = dt->conv;
	tt.first = t->first_range;
	tt.n = n;
	if (__builtin_add_overflow(r->typed_total, ct->length, &r->typed_total)) {
		free(tt.name);
		return bad(r, "typed data overflows");
	}
	if ((rc = add_typed(r, &tt)) != 0) {
		free(tt.name);
		return rc;
	}
	ct->member = CR_ONNX_TYPED_MEMBER;
	ct->offset = tt.base;
	return declare(r, ct, SIZE_MAX);
}

/* A parsed TensorProto becomes a declared tensor, or a line of a note. */
static int finish_tensor(reader *r, tensor_pb *t)
{
	const dtype_info *dt;
	cr_tensor ct;
	uint64_t nelem = 1, nbytes;
	size_t idx = r->index++;

	if (!t->have_name || !*t->name)
		return bad(r, "initializer %zu has no name", idx);
	if (!cr_utf8_valid((const uint8_t *)t->name, strlen(t->name)))
		return bad(r, "initializer %zu: name is not UTF-8", idx);
	if (t->too_many_dims)
		return bad(r, "initializer %s has more than %d dimensions", t->name,
		           CR_TENSOR_MAX_DIMS);
	if (t->segment)
		return skip_note(r, t, &r->skipped_segment);
	if (t->data_type == 8)
		return skip_note(r, t, &r->skipped_string);
	if (!(dt = dtype_find(t->data_type))) {
		if (t->data_type == 0)
			return bad(r, "initializer %s has no data_type", t->name);
		return skip_note(r, t, &r->skipped_dtype);
	}
	for (uint32_t i = 0; i < t->ndim; i++) {
		if (t->dims[i] < 0)
			return bad(r, "initializer %s has a negative dimension %" PRId64, t->name,
			           t->dims[i]);
		if (__builtin_mul_overflow(nelem, (uint64_t)t->dims[i], &nelem))
			return bad(r, "initializer %s: its shape overflows", t->name);
	}
	if (dt->bits >= 8) {
		if (__builtin_mul_overflow(nelem, (uint64_t)(dt->bits / 8), &nbytes))
			return bad(r, "initializer %s: its byte length overflows", t->name);
	} else {
		nbytes = nelem / 2 + (nelem & 1); /* two 4-bit elements a byte */
	}

	memset(&ct, 0, sizeof(ct));
	ct.name = t->name;
	snprintf(ct.dtype, sizeof(ct.dtype), "%s", dt->name);
	ct.ndim = t->ndim;
	for (uint32_t i = 0; i < t->ndim; i++)
		ct.shape[i] = (uint64_t)t->dims[i];
	ct.length = nbytes;

	if (t->data_location == 1) {
		r->n_ranges = t->first_range;
		return declare_external(r, t, &ct);
	}
	if (t->have_raw) {
		r->n_ranges = t->first_range;
		if (t->raw_len != nbytes)
			return bad(r,
			           "initializer %s: raw_data holds %" PRIu64 " bytes but its shape "
			           "needs %" PRIu64,
			           t->name, t->raw_len, nbytes);
		ct.offset = t->raw_off;
		return declare(r, &ct, SIZE_MAX);
	}
	if (dt->field == 0) {
		r->n_ranges = t->first_range;
		if (nbytes == 0)
			return declare(r, &ct, SIZE_MAX);
		return skip_note(r, t, &r->skipped_typed4);
	}
	return declare_typed(r, t, dt, &ct);
}

static void tensor_pb_free(tensor_pb *t)
{
	free(t->name);
	free(t->ext_location);
	free(t->ext_offset);
	free(t->ext_length);
}

static int parse_graph(reader *r, uint64_t end)
{
	uint32_t field;
	uint64_t len;
	int wt, rc;

	while (r->pos < end) {
		if ((rc = get_tag(r, end, &field, &wt)) != 0)
			return rc;
		if (field == 5 && wt == WT_LEN) {
			tensor_pb t;

			if ((rc = get_len(r, end, &len)) != 0)
				return rc;
			memset(&t, 0, sizeof(t));
			t.first_range = r->n_ranges;
			rc = parse_tensor_fields(r, &t, r->pos + len);
			if (rc == 0)
				rc = finish_tensor(r, &t);
			tensor_pb_free(&t);
			if (rc)
				return rc;
			continue;
		}
		if (field == 15 && wt == WT_LEN)
			r->n_sparse++;
		if ((rc = skip_value(r, end, field, wt, 0)) != 0)
			return rc;
	}
	return 0;
}

static int parse_model(reader *r)
{
	uint32_t field;
	uint64_t len;
	int wt, rc;

	while (r->pos < r->size) {
		if ((rc = get_tag(r, r->size, &field, &wt)) != 0)
			return rc;
		if (field == 7 && wt == WT_LEN) {
			if ((rc = get_len(r, r->size, &len)) != 0 ||
			    (rc = parse_graph(r, r->pos + len)) != 0)
				return rc;
			continue;
		}
		if ((rc = skip_value(r, r->size, field, wt, 0)) != 0)
			return rc;
	}
	return 0;
}

static int add_note(cr_buf *note, const name_list *l, const char *what)
{
	if (!l->n)
		return 0;
	if ((note->len && cr_buf_puts(note, "; ") != 0) ||
	    cr_buf_printf(note, "%zu %s: %s", l->n, what, l->names.ptr) != 0 ||
	    (l->n > NOTE_NAMES && cr_buf_printf(note, " and %zu more", l->n - NOTE_NAMES) != 0))
		return cr_error_set(CR_ENOMEM, "out of memory");
	return 0;
}

static int write_notes(reader *r)
{
	cr_buf note = CR_BUF_INIT;
	int rc;

	if ((rc = add_note(&note, &r->skipped_ext,
	                   "external-data initializers not listed (data not followed)")) ||
	    (rc = add_note(&note, &r->skipped_string, "string initializers not listed")) ||
	    (rc = add_note(&note, &r->skipped_dtype,
	                   "initializers of unknown data_type not listed")) ||
	    (rc = add_note(&note, &r->skipped_segment, "segmented initializers not listed")) ||
	    (rc = add_note(&note, &r->skipped_typed4,
	                   "4-bit initializers without raw_data not listed")))
		goto done;
	if (r->n_sparse && (rc = cr_buf_printf(&note, "%s%zu sparse initializers not listed",
	                                       note.len ? "; " : "", r->n_sparse)) != 0)
		goto done;
	if (note.len > NOTE_MAX) {
		size_t cut = NOTE_MAX;

		while (cut > 0 && ((unsigned char)note.ptr[cut] & 0xc0) == 0x80)
			cut--;
		note.len = cut;
		if ((rc = cr_buf_puts(&note, "...")) != 0)
			goto done;
	}
	if (note.len)
		rc = cr_tpass_note(r->p, "%s", note.ptr);
done:
	cr_buf_free(&note);
	return rc;
}

/* ------------------------------------------------------------- the bytes -- */

/* Decodes typed-field ranges from the file's chunks as they stream past. */
typedef struct decoder {
	reader *r;
	size_t ri;    /* next range */
	size_t cur;   /* typed tensor being decoded, SIZE_MAX for none */
	uint64_t out; /* its bytes emitted so far (buffered ones included) */
	uint64_t acc; /* varint being read */
	unsigned shift;
	unsigned skip; /* tag bytes left before the next unpacked element */
	unsigned got;  /* bytes of the current fixed element */
	size_t olen;
	uint8_t obuf[8192];
} decoder;

static int flush(decoder *d)
{
	const typed_tensor *tt = &d->r->typed[d->cur];
	int rc;

	if (!d->olen)
		return 0;
	rc = cr_tpass_feed(d->r->p, CR_ONNX_TYPED_MEMBER, tt->base + d->out - d->olen, d->obuf,
	                   d->olen);
	d->olen = 0;
	return rc;
}

static int emit(decoder *d, const uint8_t *data, size_t n)
{
	const typed_tensor *tt = &d->r->typed[d->cur];
	int rc;

	if (n > tt->length - d->out)
		return bad(d->r, "initializer %s holds more elements than its shape", tt->name);
	while (n) {
		size_t k = sizeof(d->obuf) - d->olen;

		if (k > n)
			k = n;
		memcpy(d->obuf + d->olen, data, k);
		d->olen += k;
		d->out += k;
		data += k;
		n -= k;
		if (d->olen == sizeof(d->obuf) && (rc = flush(d)) != 0)
			return rc;
	}
	return 0;
}

static int emit_value(decoder *d, uint64_t v)
{
	const typed_tensor *tt = &d->r->typed[d->cur];
	uint8_t b[8];

	if (tt->conv == CONV_BOOL) {
		b[0] = (uint32_t)v != 0;
	} else {
		for (unsigned i = 0; i < tt->esize; i++)
			b[i] = (uint8_t)(v >> (8 * i));
	}
	return emit(d, b, tt->esize);
}

static int finish_typed(decoder *d)
{
	const typed_tensor *tt;
	int rc;

	if (d->cur == SIZE_MAX)
		return 0;
	tt = &d->r->typed[d->cur];
	if ((rc = flush(d)) != 0)
		return rc;
	if (d->out != tt->length)
		return bad(d->r,
		           "initializer %s holds %" PRIu64 " bytes of elements but its shape "
		           "needs %" PRIu64,
		           tt->name, d->out, tt->length);
	d->cur = SIZE_MAX;
	return 0;
}

static int decode(decoder *d, const range *g, const uint8_t *data, size_t n)
{
	unsigned w = g->wt == WT_I32 ? 4 : 8;
	int rc;

	if (g->wt != WT_VARINT && g->kind == R_PACKED)
		return emit(d, data, n);
	while (n) {
		if (d->skip) {
			size_t k = d->skip < n ? d->skip : n;

			d->skip -= (unsigned)k;
			data += k;
			n -= k;
			continue;
		}
		if (g->wt == WT_VARINT) {
			uint8_t b = *data++;

			n--;
			if (d->shift == 63 && b > 1)
				return bad(d->r, "varint overflows 64 bits in initializer %s",
				           d->r->typed[d->cur].name);
			d->acc |= (uint64_t)(b & 0x7f) << d->shift;
			if (b & 0x80) {
				d->shift += 7;
				continue;
			}
			if ((rc = emit_value(d, d->acc)) != 0)
				return rc;
			d->acc = 0;
			d->shift = 0;
		} else {
			size_t k = w - d->got < n ? w - d->got : n;

			if ((rc = emit(d, data, k)) != 0)
				return rc;
			d->got += (unsigned)k;
			data += k;
			n -= k;
			if (d->got < w)
				continue;
			d->got = 0;
		}
		if (g->kind == R_RUN)
			d->skip = g->taglen;
	}
	return 0;
}

/* The typed ranges overlapping the chunk [off, off + n). */
static int decode_chunk(decoder *d, uint64_t off, const uint8_t *buf, size_t n)
{
	reader *r = d->r;
	int rc;

	while (d->ri < r->n_ranges) {
		const range *g = &r->ranges[d->ri];
		uint64_t lo = g->off > off ? g->off : off;
		uint64_t hi = g->off + g->len < off + n ? g->off + g->len : off + n;

		if (g->off >= off + n)
			break;
		if (lo == g->off) {
			/* The range starts in this chunk. */
			if (g->typed != d->cur) {
				if ((rc = finish_typed(d)) != 0)
					return rc;
				d->cur = g->typed;
				d->out = 0;
			}
			d->acc = 0;
			d->shift = 0;
			d->got = 0;
			d->skip = g->kind == R_RUN ? g->taglen : 0;
		}
		if (hi > lo && (rc = decode(d, g, buf + (lo - off), (size_t)(hi - lo))) != 0)
			return rc;
		if (g->off + g->len > off + n)
			break;
		if (d->shift)
			return bad(r, "truncated varint in initializer %s", r->typed[d->cur].name);
		d->ri++;
	}
	return 0;
}

static int stream_file(reader *r)
{
	decoder *d = NULL;
	uint8_t *buf = NULL;
	uint64_t off = 0;
	int rc = 0;

	if (!r->n_typed)
		return cr_tpass_stream_fd(r->p, r->fd);
	if (!(d = calloc(1, sizeof(*d))) || !(buf = malloc(STREAM_BLOCK))) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	d->r = r;
	d->cur = SIZE_MAX;
	while (off < r->size) {
		size_t n = r->size - off < STREAM_BLOCK ? (size_t)(r->size - off) : STREAM_BLOCK;

		if ((rc = cr_tpass_pread(r->p, r->fd, buf, n, off)) != 0 ||
		    (rc = cr_tpass_file(r->p, buf, n)) != 0 ||
		    (rc = cr_tpass_feed(r->p, NULL, off, buf, n)) != 0 ||
		    (rc = decode_chunk(d, off, buf, n)) != 0)
			goto done;
		off += n;
	}
	rc = finish_typed(d);
done:
	free(d);
	free(buf);
	return rc;
}

/* The tensors kept back by declare(), in file order; refused external ones go to the note. */
static int declare_pending(reader *r)
{
	int rc;

	for (size_t i = 0; i < r->n_pending; i++) {
		pending *pd = &r->pending[i];

		if (pd->ext != SIZE_MAX) {
			const ext_tensor *e = &r->ext[pd->ext];

			if (e->why) {
				if ((rc = note_ext(r, pd->t.name, r->locs[e->loc], e->why)) != 0)
					return rc;
				continue;
			}
			pd->t.member = r->locs[e->loc];
			pd->t.offset = e->offset;
		}
		if ((rc = cr_tpass_add(r->p, &pd->t)) != 0)
			return rc;
	}
	return 0;
}

/*
 * The followed external ranges: each file on disk opened once and read
 * once, in offset order, each distinct range once; every block goes to each
 * location that names the range (the engine routes it to every tensor of
 * that location and range).
 */
static int feed_external(reader *r)
{
	const span *s = r->spans;
	uint8_t *buf = NULL;
	int fd = -1, rc = 0;

	if (!r->n_spans)
		return 0;
	if (!(buf = malloc(STREAM_BLOCK)))
		return cr_error_set(CR_ENOMEM, "out of memory");
	for (size_t i = 0, j; i < r->n_spans; i = j) {
		const char *loc = r->files[s[i].file].loc, *why = NULL;
		struct stat st;

		for (j = i + 1; j < r->n_spans && s[j].dev == s[i].dev && s[j].ino == s[i].ino; j++)
			;
		if ((fd = ext_open(r, loc, &st, &why)) < 0) {
			rc = cr_error_set(CR_EIO, "%s: external data file %s: %s",
			                  cr_tpass_name(r->p), loc, why);
			goto done;
		}
		if ((uint64_t)st.st_dev != s[i].dev || (uint64_t)st.st_ino != s[i].ino) {
			rc = cr_error_set(CR_EIO,
			                  "%s: external data file %s was replaced while read",
			                  cr_tpass_name(r->p), loc);
			goto done;
		}
		for (size_t k = i, l; k < j; k = l) {
			uint64_t fed = 0;

			for (l = k + 1; l < j && s[l].off == s[k].off && s[l].len == s[k].len; l++)
				;
			while (fed < s[k].len) {
				uint64_t left = s[k].len - fed;
				size_t n = left < STREAM_BLOCK ? (size_t)left : STREAM_BLOCK;
				ssize_t got = pread(fd, buf, n, (off_t)(s[k].off + fed));

				if (got < 0 && errno == EINTR)
					continue;
				if (got < 0) {
					rc = cr_error_set_errno(CR_EIO, errno,
					                        "%s: reading external data file %s",
					                        cr_tpass_name(r->p), loc);
					goto done;
				}
				if (got == 0) {
					rc = cr_error_set(CR_EINVAL,
					                  "%s: external data file %s is truncated",
					                  cr_tpass_name(r->p), loc);
					goto done;
				}
				for (size_t m = k; m < l; m++) {
					if (m > k && s[m].file == s[m - 1].file)
						continue;
					if ((rc = cr_tpass_feed(r->p, r->files[s[m].file].loc,
					                        s[k].off + fed, buf,
					                        (size_t)got)) != 0)
						goto done;
				}
				fed += (uint64_t)got;
			}
		}
		close(fd);
		fd = -1;
	}
done:
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

static void reader_free(reader *r)
{
	free(r->buf);
	free(r->ranges);
	for (size_t i = 0; i < r->n_typed; i++)
		free(r->typed[i].name);
	free(r->typed);
	free(r->ext);
	for (size_t i = 0; i < r->n_locs; i++)
		free(r->locs[i]);
	free(r->locs);
	free(r->files);
	free(r->spans);
	for (size_t i = 0; i < r->n_pending; i++)
		free(r->pending[i].t.name);
	free(r->pending);
	free(r->dirpath);
	cr_buf_free(&r->skipped_string.names);
	cr_buf_free(&r->skipped_dtype.names);
	cr_buf_free(&r->skipped_segment.names);
	cr_buf_free(&r->skipped_typed4.names);
	cr_buf_free(&r->skipped_ext.names);
	if (r->dirfd >= 0)
		close(r->dirfd);
}

static int onnx_read(cr_tpass *p, int fd)
{
	reader r;
	int rc;

	memset(&r, 0, sizeof(r));
	r.p = p;
	r.fd = fd;
	r.size = cr_tpass_size(p);
	r.dirfd = -1;
	if (r.size == 0) {
		rc = bad(&r, "empty file");
		goto done;
	}
	if (!(r.buf = malloc(READ_BLOCK))) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	if ((rc = parse_model(&r)) != 0 || (rc = ext_resolve(&r)) != 0 ||
	    (rc = declare_pending(&r)) != 0 || (rc = write_notes(&r)) != 0 ||
	    (rc = cr_tpass_begin(p)) != 0 || (rc = stream_file(&r)) != 0)
		goto done;
	rc = feed_external(&r);
done:
	reader_free(&r);
	return rc;
}

/*
 * ONNX has no magic number. A ".onnx" name is taken at its word; otherwise
 * the head must start as every ModelProto writer starts it: ir_version (field
 * 1, a small varint) followed by another ModelProto field.
 */
static int onnx_probe(const uint8_t *head, size_t n, const char *name)
{
	if (name) {
		size_t len = strlen(name);

		if (len >= 5 && strcasecmp(name + len - 5, ".onnx") == 0)
			return 1;
	}
	if (n < 3 || head[0] != 0x08 || head[1] == 0 || head[1] > 32)
		return 0;
	switch (head[2]) {
	case 0x12: /* producer_name */
	case 0x1a: /* producer_version */
	case 0x22: /* domain */
	case 0x28: /* model_version */
	case 0x32: /* doc_string */
	case 0x3a: /* graph */
	case 0x42: /* opset_import */ return 1;
	default: return 0;
	}
}

const cr_tensor_reader cr_reader_onnx = {"onnx", onnx_probe, onnx_read};
