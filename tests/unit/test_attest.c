/*
 * Unit tests for DSSE (PAE known answers, sign/verify, every tampering of
 * the envelope), Keccak-256 (published vectors, vectors from an independent
 * implementation at the rate boundary, the permutation against OpenSSL's
 * SHA3-256), the anchor (layout of the call data, each field tampered), and
 * the attestation of a real store (subjects, predicate, an independently
 * computed input root; the checker accepting the true events and rejecting
 * each single alteration of them or of the statement).
 *
 * Scratch stores go under $CR_TMP (or /tmp) and are removed. With
 * $CR_ATTEST_DUMP set to a folder, the statement, envelope and anchor of the
 * test store are written there (the examples in docs/formats/ come from it).
 */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cleanroom/anchor.h"
#include "cleanroom/attest.h"
#include "cleanroom/dsse.h"
#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/seal.h"
#include "cleanroom/store.h"
#include "harness.h"
#include "util/buf.h"
#include "util/codec.h"

/* ---- helpers ------------------------------------------------------------------ */

static EVP_PKEY *new_key(void)
{
	EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");

	if (!k)
		abort();
	return k;
}

static void sha256(uint8_t out[32], const void *data, size_t n)
{
	unsigned int len = 32;

	if (!EVP_Digest(data, n, out, &len, EVP_sha256(), NULL))
		abort();
}

static void from_hex(uint8_t *out, size_t n, const char *hex)
{
	if (cr_hex_decode(out, n, hex, strlen(hex)) != 0)
		abort();
}

static int has(const char *msg, const char *needle)
{
	if (strstr(msg, needle))
		return 1;
	fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", msg, needle);
	return 0;
}

/* Load JSON text, let fn edit it, dump it compact and sorted. Caller frees. */
static char *edit_json(const char *text, size_t len, void (*fn)(json_t *doc, void *ctx), void *ctx)
{
	json_t *doc = json_loadb(text, len, 0, NULL);
	char *out;

	if (!doc)
		abort();
	fn(doc, ctx);
	out = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(doc);
	if (!out)
		abort();
	return out;
}

/* ---- DSSE ------------------------------------------------------------------------ */

static void test_pae(void)
{
/* A literal and its length, NULs included. */
#define LIT(s) s, sizeof(s) - 1
	static const struct {
		const char *type, *body;
		size_t body_len;
		const char *want;
		size_t want_len;
	} cases[] = {
	    /* The DSSE protocol's own example. */
	    {"http://example.com/HelloWorld", LIT("hello world"),
	     LIT("DSSEv1 29 http://example.com/HelloWorld 11 hello world")},
	    {"", LIT(""), LIT("DSSEv1 0  0 ")},
	    {"application/vnd.in-toto+json", LIT("{}"),
	     LIT("DSSEv1 28 application/vnd.in-toto+json 2 {}")},
	    /* Lengths count bytes: a binary body with a NUL, a two-byte character in the type. */
	    {"t\xc3\xbf", LIT("a\0b"), LIT("DSSEv1 3 t\xc3\xbf 3 a\0b")},
	    {"x", LIT("0123456789"), LIT("DSSEv1 1 x 10 0123456789")},
	};
#undef LIT
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		cr_buf b = CR_BUF_INIT;

		CHECK(cr_dsse_pae(&b, cases[i].type, cases[i].body, cases[i].body_len) == 0);
		CHECK(b.len == cases[i].want_len);
		CHECK(b.len == cases[i].want_len && memcmp(b.ptr, cases[i].want, b.len) == 0);
		cr_buf_free(&b);
	}
}

static void test_keyid(void)
{
	EVP_PKEY *key = new_key(), *pub = NULL;
	/* SubjectPublicKeyInfo DER of an Ed25519 key (RFC 8410): fixed prefix, raw key. */
	uint8_t der[12 + 32] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03,
	                        0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
	uint8_t sha[32];
	size_t n = 32;
	char id[CR_DSSE_KEYID_SIZE], id2[CR_DSSE_KEYID_SIZE], want[65];

	REQUIRE(EVP_PKEY_get_raw_public_key(key, der + 12, &n) == 1 && n == 32);
	sha256(sha, der, sizeof(der));
	cr_hex_encode(want, sha, 32);
	CHECK(cr_dsse_keyid(id, key) == 0);
	CHECK(strcmp(id, want) == 0);
	pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, der + 12, 32);
	REQUIRE(pub);
	CHECK(cr_dsse_keyid(id2, pub) == 0 && strcmp(id, id2) == 0);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(key);
}

static const char payload[] = "{\"_type\":\"https://in-toto.io/Statement/v1\",\"x\":1}";

static int verify_text(const char *env, EVP_PKEY *key)
{
	return cr_dsse_verify(NULL, NULL, env, strlen(env), CR_DSSE_INTOTO_TYPE, key);
}

static void set_field(json_t *doc, void *ctx)
{
	const char **kv = ctx;

	json_object_set_new(doc, kv[0], json_string(kv[1]));
}

static void set_sig_field(json_t *doc, void *ctx)
{
	const char **kv = ctx;
	json_t *sig = json_array_get(json_object_get(doc, "signatures"), 0);

	if (kv[1])
		json_object_set_new(sig, kv[0], json_string(kv[1]));
	else
		json_object_del(sig, kv[0]);
}

static void flip_sig_byte(json_t *doc, void *ctx)
{
	json_t *sig = json_array_get(json_object_get(doc, "signatures"), 0);
	const char *b64 = json_string_value(json_object_get(sig, "sig"));
	uint8_t raw[64];
	char out[89];
	size_t n;

	if (cr_base64_decode(raw, &n, b64, strlen(b64)) != 0 || n != 64)
		abort();
	raw[*(int *)ctx] ^= 0x01;
	cr_base64_encode(out, raw, 64);
	json_object_set_new(sig, "sig", json_string(out));
}

static void flip_payload_byte(json_t *doc, void *ctx)
{
	const char *b64 = json_string_value(json_object_get(doc, "payload"));
	size_t n, len = strlen(b64);
	uint8_t *raw = malloc(len);
	char *out = malloc(len + 8);

	if (!raw || !out || cr_base64_decode(raw, &n, b64, len) != 0)
		abort();
	raw[*(int *)ctx] ^= 0x20;
	cr_base64_encode(out, raw, n);
	json_object_set_new(doc, "payload", json_string(out));
	free(raw);
	free(out);
}

/* A second signature: ctx[0] keyid, ctx[1] sig; appended or, with ctx[2], put first. */
static void add_sig(json_t *doc, void *ctx)
{
	const char **kv = ctx;
	json_t *sigs = json_object_get(doc, "signatures");
	json_t *one = json_pack("{s:s, s:s}", "keyid", kv[0], "sig", kv[1]);

	if (kv[2])
		json_array_insert_new(sigs, 0, one);
	else
		json_array_append_new(sigs, one);
}

static void test_dsse_roundtrip(void)
{
	EVP_PKEY *key = new_key();
	char *env = NULL, *env2 = NULL, *out = NULL, id[CR_DSSE_KEYID_SIZE];
	size_t len = 0, len2 = 0, out_len = 0;
	json_t *doc;

	REQUIRE(cr_dsse_sign(&env, &len, CR_DSSE_INTOTO_TYPE, payload, strlen(payload), key) == 0);
	CHECK(len == strlen(env));
	/* Deterministic: the same payload and key give the same bytes. */
	REQUIRE(cr_dsse_sign(&env2, &len2, CR_DSSE_INTOTO_TYPE, payload, strlen(payload), key) ==
	        0);
	CHECK(len == len2 && memcmp(env, env2, len) == 0);
	/* Compact, sorted, the documented shape. */
	CHECK(strncmp(env, "{\"payload\":\"", 12) == 0);
	CHECK(strstr(
	    env, "\"payloadType\":\"application/vnd.in-toto+json\",\"signatures\":[{\"keyid\":\""));
	CHECK(!strchr(env, ' ') && !strchr(env, '\n'));
	doc = json_loads(env, JSON_REJECT_DUPLICATES, NULL);
	REQUIRE(doc);
	CHECK(cr_dsse_keyid(id, key) == 0);
	CHECK(strcmp(json_string_value(json_object_get(
	                 json_array_get(json_object_get(doc, "signatures"), 0), "keyid")),
	             id) == 0);
	json_decref(doc);

	CHECK(cr_dsse_verify(&out, &out_len, env, len, CR_DSSE_INTOTO_TYPE, key) == 0);
	CHECK(out && out_len == strlen(payload) && memcmp(out, payload, out_len) == 0);
	free(out);
	free(env);
	free(env2);
	EVP_PKEY_free(key);
}

