/*
 * Canonical JSON encoding of events (RFC 8785 style, integers only) and the
 * strict parser that accepts only what the encoder writes. The encoder is
 * on the append hot path: keys are sorted on the stack for small objects
 * and output goes straight into the caller's buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "util/buf.h"
#include "util/codec.h"

#define MAX_DEPTH 64

/* Next code point of valid UTF-8 at *s; advances *s. */
static uint32_t next_cp(const unsigned char **s)
{
	const unsigned char *p = *s;
	uint32_t cp;

	if (p[0] < 0x80) {
		cp = p[0];
		*s += 1;
	} else if (p[0] < 0xe0) {
		cp = (uint32_t)(p[0] & 0x1f) << 6 | (p[1] & 0x3f);
		*s += 2;
	} else if (p[0] < 0xf0) {
		cp = (uint32_t)(p[0] & 0x0f) << 12 | (uint32_t)(p[1] & 0x3f) << 6 | (p[2] & 0x3f);
		*s += 3;
	} else {
		cp = (uint32_t)(p[0] & 0x07) << 18 | (uint32_t)(p[1] & 0x3f) << 12 |
		     (uint32_t)(p[2] & 0x3f) << 6 | (p[3] & 0x3f);
		*s += 4;
	}
	return cp;
}

/*
 * Weight of a code point in UTF-16 code unit order: BMP below the
 * surrogates < supplementary planes (encoded as surrogates) < BMP above.
 */
static uint64_t utf16_weight(uint32_t cp)
{
	if (cp < 0xd800)
		return cp;
	if (cp >= 0x10000)
		return 0x10000ull + cp;
	return 0x200000ull + cp;
}

static int key_cmp(const void *a, const void *b)
{
	const unsigned char *x = *(const unsigned char *const *)a;
	const unsigned char *y = *(const unsigned char *const *)b;

	while (*x && *y) {
		if (*x < 0x80 && *y < 0x80) {
			if (*x != *y)
				return *x < *y ? -1 : 1;
			x++;
			y++;
			continue;
		}
		{
			uint64_t wx = utf16_weight(next_cp(&x));
			uint64_t wy = utf16_weight(next_cp(&y));

			if (wx != wy)
				return wx < wy ? -1 : 1;
		}
	}
	return *x ? 1 : (*y ? -1 : 0);
}

int cr_event_encode_string(cr_buf *out, const char *s, size_t len)
{
	static const char hexd[] = "0123456789abcdef";
	size_t i, run = 0;
	int rc;

	if (!cr_utf8_valid((const uint8_t *)s, len))
		return cr_error_set(CR_EINVAL, "string is not valid UTF-8");
	if ((rc = cr_buf_grow(out, len + 2)) != 0)
		return rc;
	out->ptr[out->len++] = '"';
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6];
		size_t n = 2;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		if ((rc = cr_buf_put(out, s + run, i - run)) != 0)
			return rc;
		run = i + 1;
		esc[0] = '\\';
		switch (c) {
		case '"': esc[1] = '"'; break;
		case '\\': esc[1] = '\\'; break;
		case '\b': esc[1] = 'b'; break;
		case '\f': esc[1] = 'f'; break;
		case '\n': esc[1] = 'n'; break;
		case '\r': esc[1] = 'r'; break;
		case '\t': esc[1] = 't'; break;
		default:
			esc[1] = 'u';
			esc[2] = '0';
			esc[3] = '0';
			esc[4] = hexd[c >> 4];
			esc[5] = hexd[c & 15];
			n = 6;
		}
		if ((rc = cr_buf_put(out, esc, n)) != 0)
			return rc;
	}
	if ((rc = cr_buf_put(out, s + run, len - run)) != 0)
		return rc;
	return cr_buf_putc(out, '"');
}

static int encode_value(cr_buf *out, const json_t *v, int depth);

