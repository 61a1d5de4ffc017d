/*
 * The safetensors reader: <u64 LE header length N><N bytes of JSON><data>.
 *
 * The header maps tensor names to {"dtype", "shape", "data_offsets":[begin,
 * end]} (offsets relative to the data section, which starts at 8 + N) and
 * may hold a "__metadata__" object of strings, which is skipped. A tensor's
 * manifest offset is its file offset (8 + N + begin).
 *
 * Everything in the header is hostile until checked: N is capped (and must
 * fit the file), the JSON is parsed by jansson with duplicate keys refused
 * and a cap on the number of JSON values (bounding jansson's memory), each
 * dtype must be a safetensors dtype, each length must equal the element size
 * times the shape (overflow-checked), and the ranges must tile the data
 * section exactly as the format requires: no overlap, no gap, nothing after
 * the last tensor. Tensors are listed in data order (ties by name), which
 * does not depend on the header's key order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cleanroom/error.h"
#include "recorder/tensors/tensors_internal.h"

/* The header cap the reference implementation uses too. */
#define ST_MAX_HEADER (100u * 1024 * 1024)
/* JSON values in a header: ~10 per tensor; bounds jansson's memory (~64 bytes each). */
#define ST_MAX_VALUES (4u * 1024 * 1024)

/* safetensors dtypes and their element size in bits. */
/* clang-format off */
static const struct {
	const char *name;
	unsigned bits;
} st_dtypes[] = {
	{"BOOL", 8},     {"U8", 8},       {"I8", 8},       {"F8_E5M2", 8}, {"F8_E4M3", 8},
	{"F8_E8M0", 8},  {"I16", 16},     {"U16", 16},     {"F16", 16},    {"BF16", 16},
	{"I32", 32},     {"U32", 32},     {"F32", 32},     {"F64", 64},    {"I64", 64},
	{"U64", 64},     {"C64", 64},     {"F4", 4},       {"F6_E2M3", 6}, {"F6_E3M2", 6},
};
/* clang-format on */

typedef struct st_entry {
	const char *name; /* borrowed from the JSON */
	const char *dtype;
	uint64_t begin, end;
	uint32_t ndim;
	uint64_t shape[CR_TENSOR_MAX_DIMS];
} st_entry;

static uint64_t le64(const uint8_t *b)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}

static int st_probe(const uint8_t *head, size_t n, const char *name)
{
	uint64_t len;

	(void)name;
	if (n < 9)
		return 0;
	len = le64(head);
	return len >= 2 && len <= ST_MAX_HEADER && head[8] == '{';
}

/*
 * Count JSON values outside strings (commas and openings bound them) before
 * handing the text to jansson, so a header of a million tiny arrays cannot
 * make it allocate gigabytes.
 */
static size_t count_values(const uint8_t *s, size_t n)
{
	size_t count = 1;
	int in_str = 0;

	for (size_t i = 0; i < n; i++) {
		if (in_str) {
			if (s[i] == '\\')
				i++;
			else if (s[i] == '"')
				in_str = 0;
		} else if (s[i] == '"') {
			in_str = 1;
		} else if (s[i] == ',' || s[i] == '[' || s[i] == '{') {
			count++;
		}
	}
	return count;
}