static void test_dsse_tampering(void)
{
	EVP_PKEY *key = new_key(), *other = new_key(), *ec = NULL;
	char *env = NULL, *bad = NULL, *env_other = NULL, other_id[CR_DSSE_KEYID_SIZE];
	size_t len = 0;
	int i;

	REQUIRE(cr_dsse_sign(&env, &len, CR_DSSE_INTOTO_TYPE, payload, strlen(payload), key) == 0);
	REQUIRE(verify_text(env, key) == 0);

	/* Every byte of the payload is signed. */
	for (i = 0; i < (int)strlen(payload); i += 7) {
		bad = edit_json(env, len, flip_payload_byte, &i);
		CHECK(verify_text(bad, key) == CR_EVERIFY);
		free(bad);
	}
	CHECK(has(cr_error_last(), "does not verify"));
	/* Every byte of the signature matters. */
	for (i = 0; i < 64; i += 9) {
		bad = edit_json(env, len, flip_sig_byte, &i);
		CHECK(verify_text(bad, key) == CR_EVERIFY);
		free(bad);
	}
	/* The payload type: refused as such, and signed (verifying with that type still fails). */
	{
		const char *kv[] = {"payloadType", "application/json"};

		bad = edit_json(env, len, set_field, kv);
		CHECK(verify_text(bad, key) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "payloadType"));
		CHECK(cr_dsse_verify(NULL, NULL, bad, strlen(bad), "application/json", key) ==
		      CR_EVERIFY);
		CHECK(has(cr_error_last(), "does not verify"));
		free(bad);
	}
	/* keyid: another key's id, empty, absent: the signature is not ours. */
	{
		const char *ids[][2] = {{"keyid", "00"}, {"keyid", ""}, {"keyid", NULL}};

		for (i = 0; i < 3; i++) {
			bad = edit_json(env, len, set_sig_field, (void *)ids[i]);
			CHECK(verify_text(bad, key) == CR_EVERIFY);
			CHECK(has(cr_error_last(), "keyid"));
			free(bad);
		}
	}
	/* Unknown fields, at the top and in a signature. */
	{
		const char *kv[] = {"comment", "hello"};

		bad = edit_json(env, len, set_field, kv);
		CHECK(verify_text(bad, key) == CR_EINVAL);
		CHECK(has(cr_error_last(), "unknown field \"comment\""));
		free(bad);
		bad = edit_json(env, len, set_sig_field, kv);
		CHECK(verify_text(bad, key) == CR_EINVAL);
		CHECK(has(cr_error_last(), "signatures[0] has an unknown field"));
		free(bad);
	}
	/* A duplicate field, even with the same value. */
	{
		cr_buf b = CR_BUF_INIT;

		cr_buf_puts(&b, "{\"payloadType\":\"application/vnd.in-toto+json\",");
		cr_buf_put(&b, env + 1, len - 1);
		CHECK(verify_text(b.ptr, key) == CR_EINVAL);
		CHECK(has(cr_error_last(), "duplicate"));
		cr_buf_free(&b);
	}
	/* Base64 that is not standard and padded: URL-safe alphabet, no padding, spaces. */
	{
		const char *payloads[] = {"eyJ4IjoxfQ",
		                          "eyJ4Ijox-Q==", "eyJ4Ijox fQ==", "eyJ4IjoxfR==", "@@@@"};

		for (i = 0; i < 5; i++) {
			const char *kv[] = {"payload", payloads[i]};

			bad = edit_json(env, len, set_field, kv);
			CHECK(verify_text(bad, key) == CR_EINVAL);
			CHECK(has(cr_error_last(), "payload is not standard padded base64"));
			free(bad);
		}
		const char *sig[] = {"sig", "AAAA_A=="};

		bad = edit_json(env, len, set_sig_field, sig);
		CHECK(verify_text(bad, key) == CR_EINVAL);
		CHECK(has(cr_error_last(), "signatures[0].sig"));
		free(bad);
	}
	/* Wrong types, missing fields, not JSON, no signatures. */
	{
		const char *texts[] = {
		    "",
		    "[]",
		    "{\"payload\":\"\",\"payloadType\":\"application/vnd.in-toto+json\"}",
		    "{\"payload\":\"\",\"payloadType\":\"application/"
		    "vnd.in-toto+json\",\"signatures\":[]}",
		    "{\"payload\":\"\",\"payloadType\":\"application/"
		    "vnd.in-toto+json\",\"signatures\":{}}",
		    "{\"payload\":1,\"payloadType\":\"application/"
		    "vnd.in-toto+json\",\"signatures\":[{\"sig\":\"\"}]}",
		    "{\"payload\":\"\",\"payloadType\":7,\"signatures\":[{\"sig\":\"\"}]}",
		    "{\"payload\":\"\",\"payloadType\":\"application/"
		    "vnd.in-toto+json\",\"signatures\":[{\"keyid\":\"a\"}]}",
		    "{\"payload\":\"\",\"payloadType\":\"application/"
		    "vnd.in-toto+json\",\"signatures\":[{\"keyid\":1,\"sig\":\"\"}]}",
		    "{\"payload\":\"\",\"payloadType\":\"application/"
		    "vnd.in-toto+json\",\"signatures\":[7]}",
		};

		for (i = 0; i < (int)(sizeof(texts) / sizeof(texts[0])); i++)
			CHECK(verify_text(texts[i], key) == CR_EINVAL);
		CHECK(cr_dsse_verify(NULL, NULL, env, len - 1, CR_DSSE_INTOTO_TYPE, key) ==
		      CR_EINVAL);
	}
	/* The wrong key; the right key with the envelope of another. */
	CHECK(verify_text(env, other) == CR_EVERIFY);
	REQUIRE(cr_dsse_sign(&env_other, NULL, CR_DSSE_INTOTO_TYPE, payload, strlen(payload),
	                     other) == 0);
	CHECK(verify_text(env_other, key) == CR_EVERIFY);
	/* Another party's signature next to ours is ignored, before or after it; a
	 * forged signature under our keyid next to a good one does not spoil it. */
	{
		const char *extra[] = {"someone-else", "AAAA", "first"};
		const char *extra2[] = {"someone-else", "AAAA", NULL};

		bad = edit_json(env, len, add_sig, (void *)extra);
		CHECK(verify_text(bad, key) == 0);
		free(bad);
		bad = edit_json(env, len, add_sig, (void *)extra2);
		CHECK(verify_text(bad, key) == 0);
		free(bad);
		/* The other key's valid signature under our keyid does not count. */
		CHECK(cr_dsse_keyid(other_id, key) == 0);
		{
			json_t *d = json_loads(env_other, 0, NULL);
			const char *osig = json_string_value(json_object_get(
			    json_array_get(json_object_get(d, "signatures"), 0), "sig"));
			const char *kv[] = {"sig", osig};

			bad = edit_json(env, len, set_sig_field, kv);
			CHECK(verify_text(bad, key) == CR_EVERIFY);
			free(bad);
			json_decref(d);
		}
	}
	/* Sizes and key types. */
	{
		char *big = malloc(CR_DSSE_ENVELOPE_MAX + 2);

		REQUIRE(big);
		memset(big, ' ', CR_DSSE_ENVELOPE_MAX + 1);
		big[CR_DSSE_ENVELOPE_MAX + 1] = '\0';
		CHECK(cr_dsse_verify(NULL, NULL, big, CR_DSSE_ENVELOPE_MAX + 1, CR_DSSE_INTOTO_TYPE,
		                     key) == CR_EINVAL);
		CHECK(cr_dsse_sign(&bad, NULL, CR_DSSE_INTOTO_TYPE, big, CR_DSSE_PAYLOAD_MAX + 1,
		                   key) == CR_ERANGE);
		free(big);
		ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		REQUIRE(ec);
		CHECK(cr_dsse_sign(&bad, NULL, CR_DSSE_INTOTO_TYPE, payload, strlen(payload), ec) ==
		      CR_EINVAL);
		CHECK(verify_text(env, ec) == CR_EINVAL);
		CHECK(cr_dsse_sign(&bad, NULL, "", payload, strlen(payload), key) == CR_EINVAL);
	}
	free(env_other);
	free(env);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
}

