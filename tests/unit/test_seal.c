/*
 * Unit tests for audit/seal.c.
 *
 * Known answers: the C2SP signed-note examples in
 * $CR_VECTORS/notes/ (README.txt there says where each comes from). The
 * PeterNeumann test private key from golang.org/x/mod must reproduce its
 * published signature line byte for byte (Ed25519 is deterministic), and
 * every published note must verify with its published verifier key.
 *
 * Forgeries, like signify's: every byte of a note's text and signature
 * line altered, a changed origin (the README's NEGATIVE EXAMPLE), wrong key,
 * wrong name, a key id that does not match, duplicate and unknown signature
 * lines, layout errors. Each must fail with CR_EVERIFY or CR_EINVAL and a
 * message. Key files: modes, refusal to overwrite, refusal of a key that
 * group or others can read. Seals of a real store.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/seal.h"
#include "cleanroom/store.h"
#include "harness.h"
#include "util/codec.h"

#ifndef CR_DEFAULT_VECTORS
#define CR_DEFAULT_VECTORS "/work/main/tests/fixtures/vectors"
#endif

/* From tests/fixtures/vectors/notes/README.txt. */
#define EX1_VKEY "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
#define PN_VKEY  "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
#define ER_VKEY  "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
/* Its base64 holds '+': only the first two '+' split a vkey. */
#define SUM_VKEY   "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
#define PN_PRIVATE "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
#define PN_LINE                                                                                    \
	"\xe2\x80\x94 PeterNeumann "                                                               \
	"x08go/ZJkuBS9UG/"                                                                         \
	"SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
#define PN_TEXT                                                                                    \
	"If you think cryptography is the answer to your problem,\n"                               \
	"then you don't know what your problem is.\n"
#define NEG_SIG                                                                                    \
	"Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"                                \
	"Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8="
#define NEG_BODY "20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
#define DASH     "\xe2\x80\x94 "

static char tmpdir[256];

static void make_tmp(void)
{
	const char *base = getenv("CR_TMP");

	if (!base)
		base = "/tmp";
	mkdir(base, 0700);
	snprintf(tmpdir, sizeof(tmpdir), "%s/seal-XXXXXX", base);
	if (!mkdtemp(tmpdir))
		abort();
}

static void rm_tmp(void)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	(void)!system(cmd);
}

static char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = malloc((size_t)n + 1)) != NULL) {
		if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		} else {
			buf[n] = '\0';
			*len = (size_t)n;
		}
	}
	fclose(f);
	return buf;
}

static char *fixture(const char *name, size_t *len)
{
	const char *dir = getenv("CR_VECTORS");
	char path[4096];
	char *p;

	if (!dir || !*dir)
		dir = CR_DEFAULT_VECTORS;
	snprintf(path, sizeof(path), "%s/notes/%s", dir, name);
	if ((p = slurp(path, len)) == NULL)
		fprintf(stderr, "cannot read fixture %s\n", path);
	return p;
}

static int vkey(cr_vkey *out, const char *s)
{
	return cr_vkey_parse(out, s, strlen(s));
}

/* A rejection: the right kind of code, and a message saying why. */
static int rejected(int rc)
{
	return (rc == CR_EVERIFY || rc == CR_EINVAL) && cr_error_last()[0] != '\0';
}

static int verify_str(const char *note, const cr_vkey *vk)
{
	cr_error_clear();
	return cr_note_verify(note, strlen(note), vk, NULL);
}

/* The Go test-key format: PRIVATE+KEY+<name>+<hex id>+base64(0x01 || seed). */
static EVP_PKEY *import_private(const char *s, char name[64], uint32_t *id)
{
	const char *f[5];
	uint8_t raw[33], idb[4];
	size_t n = 0, k = 0;
	EVP_PKEY *key;

	f[k++] = s;
	for (const char *p = s; *p && k < 5; p++) {
		if (*p == '+')
			f[k++] = p + 1;
	}
	if (k != 5 || strncmp(s, "PRIVATE+KEY+", 12) != 0 || f[3] - f[2] - 1 >= 64 ||
	    cr_hex_decode(idb, 4, f[3], (size_t)(f[4] - f[3] - 1)) != 0 ||
	    cr_base64_decode(raw, &n, f[4], strlen(f[4])) != 0 || n != 33 || raw[0] != 1)
		return NULL;
	memcpy(name, f[2], (size_t)(f[3] - f[2] - 1));
	name[f[3] - f[2] - 1] = '\0';
	*id = (uint32_t)idb[0] << 24 | (uint32_t)idb[1] << 16 | (uint32_t)idb[2] << 8 | idb[3];
	key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, raw + 1, 32);
	OPENSSL_cleanse(raw, sizeof(raw));
	return key;
}

/* ---- verifier keys ------------------------------------------------------------ */

