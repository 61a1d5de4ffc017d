/*
 * The anchor: anchor.json from a seal note, its checker, and the
 * Keccak-256 that EVM selectors and event topics need
 * (docs/formats/anchor.md).
 *
 * Everything in anchor.json but "published" is a function of the seal
 * note's bytes, so the checker rebuilds the expected document and compares
 * field by field; "published" is filled in by people after the fact and is
 * only checked for shape. Keccak-256 is the plain Keccak-f[1600] sponge
 * (rate 136 bytes) with the pre-FIPS padding 0x01 ... 0x80.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cleanroom/anchor.h"
#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "cleanroom/seal.h"
#include "util/buf.h"
#include "util/codec.h"

/* ---- Keccak-256 ------------------------------------------------------------ */

#define KECCAK_RATE 136 /* bytes: 1600 bits less a capacity of 512 */

static const uint64_t round_constants[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

/* rho offsets and pi destinations, visited along the pi cycle from lane 1. */
static const unsigned char rho[24] = {1,  3,  6,  10, 15, 21, 28, 36, 45, 55, 2,  14,
                                      27, 41, 56, 8,  25, 43, 62, 18, 39, 61, 20, 44};
static const unsigned char pi[24] = {10, 7,  11, 17, 18, 3, 5,  16, 8,  21, 24, 4,
                                     15, 23, 19, 13, 12, 2, 20, 14, 22, 9,  6,  1};

static uint64_t rotl64(uint64_t x, unsigned n)
{
	return (x << n) | (x >> (64 - n)); /* n is 1..63 here */
}

static void keccak_f1600(uint64_t a[25])
{
	uint64_t c[5], t, u;
	unsigned r, x, y, i;

	for (r = 0; r < 24; r++) {
		/* theta */
		for (x = 0; x < 5; x++)
			c[x] = a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20];
		for (x = 0; x < 5; x++) {
			t = c[(x + 4) % 5] ^ rotl64(c[(x + 1) % 5], 1);
			for (y = 0; y < 25; y += 5)
				a[y + x] ^= t;
		}
		/* rho and pi */
		t = a[1];
		for (i = 0; i < 24; i++) {
			u = a[pi[i]];
			a[pi[i]] = rotl64(t, rho[i]);
			t = u;
		}
		/* chi */
		for (y = 0; y < 25; y += 5) {
			for (x = 0; x < 5; x++)
				c[x] = a[y + x];
			for (x = 0; x < 5; x++)
				a[y + x] = c[x] ^ (~c[(x + 1) % 5] & c[(x + 2) % 5]);
		}
		/* iota */
		a[0] ^= round_constants[r];
	}
}

/* XOR one rate-sized block into the state; lanes are little-endian. */
static void absorb(uint64_t a[25], const uint8_t *block)
{
	for (unsigned i = 0; i < KECCAK_RATE / 8; i++) {
		uint64_t lane = 0;

		for (unsigned b = 0; b < 8; b++)
			lane |= (uint64_t)block[8 * i + b] << (8 * b);
		a[i] ^= lane;
	}
}

void cr_keccak256_domain(uint8_t out[CR_KECCAK256_SIZE], const void *data, size_t len,
                         uint8_t domain)
{
	const uint8_t *p = data;
	uint8_t last[KECCAK_RATE];
	uint64_t a[25] = {0};
	size_t i;

	for (; len >= KECCAK_RATE; p += KECCAK_RATE, len -= KECCAK_RATE) {
		absorb(a, p);
		keccak_f1600(a);
	}
	/* The final block always exists: padding goes in even after a full block. */
	memset(last, 0, sizeof(last));
	if (len)
		memcpy(last, p, len);
	last[len] ^= domain;
	last[KECCAK_RATE - 1] ^= 0x80;
	absorb(a, last);
	keccak_f1600(a);
	for (i = 0; i < CR_KECCAK256_SIZE; i++)
		out[i] = (uint8_t)(a[i / 8] >> (8 * (i % 8)));
}

void cr_keccak256(uint8_t out[CR_KECCAK256_SIZE], const void *data, size_t len)
{
	cr_keccak256_domain(out, data, len, 0x01);
}

void cr_anchor_selector(uint8_t out[4], const char *signature)
{
	uint8_t h[CR_KECCAK256_SIZE];

	cr_keccak256(h, signature, strlen(signature));
	memcpy(out, h, 4);
}

/* ---- anchor.json ------------------------------------------------------------ */

/* "0x" and lowercase hex of n bytes, as a new JSON string. */
static json_t *hex0x(const uint8_t *data, size_t n)
{
	char buf[2 + 2 * 100 + 1];

	buf[0] = '0';
	buf[1] = 'x';
	cr_hex_encode(buf + 2, data, n); /* n <= 100 at every caller */
	return json_string(buf);
}

static json_t *hex_plain(const uint8_t *data, size_t n)
{
	char buf[2 * CR_HASH_SIZE + 1];

	cr_hex_encode(buf, data, n); /* n <= 32 at every caller */
	return json_string(buf);
}