/* ---- Keccak-256 ------------------------------------------------------------------ */

static void pattern(uint8_t *buf, size_t n)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = (uint8_t)(i % 251);
}

static void test_keccak(void)
{
	/* Published vectors, and (the pattern rows) vectors computed with
	 * PyCryptodome's Keccak (Debian python3-pycryptodome 3.11, Cryptodome.Hash.keccak),
	 * an implementation independent of this one: bytes i % 251 for i < n. */
	static const struct {
		const char *text;
		size_t n; /* pattern length when text is NULL */
		const char *hex;
	} v[] = {
	    {"", 0, "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"},
	    {"abc", 0, "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"},
	    {"The quick brown fox jumps over the lazy dog", 0,
	     "4d741b6f1eb29cb2a9b9911c82f56fa8d73b04959d3d9d222895df6c0b28aa15"},
	    {NULL, 135, "cbdfd9dee5faad3818d6b06f95a219fd290b0e1706f6a82e5a595b9ce9faca62"},
	    {NULL, 136, "7ce759f1ab7f9ce437719970c26b0a66ff11fe3e38e17df89cf5d29c7d7f807e"},
	    {NULL, 137, "ac73d4fae68b8453f764007c1a20ce95994187861f0c3227a3a8e99a73a3b1db"},
	    {NULL, 200, "bfb0aa97863e797943cf7c33bb7e880bb4543f3d2703c0923c6901c2af57b890"},
	    {NULL, 272, "8e2476e65823b24d96ebe239f2c1534cdf763e689e2410c3b1cb0c74e6177bfc"},
	    /* The EAS Timestamped event's topic, as in the EAS contract's bytecode. */
	    {"Timestamped(bytes32,uint64)", 0,
	     "5aafceeb1c7ad58e4a84898bdee37c02c0fc46e7d24e6b60e8209449f183459f"},
	};
	uint8_t buf[300], got[32], want[32];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		from_hex(want, 32, v[i].hex);
		if (v[i].text) {
			cr_keccak256(got, v[i].text, strlen(v[i].text));
		} else {
			pattern(buf, v[i].n);
			cr_keccak256(got, buf, v[i].n);
		}
		CHECK_MEM(got, want, 32);
	}
}

/* The same sponge with FIPS 202 padding is SHA3-256: hold it against OpenSSL
 * at every length across three blocks, which exercises the permutation and
 * the absorbing of full and partial blocks. */
static void test_keccak_vs_openssl_sha3(void)
{
	uint8_t buf[3 * 136 + 10], got[32], want[32];
	unsigned int n;

	pattern(buf, sizeof(buf));
	for (size_t len = 0; len <= sizeof(buf); len++) {
		cr_keccak256_domain(got, buf, len, 0x06);
		REQUIRE(EVP_Digest(buf, len, want, &n, EVP_sha3_256(), NULL) == 1);
		CHECK_MEM(got, want, 32);
	}
}

static void test_selectors(void)
{
	static const struct {
		const char *sig, *hex;
	} v[] = {
	    {"transfer(address,uint256)", "a9059cbb"},
	    /* EAS: the dispatcher in the EAS contract's bytecode carries these. */
	    {"timestamp(bytes32)", "4d003070"},
	    {"getTimestamp(bytes32)", "d45c4435"},
	    /* Ours, computed (also with PyCryptodome's Keccak). */
	    {"anchor(bytes32,uint64,bytes32)", "70c127c6"},
	};
	uint8_t got[4], want[4];

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		from_hex(want, 4, v[i].hex);
		cr_anchor_selector(got, v[i].sig);
		CHECK_MEM(got, want, 4);
	}
}

/* ---- a seal note without a store ----------------------------------------------- */

static char *make_note(size_t *len, const char *origin, uint64_t size, const uint8_t root[32],
                       EVP_PKEY *key)
{
	char *body = NULL, *note = NULL;
	size_t blen;

	if (cr_seal_body_format(&body, &blen, origin, size, root) != 0 ||
	    cr_note_sign(&note, len, body, blen, "test.example/key", key) != 0) {
		fprintf(stderr, "make_note: %s\n", cr_error_last());
		abort();
	}
	free(body);
	return note;
}

/* ---- anchor ------------------------------------------------------------------------ */

static const char *str_at(const json_t *doc, const char *a, const char *b, const char *c)
{
	const json_t *v = json_object_get(doc, a);

	if (b)
		v = json_object_get(v, b);
	if (c)
		v = json_object_get(v, c);
	return json_string_value(v);
}

struct edit {
	const char *a, *b, *c;
	json_t *value; /* NULL: delete */
};

static void apply_edit(json_t *doc, void *ctx)
{
	struct edit *e = ctx;
	json_t *parent = doc;
	const char *key = e->a;

	if (e->b) {
		parent = json_object_get(parent, e->a);
		key = e->b;
	}
	if (e->c) {
		parent = json_object_get(parent, e->b);
		key = e->c;
	}
	if (e->value)
		json_object_set(parent, key, e->value);
	else
		json_object_del(parent, key);
}

