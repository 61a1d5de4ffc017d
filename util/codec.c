/*
 * Hex, base64 and UTF-8 checks used by the event encoding and the CLI.
 * Decoders are strict: a value has exactly one accepted spelling.
 */
#include <string.h>

#include "cleanroom/error.h"
#include "util/codec.h"

static const char hexdigits[] = "0123456789abcdef";
static const char b64chars[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void cr_hex_encode(char *out, const uint8_t *data, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = hexdigits[data[i] >> 4];
		out[2 * i + 1] = hexdigits[data[i] & 15];
	}
	out[2 * n] = '\0';
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int cr_hex_decode(uint8_t *out, size_t n, const char *hex, size_t hex_len)
{
	size_t i;

	if (hex_len != 2 * n)
		return cr_error_set(CR_EINVAL, "expected %zu hex digits, got %zu", 2 * n, hex_len);
	for (i = 0; i < n; i++) {
		int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return cr_error_set(CR_EINVAL, "not a hex digit at position %zu",
			                    hi < 0 ? 2 * i : 2 * i + 1);
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

size_t cr_base64_len(size_t n)
{
	return (n + 2) / 3 * 4;
}

void cr_base64_encode(char *out, const uint8_t *data, size_t n)
{
	size_t i, o = 0;

	for (i = 0; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];

		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = b64chars[(v >> 6) & 63];
		out[o++] = b64chars[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)data[i] << 16;

		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = '=';
		out[o++] = '=';
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;

		out[o++] = b64chars[v >> 18];
		out[o++] = b64chars[(v >> 12) & 63];
		out[o++] = b64chars[(v >> 6) & 63];
		out[o++] = '=';
	}
	out[o] = '\0';
}

static int b64val(char c)
{
	const char *p = c ? strchr(b64chars, c) : NULL;

	return p ? (int)(p - b64chars) : -1;
}

int cr_base64_decode(uint8_t *out, size_t *out_len, const char *b64, size_t len)
{
	size_t i, o = 0;

	if (len % 4)
		return cr_error_set(CR_EINVAL, "base64 length %zu is not a multiple of 4", len);
	for (i = 0; i < len; i += 4) {
		int v[4], k, pad = 0;
		int last = i + 4 == len;

		for (k = 0; k < 4; k++) {
			if (last && b64[i + k] == '=' && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad)
				return cr_error_set(CR_EINVAL, "bad base64 padding");
			v[k] = b64val(b64[i + k]);
			if (v[k] < 0)
				return cr_error_set(CR_EINVAL, "bad base64 character at %zu", i + k);
		}
		if (pad == 1 && v[2] == 0 && b64[i + 2] == '=')
			return cr_error_set(CR_EINVAL, "bad base64 padding");
		/* Canonical form: the bits below the last character are zero. */
		if ((pad == 2 && (v[1] & 15)) || (pad == 1 && (v[2] & 3)))
			return cr_error_set(CR_EINVAL, "non-canonical base64");
		out[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
		if (pad < 2)
			out[o++] = (uint8_t)((v[1] & 15) << 4 | v[2] >> 2);
		if (pad < 1)
			out[o++] = (uint8_t)((v[2] & 3) << 6 | v[3]);
	}
	*out_len = o;
	return 0;
}

int cr_utf8_valid(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		uint32_t cp;
		size_t k, len;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			len = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			len = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			len = 4;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (n - i < len)
			return 0;
		for (k = 1; k < len; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += len;
	}
	return 1;
}