static void test_vkeys(void)
{
	static const char *const good[] = {EX1_VKEY, PN_VKEY, ER_VKEY, SUM_VKEY};
	static const uint32_t ids[] = {0x530d903a, 0xc74f20a3, 0xaf0cfe78, 0x033de0ae};
	static const char *const bad[] = {
	    "",
	    "example.com/foo",
	    "example.com/foo+530d903a",
	    "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
	    "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", /* id */
	    "example.com/fop+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", /* name */
	    "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2l", /* key */
	    "example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
	    "example.com/foo+530d903g+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
	    "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",
	    "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k=",
	    "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k\n",
	    "example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", /* type 2 */
	    "example com+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
	};
	char text[CR_VKEY_MAX];
	cr_vkey vk;
	uint32_t id;

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		CHECK(vkey(&vk, good[i]) == 0);
		CHECK(vk.id == ids[i]);
		CHECK(cr_note_key_id(&id, vk.name, vk.key) == 0 && id == ids[i]);
		CHECK(cr_vkey_format(&vk, text) == strlen(good[i]));
		CHECK(strcmp(text, good[i]) == 0);
	}
	CHECK(vkey(&vk, SUM_VKEY) == 0 && strcmp(vk.name, "sum.golang.org") == 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_error_clear();
		CHECK(vkey(&vk, bad[i]) == CR_EINVAL);
		CHECK(cr_error_last()[0] != '\0');
		CHECK(vk.name[0] == '\0');
	}
	CHECK(vkey(&vk, bad[4]) == CR_EINVAL && strstr(cr_error_last(), "530d903b") != NULL);

	CHECK(cr_note_name_valid("example.com/foo", 15));
	CHECK(cr_note_name_valid("\xc3\xa9t\xc3\xa9", 5));
	CHECK(!cr_note_name_valid("", 0));
	CHECK(!cr_note_name_valid("a+b", 3));
	CHECK(!cr_note_name_valid("a b", 3));
	CHECK(!cr_note_name_valid("a\tb", 3));
	CHECK(!cr_note_name_valid("a\xc2\xa0z", 4));     /* U+00A0 no-break space */
	CHECK(!cr_note_name_valid("a\xe3\x80\x80z", 5)); /* U+3000 ideographic space */
	CHECK(!cr_note_name_valid("a\xff", 2));
	CHECK(!cr_note_name_valid("a\0b", 3));
	CHECK(cr_note_key_id(&id, "a b", vk.key) == CR_EINVAL);
}

/* ---- the published examples --------------------------------------------------- */

static void test_sign_reproduces_published_line(void)
{
	char name[64], *note = NULL, text[CR_VKEY_MAX];
	size_t len = 0, flen = 0;
	uint32_t id = 0;
	char *file = fixture("xmod_peterneumann_enochroot.note", &flen);
	EVP_PKEY *key = import_private(PN_PRIVATE, name, &id);
	cr_vkey vk;

	REQUIRE(file != NULL);
	REQUIRE(key != NULL);
	CHECK(strcmp(name, "PeterNeumann") == 0 && id == 0xc74f20a3);
	/* The public key derived from the seed is the published one, and so is its id. */
	REQUIRE(cr_vkey_from_key(&vk, key, name) == 0);
	cr_vkey_format(&vk, text);
	CHECK(strcmp(text, PN_VKEY) == 0);
	CHECK(vk.id == id);

	REQUIRE(cr_note_sign(&note, &len, PN_TEXT, strlen(PN_TEXT), name, key) == 0);
	CHECK(len == strlen(PN_TEXT) + 1 + strlen(PN_LINE));
	CHECK(len == strlen(note));
	CHECK(strncmp(note, PN_TEXT "\n" PN_LINE, len) == 0);
	/* ... which is exactly how the published note starts. */
	CHECK(len < flen && memcmp(note, file, len) == 0);
	free(note);
	note = NULL;
	/* Deterministic: again, the same bytes. */
	REQUIRE(cr_note_sign(&note, &len, PN_TEXT, strlen(PN_TEXT), name, key) == 0);
	CHECK(strcmp(note, PN_TEXT "\n" PN_LINE) == 0);
	free(note);
	free(file);
	EVP_PKEY_free(key);
}

static void test_examples_verify(void)
{
	static const struct {
		const char *file, *vkey;
		size_t text_len;
	} ex[] = {
	    {"c2sp_signed_note_example.note", EX1_VKEY, 28},
	    {"xmod_peterneumann_enochroot.note", PN_VKEY, 99},
	    {"xmod_peterneumann_enochroot.note", ER_VKEY, 99},
	    {"sumdb_checkpoint_31700353.note", SUM_VKEY, 75},
	};
	static const uint8_t sum_root[32] = {0xa8, 0x83, 0x52, 0xd4, 0x64, 0x45, 0x85, 0x61,
	                                     0xf0, 0x76, 0x45, 0x1e, 0xa8, 0xb1, 0x28, 0x3f,
	                                     0x8c, 0x84, 0x32, 0x44, 0xc1, 0x07, 0x3c, 0x41,
	                                     0x90, 0x6c, 0x06, 0x42, 0x55, 0x65, 0x55, 0xcb};
	cr_seal_body body;
	cr_vkey vk, other;

	for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
		size_t len = 0, tlen = 0;
		char *note = fixture(ex[i].file, &len);

		REQUIRE(note != NULL);
		REQUIRE(vkey(&vk, ex[i].vkey) == 0);
		CHECK(cr_note_verify(note, len, &vk, &tlen) == 0);
		CHECK(tlen == ex[i].text_len);
		/* Another example's key does not verify it. */
		REQUIRE(vkey(&other, i == 0 ? SUM_VKEY : EX1_VKEY) == 0);
		cr_error_clear();
		CHECK(cr_note_verify(note, len, &other, &tlen) == CR_EVERIFY && tlen == 0);
		CHECK(strstr(cr_error_last(), "no signature by key") != NULL);
		if (i == 3) {
			REQUIRE(cr_seal_body_parse(&body, note, ex[i].text_len) == 0);
			CHECK(strcmp(body.origin, "go.sum database tree") == 0);
			CHECK(body.size == 31700353);
			CHECK_MEM(body.root, sum_root, 32);
			CHECK(strcmp(body.extensions, "") == 0);
			cr_seal_body_free(&body);
		}
		free(note);
	}
}