static int encode_object(cr_buf *out, const json_t *obj, int depth)
{
	const char *stack_keys[32];
	const char **keys = stack_keys;
	size_t n = json_object_size(obj), i = 0;
	const char *key;
	json_t *val;
	int rc = 0;

	if (n > sizeof(stack_keys) / sizeof(stack_keys[0])) {
		keys = malloc(n * sizeof(*keys));
		if (!keys)
			return cr_error_set(CR_ENOMEM, "out of memory");
	}
	json_object_foreach((json_t *)obj, key, val) {
		if (!cr_utf8_valid((const uint8_t *)key, strlen(key))) {
			rc = cr_error_set(CR_EINVAL, "object key is not valid UTF-8");
			goto done;
		}
		keys[i++] = key;
	}
	if (n > 1)
		qsort(keys, n, sizeof(*keys), key_cmp);
	if ((rc = cr_buf_putc(out, '{')) != 0)
		goto done;
	for (i = 0; i < n; i++) {
		if (i && (rc = cr_buf_putc(out, ',')) != 0)
			goto done;
		if ((rc = cr_event_encode_string(out, keys[i], strlen(keys[i]))) != 0 ||
		    (rc = cr_buf_putc(out, ':')) != 0 ||
		    (rc = encode_value(out, json_object_get(obj, keys[i]), depth + 1)) != 0) {
			if (rc == CR_EINVAL)
				cr_error_set(CR_EINVAL, "in \"%s\": %s", keys[i], cr_error_last());
			goto done;
		}
	}
	rc = cr_buf_putc(out, '}');
done:
	if (keys != stack_keys)
		free(keys);
	return rc;
}

static int encode_value(cr_buf *out, const json_t *v, int depth)
{
	size_t i;
	int rc;

	if (depth > MAX_DEPTH)
		return cr_error_set(CR_EINVAL, "nested deeper than %d levels", MAX_DEPTH);
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return encode_object(out, v, depth);
	case JSON_ARRAY:
		if ((rc = cr_buf_putc(out, '[')) != 0)
			return rc;
		for (i = 0; i < json_array_size(v); i++) {
			if (i && (rc = cr_buf_putc(out, ',')) != 0)
				return rc;
			if ((rc = encode_value(out, json_array_get(v, i), depth + 1)) != 0)
				return rc;
		}
		return cr_buf_putc(out, ']');
	case JSON_STRING:
		return cr_event_encode_string(out, json_string_value(v), json_string_length(v));
	case JSON_INTEGER: {
		json_int_t n = json_integer_value(v);

		if (n > CR_EVENT_INT_MAX || n < -CR_EVENT_INT_MAX)
			return cr_error_set(CR_EINVAL, "integer %lld is beyond 2^53-1", (long long)n);
		return cr_buf_printf(out, "%lld", (long long)n);
	}
	case JSON_REAL:
		return cr_error_set(CR_EINVAL, "real numbers are not allowed in events");
	case JSON_TRUE:
		return cr_buf_puts(out, "true");
	case JSON_FALSE:
		return cr_buf_puts(out, "false");
	case JSON_NULL:
		return cr_buf_puts(out, "null");
	}
	return cr_error_set(CR_EINVAL, "unknown JSON value");
}

static int check_header(const json_t *ev)
{
	const json_t *v, *type;

	if (!json_is_object(ev))
		return cr_error_set(CR_EINVAL, "an event must be a JSON object");
	v = json_object_get(ev, "v");
	type = json_object_get(ev, "type");
	if (!json_is_integer(v) || json_integer_value(v) < 1)
		return cr_error_set(CR_EINVAL, "event has no schema version \"v\"");
	if (!json_is_string(type) || json_string_length(type) == 0)
		return cr_error_set(CR_EINVAL, "event has no \"type\"");
	return 0;
}

int cr_event_new(json_t **out, const char *type)
{
	json_t *ev = json_object();

	*out = NULL;
	if (!ev || json_object_set_new(ev, "v", json_integer(CR_EVENT_VERSION)) ||
	    json_object_set_new(ev, "type", json_string(type))) {
		json_decref(ev);
		return cr_error_set(CR_ENOMEM, "out of memory building an event");
	}
	*out = ev;
	return 0;
}

int cr_event_encode(const json_t *ev, cr_buf *out)
{
	size_t start = out->len;
	int rc;

	if ((rc = check_header(ev)) != 0)
		return rc;
	rc = encode_value(out, ev, 0);
	if (rc) {
		out->len = start;
		if (out->ptr)
			out->ptr[start] = '\0';
	}
	return rc;
}

int cr_event_parse(json_t **out, const void *data, size_t len)
{
	json_error_t jerr;
	json_t *ev = NULL;
	cr_buf again = CR_BUF_INIT;
	int rc;

	*out = NULL;
	if (len > CR_EVENT_MAX_SIZE)
		return cr_error_set(CR_EINVAL, "event of %zu bytes exceeds the %u byte limit", len,
		                    CR_EVENT_MAX_SIZE);
	ev = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!ev)
		return cr_error_set(CR_EINVAL, "not JSON: %s at byte %d", jerr.text, jerr.position);
	if ((rc = check_header(ev)) != 0 || (rc = encode_value(&again, ev, 0)) != 0)
		goto done;
	if (again.len != len || memcmp(again.ptr, data, len) != 0) {
		rc = cr_error_set(CR_EINVAL, "event is not in canonical form");
		goto done;
	}
	*out = ev;
	ev = NULL;