/* {"data","event":{"signature","topic"},"function","selector"} for one call. */
static json_t *call_json(const char *function, const char *event, const uint8_t *args,
                         size_t args_len)
{
	uint8_t data[4 + 3 * 32], topic[CR_KECCAK256_SIZE];

	cr_anchor_selector(data, function);
	memcpy(data + 4, args, args_len); /* args_len <= 96 at every caller */
	cr_keccak256(topic, event, strlen(event));
	return json_pack("{s:o, s:{s:s, s:o}, s:s, s:o}", "data", hex0x(data, 4 + args_len),
	                 "event", "signature", event, "topic", hex0x(topic, sizeof(topic)),
	                 "function", function, "selector", hex0x(data, 4));
}

/* The signed text of a note: up to the newline before its last blank line,
 * as seal.c splits it. */
static int note_text_len(size_t *out, const char *note, size_t len)
{
	size_t i;

	*out = 0;
	if (len == 0 || note[len - 1] != '\n')
		return cr_error_set(CR_EINVAL, "seal note does not end with a newline");
	for (i = len - 1; i > 0; i--) {
		if (note[i] == '\n' && note[i - 1] == '\n') {
			*out = i;
			return 0;
		}
	}
	return cr_error_set(CR_EINVAL, "seal note has no blank line before its signatures");
}

/* Everything anchor.json must hold for this note, "published" all null. */
static int expected_json(json_t **out, const char *note, size_t note_len)
{
	cr_seal_body body = {0};
	uint8_t commitment[CR_SHA256_SIZE], args[3 * 32];
	json_t *doc = NULL;
	size_t text_len;
	int rc;

	*out = NULL;
	if (note_len > CR_NOTE_MAX_SIZE)
		return cr_error_set(CR_EINVAL, "seal note of %zu bytes exceeds the %u byte limit",
		                    note_len, CR_NOTE_MAX_SIZE);
	if ((rc = note_text_len(&text_len, note, note_len)) != 0 ||
	    (rc = cr_seal_body_parse(&body, note, text_len)) != 0)
		return rc;
	if (body.size > (uint64_t)CR_EVENT_INT_MAX) {
		rc = cr_error_set(CR_ERANGE, "seal tree size %" PRIu64 " exceeds 2^53 - 1",
		                  body.size);
		goto done;
	}
	cr_sha256(commitment, note, note_len);
	/* ABI: each argument one 32-byte word; uint64 right-aligned big-endian. */
	memset(args, 0, sizeof(args));
	memcpy(args, commitment, 32);
	for (int i = 0; i < 8; i++)
		args[32 + 24 + i] = (uint8_t)(body.size >> (8 * (7 - i)));
	memcpy(args + 64, body.root, 32);
	/* Inserted in the order the checker reports differences: version first. */
	doc = json_pack(
	    "{s:i, s:s, s:I, s:o, s:o, s:{s:o, s:o}, s:{s:n, s:n, s:n, s:n, s:n, s:n, s:n}}",
	    "version", CR_ANCHOR_VERSION, "origin", body.origin, "tree_size", (json_int_t)body.size,
	    "root", hex_plain(body.root, CR_HASH_SIZE), "commitment", hex_plain(commitment, 32),
	    "calls", "anchor_contract",
	    call_json(CR_ANCHOR_FUNCTION, CR_ANCHOR_EVENT, args, sizeof(args)), "eas_timestamp",
	    call_json(CR_EAS_FUNCTION, CR_EAS_EVENT, commitment, 32), "published", "block", "call",
	    "chain", "chain_id", "contract", "timestamp", "transaction");
	if (!doc) {
		rc = cr_error_set(CR_ENOMEM, "out of memory building anchor.json");
		goto done;
	}
	*out = doc;
done:
	cr_seal_body_free(&body);
	return rc;
}

int cr_anchor_build(char **out, size_t *out_len, const char *note, size_t note_len)
{
	json_t *doc = NULL;
	char *text;
	int rc;

	*out = NULL;
	if (out_len)
		*out_len = 0;
	if ((rc = expected_json(&doc, note, note_len)) != 0)
		return rc;
	text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(doc);
	if (!text)
		return cr_error_set(CR_ENOMEM, "out of memory writing anchor.json");
	if (out_len)
		*out_len = strlen(text);
	*out = text;
	return 0;
}

/* A value for a message: compact JSON, cut short. */
static const char *shown(char out[96], const json_t *v)
{
	char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
	size_t n;

	if (!s) {
		strcpy(out, v ? "?" : "nothing");
		return out;
	}
	n = strlen(s);
	if (n > 80) {
		memcpy(out, s, 77);
		strcpy(out + 77, "...");
	} else {
		memcpy(out, s, n + 1);
	}
	for (char *p = out; *p; p++) {
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
	}
	free(s);
	return out;
}

/* A key or path for a message, printable and bounded. */
static void path_join(char *out, size_t cap, const char *parent, const char *key)
{
	size_t n;

	snprintf(out, cap, "%s%s%s", parent, *parent ? "." : "", key);
	for (n = 0; out[n]; n++) {
		if ((unsigned char)out[n] < 0x20 || (unsigned char)out[n] >= 0x7f)
			out[n] = '?';
	}
}