static void test_anchor(void)
{
	EVP_PKEY *key = new_key();
	uint8_t root[32], commitment[32], data[100], sel[4];
	char *note, *anchor = NULL, *again = NULL, *bad, hex[2 * 100 + 1],
	            want[2 + 8 + 2 * 100 + 1];
	size_t note_len, len = 0, len2 = 0;
	json_t *doc;
	int published = -1;

	for (int i = 0; i < 32; i++)
		root[i] = (uint8_t)(0xa0 + i);
	note = make_note(&note_len, "example.org/log", 0x0102030405ULL, root, key);
	REQUIRE(cr_anchor_build(&anchor, &len, note, note_len) == 0);
	REQUIRE(cr_anchor_build(&again, &len2, note, note_len) == 0);
	CHECK(len == len2 && memcmp(anchor, again, len) == 0);
	CHECK(!strchr(anchor, ' ') && !strchr(anchor, '\n'));
	doc = json_loadb(anchor, len, JSON_REJECT_DUPLICATES, NULL);
	REQUIRE(doc);

	sha256(commitment, note, note_len);
	cr_hex_encode(hex, commitment, 32);
	CHECK(strcmp(str_at(doc, "commitment", NULL, NULL), hex) == 0);
	cr_hex_encode(hex, root, 32);
	CHECK(strcmp(str_at(doc, "root", NULL, NULL), hex) == 0);
	CHECK(strcmp(str_at(doc, "origin", NULL, NULL), "example.org/log") == 0);
	CHECK(json_integer_value(json_object_get(doc, "tree_size")) == 0x0102030405LL);
	CHECK(json_integer_value(json_object_get(doc, "version")) == 1);

	/* anchor(bytes32,uint64,bytes32): selector, commitment, size right-aligned, root. */
	cr_anchor_selector(sel, "anchor(bytes32,uint64,bytes32)");
	memset(data, 0, sizeof(data));
	memcpy(data, sel, 4);
	memcpy(data + 4, commitment, 32);
	data[4 + 32 + 27] = 0x01;
	data[4 + 32 + 28] = 0x02;
	data[4 + 32 + 29] = 0x03;
	data[4 + 32 + 30] = 0x04;
	data[4 + 32 + 31] = 0x05;
	memcpy(data + 4 + 64, root, 32);
	cr_hex_encode(hex, data, 100);
	snprintf(want, sizeof(want), "0x%s", hex);
	CHECK(strcmp(str_at(doc, "calls", "anchor_contract", "data"), want) == 0);
	CHECK(strcmp(str_at(doc, "calls", "anchor_contract", "selector"), "0x70c127c6") == 0);
	CHECK(strcmp(str_at(doc, "calls", "anchor_contract", "function"),
	             "anchor(bytes32,uint64,bytes32)") == 0);
	/* timestamp(bytes32): the EAS selector and the commitment. */
	cr_hex_encode(hex, commitment, 32);
	snprintf(want, sizeof(want), "0x4d003070%s", hex);
	CHECK(strcmp(str_at(doc, "calls", "eas_timestamp", "data"), want) == 0);
	CHECK(strcmp(str_at(doc, "calls", "eas_timestamp", "selector"), "0x4d003070") == 0);
	CHECK(strcmp(
	          json_string_value(json_object_get(
	              json_object_get(
	                  json_object_get(json_object_get(doc, "calls"), "eas_timestamp"), "event"),
	              "topic")),
	          "0x5aafceeb1c7ad58e4a84898bdee37c02c0fc46e7d24e6b60e8209449f183459f") == 0);
	{
		json_t *pub = json_object_get(doc, "published");
		const char *k;
		json_t *v;

		CHECK(json_object_size(pub) == 7);
		json_object_foreach (pub, k, v)
			CHECK(json_is_null(v));
	}
	json_decref(doc);

	CHECK(cr_anchor_check(anchor, len, note, note_len, &published) == 0 && published == 0);

	/* Filled in by hand, pretty-printed and reordered: still checks, and is a claim. */
	{
		struct edit e[] = {
		    {"published", "chain", NULL, json_string("base-sepolia")},
		    {"published", "chain_id", NULL, json_integer(84532)},
		    {"published", "call", NULL, json_string("eas_timestamp")},
		    {"published", "contract", NULL,
		     json_string("0x4200000000000000000000000000000000000021")},
		    {"published", "transaction", NULL,
		     json_string(
		         "0x00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF")},
		    {"published", "block", NULL, json_integer(123)},
		    {"published", "timestamp", NULL, json_integer(1767225600)},
		};
		json_t *d = json_loadb(anchor, len, 0, NULL);
		char *pretty;

		for (size_t i = 0; i < sizeof(e) / sizeof(e[0]); i++) {
			apply_edit(d, &e[i]);
			json_decref(e[i].value);
		}
		pretty = json_dumps(d, JSON_INDENT(2));
		CHECK(cr_anchor_check(pretty, strlen(pretty), note, note_len, &published) == 0);
		CHECK(published == 1);
		free(pretty);
		json_decref(d);
	}

	/* Each field tampered: the message names it. */
	{
		struct {
			struct edit e;
			const char *field;
		} t[] = {
		    {{"version", NULL, NULL, json_integer(2)}, "\"version\""},
		    {{"origin", NULL, NULL, json_string("example.org/other")}, "\"origin\""},
		    {{"tree_size", NULL, NULL, json_integer(5)}, "\"tree_size\""},
		    {{"root", NULL, NULL, json_string("00")}, "\"root\""},
		    {{"commitment", NULL, NULL,
		      json_string(
		          "0000000000000000000000000000000000000000000000000000000000000000")},
		     "\"commitment\""},
		    {{"calls", "anchor_contract", "data", json_string("0x00")},
		     "\"calls.anchor_contract.data\""},
		    {{"calls", "anchor_contract", "selector", json_string("0x00000000")},
		     "\"calls.anchor_contract.selector\""},
		    {{"calls", "eas_timestamp", "data", json_string("0x4d003070")},
		     "\"calls.eas_timestamp.data\""},
		    {{"calls", "eas_timestamp", "function", json_string("timestamp(bytes)")},
		     "\"calls.eas_timestamp.function\""},
		    {{"calls", "eas_timestamp", NULL, NULL}, "\"calls.eas_timestamp\" is missing"},
		    {{"extra", NULL, NULL, json_true()}, "unknown field \"extra\""},
		    {{"calls", "more", NULL, json_true()}, "unknown field \"calls.more\""},
		    {{"published", "contract", NULL, json_string("0x1234")}, "published.contract"},
		    {{"published", "transaction", NULL, json_integer(1)}, "published.transaction"},
		    {{"published", "chain_id", NULL, json_integer(0)}, "published.chain_id"},
		    {{"published", "call", NULL, json_string("transfer")}, "published.call"},
		    {{"published", "block", NULL, NULL}, "published.block\" is missing"},
		    {{"published", "miner", NULL, json_null()},
		     "unknown field \"published.miner\""},
		    {{"published", NULL, NULL, NULL}, "\"published\" is missing"},
		};

		for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
			bad = edit_json(anchor, len, apply_edit, &t[i].e);
			CHECK(cr_anchor_check(bad, strlen(bad), note, note_len, NULL) ==
			      CR_EVERIFY);
			CHECK(has(cr_error_last(), t[i].field));
			free(bad);
			json_decref(t[i].e.value);
		}
	}
	/* Another seal (one byte of the note differs: the signature) changes the commitment. */
	{
		char *note2 = malloc(note_len + 1);

		REQUIRE(note2);
		memcpy(note2, note, note_len + 1);
		note2[note_len - 5] = note2[note_len - 5] == 'A' ? 'B' : 'A';
		CHECK(cr_anchor_check(anchor, len, note2, note_len, NULL) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "\"commitment\""));
		free(note2);
	}
	CHECK(cr_anchor_check("{", 1, note, note_len, NULL) == CR_EINVAL);
	CHECK(cr_anchor_check("[]", 2, note, note_len, NULL) == CR_EINVAL);
	CHECK(cr_anchor_check(anchor, len, "not a note\n", 11, NULL) == CR_EINVAL);
	CHECK(cr_anchor_build(&bad, NULL, "x\n", 2) == CR_EINVAL);
	free(anchor);
	free(again);
	free(note);
	EVP_PKEY_free(key);
}

/* ---- attestation of a real store ------------------------------------------------- */

static char tmpdir[256];

static void make_tmp(void)
{
	const char *base = getenv("CR_TMP");

	if (!base)
		base = "/tmp";
	mkdir(base, 0700);
	snprintf(tmpdir, sizeof(tmpdir), "%s/attest-XXXXXX", base);
	if (!mkdtemp(tmpdir) || rmdir(tmpdir) != 0)
		abort();
}

static void rm_tmp(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	(void)!system(cmd);
}

#define RUN_ID "0190f1e2-0000-7000-8000-000000000001"
#define T0     "2026-11-24T10:00:00.000000Z"
#define T1     "2026-11-24T11:00:00.000000Z"

static void hexof(char out[65], int seed)
{
	uint8_t d[32];

	for (int i = 0; i < 32; i++)
		d[i] = (uint8_t)(seed * 31 + i);
	cr_hex_encode(out, d, 32);
}