static int get_u64(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int entry_cmp(const void *x, const void *y)
{
	const st_entry *a = x, *b = y;

	if (a->begin != b->begin)
		return a->begin < b->begin ? -1 : 1;
	if (a->end != b->end)
		return a->end < b->end ? -1 : 1;
	return strcmp(a->name, b->name);
}

static int parse_entry(cr_tpass *p, const char *name, const json_t *v, uint64_t data_len,
                       st_entry *e)
{
	const char *fn = cr_tpass_name(p);
	const json_t *dtype, *shape, *offs;
	unsigned bits = 0;
	uint64_t elems = 1, nbits, len;

	if (!json_is_object(v))
		return cr_error_set(CR_EINVAL, "%s: safetensors tensor '%s' is not a JSON object",
		                    fn, name);
	dtype = json_object_get(v, "dtype");
	shape = json_object_get(v, "shape");
	offs = json_object_get(v, "data_offsets");
	if (!json_is_string(dtype))
		return cr_error_set(CR_EINVAL, "%s: safetensors tensor '%s' has no \"dtype\"", fn,
		                    name);
	for (size_t i = 0; i < sizeof(st_dtypes) / sizeof(st_dtypes[0]); i++)
		if (strcmp(json_string_value(dtype), st_dtypes[i].name) == 0)
			bits = st_dtypes[i].bits;
	if (!bits)
		return cr_error_set(CR_EINVAL,
		                    "%s: safetensors tensor '%s' has unknown dtype '%.32s'", fn,
		                    name, json_string_value(dtype));
	if (!json_is_array(shape))
		return cr_error_set(CR_EINVAL, "%s: safetensors tensor '%s' has no \"shape\" array",
		                    fn, name);
	if (json_array_size(shape) > CR_TENSOR_MAX_DIMS)
		return cr_error_set(CR_EINVAL,
		                    "%s: safetensors tensor '%s' has %zu dimensions (at most "
		                    "%d)",
		                    fn, name, json_array_size(shape), CR_TENSOR_MAX_DIMS);
	e->ndim = (uint32_t)json_array_size(shape);
	for (uint32_t i = 0; i < e->ndim; i++) {
		if (get_u64(json_array_get(shape, i), &e->shape[i]))
			return cr_error_set(CR_EINVAL,
			                    "%s: safetensors tensor '%s': dimension %u is not a "
			                    "non-negative integer",
			                    fn, name, i);
		if (__builtin_mul_overflow(elems, e->shape[i], &elems))
			return cr_error_set(CR_EINVAL,
			                    "%s: safetensors tensor '%s': absurd shape (element "
			                    "count overflows)",
			                    fn, name);
	}
	if (!json_is_array(offs) || json_array_size(offs) != 2 ||
	    get_u64(json_array_get(offs, 0), &e->begin) ||
	    get_u64(json_array_get(offs, 1), &e->end))
		return cr_error_set(CR_EINVAL,
		                    "%s: safetensors tensor '%s': \"data_offsets\" must be two "
		                    "non-negative integers",
		                    fn, name);
	if (e->begin > e->end)
		return cr_error_set(CR_EINVAL,
		                    "%s: safetensors tensor '%s': data_offsets begin %llu > "
		                    "end %llu",
		                    fn, name, (unsigned long long)e->begin,
		                    (unsigned long long)e->end);
	if (e->end > data_len)
		return cr_error_set(CR_EINVAL,
		                    "%s: safetensors tensor '%s': data_offsets end %llu is "
		                    "beyond the data section (%llu bytes)",
		                    fn, name, (unsigned long long)e->end,
		                    (unsigned long long)data_len);
	if (__builtin_mul_overflow(elems, (uint64_t)bits, &nbits))
		return cr_error_set(CR_EINVAL,
		                    "%s: safetensors tensor '%s': absurd shape (byte size "
		                    "overflows)",
		                    fn, name);
	if (nbits % 8)
		return cr_error_set(CR_EINVAL,
		                    "%s: safetensors tensor '%s': %llu elements of %u bits "
		                    "do not fill whole bytes",
		                    fn, name, (unsigned long long)elems, bits);
	len = nbits / 8;
	if (len != e->end - e->begin)
		return cr_error_set(CR_EINVAL,
		                    "%s: safetensors tensor '%s': data_offsets span %llu bytes "
		                    "but %s x shape needs %llu",
		                    fn, name, (unsigned long long)(e->end - e->begin),
		                    json_string_value(dtype), (unsigned long long)len);
	e->name = name;
	e->dtype = json_string_value(dtype);
	return 0;
}

static int st_read(cr_tpass *p, int fd)
{
	const char *fn = cr_tpass_name(p);
	uint64_t size = cr_tpass_size(p), hlen, data_start, data_len, end = 0;
	uint8_t lenbuf[8], *hdr = NULL;
	json_t *root = NULL;
	json_error_t jerr;
	st_entry *entries = NULL;
	size_t n = 0;
	const char *key;
	json_t *val;
	int rc;

	if (size < 8)
		return cr_error_set(CR_EINVAL,
		                    "%s: safetensors: truncated (%llu bytes, no header "
		                    "length)",
		                    fn, (unsigned long long)size);
	if ((rc = cr_tpass_pread(p, fd, lenbuf, 8, 0)) != 0)
		return rc;
	hlen = le64(lenbuf);
	if (hlen > ST_MAX_HEADER)
		return cr_error_set(CR_EINVAL,
		                    "%s: safetensors header length %llu exceeds the %u-byte "
		                    "cap",
		                    fn, (unsigned long long)hlen, ST_MAX_HEADER);
	if (hlen > size - 8)
		return cr_error_set(CR_EINVAL,
		                    "%s: safetensors header length %llu exceeds the file "
		                    "(%llu bytes after the length)",
		                    fn, (unsigned long long)hlen, (unsigned long long)(size - 8));
	if (hlen < 2)
		return cr_error_set(CR_EINVAL, "%s: safetensors header is too short", fn);
	data_start = 8 + hlen;
	data_len = size - data_start;
	if ((hdr = malloc((size_t)hlen)) == NULL)
		return cr_error_set(CR_ENOMEM, "%s: out of memory for a %llu-byte header", fn,
		                    (unsigned long long)hlen);
	if ((rc = cr_tpass_pread(p, fd, hdr, (size_t)hlen, 8)) != 0)
		goto done;
	if (hdr[0] != '{') {
		rc = cr_error_set(CR_EINVAL, "%s: safetensors header is not a JSON object", fn);
		goto done;
	}
	if (count_values(hdr, (size_t)hlen) > ST_MAX_VALUES) {
		rc =
		    cr_error_set(CR_EINVAL, "%s: safetensors header holds more than %u JSON values",
		                 fn, ST_MAX_VALUES);
		goto done;
	}
	root = json_loadb((const char *)hdr, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
	if (!root || !json_is_object(root)) {
		rc = cr_error_set(CR_EINVAL,
		                  "%s: safetensors header is not valid JSON: %s (byte %d)", fn,
		                  root ? "not an object" : jerr.text, root ? 0 : jerr.position);
		goto done;
	}
	if (json_object_size(root) > CR_TENSOR_MAX_COUNT + 1) {
		rc = cr_error_set(CR_EINVAL, "%s: safetensors header declares more than %u tensors",
		                  fn, CR_TENSOR_MAX_COUNT);
		goto done;
	}
	if ((entries = calloc(json_object_size(root) + 1, sizeof(*entries))) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	json_object_foreach(root, key, val)
	{
		if (strcmp(key, "__metadata__") == 0) {
			if (!json_is_object(val)) {
				rc = cr_error_set(
				    CR_EINVAL, "%s: safetensors __metadata__ is not an object", fn);
				goto done;
			}
			continue;
		}
		if (strlen(key) > CR_TENSOR_MAX_NAME) {
			rc = cr_error_set(CR_EINVAL,
			                  "%s: safetensors tensor name longer than %u bytes", fn,
			                  CR_TENSOR_MAX_NAME);
			goto done;
		}
		if ((rc = parse_entry(p, key, val, data_len, &entries[n])) != 0)
			goto done;
		n++;
	}
	if (n > 1)
		qsort(entries, n, sizeof(*entries), entry_cmp);
	/* The ranges must tile the data section: the format allows no holes or overlap. */
	for (size_t i = 0; i < n; i++) {
		if (entries[i].begin < end) {
			rc = cr_error_set(CR_EINVAL,
			                  "%s: safetensors tensors '%s' and '%s' overlap "
			                  "(data_offsets %llu < %llu)",
			                  fn, entries[i].name, entries[i - 1].name,
			                  (unsigned long long)entries[i].begin,
			                  (unsigned long long)end);
			goto done;
		}
		if (entries[i].begin > end) {
			rc = cr_error_set(CR_EINVAL,
			                  "%s: safetensors data bytes %llu..%llu belong to no "
			                  "tensor",
			                  fn, (unsigned long long)end,
			                  (unsigned long long)entries[i].begin);
			goto done;
		}
		end = entries[i].end;
	}
	if (end != data_len) {
		rc = cr_error_set(CR_EINVAL,
		                  "%s: safetensors data section holds %llu bytes after the "
		                  "last tensor",
		                  fn, (unsigned long long)(data_len - end));
		goto done;
	}
	for (size_t i = 0; i < n; i++) {
		cr_tensor t;

		memset(&t, 0, sizeof(t));
		t.name = (char *)entries[i].name;
		snprintf(t.dtype, sizeof(t.dtype), "%s", entries[i].dtype);
		t.ndim = entries[i].ndim;
		memcpy(t.shape, entries[i].shape, sizeof(t.shape));
		t.offset = data_start + entries[i].begin;
		t.length = entries[i].end - entries[i].begin;
		if ((rc = cr_tpass_add(p, &t)) != 0)
			goto done;
	}
	if ((rc = cr_tpass_begin(p)) != 0)
		goto done;
	rc = cr_tpass_stream_fd(p, fd);
done:
	free(entries);
	json_decref(root);
	free(hdr);
	return rc;
}

const cr_tensor_reader cr_reader_safetensors = {"safetensors", st_probe, st_read};