/*
 * The NEGATIVE EXAMPLE: C2SP's illustration reuses sum.golang.org's
 * signature over another origin. With its own origin and name it is
 * unsigned as far as the sum.golang.org key goes; labelled as that key it
 * fails; with origin "go.sum database tree" it verifies -- so the origin
 * line is the only thing that differs, and a changed origin is caught.
 */
static void test_changed_origin(void)
{
	cr_vkey vk;

	REQUIRE(vkey(&vk, SUM_VKEY) == 0);
	CHECK(verify_str("example.com/behind-the-sofa\n" NEG_BODY "\n" DASH
	                 "example.com/behind-the-sofa " NEG_SIG "\n",
	                 &vk) == CR_EVERIFY);
	CHECK(strstr(cr_error_last(), "no signature by key sum.golang.org+033de0ae") != NULL);
	CHECK(verify_str("example.com/behind-the-sofa\n" NEG_BODY "\n" DASH
	                 "sum.golang.org " NEG_SIG "\n",
	                 &vk) == CR_EVERIFY);
	CHECK(strstr(cr_error_last(), "does not verify") != NULL);
	CHECK(verify_str("go.sum database tree\n" NEG_BODY "\n" DASH "sum.golang.org " NEG_SIG "\n",
	                 &vk) == 0);
}

/*
 * Alter every byte in [from, to) of a note, two ways; each copy must be
 * rejected with a message. Returns how many alterations were tried.
 */
static size_t tamper_range(const char *note, size_t len, const cr_vkey *vk, size_t from, size_t to)
{
	static const uint8_t flips[] = {0x01, 0x20, 0x80};
	char *copy = malloc(len);
	size_t tried = 0;

	if (!copy)
		abort();
	for (size_t i = from; i < to; i++) {
		for (size_t f = 0; f < sizeof(flips); f++) {
			int rc;

			memcpy(copy, note, len);
			copy[i] = (char)(copy[i] ^ flips[f]);
			cr_error_clear();
			rc = cr_note_verify(copy, len, vk, NULL);
			if (!rejected(rc))
				fprintf(stderr, "byte %zu ^ 0x%02x: rc %d (%s)\n", i, flips[f], rc,
				        cr_error_last());
			CHECK(rejected(rc));
			tried++;
		}
	}
	free(copy);
	return tried;
}

static void test_every_byte_altered(void)
{
	static const struct {
		const char *file, *vkey;
		size_t sig_end; /* 0: the whole note is ours */
	} ex[] = {
	    {"c2sp_signed_note_example.note", EX1_VKEY, 0},
	    {"sumdb_checkpoint_31700353.note", SUM_VKEY, 0},
	    /* Two signatures: alter only the text and PeterNeumann's line;
	     * EnochRoot's line is not this key's business. */
	    {"xmod_peterneumann_enochroot.note", PN_VKEY, 99 + 1 + sizeof(PN_LINE) - 1},
	};
	size_t tried = 0;
	cr_vkey vk;

	for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
		size_t len = 0;
		char *note = fixture(ex[i].file, &len);

		REQUIRE(note != NULL);
		REQUIRE(vkey(&vk, ex[i].vkey) == 0);
		REQUIRE(cr_note_verify(note, len, &vk, NULL) == 0);
		tried += tamper_range(note, len, &vk, 0, ex[i].sig_end ? ex[i].sig_end : len);
		free(note);
	}
	CHECK(tried > 3 * 500);
}

/* ---- malformed and forged notes ------------------------------------------------ */

/* A fresh key pair signing "hello\n"; note and vkey for the tests below. */
static EVP_PKEY *fresh_key(cr_vkey *vk, const char *name)
{
	EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");

	if (!key || cr_vkey_from_key(vk, key, name) != 0)
		abort();
	return key;
}

static char *cat(const char *a, const char *b, const char *c)
{
	size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
	char *p = malloc(n);

	if (!p)
		abort();
	snprintf(p, n, "%s%s%s", a, b, c);
	return p;
}

static void expect_reject(const char *note, const cr_vkey *vk, int code, const char *msg,
                          const char *why)
{
	int rc = verify_str(note, vk);

	if (rc != code || (msg && !strstr(cr_error_last(), msg)))
		fprintf(stderr, "%s: rc %d, message '%s'\n", why, rc, cr_error_last());
	CHECK(rc == code);
	CHECK(cr_error_last()[0] != '\0');
	if (msg)
		CHECK(strstr(cr_error_last(), msg) != NULL);
}