static json_t *ev_input(const char *path, int64_t size, int seed, const char *run)
{
	json_t *ev = NULL;
	char sha[65];

	cr_event_new(&ev, "input");
	cr_event_set_path(ev, "path", path, strlen(path));
	cr_event_set_int(ev, "size", size);
	cr_event_set_str(ev, "time", T0);
	if (seed >= 0) {
		hexof(sha, seed);
		cr_event_set_str(ev, "sha256", sha);
	} else {
		json_object_set_new(ev, "changed", json_true());
	}
	if (run) {
		cr_event_set_str(ev, "run", run);
		cr_event_set_str(ev, "via", "record");
	} else {
		cr_event_set_str(ev, "via", "add");
	}
	return ev;
}

static json_t *ev_ckpt(const char *path, size_t path_len, int seed)
{
	json_t *ev = NULL;
	char sha[65];

	cr_event_new(&ev, "checkpoint");
	cr_event_set_path(ev, "path", path, path_len);
	cr_event_set_str(ev, "run", RUN_ID);
	cr_event_set_str(ev, "time", T0);
	if (seed >= 0) {
		hexof(sha, seed);
		cr_event_set_str(ev, "sha256", sha);
		cr_event_set_int(ev, "size", 1000 + seed);
	} else {
		json_object_set_new(ev, "changed", json_true());
	}
	json_object_set_new(ev, "lineage", json_pack("{s:n}", "previous"));
	return ev;
}

#define N_EVENTS 12

/* The test log (leaf index: event):
 *  0 run_start   1 input a   2 input b   3 checkpoint epoch-1.pt   4 input c (changed)
 *  5 checkpoint sub/last.pt  6 note      7 checkpoint sub/last.pt (again, new content)
 *  8 checkpoint epoch-2.pt (changed, no digest)  9 checkpoint bad\xff.pt (not UTF-8)
 * 10 input added by hand (no run)  11 run_end */
static json_t *test_event(int i)
{
	json_t *ev = NULL;

	switch (i) {
	case 0:
		cr_event_new(&ev, "run_start");
		cr_event_set_str(ev, "run", RUN_ID);
		cr_event_set_str(ev, "time", T0);
		json_object_set_new(ev, "argv",
		                    json_pack("[s,s,s]", "python3", "train.py", "--epochs=2"));
		cr_event_set_str(ev, "host", "builder");
		return ev;
	case 1: return ev_input("/data/a.bin", 100, 1, RUN_ID);
	case 2: return ev_input("/data/b.bin", 200, 2, RUN_ID);
	case 3: return ev_ckpt("/out/ck/epoch-1.pt", 18, 3);
	case 4: return ev_input("/data/c.bin", 300, -1, RUN_ID);
	case 5: return ev_ckpt("/out/ck/sub/last.pt", 19, 5);
	case 6:
		cr_event_new(&ev, "note");
		cr_event_set_str(ev, "run", RUN_ID);
		json_object_set_new(ev, "fields", json_pack("{s:s}", "loss", "0.25"));
		return ev;
	case 7: return ev_ckpt("/out/ck/sub/last.pt", 19, 7);
	case 8: return ev_ckpt("/out/ck/epoch-2.pt", 18, -1);
	case 9: return ev_ckpt("/out/ck/bad\xff.pt", 15, 9);
	case 10: return ev_input("/data/added.bin", 50, 10, NULL);
	case 11:
		cr_event_new(&ev, "run_end");
		cr_event_set_str(ev, "run", RUN_ID);
		cr_event_set_str(ev, "time", T1);
		cr_event_set_int(ev, "exit_status", 0);
		cr_event_set_int(ev, "duration_ms", 3600000);
		return ev;
	}
	abort();
}

typedef struct leaves {
	char *v[64];
	size_t len[64];
	size_t n;
} leaves;

static void leaves_free(leaves *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	l->n = 0;
}

static void leaves_copy(leaves *dst, const leaves *src)
{
	for (size_t i = 0; i < src->n; i++) {
		dst->v[i] = malloc(src->len[i] + 1);
		memcpy(dst->v[i], src->v[i], src->len[i] + 1);
		dst->len[i] = src->len[i];
	}
	dst->n = src->n;
}

static void leaf_set(leaves *l, size_t i, const json_t *ev)
{
	cr_buf b = CR_BUF_INIT;

	if (cr_event_encode(ev, &b) != 0)
		abort();
	free(l->v[i]);
	l->len[i] = b.len;
	l->v[i] = cr_buf_detach(&b);
}

static void leaf_remove(leaves *l, size_t i)
{
	free(l->v[i]);
	memmove(&l->v[i], &l->v[i + 1], (l->n - i - 1) * sizeof(l->v[0]));
	memmove(&l->len[i], &l->len[i + 1], (l->n - i - 1) * sizeof(l->len[0]));
	l->n--;
}

static void leaf_insert(leaves *l, size_t i, const json_t *ev)
{
	memmove(&l->v[i + 1], &l->v[i], (l->n - i) * sizeof(l->v[0]));
	memmove(&l->len[i + 1], &l->len[i], (l->n - i) * sizeof(l->len[0]));
	l->v[i] = NULL;
	l->n++;
	leaf_set(l, i, ev);
}

static int collect(void *ctx, uint64_t index, const char *leaf, size_t len)
{
	leaves *l = ctx;

	if (index != l->n || l->n == 64)
		return CR_ERROR;
	l->v[l->n] = malloc(len + 1);
	memcpy(l->v[l->n], leaf, len);
	l->v[l->n][len] = '\0';
	l->len[l->n++] = len;
	return 0;
}

/* Run the checker over leaves; returns its result, message in cr_error_last(). */
static int check_leaves(const char *statement, const char *note, size_t note_len, const leaves *l)
{
	cr_attest_checker *c = NULL;
	int rc;

	if ((rc = cr_attest_checker_new(&c, statement, strlen(statement), note, note_len)) != 0)
		return rc;
	for (size_t i = 0; i < l->n; i++) {
		if ((rc = cr_attest_checker_feed(c, i, l->v[i], l->len[i], NULL)) != 0)
			break;
	}
	/* finish() repeats a failure from feed(), whatever was set in between. */
	cr_error_set(CR_ERROR, "unrelated");
	rc = cr_attest_checker_finish(c);
	cr_attest_checker_free(c);
	return rc;
}

/* An independent RFC 9162 MTH over leaf byte strings. */
static void mth(uint8_t out[32], char *const *v, const size_t *len, size_t n)
{
	uint8_t buf[65];
	size_t k = 1;

	if (n == 1) {
		EVP_MD_CTX *md = EVP_MD_CTX_new();
		unsigned int m;

		EVP_DigestInit_ex(md, EVP_sha256(), NULL);
		EVP_DigestUpdate(md, "\0", 1);
		EVP_DigestUpdate(md, v[0], len[0]);
		EVP_DigestFinal_ex(md, out, &m);
		EVP_MD_CTX_free(md);
		return;
	}
	while (k * 2 < n)
		k *= 2;
	buf[0] = 0x01;
	mth(buf + 1, v, len, k);
	mth(buf + 33, v + k, len + k, n - k);
	sha256(out, buf, 65);
}

static void dump(const char *name, const char *text, size_t len)
{
	const char *dir = getenv("CR_ATTEST_DUMP");
	char path[512];
	FILE *f;

	if (!dir)
		return;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (f) {
		fwrite(text, 1, len, f);
		fclose(f);
	}
}

/* Statement edits. */
static void st_subject_digest(json_t *doc, void *ctx)
{
	(void)ctx;
	json_object_set_new(
	    json_object_get(json_array_get(json_object_get(doc, "subject"), 1), "digest"), "sha256",
	    json_string("0000000000000000000000000000000000000000000000000000000000000000"));
}

static void st_subject_drop(json_t *doc, void *ctx)
{
	json_array_remove(json_object_get(doc, "subject"), (size_t) * (int *)ctx);
}

