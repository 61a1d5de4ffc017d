/* Unit tests: canonical event encoding, strict parsing, lossless paths, codecs. */
#include <stdint.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "harness.h"
#include "util/buf.h"
#include "util/codec.h"

static int encodes_to(const char *json_in, const char *want)
{
	json_t *v = json_loads(json_in, JSON_REJECT_DUPLICATES, NULL);
	cr_buf b = CR_BUF_INIT;
	int ok;

	if (!v)
		return 0;
	ok = cr_event_encode(v, &b) == 0 && strcmp(b.ptr, want) == 0;
	if (!ok)
		fprintf(stderr, "  encoded %s as %s (want %s): %s\n", json_in, b.ptr ? b.ptr : "(null)", want,
		        cr_error_last());
	cr_buf_free(&b);
	json_decref(v);
	return ok;
}

static void test_sorted_keys_and_whitespace(void)
{
	CHECK(encodes_to("{ \"v\" : 1, \"type\": \"input\", \"a\": [1, 2, {\"z\": 0, \"b\": null}] }",
	                 "{\"a\":[1,2,{\"b\":null,\"z\":0}],\"type\":\"input\",\"v\":1}"));
	CHECK(encodes_to("{\"v\":1,\"type\":\"t\",\"t\":true,\"f\":false,\"n\":-42}",
	                 "{\"f\":false,\"n\":-42,\"t\":true,\"type\":\"t\",\"v\":1}"));
}

static void test_utf16_key_order(void)
{
	/* U+E000 sorts after U+1F600 in UTF-16 units, though before it by code point. */
	CHECK(encodes_to("{\"v\":1,\"type\":\"t\",\"\\ue000\":1,\"\\ud83d\\ude00\":2,\"\\u00e9\":3}",
	                 "{\"type\":\"t\",\"v\":1,\"\xc3\xa9\":3,\"\xf0\x9f\x98\x80\":2,\"\xee\x80\x80\":1}"));
	/* A prefix sorts first. */
	CHECK(encodes_to("{\"v\":1,\"type\":\"t\",\"ab\":1,\"a\":2}", "{\"a\":2,\"ab\":1,\"type\":\"t\",\"v\":1}"));
}

static void test_string_escapes(void)
{
	CHECK(encodes_to("{\"v\":1,\"type\":\"q\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f/\\u2028\"}",
	                 "{\"type\":\"q\\\"\\\\\\b\\f\\n\\r\\t\\u0001\\u001f\x7f/\xe2\x80\xa8\",\"v\":1}"));
}

static void test_rejects(void)
{
	json_t *v;
	cr_buf b = CR_BUF_INIT;

	v = json_loads("{\"v\":1,\"type\":\"t\",\"x\":1.5}", 0, NULL);
	CHECK(cr_event_encode(v, &b) == CR_EINVAL);
	CHECK(b.len == 0);
	json_decref(v);
	v = json_loads("{\"v\":1,\"type\":\"t\",\"x\":9007199254740992}", 0, NULL);
	CHECK(cr_event_encode(v, &b) == CR_EINVAL);
	json_decref(v);
	v = json_loads("{\"type\":\"t\"}", 0, NULL);
	CHECK(cr_event_encode(v, &b) == CR_EINVAL);
	json_decref(v);
	v = json_loads("{\"v\":1}", 0, NULL);
	CHECK(cr_event_encode(v, &b) == CR_EINVAL);
	json_decref(v);
	v = json_loads("[1]", 0, NULL);
	CHECK(cr_event_encode(v, &b) == CR_EINVAL);
	json_decref(v);
	cr_buf_free(&b);
}

static int parses(const char *s)
{
	json_t *ev = NULL;
	int rc = cr_event_parse(&ev, s, strlen(s));

	json_decref(ev);
	return rc == 0;
}

static void test_parse_strict(void)
{
	CHECK(parses("{\"type\":\"t\",\"v\":1}"));
	CHECK(!parses("{\"v\":1,\"type\":\"t\"}"));          /* unsorted */
	CHECK(!parses("{\"type\": \"t\",\"v\":1}"));         /* whitespace */
	CHECK(!parses("{\"type\":\"t\",\"v\":1} "));         /* trailing space */
	CHECK(!parses("{\"type\":\"t\",\"v\":1.0}"));        /* real */
	CHECK(!parses("{\"type\":\"t\",\"v\":1,\"x\":-0}")); /* -0 */
	CHECK(!parses("{\"type\":\"t\",\"v\":1,\"x\":1e3}"));
	CHECK(!parses("{\"type\":\"\\u0074\",\"v\":1}"));    /* needless escape */
	CHECK(!parses("{\"type\":\"t\",\"type\":\"t\",\"v\":1}"));
	CHECK(!parses("{\"type\":\"t\",\"v\":0}"));
	CHECK(!parses("{\"type\":\"\xff\",\"v\":1}"));
	CHECK(!parses(""));
	CHECK(!parses("{"));
	CHECK(!parses("[]"));
}