static void test_malformed_and_forged(void)
{
	cr_vkey vk, vk_other, vk_renamed;
	EVP_PKEY *key = fresh_key(&vk, "example.org/log");
	EVP_PKEY *other = fresh_key(&vk_other, "example.org/log");
	char *note = NULL, *onote = NULL, *s, *line, *oline;
	size_t len = 0, olen = 0;
	uint8_t blob[80];
	size_t n = 0;
	char b64[120];

	REQUIRE(cr_note_sign(&note, &len, "hello\n", 6, "example.org/log", key) == 0);
	REQUIRE(cr_note_sign(&onote, &olen, "hello\n", 6, "example.org/log", other) == 0);
	REQUIRE(verify_str(note, &vk) == 0);
	line = note + 7;   /* our signature line */
	oline = onote + 7; /* the other key's, same name */

	/* Wrong key (same name, so another id); wrong name (same key). */
	expect_reject(note, &vk_other, CR_EVERIFY, "another key", "wrong key");
	REQUIRE(cr_vkey_from_key(&vk_renamed, key, "example.org/other") == 0);
	expect_reject(note, &vk_renamed, CR_EVERIFY, "no signature by key", "wrong name");

	/* Layout. */
	expect_reject("", &vk, CR_EINVAL, "newline", "empty");
	expect_reject("\n\n", &vk, CR_EINVAL, "no signature line", "blank only");
	s = cat("hello\n", line, "");
	expect_reject(s, &vk, CR_EINVAL, "blank line", "missing blank line");
	free(s);
	s = cat("hello\n\n\n", line, "");
	expect_reject(s, &vk, CR_EVERIFY, "does not verify", "extra blank line (text changes)");
	free(s);
	s = cat("hello\n\n", line, "\n");
	expect_reject(s, &vk, CR_EINVAL, "no signature line", "blank line after signatures");
	free(s);
	s = strdup(note);
	s[len - 1] = '\0';
	expect_reject(s, &vk, CR_EINVAL, "end with a newline", "missing final newline");
	free(s);
	s = cat("hello\n\n", line + 4, ""); /* no em dash */
	expect_reject(s, &vk, CR_EINVAL, "em dash", "no em dash");
	free(s);
	s = cat("hello\n\n- ", line + 4, "");
	expect_reject(s, &vk, CR_EINVAL, "em dash", "hyphen for em dash");
	free(s);
	s = cat("hello\n\n" DASH "example.org/log\n", "", "");
	expect_reject(s, &vk, CR_EINVAL, "no space", "no signature");
	free(s);
	s = cat("hello\n\n" DASH "example.org/log \n", "", "");
	expect_reject(s, &vk, CR_EINVAL, "not base64", "empty signature");
	free(s);
	s = cat("hello\n\n" DASH " AAAAAAA=\n", "", "");
	expect_reject(s, &vk, CR_EINVAL, "invalid key name", "empty name");
	free(s);
	s = cat("hello\n\n" DASH "example.org/log AAAAAA==\n", "", "");
	expect_reject(s, &vk, CR_EINVAL, "not base64", "4-byte signature");
	free(s);
	s = strdup(note);
	s[len - 2] = ' '; /* trailing space in the base64 */
	expect_reject(s, &vk, CR_EINVAL, NULL, "space in base64");
	free(s);
	s = cat("hel\rlo\n\n", line, "");
	expect_reject(s, &vk, CR_EINVAL, "control character", "CR in text");
	free(s);
	s = cat("h\xc3(llo\n\n", line, "");
	expect_reject(s, &vk, CR_EINVAL, "UTF-8", "bad UTF-8");
	free(s);

	/* Truncated signature: one character (not base64), four (62 bytes). */
	s = strdup(note);
	memmove(s + len - 2, s + len - 1, 2);
	expect_reject(s, &vk, CR_EINVAL, "not base64", "one char short");
	free(s);
	s = strdup(note);
	memmove(s + len - 5, s + len - 1, 2);
	expect_reject(s, &vk, CR_EVERIFY, "62 bytes", "four chars short");
	free(s);

	/* Our name and id, someone else's signature. */
	{
		const char *sp = strrchr(line, ' ');

		REQUIRE(cr_base64_decode(blob, &n, sp + 1, strlen(sp + 1) - 1) == 0 && n == 68);
	}
	{
		uint8_t forged[68];
		const char *osp = strrchr(oline, ' ');
		size_t m = 0;

		REQUIRE(cr_base64_decode(forged, &m, osp + 1, strlen(osp + 1) - 1) == 0 && m == 68);
		memcpy(forged, blob, 4); /* our key id on their signature */
		cr_base64_encode(b64, forged, 68);
		s = cat("hello\n\n" DASH "example.org/log ", b64, "\n");
		expect_reject(s, &vk, CR_EVERIFY, "does not verify",
		              "other key's signature, our id");
		free(s);
	}
	/* A key id that does not match (same name): ignored, so no signature. */
	blob[0] ^= 1;
	cr_base64_encode(b64, blob, 68);
	s = cat("hello\n\n" DASH "example.org/log ", b64, "\n");
	expect_reject(s, &vk, CR_EVERIFY, "another key", "key id mismatch");
	free(s);
	blob[0] ^= 1;

	/* Duplicate lines of our key: rejected. Unknown keys' lines: ignored,
	 * but a note with only those is not signed by us. */
	s = cat(note, line, "");
	expect_reject(s, &vk, CR_EINVAL, "signed twice", "duplicate");
	free(s);
	s = cat(onote, "", "");
	s[7 + 4] = 'E'; /* "Example.org/log": another name */
	expect_reject(s, &vk, CR_EVERIFY, "no signature by key", "unknown only");
	free(s);
	s = cat("hello\n\n" DASH "Example.org/log AAAAAAA=\n" DASH "nospace\n", line, "");
	expect_reject(s, &vk, CR_EINVAL, "no space", "malformed unknown line");
	free(s);
	s = cat("hello\n\n" DASH "somebody AAAAAAA=\n" DASH "else AAAAAAA=\n", line, "");
	CHECK(verify_str(s, &vk) == 0);
	free(s);
	s = cat("hello\n\n", line, oline); /* same name, other key, after ours */
	CHECK(verify_str(s, &vk) == 0);
	free(s);

	/* Signature count: 100 lines pass, 101 do not. */
	{
		size_t cap = 200 * 32 + len;
		char *big = malloc(cap);
		size_t o = 0;

		REQUIRE(big != NULL);
		o += (size_t)snprintf(big + o, cap - o, "hello\n\n");
		for (int i = 0; i < 99; i++)
			o += (size_t)snprintf(big + o, cap - o, DASH "k%d AAAAAAA=\n", i);
		o += (size_t)snprintf(big + o, cap - o, "%s", line);
		CHECK(cr_note_verify(big, o, &vk, NULL) == 0);
		o += (size_t)snprintf(big + o, cap - o, DASH "last AAAAAAA=\n");
		cr_error_clear();
		CHECK(cr_note_verify(big, o, &vk, NULL) == CR_EINVAL);
		CHECK(strstr(cr_error_last(), "more than 100") != NULL);
		free(big);
	}
	/* Size limit. */
	{
		size_t big_len = CR_NOTE_MAX_SIZE + 1;
		char *big = malloc(big_len);
		size_t tl = big_len - strlen(line) - 1;

		REQUIRE(big != NULL);
		memset(big, 'a', tl);
		big[tl - 1] = '\n';
		big[tl] = '\n';
		memcpy(big + tl + 1, line, strlen(line));
		cr_error_clear();
		CHECK(cr_note_verify(big, big_len, &vk, NULL) == CR_EINVAL);
		CHECK(strstr(cr_error_last(), "limit") != NULL);
		cr_error_clear();
		CHECK(cr_note_sign(&s, NULL, big, tl, "example.org/log", key) == CR_EINVAL);
		CHECK(s == NULL);
		free(big);
	}

	/* Every byte of our own note. */
	CHECK(tamper_range(note, len, &vk, 0, len) == 3 * len);

	free(note);
	free(onote);
	EVP_PKEY_free(key);
	EVP_PKEY_free(other);
}