static void st_subject_extra(json_t *doc, void *ctx)
{
	(void)ctx;
	json_array_append_new(
	    json_object_get(doc, "subject"),
	    json_pack("{s:{s:s}, s:s}", "digest", "sha256",
	              "1111111111111111111111111111111111111111111111111111111111111111", "name",
	              "zzz.pt"));
}

static void st_pred(json_t *doc, void *ctx)
{
	struct edit *e = ctx;

	apply_edit(json_object_get(doc, "predicate"), e);
}

static void st_ckpt_name(json_t *doc, void *ctx)
{
	(void)ctx;
	json_object_set_new(
	    json_array_get(json_object_get(json_object_get(doc, "predicate"), "checkpoints"), 0),
	    "name", json_string("epoch-1.pth"));
}

static void test_attest_store(void)
{
	EVP_PKEY *key = new_key();
	cr_store *s = NULL;
	cr_store_state st;
	leaves l = {0}, alt = {0};
	char *note = NULL, *statement = NULL, *again = NULL, *env = NULL, *payload_out = NULL, *bad;
	char *anchor = NULL, hex[65];
	size_t note_len = 0, len = 0, len2 = 0, env_len = 0, out_len = 0;
	uint8_t root[32];
	json_t *doc, *pred, *subj, *runs, *in, *ck;
	int i;

	make_tmp();
	REQUIRE(cr_store_init(tmpdir) == 0);
	REQUIRE(cr_store_open(&s, tmpdir, CR_STORE_WRITE) == 0);
	for (i = 0; i < N_EVENTS; i++) {
		json_t *ev = test_event(i);

		REQUIRE(cr_store_append(s, ev, NULL) == 0);
		json_decref(ev);
	}
	REQUIRE(cr_store_flush(s) == 0);
	cr_store_state_get(s, &st);
	REQUIRE(st.size == N_EVENTS);
	note = make_note(&note_len, "cleanroom.local/test", st.size, st.root, key);

	REQUIRE(cr_attest_build(&statement, &len, s, note, note_len) == 0);
	REQUIRE(cr_attest_build(&again, &len2, s, note, note_len) == 0);
	CHECK(len == len2 && memcmp(statement, again, len) == 0); /* deterministic */
	dump("statement.json", statement, len);

	doc = json_loadb(statement, len, JSON_REJECT_DUPLICATES, NULL);
	REQUIRE(doc);
	CHECK(strcmp(str_at(doc, "_type", NULL, NULL), "https://in-toto.io/Statement/v1") == 0);
	CHECK(strcmp(str_at(doc, "predicateType", NULL, NULL), "urn:cleanroom:lineage:v1") == 0);
	subj = json_object_get(doc, "subject");
	REQUIRE(json_array_size(subj) ==
	        4); /* the changed checkpoint without a digest is no subject */
	{
		const char *names[] = {"base64:YmFk/y5wdA==", "epoch-1.pt", "sub/last.pt",
		                       "sub/last.pt@5"};
		const int seeds[] = {9, 3, 7, 5};

		for (i = 0; i < 4; i++) {
			json_t *one = json_array_get(subj, (size_t)i);

			CHECK(strcmp(json_string_value(json_object_get(one, "name")), names[i]) ==
			      0);
			hexof(hex, seeds[i]);
			CHECK(strcmp(str_at(one, "digest", "sha256", NULL), hex) == 0);
		}
	}
	pred = json_object_get(doc, "predicate");
	CHECK(json_is_null(json_object_get(pred, "policy")));
	CHECK(strcmp(str_at(pred, "seal", NULL, NULL), note) == 0);
	CHECK(strcmp(str_at(pred, "log", "origin", NULL), "cleanroom.local/test") == 0);
	CHECK(json_integer_value(json_object_get(json_object_get(pred, "log"), "tree_size")) ==
	      N_EVENTS);
	cr_hex_encode(hex, st.root, 32);
	CHECK(strcmp(str_at(pred, "log", "root", NULL), hex) == 0);
	runs = json_object_get(pred, "runs");
	REQUIRE(json_array_size(runs) == 1);
	{
		json_t *r = json_array_get(runs, 0);
		json_t *argv = json_pack("[s,s,s]", "python3", "train.py", "--epochs=2");

		CHECK(strcmp(str_at(r, "run", NULL, NULL), RUN_ID) == 0);
		CHECK(json_equal(json_object_get(r, "argv"), argv));
		CHECK(strcmp(str_at(r, "start", NULL, NULL), T0) == 0);
		CHECK(strcmp(str_at(r, "end", NULL, NULL), T1) == 0);
		CHECK(json_integer_value(json_object_get(r, "exit_status")) == 0);
		CHECK(json_is_integer(json_object_get(r, "exit_status")));
		CHECK(json_integer_value(json_object_get(r, "checkpoints")) == 5);
		CHECK(json_integer_value(json_object_get(r, "inputs")) == 3);
		json_decref(argv);
	}
	in = json_object_get(pred, "inputs");
	CHECK(json_integer_value(json_object_get(in, "count")) == 4);
	CHECK(json_integer_value(json_object_get(in, "bytes")) == 650);
	CHECK(json_integer_value(json_object_get(in, "first_index")) == 1);
	CHECK(json_integer_value(json_object_get(in, "last_index")) == 10);
	/* The input root, independently: MTH over the input events' leaves, in log order. */
	REQUIRE(cr_store_foreach_event(s, 0, collect, &l) == 0 && l.n == N_EVENTS);
	{
		char *iv[4] = {l.v[1], l.v[2], l.v[4], l.v[10]};
		size_t il[4] = {l.len[1], l.len[2], l.len[4], l.len[10]};

		mth(root, iv, il, 4);
		cr_hex_encode(hex, root, 32);
		CHECK(strcmp(str_at(in, "root", NULL, NULL), hex) == 0);
		/* and the log root the same way */
		mth(root, l.v, l.len, l.n);
		CHECK_MEM(root, st.root, 32);
	}
	ck = json_object_get(pred, "checkpoints");
	REQUIRE(json_array_size(ck) == 5);
	{
		const int idx[] = {3, 5, 7, 8, 9};
		const char *names[] = {"epoch-1.pt", "sub/last.pt@5", "sub/last.pt", "epoch-2.pt",
		                       "base64:YmFk/y5wdA=="};

		for (i = 0; i < 5; i++) {
			json_t *one = json_array_get(ck, (size_t)i);

			CHECK(json_integer_value(json_object_get(one, "index")) == idx[i]);
			CHECK(strcmp(str_at(one, "name", NULL, NULL), names[i]) == 0);
			CHECK(strcmp(str_at(one, "run", NULL, NULL), RUN_ID) == 0);
		}
		CHECK(json_is_null(json_object_get(json_array_get(ck, 3), "sha256")));
		CHECK(json_is_true(json_object_get(json_array_get(ck, 3), "changed")));
		CHECK(json_is_false(json_object_get(json_array_get(ck, 0), "changed")));
		CHECK(strcmp(str_at(json_array_get(ck, 0), "path", NULL, NULL),
		             "/out/ck/epoch-1.pt") == 0);
		CHECK(strcmp(str_at(json_array_get(ck, 4), "path_b64", NULL, NULL),
		             "L291dC9jay9iYWT/LnB0") == 0);
		CHECK(!json_object_get(json_array_get(ck, 4), "path"));
	}
	json_decref(doc);

	/* Through DSSE and back. */
	REQUIRE(cr_dsse_sign(&env, &env_len, CR_DSSE_INTOTO_TYPE, statement, len, key) == 0);
	CHECK(cr_dsse_verify(&payload_out, &out_len, env, env_len, CR_DSSE_INTOTO_TYPE, key) == 0);
	CHECK(out_len == len && memcmp(payload_out, statement, len) == 0);
	dump("attestation.dsse.json", env, env_len);
	dump("seal.note", note, note_len);
	REQUIRE(cr_anchor_build(&anchor, NULL, note, note_len) == 0);
	dump("anchor.json", anchor, strlen(anchor));

	/* The checker accepts the true events, from the store and fed one by one. */
	CHECK(cr_attest_check(s, statement, len, note, note_len) == 0);
	CHECK(cr_attest_check(s, statement, len, NULL, 0) == 0);
	CHECK(check_leaves(statement, note, note_len, &l) == 0);

	/* ... and rejects each single alteration of the events. */
	{
		json_t *ev;

		/* a checkpoint dropped */
		leaves_copy(&alt, &l);
		leaf_remove(&alt, 3);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(),
		          "subject \"epoch-1.pt\" (checkpoint event 3) is not in the log"));
		leaves_free(&alt);
		/* the last checkpoint dropped (and a note in its place: same size) */
		leaves_copy(&alt, &l);
		ev = test_event(6);
		leaf_set(&alt, 9, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "(checkpoint event 9) is not in the log"));
		leaves_free(&alt);
		/* a digest changed */
		leaves_copy(&alt, &l);
		ev = ev_ckpt("/out/ck/sub/last.pt", 19, 42);
		leaf_set(&alt, 7, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "subject \"sub/last.pt\" has the wrong digest"));
		leaves_free(&alt);
		/* a checkpoint's path changed */
		leaves_copy(&alt, &l);
		ev = ev_ckpt("/out/ck/epoch-1.pth", 19, 3);
		leaf_set(&alt, 3, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "the log's path is /out/ck/epoch-1.pth"));
		leaves_free(&alt);
		/* an extra checkpoint */
		leaves_copy(&alt, &l);
		ev = ev_ckpt("/out/ck/epoch-9.pt", 18, 11);
		leaf_set(&alt, 6, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "checkpoint event 6 (/out/ck/epoch-9.pt) is in the log "
		                           "but not in the statement"));
		leaves_free(&alt);
		/* an input added (in place of the note: same tree size) */
		leaves_copy(&alt, &l);
		ev = ev_input("/data/d.bin", 1, 12, RUN_ID);
		leaf_set(&alt, 6, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "inputs in the statement, 4 in the log"));
		leaves_free(&alt);
		/* an input added by hand (no run): the log-wide count */
		leaves_copy(&alt, &l);
		ev = ev_input("/data/d.bin", 1, 12, NULL);
		leaf_set(&alt, 6, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "inputs.count is 4, the log has 5 input events"));
		leaves_free(&alt);
		/* an input inserted (shifting the rest) */
		leaves_copy(&alt, &l);
		ev = ev_input("/data/d.bin", 1, 12, RUN_ID);
		leaf_insert(&alt, 2, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		leaves_free(&alt);
		/* an input's size changed */
		leaves_copy(&alt, &l);
		ev = ev_input("/data/added.bin", 51, 10, NULL);
		leaf_set(&alt, 10, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "inputs.bytes is 650"));
		leaves_free(&alt);
		/* an input's content changed (same size): only the input root can tell */
		leaves_copy(&alt, &l);
		ev = ev_input("/data/added.bin", 50, 77, NULL);
		leaf_set(&alt, 10, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "inputs.root"));
		leaves_free(&alt);
		/* the run's exit status changed */
		leaves_copy(&alt, &l);
		ev = test_event(11);
		cr_event_set_int(ev, "exit_status", 1);
		leaf_set(&alt, 11, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "exit_status differs"));
		leaves_free(&alt);
		/* the run never ended */
		leaves_copy(&alt, &l);
		ev = test_event(6);
		leaf_set(&alt, 11, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "end is " T1 " in the statement, null in the log"));
		leaves_free(&alt);
		/* the run's argv changed */
		leaves_copy(&alt, &l);
		ev = test_event(0);
		json_object_set_new(ev, "argv", json_pack("[s]", "python3"));
		leaf_set(&alt, 0, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "argv differs"));
		leaves_free(&alt);
		/* another run */
		leaves_copy(&alt, &l);
		ev = test_event(0);
		cr_event_set_str(ev, "run", "another");
		leaf_set(&alt, 0, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "run another at event 0"));
		leaves_free(&alt);
		/* a second start of the run */
		leaves_copy(&alt, &l);
		ev = test_event(0);
		leaf_set(&alt, 6, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "event 6: run " RUN_ID " starts a second time"));
		leaves_free(&alt);
		/* an event the summary does not describe: only the log root can tell */
		leaves_copy(&alt, &l);
		ev = test_event(6);
		json_object_set_new(ev, "fields", json_pack("{s:s}", "loss", "0.26"));
		leaf_set(&alt, 6, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "log.root differs"));
		leaves_free(&alt);
		/* the wrong tree size: one event short, one too many */
		leaves_copy(&alt, &l);
		leaf_remove(&alt, 11);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "the log has 11 events, the statement attests 12"));
		ev = test_event(11);
		leaf_insert(&alt, 11, ev);
		leaf_insert(&alt, 12, ev);
		json_decref(ev);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "more events than the attested tree size 12"));
		leaves_free(&alt);
		/* a leaf that is not a canonical event */
		leaves_copy(&alt, &l);
		free(alt.v[6]);
		alt.v[6] = strdup("{\"type\": \"note\", \"v\": 1}");
		alt.len[6] = strlen(alt.v[6]);
		CHECK(check_leaves(statement, note, note_len, &alt) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "event 6"));
		leaves_free(&alt);
	}
	/* Out of order feeding. */
	{
		cr_attest_checker *c = NULL;

		REQUIRE(cr_attest_checker_new(&c, statement, len, note, note_len) == 0);
		CHECK(cr_attest_checker_feed(c, 0, l.v[0], l.len[0], NULL) == 0);
		CHECK(cr_attest_checker_feed(c, 2, l.v[2], l.len[2], NULL) == CR_EVERIFY);
		CHECK(cr_attest_checker_feed(c, 1, l.v[1], l.len[1], NULL) ==
		      CR_EVERIFY); /* sticky */
		CHECK(cr_attest_checker_finish(c) == CR_EVERIFY);
		CHECK(has(cr_error_last(), "event 2 fed where event 1 was due"));
		cr_attest_checker_free(c);
	}

	/* The statement itself altered: what needs no events is caught by new(). */
	{
		int k = 1;
		struct {
			void (*fn)(json_t *, void *);
			void *ctx;
			int rc;
			const char *msg;
		} t[] = {
		    {st_subject_digest, NULL, CR_EVERIFY,
		     "subject \"epoch-1.pt\" has the wrong digest"},
		    {st_subject_drop, &k, CR_EVERIFY,
		     "subject \"epoch-1.pt\" (checkpoint event 3) is missing"},
		    {st_subject_extra, NULL, CR_EVERIFY, "subject \"zzz.pt\" is not a checkpoint"},
		    {st_ckpt_name, NULL, CR_EVERIFY,
		     "named \"epoch-1.pth\", but its path gives \"epoch-1.pt\""},
		};
		struct edit pe[] = {
		    {"log", "tree_size", NULL, json_integer(11)},
		    {"log", "root", NULL,
		     json_string(
		         "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")},
		    {"log", "origin", NULL, json_string("elsewhere")},
		    {"policy", NULL, NULL, json_string("ok")},
		    {"extra", NULL, NULL, json_true()},
		    {"inputs", "count", NULL, json_integer(-1)},
		    {"runs", NULL, NULL, json_string("none")},
		};
		const char *pe_msg[] = {"tree_size is 11, the seal's tree size 12",
		                        "log.root differs from the seal's",
		                        "log.origin differs",
		                        "policy is not null",
		                        "unknown field \"extra\"",
		                        "inputs.count is not a non-negative integer",
		                        "runs is not an array"};

		for (i = 0; i < (int)(sizeof(t) / sizeof(t[0])); i++) {
			bad = edit_json(statement, len, t[i].fn, t[i].ctx);
			CHECK(check_leaves(bad, note, note_len, &l) == t[i].rc);
			CHECK(has(cr_error_last(), t[i].msg));
			free(bad);
		}
		for (i = 0; i < (int)(sizeof(pe) / sizeof(pe[0])); i++) {
			bad = edit_json(statement, len, st_pred, &pe[i]);
			CHECK(check_leaves(bad, note, note_len, &l) != 0);
			CHECK(has(cr_error_last(), pe_msg[i]));
			free(bad);
			json_decref(pe[i].value);
		}
		/* Not canonical: pretty-printed, the same content. */
		doc = json_loadb(statement, len, 0, NULL);
		bad = json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS);
		CHECK(check_leaves(bad, note, note_len, &l) == CR_EINVAL);
		CHECK(has(cr_error_last(), "canonical"));
		free(bad);
		json_decref(doc);
		/* Another seal than the bundle's. */
		{
			char *note2;
			size_t n2;

			note2 = make_note(&n2, "cleanroom.local/test", st.size, st.root, key);
			note2[n2 - 3] = note2[n2 - 3] == 'A' ? 'B' : 'A';
			CHECK(check_leaves(statement, note2, n2, &l) == CR_EVERIFY);
			CHECK(has(cr_error_last(), "predicate.seal is not the bundle's seal note"));
			free(note2);
		}
		CHECK(check_leaves("{}", note, note_len, &l) == CR_EINVAL);
		CHECK(check_leaves("[", note, note_len, &l) == CR_EINVAL);
	}

	/* Building against a seal that is not of this store, or beyond it. */
	{
		char *note2, *out = NULL;
		size_t n2;
		uint8_t other[32];

		memcpy(other, st.root, 32);
		other[0] ^= 1;
		note2 = make_note(&n2, "cleanroom.local/test", st.size, other, key);
		CHECK(cr_attest_build(&out, NULL, s, note2, n2) == CR_EVERIFY);
		free(note2);
		note2 = make_note(&n2, "cleanroom.local/test", st.size + 1, st.root, key);
		CHECK(cr_attest_build(&out, NULL, s, note2, n2) == CR_ERANGE);
		free(note2);
		CHECK(cr_attest_build(&out, NULL, s, "junk\n", 5) == CR_EINVAL);
		CHECK(out == NULL);
	}

	leaves_free(&l);
	free(anchor);
	free(payload_out);
	free(env);
	free(again);
	free(statement);
	free(note);
	cr_store_free(s);
	EVP_PKEY_free(key);
	rm_tmp();
}