/* have must equal want, recursively; the first difference is named. */
static int compare(const json_t *want, const json_t *have, const char *path)
{
	char sub[256], a[96], b[96];
	const char *k;
	json_t *w;

	if (json_is_object(want) && json_is_object(have)) {
		json_object_foreach ((json_t *)want, k, w) {
			json_t *h = json_object_get(have, k);

			path_join(sub, sizeof(sub), path, k);
			if (!h)
				return cr_error_set(CR_EVERIFY, "anchor.json: \"%s\" is missing",
				                    sub);
			if (strcmp(sub, "published") == 0)
				continue; /* checked on its own */
			if (compare(w, h, sub) != 0)
				return CR_EVERIFY;
		}
		json_object_foreach ((json_t *)have, k, w) {
			if (!json_object_get(want, k)) {
				path_join(sub, sizeof(sub), path, k);
				return cr_error_set(CR_EVERIFY, "anchor.json: unknown field \"%s\"",
				                    sub);
			}
		}
		return 0;
	}
	if (json_equal(want, have))
		return 0;
	return cr_error_set(CR_EVERIFY, "anchor.json: \"%s\" is %s, but the seal note gives %s",
	                    path, shown(a, have), shown(b, want));
}

static int is_hex0x(const json_t *v, size_t bytes)
{
	const char *s = json_string_value(v);

	if (!s || json_string_length(v) != 2 + 2 * bytes || s[0] != '0' || s[1] != 'x')
		return 0;
	/* Either case: EIP-55 addresses mix upper and lower case. */
	return strspn(s + 2, "0123456789abcdefABCDEF") == 2 * bytes;
}

static int is_count(const json_t *v, json_int_t min)
{
	return json_is_integer(v) && json_integer_value(v) >= min;
}

/* "published": every field null or of its shape; any non-null is a claim. */
static int check_published(const json_t *pub, int *claimed)
{
	static const char *const keys[] = {"block",    "call",      "chain",      "chain_id",
	                                   "contract", "timestamp", "transaction"};
	const char *k, *call;
	json_t *v;
	char a[96];
	size_t i;
	int ok;

	*claimed = 0;
	if (!json_is_object(pub))
		return cr_error_set(CR_EVERIFY, "anchor.json: \"published\" is not an object");
	json_object_foreach ((json_t *)pub, k, v) {
		for (i = 0; i < sizeof(keys) / sizeof(keys[0]) && strcmp(k, keys[i]) != 0; i++)
			;
		if (i == sizeof(keys) / sizeof(keys[0])) {
			char sub[256];

			path_join(sub, sizeof(sub), "published", k);
			return cr_error_set(CR_EVERIFY, "anchor.json: unknown field \"%s\"", sub);
		}
		if (json_is_null(v))
			continue;
		*claimed = 1;
		call = json_string_value(v);
		if (strcmp(k, "block") == 0 || strcmp(k, "timestamp") == 0)
			ok = is_count(v, 0);
		else if (strcmp(k, "chain_id") == 0)
			ok = is_count(v, 1);
		else if (strcmp(k, "call") == 0)
			ok = call && (strcmp(call, "anchor_contract") == 0 ||
			              strcmp(call, "eas_timestamp") == 0);
		else if (strcmp(k, "chain") == 0)
			ok = call && json_string_length(v) > 0 && json_string_length(v) <= 64;
		else if (strcmp(k, "contract") == 0)
			ok = is_hex0x(v, 20);
		else
			ok = is_hex0x(v, 32);
		if (!ok)
			return cr_error_set(CR_EVERIFY,
			                    "anchor.json: \"published.%s\" is %s, which is "
			                    "not a valid %s (see docs/formats/anchor.md)",
			                    k, shown(a, v), k);
	}
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		if (!json_object_get(pub, keys[i]))
			return cr_error_set(CR_EVERIFY, "anchor.json: \"published.%s\" is missing",
			                    keys[i]);
	}
	return 0;
}

int cr_anchor_check(const void *anchor, size_t len, const char *note, size_t note_len,
                    int *published)
{
	json_error_t jerr;
	json_t *want = NULL, *have = NULL;
	int rc, claimed = 0;

	if (published)
		*published = 0;
	if (len > CR_ANCHOR_MAX)
		return cr_error_set(CR_EINVAL, "anchor.json of %zu bytes exceeds the %u byte limit",
		                    len, CR_ANCHOR_MAX);
	have = json_loadb(anchor, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!have)
		return cr_error_set(CR_EINVAL, "anchor.json is not JSON: %s at byte %d", jerr.text,
		                    jerr.position);
	if (!json_is_object(have)) {
		rc = cr_error_set(CR_EINVAL, "anchor.json is not a JSON object");
		goto done;
	}
	if ((rc = expected_json(&want, note, note_len)) != 0 ||
	    (rc = compare(want, have, "")) != 0 ||
	    (rc = check_published(json_object_get(have, "published"), &claimed)) != 0)
		goto done;
	if (published)
		*published = claimed;
done:
	json_decref(want);
	json_decref(have);
	return rc;
}