static void test_sign_rejects(void)
{
	cr_vkey vk;
	EVP_PKEY *key = fresh_key(&vk, "k");
	EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	char *out = NULL;
	size_t n = 7;

	REQUIRE(ec != NULL);
	CHECK(cr_note_sign(&out, &n, "", 0, "k", key) == CR_EINVAL && !out && n == 0);
	CHECK(cr_note_sign(&out, &n, "no newline", 10, "k", key) == CR_EINVAL && !out);
	CHECK(cr_note_sign(&out, &n, "tab\there\n", 9, "k", key) == CR_EINVAL && !out);
	CHECK(cr_note_sign(&out, &n, "ok\n", 3, "bad name", key) == CR_EINVAL && !out);
	CHECK(cr_note_sign(&out, &n, "ok\n", 3, "a+b", key) == CR_EINVAL && !out);
	CHECK(cr_note_sign(&out, &n, "ok\n", 3, "k", ec) == CR_EINVAL && !out);
	CHECK(strstr(cr_error_last(), "not Ed25519") != NULL);
	/* Text with blank lines in it is fine: the last blank line splits. */
	REQUIRE(cr_note_sign(&out, &n, "a\n\nb\n\n", 6, "k", key) == 0);
	CHECK(cr_note_verify(out, n, &vk, &n) == 0 && n == 6);
	free(out);
	EVP_PKEY_free(key);
	EVP_PKEY_free(ec);
}

/* ---- the seal body ------------------------------------------------------------ */

static void test_body(void)
{
	static const char root_b64[] = "qINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=";
	static const char ext[] = "a b\n18446744073709551615\n"
	                          "qINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\nx 1\n\xc3\xa9\n";
	static const char *const bad[] = {
	    "",
	    "origin\n",
	    "origin\n1\n",
	    "origin\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=", /* no newline */
	    "\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",     /* empty origin */
	    "o\n01\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",   /* leading zero */
	    "o\n00\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",
	    "o\n+1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",
	    "o\n-1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",
	    "o\n 1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",
	    "o\n\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",
	    "o\n0x1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",
	    "o\n18446744073709551616\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",
	    "o\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVc=\n",    /* 43 chars */
	    "o\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVct=\n",   /* not canonical */
	    "o\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcsA\n",   /* 33 bytes */
	    "o\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs\n",    /* unpadded */
	    "o\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n\n", /* empty extension */
	    "o\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\next\n\n",
	    "o\r\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",   /* CR */
	    "o\xff\n1\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n", /* not UTF-8 */
	};
	uint8_t root[32];
	cr_seal_body b;
	char *text = NULL;
	size_t n = 0, len = 0;

	REQUIRE(cr_base64_decode(root, &n, root_b64, 44) == 0 && n == 32);
	REQUIRE(cr_seal_body_parse(&b, "o\n0\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n",
	                           49) == 0);
	CHECK(strcmp(b.origin, "o") == 0 && b.size == 0 && memcmp(b.root, root, 32) == 0);
	cr_seal_body_free(&b);
	REQUIRE(cr_seal_body_parse(&b, ext, strlen(ext)) == 0);
	CHECK(strcmp(b.origin, "a b") == 0 && b.size == UINT64_MAX);
	CHECK(strcmp(b.extensions, "x 1\n\xc3\xa9\n") == 0);
	cr_seal_body_free(&b);
	cr_seal_body_free(&b); /* twice: zeroed */
	cr_seal_body_free(NULL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_error_clear();
		n = cr_seal_body_parse(&b, bad[i], strlen(bad[i])) == CR_EINVAL;
		if (!n)
			fprintf(stderr, "body %zu parsed\n", i);
		CHECK(n);
		CHECK(cr_error_last()[0] != '\0');
		CHECK(b.origin == NULL && b.extensions == NULL && b.size == 0);
	}
	/* Formatting, and back. */
	REQUIRE(cr_seal_body_format(&text, &len, "cleanroom.local/x", 31700353, root) == 0);
	CHECK(strcmp(text, "cleanroom.local/x\n31700353\n"
	                   "qINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n") == 0);
	CHECK(len == strlen(text));
	REQUIRE(cr_seal_body_parse(&b, text, len) == 0);
	CHECK(b.size == 31700353 && memcmp(b.root, root, 32) == 0);
	cr_seal_body_free(&b);
	free(text);
	CHECK(cr_seal_body_format(&text, &len, "", 1, root) == CR_EINVAL && text == NULL);
	CHECK(cr_seal_body_format(&text, &len, "two\nlines", 1, root) == CR_EINVAL && !text);
	CHECK(cr_seal_body_format(&text, &len, "ctl\x01", 1, root) == CR_EINVAL && !text);
}