/* A seal of a prefix: events past the sealed size are left out; an empty log. */
static void test_attest_prefix_and_empty(void)
{
	EVP_PKEY *key = new_key();
	cr_store *s = NULL;
	char *note = NULL, *statement = NULL;
	size_t note_len, len;
	uint8_t root[32];
	json_t *doc;

	make_tmp();
	REQUIRE(cr_store_init(tmpdir) == 0);
	REQUIRE(cr_store_open(&s, tmpdir, CR_STORE_WRITE) == 0);
	/* Empty: no subjects, no runs, the empty roots. */
	cr_merkle_empty_root(root);
	note = make_note(&note_len, "cleanroom.local/empty", 0, root, key);
	REQUIRE(cr_attest_build(&statement, &len, s, note, note_len) == 0);
	doc = json_loadb(statement, len, 0, NULL);
	CHECK(json_array_size(json_object_get(doc, "subject")) == 0);
	CHECK(json_is_null(json_object_get(
	    json_object_get(json_object_get(doc, "predicate"), "inputs"), "first_index")));
	CHECK(strcmp(str_at(json_object_get(doc, "predicate"), "inputs", "root", NULL),
	             "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0);
	json_decref(doc);
	CHECK(cr_attest_check(s, statement, len, note, note_len) == 0);
	free(statement);
	free(note);
	/* Seal the first 4 events of 12: the later ones are not attested. */
	for (int i = 0; i < N_EVENTS; i++) {
		json_t *ev = test_event(i);

		REQUIRE(cr_store_append(s, ev, NULL) == 0);
		json_decref(ev);
	}
	REQUIRE(cr_store_flush(s) == 0);
	REQUIRE(cr_store_root_at(s, 4, root) == 0);
	note = make_note(&note_len, "cleanroom.local/prefix", 4, root, key);
	REQUIRE(cr_attest_build(&statement, &len, s, note, note_len) == 0);
	doc = json_loadb(statement, len, 0, NULL);
	CHECK(json_array_size(json_object_get(doc, "subject")) == 1);
	{
		json_t *r =
		    json_array_get(json_object_get(json_object_get(doc, "predicate"), "runs"), 0);

		CHECK(json_is_null(json_object_get(r, "end")));
		CHECK(json_is_null(json_object_get(r, "exit_status")));
		CHECK(json_integer_value(json_object_get(r, "inputs")) == 2);
	}
	json_decref(doc);
	CHECK(cr_attest_check(s, statement, len, note, note_len) == 0);
	free(statement);
	free(note);
	cr_store_free(s);
	EVP_PKEY_free(key);
	rm_tmp();
}

/* Control characters in a path: escaped as RFC 8785 writes them (lowercase hex);
 * an escaped backslash followed by "u" stays as it is. */
static void test_attest_escapes(void)
{
	EVP_PKEY *key = new_key();
	cr_store *s = NULL;
	cr_store_state st;
	char *note = NULL, *statement = NULL;
	size_t note_len, len;
	json_t *ev;

	make_tmp();
	REQUIRE(cr_store_init(tmpdir) == 0);
	REQUIRE(cr_store_open(&s, tmpdir, CR_STORE_WRITE) == 0);
	ev = ev_ckpt("/o/a\x1f\\uABCD.pt", 14, 1);
	REQUIRE(cr_store_append(s, ev, NULL) == 0);
	json_decref(ev);
	REQUIRE(cr_store_flush(s) == 0);
	cr_store_state_get(s, &st);
	note = make_note(&note_len, "cleanroom.local/esc", st.size, st.root, key);
	REQUIRE(cr_attest_build(&statement, &len, s, note, note_len) == 0);
	CHECK(strstr(statement, "\"name\":\"a\\u001f\\\\uABCD.pt\""));
	CHECK(!strstr(statement, "\\u001F"));
	CHECK(cr_attest_check(s, statement, len, note, note_len) == 0);
	free(statement);
	free(note);
	/* A log where a run starts twice cannot be summarised: the builder refuses it. */
	for (int i = 0; i < 2; i++) {
		ev = test_event(0);
		REQUIRE(cr_store_append(s, ev, NULL) == 0);
		json_decref(ev);
	}
	REQUIRE(cr_store_flush(s) == 0);
	cr_store_state_get(s, &st);
	note = make_note(&note_len, "cleanroom.local/esc", st.size, st.root, key);
	statement = NULL;
	CHECK(cr_attest_build(&statement, &len, s, note, note_len) == CR_ECORRUPT);
	CHECK(has(cr_error_last(), "event 2: run " RUN_ID " starts a second time"));
	CHECK(statement == NULL);
	free(note);
	cr_store_free(s);
	EVP_PKEY_free(key);
	rm_tmp();
}

TEST_MAIN(TEST(test_pae), TEST(test_keyid), TEST(test_dsse_roundtrip), TEST(test_dsse_tampering),
          TEST(test_keccak), TEST(test_keccak_vs_openssl_sha3), TEST(test_selectors),
          TEST(test_anchor), TEST(test_attest_store), TEST(test_attest_prefix_and_empty),
          TEST(test_attest_escapes))