done:
	cr_buf_free(&again);
	json_decref(ev);
	return rc;
}

const char *cr_event_type(const json_t *ev)
{
	const char *s = json_string_value(json_object_get(ev, "type"));

	return s ? s : "";
}

static int set_new(json_t *ev, const char *key, json_t *val)
{
	if (!val)
		return cr_error_set(CR_ENOMEM, "out of memory setting \"%s\"", key);
	if (json_object_set_new(ev, key, val))
		return cr_error_set(CR_EINVAL, "cannot set \"%s\"", key);
	return 0;
}

int cr_event_set_path(json_t *ev, const char *key, const char *path, size_t len)
{
	char name[128];
	char *b64;
	int rc;

	if ((size_t)snprintf(name, sizeof(name), "%s_b64", key) >= sizeof(name))
		return cr_error_set(CR_EINVAL, "key too long");
	if (cr_utf8_valid((const uint8_t *)path, len) && memchr(path, 0, len) == NULL) {
		json_object_del(ev, name);
		return set_new(ev, key, json_stringn(path, len));
	}
	b64 = malloc(cr_base64_len(len) + 1);
	if (!b64)
		return cr_error_set(CR_ENOMEM, "out of memory");
	cr_base64_encode(b64, (const uint8_t *)path, len);
	json_object_del(ev, key);
	rc = set_new(ev, name, json_string(b64));
	free(b64);
	return rc;
}

int cr_event_get_path(const json_t *ev, const char *key, cr_buf *out)
{
	char name[128];
	const json_t *v;
	const char *s;
	size_t n, len;
	int rc;

	cr_buf_clear(out);
	if ((v = json_object_get(ev, key)) != NULL && json_is_string(v))
		return cr_buf_put(out, json_string_value(v), json_string_length(v));
	if ((size_t)snprintf(name, sizeof(name), "%s_b64", key) >= sizeof(name))
		return cr_error_set(CR_EINVAL, "key too long");
	if ((v = json_object_get(ev, name)) == NULL || !json_is_string(v))
		return cr_error_set(CR_ENOTFOUND, "event has no \"%s\"", key);
	s = json_string_value(v);
	n = json_string_length(v);
	if ((rc = cr_buf_grow(out, n / 4 * 3 + 1)) != 0)
		return rc;
	if ((rc = cr_base64_decode((uint8_t *)out->ptr, &len, s, n)) != 0)
		return cr_error_set(rc, "\"%s\": %s", name, cr_error_last());
	out->len = len;
	out->ptr[len] = '\0';
	return 0;
}

int cr_event_set_hex(json_t *ev, const char *key, const uint8_t *data, size_t n)
{
	char stack[129];
	char *hex = stack;
	int rc;

	if (n > 64 && (hex = malloc(2 * n + 1)) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	cr_hex_encode(hex, data, n);
	rc = set_new(ev, key, json_stringn(hex, 2 * n));
	if (hex != stack)
		free(hex);
	return rc;
}

int cr_event_set_time(json_t *ev, const char *key, const struct timespec *ts)
{
	struct tm tm;
	char s[96];
	time_t t = ts->tv_sec;

	if (!gmtime_r(&t, &tm) || tm.tm_year + 1900 < 0 || tm.tm_year + 1900 > 9999 ||
	    ts->tv_nsec < 0 || ts->tv_nsec >= 1000000000)
		return cr_error_set(CR_ERANGE, "time out of range");
	snprintf(s, sizeof(s), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ", tm.tm_year + 1900,
	         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
	         (long)(ts->tv_nsec / 1000));
	return set_new(ev, key, json_string(s));
}

int cr_event_set_int(json_t *ev, const char *key, int64_t value)
{
	if (value > CR_EVENT_INT_MAX || value < -CR_EVENT_INT_MAX)
		return cr_error_set(CR_ERANGE, "\"%s\": %lld is beyond 2^53-1", key, (long long)value);
	return set_new(ev, key, json_integer(value));
}

int cr_event_set_str(json_t *ev, const char *key, const char *value)
{
	if (!cr_utf8_valid((const uint8_t *)value, strlen(value)))
		return cr_error_set(CR_EINVAL, "\"%s\" is not valid UTF-8", key);
	return set_new(ev, key, json_string(value));
}