/* ---- key files ---------------------------------------------------------------- */

static mode_t mode_of(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_mode & 07777 : (mode_t)-1;
}

static int write_text(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
	size_t n = strlen(text);
	int ok;

	if (fd < 0)
		return -1;
	ok = write(fd, text, n) == (ssize_t)n;
	return close(fd) == 0 && ok ? 0 : -1;
}

static void test_key_files(void)
{
	char dir[300], keyp[400], pubp[400], vkp[400], other[400], text[CR_VKEY_MAX];
	char name[CR_NOTE_MAX_NAME + 1];
	char *before = NULL, *after = NULL;
	size_t blen = 0, alen = 0;
	cr_vkey vk, vk2, filevk, mine;
	EVP_PKEY *key = NULL, *pub = NULL, *k = NULL, *ec = NULL;
	FILE *f;

	make_tmp();
	snprintf(dir, sizeof(dir), "%s/keys", tmpdir);
	snprintf(keyp, sizeof(keyp), "%s/" CR_KEY_PRIVATE_FILE, dir);
	snprintf(pubp, sizeof(pubp), "%s/" CR_KEY_PUBLIC_FILE, dir);
	snprintf(vkp, sizeof(vkp), "%s/" CR_KEY_VKEY_FILE, dir);

	CHECK(cr_key_generate(dir, "bad name", 0, &vk) == CR_EINVAL);
	CHECK(mode_of(dir) == (mode_t)-1); /* nothing made for a bad name */
	REQUIRE(cr_key_generate(dir, CR_KEY_DEFAULT_NAME, 0, &vk) == 0);
	CHECK(mode_of(dir) == 0700);
	CHECK(mode_of(keyp) == 0600);
	CHECK(mode_of(pubp) == 0644);
	CHECK(mode_of(vkp) == 0644);
	CHECK(strcmp(vk.name, "cleanroom") == 0);
	REQUIRE(cr_vkey_load(&filevk, vkp) == 0);
	CHECK(memcmp(&filevk, &vk, sizeof(vk)) == 0);
	before = slurp(keyp, &blen);
	REQUIRE(before != NULL);
	CHECK(strncmp(before, "-----BEGIN PRIVATE KEY-----\n", 28) == 0); /* PKCS#8 */

	/* Never overwritten without force, and untouched by the refusal. */
	cr_error_clear();
	CHECK(cr_key_generate(dir, "cleanroom", 0, &vk2) == CR_EEXISTS);
	CHECK(strstr(cr_error_last(), keyp) != NULL);
	after = slurp(keyp, &alen);
	CHECK(after && alen == blen && memcmp(after, before, blen) == 0);
	free(after);
	after = NULL;
	REQUIRE(unlink(keyp) == 0); /* one of three gone, two left: still refused */
	CHECK(cr_key_generate(dir, "cleanroom", 0, &vk2) == CR_EEXISTS);
	CHECK(strstr(cr_error_last(), pubp) != NULL);
	CHECK(mode_of(keyp) == (mode_t)-1);

	/* Force replaces all three, with the same modes. */
	REQUIRE(cr_key_generate(dir, "example.org/key", 1, &vk2) == 0);
	CHECK(memcmp(vk2.key, vk.key, 32) != 0);
	CHECK(mode_of(keyp) == 0600 && mode_of(pubp) == 0644 && mode_of(vkp) == 0644);
	after = slurp(vkp, &alen);
	REQUIRE(after != NULL);
	cr_vkey_format(&vk2, text);
	CHECK(alen == strlen(text) + 1 && strncmp(after, text, alen - 1) == 0 &&
	      after[alen - 1] == '\n');

	/* The private key loads and pairs with the public key and the vkey. */
	REQUIRE(cr_key_load_private(&key, keyp) == 0);
	REQUIRE(cr_key_load_public(&pub, pubp) == 0);
	REQUIRE(cr_vkey_from_key(&mine, key, "example.org/key") == 0);
	CHECK(memcmp(&mine, &vk2, sizeof(mine)) == 0);
	REQUIRE(cr_vkey_from_key(&mine, pub, "example.org/key") == 0);
	CHECK(memcmp(&mine, &vk2, sizeof(mine)) == 0);
	CHECK(cr_key_name_load(name, keyp, key) == 0 && strcmp(name, "example.org/key") == 0);

	/* Group- or world-accessible private keys are refused, naming file and fix. */
	{
		static const mode_t modes[] = {0640, 0604, 0620, 0660, 0644, 0601};

		for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
			REQUIRE(chmod(keyp, modes[i]) == 0);
			cr_error_clear();
			CHECK(cr_key_load_private(&k, keyp) == CR_EIO && k == NULL);
			CHECK(strstr(cr_error_last(), keyp) != NULL);
			CHECK(strstr(cr_error_last(), "chmod 600") != NULL);
		}
		REQUIRE(chmod(keyp, 0400) == 0);
		CHECK(cr_key_load_private(&k, keyp) == 0 && k != NULL);
		cr_key_free(k);
		k = NULL;
		REQUIRE(chmod(keyp, 0600) == 0);
	}

	/* Missing, not a key, not Ed25519, a folder, a public key as private. */
	snprintf(other, sizeof(other), "%s/missing.key", dir);
	cr_error_clear();
	CHECK(cr_key_load_private(&k, other) == CR_ENOTFOUND && k == NULL);
	CHECK(strstr(cr_error_last(), other) != NULL);
	CHECK(cr_key_load_private(&k, dir) == CR_EINVAL && strstr(cr_error_last(), "regular"));
	snprintf(other, sizeof(other), "%s/junk.key", dir);
	REQUIRE(write_text(other, "not a key\n", 0600) == 0);
	CHECK(cr_key_load_private(&k, other) == CR_EINVAL && strstr(cr_error_last(), other));
	CHECK(cr_key_load_public(&k, other) == CR_EINVAL && k == NULL);
	snprintf(other, sizeof(other), "%s/pub-as-private.key", dir);
	{
		char *pubtext = slurp(pubp, &alen);

		REQUIRE(pubtext != NULL);
		REQUIRE(write_text(other, pubtext, 0600) == 0);
		free(pubtext);
	}
	CHECK(cr_key_load_private(&k, other) == CR_EINVAL && k == NULL);
	snprintf(other, sizeof(other), "%s/ec.key", dir);
	REQUIRE((ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256")) != NULL);
	REQUIRE(write_text(other, "", 0600) == 0); /* fopen would make it 0644 */
	REQUIRE((f = fopen(other, "w")) != NULL);
	REQUIRE(PEM_write_PrivateKey(f, ec, NULL, NULL, 0, NULL, NULL) == 1);
	fclose(f);
	CHECK(cr_key_load_private(&k, other) == CR_EINVAL &&
	      strstr(cr_error_last(), "not Ed25519"));

	/* The name comes from the vkey beside the key, which must be the same key. */
	snprintf(other, sizeof(other), "%s/lonely.key", dir);
	REQUIRE(write_text(other, "", 0600) == 0);
	cr_error_clear();
	CHECK(cr_key_name_load(name, other, key) == CR_ENOTFOUND && name[0] == '\0');
	CHECK(strstr(cr_error_last(), "lonely.vkey") != NULL);
	snprintf(other, sizeof(other), "%s/stranger.vkey", dir);
	REQUIRE(write_text(other, PN_VKEY "\n", 0644) == 0);
	snprintf(other, sizeof(other), "%s/stranger.key", dir);
	CHECK(cr_key_name_load(name, other, key) == CR_EINVAL &&
	      strstr(cr_error_last(), "another key"));
	snprintf(other, sizeof(other), "%s/bad.vkey", dir);
	REQUIRE(write_text(other, "bad+vkey+x\n", 0644) == 0);
	cr_error_clear();
	CHECK(cr_vkey_load(&filevk, other) == CR_EINVAL && strstr(cr_error_last(), other));

	free(before);
	free(after);
	cr_key_free(key);
	cr_key_free(pub);
	cr_key_free(ec);
	rm_tmp();
}

/* Generate, sign, verify; deterministic signatures; another key fails. */
static void test_round_trip(void)
{
	static const char text[] =
	    "cleanroom.local/test\n3\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n";
	char dir[300], keyp[400], *a = NULL, *b = NULL;
	size_t alen = 0, blen = 0, tlen = 0;
	cr_vkey vk, other;
	EVP_PKEY *key = NULL;

	make_tmp();
	snprintf(dir, sizeof(dir), "%s/k", tmpdir);
	snprintf(keyp, sizeof(keyp), "%s/" CR_KEY_PRIVATE_FILE, dir);
	REQUIRE(cr_key_generate(dir, "rt", 0, &vk) == 0);
	REQUIRE(cr_key_load_private(&key, keyp) == 0);
	REQUIRE(cr_note_sign(&a, &alen, text, sizeof(text) - 1, "rt", key) == 0);
	REQUIRE(cr_note_sign(&b, &blen, text, sizeof(text) - 1, "rt", key) == 0);
	CHECK(alen == blen && memcmp(a, b, alen) == 0);
	CHECK(cr_note_verify(a, alen, &vk, &tlen) == 0 && tlen == sizeof(text) - 1);
	REQUIRE(vkey(&other, EX1_VKEY) == 0);
	CHECK(cr_note_verify(a, alen, &other, NULL) == CR_EVERIFY);
	free(a);
	free(b);
	cr_key_free(key);
	rm_tmp();
}

/* ---- seals of a store --------------------------------------------------------- */

static int append_events(const char *path, int n)
{
	cr_store *s = NULL;
	int rc;

	if ((rc = cr_store_open(&s, path, CR_STORE_WRITE)) != 0)
		return rc;
	for (int i = 0; i < n && !rc; i++) {
		json_t *ev = NULL;

		if ((rc = cr_event_new(&ev, "note")) == 0 &&
		    (rc = cr_event_set_int(ev, "n", i)) == 0)
			rc = cr_store_append(s, ev, NULL);
		json_decref(ev);
	}
	if (!rc)
		rc = cr_store_flush(s);
	cr_store_free(s);
	return rc;
}

static void test_store_seal(void)
{
	char spath[300], keydir[300], keyp[400], opath[400], seal_path[400];
	char *note = NULL, *origin = NULL, *origin2 = NULL, *saved = NULL, *file = NULL;
	size_t len = 0, tlen = 0, flen = 0;
	cr_store *s = NULL;
	cr_store_state st;
	cr_seal_body body;
	EVP_PKEY *key = NULL;
	cr_vkey vk;

	make_tmp();
	snprintf(spath, sizeof(spath), "%s/store", tmpdir);
	snprintf(keydir, sizeof(keydir), "%s/keys", tmpdir);
	snprintf(keyp, sizeof(keyp), "%s/" CR_KEY_PRIVATE_FILE, keydir);
	snprintf(opath, sizeof(opath), "%s/" CR_SEAL_ORIGIN_FILE, spath);
	REQUIRE(cr_key_generate(keydir, "cleanroom", 0, &vk) == 0);
	REQUIRE(cr_key_load_private(&key, keyp) == 0);
	REQUIRE(cr_store_init(spath) == 0);

	/* An empty store has nothing to seal, and gets no origin from trying. */
	REQUIRE(cr_store_open(&s, spath, 0) == 0);
	cr_error_clear();
	CHECK(cr_seal_make(&note, &len, s, key, "cleanroom", NULL) == CR_EINVAL && note == NULL);
	CHECK(strstr(cr_error_last(), "empty") != NULL);
	CHECK(mode_of(opath) == (mode_t)-1);
	cr_store_free(s);
	s = NULL;

	REQUIRE(append_events(spath, 5) == 0);
	REQUIRE(cr_store_open(&s, spath, 0) == 0);
	cr_store_state_get(s, &st);
	REQUIRE(st.size == 5);
	REQUIRE(cr_seal_make(&note, &len, s, key, "cleanroom", NULL) == 0);
	CHECK(mode_of(opath) == 0644);
	REQUIRE(cr_seal_origin(&origin, s) == 0);
	REQUIRE(cr_seal_origin(&origin2, s) == 0);
	CHECK(strcmp(origin, origin2) == 0); /* made once, then kept */
	CHECK(strncmp(origin, CR_SEAL_ORIGIN_PREFIX, strlen(CR_SEAL_ORIGIN_PREFIX)) == 0);
	CHECK(strlen(origin) == strlen(CR_SEAL_ORIGIN_PREFIX) + 36);

	REQUIRE(cr_note_verify(note, len, &vk, &tlen) == 0);
	REQUIRE(cr_seal_body_parse(&body, note, tlen) == 0);
	CHECK(strcmp(body.origin, origin) == 0);
	CHECK(body.size == 5);
	CHECK_MEM(body.root, st.root, 32);
	cr_seal_body_free(&body);

	REQUIRE(cr_seal_save(&saved, s, note, len) == 0);
	snprintf(seal_path, sizeof(seal_path), "%s/seals/0000000000000005.note", spath);
	CHECK(strcmp(saved, seal_path) == 0);
	CHECK(mode_of(seal_path) == 0644);
	file = slurp(seal_path, &flen);
	CHECK(file && flen == len && memcmp(file, note, len) == 0);
	free(file);
	free(saved);
	saved = NULL;
	/* Saving the same seal again is fine; another seal at that size is refused. */
	CHECK(cr_seal_save(&saved, s, note, len) == 0);
	CHECK(cr_seal_save(NULL, s, "junk\n", 5) == CR_EINVAL);
	free(saved);
	saved = NULL;
	free(note);
	note = NULL;
	REQUIRE(cr_seal_make(&note, &len, s, key, "renamed", NULL) == 0);
	cr_error_clear();
	CHECK(cr_seal_save(&saved, s, note, len) == CR_EEXISTS && saved == NULL);
	CHECK(strstr(cr_error_last(), seal_path) != NULL);
	file = slurp(seal_path, &flen);
	CHECK(file && flen != len); /* the first one stands */
	free(file);
	free(note);
	note = NULL;

	/* An explicit origin is used as given; a bad one is refused. */
	REQUIRE(cr_seal_make(&note, &len, s, key, "cleanroom", "example.org/log") == 0);
	CHECK(strncmp(note, "example.org/log\n5\n", 18) == 0);
	free(note);
	note = NULL;
	CHECK(cr_seal_make(&note, &len, s, key, "cleanroom", "two\nlines") == CR_EINVAL && !note);

	/* A damaged origin file is reported, naming it. */
	REQUIRE(write_text(opath, "\n", 0644) == 0);
	free(origin);
	cr_error_clear();
	CHECK(cr_seal_origin(&origin, s) == CR_EINVAL && origin == NULL);
	CHECK(strstr(cr_error_last(), opath) != NULL);
	REQUIRE(write_text(opath, "example.org/hand-edited", 0644) == 0); /* no newline: fine */
	CHECK(cr_seal_origin(&origin, s) == 0 && strcmp(origin, "example.org/hand-edited") == 0);

	free(origin);
	free(origin2);
	cr_store_free(s);
	cr_key_free(key);
	rm_tmp();
}

static void setup(void)
{
	umask(022); /* the mode checks below assume it */
}

TEST_MAIN(TEST(setup), TEST(test_vkeys), TEST(test_sign_reproduces_published_line),
          TEST(test_examples_verify), TEST(test_changed_origin), TEST(test_every_byte_altered),
          TEST(test_malformed_and_forged), TEST(test_sign_rejects), TEST(test_body),
          TEST(test_key_files), TEST(test_round_trip), TEST(test_store_seal))