static void test_roundtrip_built_event(void)
{
	json_t *ev = NULL, *back = NULL;
	cr_buf b = CR_BUF_INIT, p = CR_BUF_INIT;
	struct timespec ts = {1764010000, 123456789};
	uint8_t sha[32];
	const char bad[] = "/data/caf\xe9/x\n.npy"; /* Latin-1 byte and a newline */

	memset(sha, 0xab, sizeof(sha));
	REQUIRE(cr_event_new(&ev, "input") == 0);
	CHECK(cr_event_set_path(ev, "path", bad, sizeof(bad) - 1) == 0);
	CHECK(cr_event_set_hex(ev, "sha256", sha, 32) == 0);
	CHECK(cr_event_set_int(ev, "size", 4096) == 0);
	CHECK(cr_event_set_int(ev, "big", CR_EVENT_INT_MAX + 1) == CR_ERANGE);
	CHECK(cr_event_set_time(ev, "time", &ts) == 0);
	CHECK(cr_event_set_str(ev, "bad", "\xc0\x80") == CR_EINVAL);
	REQUIRE(cr_event_encode(ev, &b) == 0);
	CHECK(strstr(b.ptr, "\"time\":\"2025-11-24T18:46:40.123456Z\"") != NULL);
	CHECK(strstr(b.ptr, "\"path_b64\":") != NULL);
	CHECK(strchr(b.ptr, '\n') == NULL);
	REQUIRE(cr_event_parse(&back, b.ptr, b.len) == 0);
	REQUIRE(cr_event_get_path(back, "path", &p) == 0);
	CHECK(p.len == sizeof(bad) - 1 && memcmp(p.ptr, bad, p.len) == 0);
	CHECK(strcmp(cr_event_type(back), "input") == 0);
	CHECK(cr_event_get_path(back, "other", &p) == CR_ENOTFOUND);
	/* A valid UTF-8 path stays readable. */
	CHECK(cr_event_set_path(ev, "path", "/d/\xc3\xa9.npy", 9) == 0);
	CHECK(json_object_get(ev, "path_b64") == NULL);
	CHECK(strcmp(json_string_value(json_object_get(ev, "path")), "/d/\xc3\xa9.npy") == 0);
	json_decref(ev);
	json_decref(back);
	cr_buf_free(&b);
	cr_buf_free(&p);
}

static void test_codecs(void)
{
	static const struct {
		const char *raw, *b64;
	} vec[] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"}, {"foob", "Zm9vYg=="},
	           {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
	char out[64];
	uint8_t bin[64];
	size_t n;

	for (size_t i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
		cr_base64_encode(out, (const uint8_t *)vec[i].raw, strlen(vec[i].raw));
		CHECK(strcmp(out, vec[i].b64) == 0);
		CHECK(cr_base64_decode(bin, &n, vec[i].b64, strlen(vec[i].b64)) == 0);
		CHECK(n == strlen(vec[i].raw) && memcmp(bin, vec[i].raw, n) == 0);
	}
	CHECK(cr_base64_decode(bin, &n, "Zh==", 4) == CR_EINVAL); /* non-zero pad bits */
	CHECK(cr_base64_decode(bin, &n, "Zg=", 3) == CR_EINVAL);
	CHECK(cr_base64_decode(bin, &n, "Z===", 4) == CR_EINVAL);
	CHECK(cr_base64_decode(bin, &n, "Zg==Zg==", 8) == CR_EINVAL);
	CHECK(cr_base64_decode(bin, &n, "Zm9v!A==", 8) == CR_EINVAL);
	CHECK(cr_hex_decode(bin, 2, "aBcD", 4) == 0 && bin[0] == 0xab && bin[1] == 0xcd);
	CHECK(cr_hex_decode(bin, 2, "abc", 3) == CR_EINVAL);
	CHECK(cr_hex_decode(bin, 2, "abcg", 4) == CR_EINVAL);
	cr_hex_encode(out, (const uint8_t *)"\x01\xfe", 2);
	CHECK(strcmp(out, "01fe") == 0);
	CHECK(cr_utf8_valid((const uint8_t *)"a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10));
	CHECK(!cr_utf8_valid((const uint8_t *)"\xc0\xaf", 2));          /* overlong */
	CHECK(!cr_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));      /* surrogate */
	CHECK(!cr_utf8_valid((const uint8_t *)"\xf4\x90\x80\x80", 4));  /* > U+10FFFF */
	CHECK(!cr_utf8_valid((const uint8_t *)"\xe2\x82", 2));          /* truncated */
	CHECK(!cr_utf8_valid((const uint8_t *)"\x80", 1));
}

static void test_buf(void)
{
	cr_buf b = CR_BUF_INIT;
	char *p;

	for (int i = 0; i < 1000; i++)
		CHECK(cr_buf_printf(&b, "%d,", i) == 0);
	CHECK(b.len == strlen(b.ptr));
	CHECK(strncmp(b.ptr, "0,1,2,", 6) == 0);
	cr_buf_clear(&b);
	CHECK(b.len == 0 && b.ptr[0] == '\0');
	CHECK(cr_buf_grow(&b, SIZE_MAX) == CR_ENOMEM);
	p = cr_buf_detach(&b);
	CHECK(p != NULL && b.ptr == NULL);
	free(p);
	cr_buf_free(&b);
}

TEST_MAIN(TEST(test_sorted_keys_and_whitespace), TEST(test_utf16_key_order), TEST(test_string_escapes),
          TEST(test_rejects), TEST(test_parse_strict), TEST(test_roundtrip_built_event), TEST(test_codecs),
          TEST(test_buf))
