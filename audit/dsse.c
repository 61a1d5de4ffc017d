/*
 * DSSE envelopes: PAE, Ed25519 signing, strict verification
 * (docs/formats/attestation.md, "The envelope").
 *
 * The writer emits exactly {"payload","payloadType","signatures":[{"keyid",
 * "sig"}]} with sorted keys and no whitespace; Ed25519 signatures are
 * deterministic, so an envelope is a pure function of (type, payload, key).
 * The verifier treats the envelope as hostile: size checked before parsing,
 * duplicate and unknown fields refused, base64 decoded strictly, and the
 * signature checked over PAE rebuilt from the decoded bytes. A keyid is
 * never a reason to accept: it only picks which signatures are ours.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cleanroom/dsse.h"
#include "cleanroom/error.h"
#include "cleanroom/hash.h"
#include "util/buf.h"
#include "util/codec.h"

#define ED25519_SIG_SIZE 64

/* The one place OpenSSL's error queue becomes a cleanroom error. */
static int ossl_fail(const char *what)
{
	unsigned long e = ERR_get_error();
	char detail[256] = "no detail";

	if (e)
		ERR_error_string_n(e, detail, sizeof(detail));
	ERR_clear_error();
	return cr_error_set(CR_ECRYPTO, "DSSE: %s failed: %s", what, detail);
}

/* A printable, bounded copy of an untrusted name for messages. */
static const char *shown(char out[64], const char *s)
{
	size_t i;

	for (i = 0; s[i] && i < 60; i++)
		out[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	if (s[i])
		memcpy(out + i - 3, "...", 3);
	out[i] = '\0';
	return out;
}

int cr_dsse_pae(cr_buf *out, const char *type, const void *body, size_t len)
{
	size_t start = out->len;
	int rc;

	if ((rc = cr_buf_printf(out, "DSSEv1 %zu %s %zu ", strlen(type), type, len)) != 0 ||
	    (rc = cr_buf_put(out, body, len)) != 0) {
		out->len = start;
		if (out->ptr)
			out->ptr[start] = '\0';
	}
	return rc;
}

int cr_dsse_keyid(char out[CR_DSSE_KEYID_SIZE], const EVP_PKEY *key)
{
	unsigned char *der = NULL;
	uint8_t sha[CR_SHA256_SIZE];
	int n;

	out[0] = '\0';
	/* i2d_PUBKEY writes the public half of a private key too. */
	n = i2d_PUBKEY((EVP_PKEY *)key, &der);
	if (n <= 0)
		return ossl_fail("encoding the public key (SubjectPublicKeyInfo)");
	cr_sha256(sha, der, (size_t)n);
	OPENSSL_free(der);
	cr_hex_encode(out, sha, sizeof(sha));
	return 0;
}

static int check_key(const EVP_PKEY *key)
{
	if (!key)
		return cr_error_set(CR_EINVAL, "DSSE: no key");
	if (EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519)
		return cr_error_set(CR_EINVAL, "DSSE: the key is not an Ed25519 key");
	return 0;
}

static int check_type(const char *type)
{
	size_t n = type ? strlen(type) : 0;

	if (n == 0 || n > CR_DSSE_TYPE_MAX)
		return cr_error_set(CR_EINVAL, "DSSE: payloadType must hold 1 to %d bytes",
		                    CR_DSSE_TYPE_MAX);
	if (!cr_utf8_valid((const uint8_t *)type, n))
		return cr_error_set(CR_EINVAL, "DSSE: payloadType is not UTF-8");
	return 0;
}

/* base64 of data as a malloc'ed string. */
static char *b64_new(const void *data, size_t n)
{
	char *s = malloc(cr_base64_len(n) + 1);

	if (s)
		cr_base64_encode(s, data, n);
	return s;
}

int cr_dsse_sign(char **out, size_t *out_len, const char *type, const void *payload, size_t len,
                 EVP_PKEY *key)
{
	EVP_MD_CTX *md = NULL;
	cr_buf pae = CR_BUF_INIT;
	uint8_t sig[ED25519_SIG_SIZE];
	size_t sig_len = sizeof(sig);
	char keyid[CR_DSSE_KEYID_SIZE];
	char *payload64 = NULL, *sig64 = NULL, *text = NULL;
	json_t *env = NULL;
	int rc;

	*out = NULL;
	if (out_len)
		*out_len = 0;
	if ((rc = check_key(key)) != 0 || (rc = check_type(type)) != 0)
		return rc;
	if (len > CR_DSSE_PAYLOAD_MAX)
		return cr_error_set(CR_ERANGE,
		                    "DSSE: payload of %zu bytes exceeds the %u byte limit", len,
		                    CR_DSSE_PAYLOAD_MAX);
	if ((rc = cr_dsse_keyid(keyid, key)) != 0 ||
	    (rc = cr_dsse_pae(&pae, type, payload, len)) != 0)
		goto done;
	md = EVP_MD_CTX_new();
	/* Ed25519 is "pure": no digest, and the one-shot call only. */
	if (!md || EVP_DigestSignInit(md, NULL, NULL, NULL, key) != 1 ||
	    EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)pae.ptr, pae.len) != 1 ||
	    sig_len != sizeof(sig)) {
		rc = ossl_fail("Ed25519 signing");
		goto done;
	}
	payload64 = b64_new(payload, len);
	sig64 = b64_new(sig, sig_len);
	if (!payload64 || !sig64) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	env = json_pack("{s:s, s:s, s:[{s:s, s:s}]}", "payload", payload64, "payloadType", type,
	                "signatures", "keyid", keyid, "sig", sig64);
	text = env ? json_dumps(env, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	if (!text) {
		rc = cr_error_set(CR_ENOMEM, "out of memory building the DSSE envelope");
		goto done;
	}
	if (out_len)
		*out_len = strlen(text);
	*out = text;
	text = NULL; /* now the caller's */
done:
	free(text);
	json_decref(env);
	free(payload64);
	free(sig64);
	OPENSSL_cleanse(pae.ptr, pae.len);
	cr_buf_free(&pae);
	EVP_MD_CTX_free(md);
	return rc;
}

/* Decode a base64 JSON string strictly into a malloc'ed buffer (NUL-terminated). */
static int b64_field(uint8_t **out, size_t *out_len, const json_t *v, const char *field,
                     size_t max_chars)
{
	const char *s;
	size_t n;
	uint8_t *buf;
	int rc;

	*out = NULL;
	if (!json_is_string(v))
		return cr_error_set(CR_EINVAL, "DSSE envelope: %s is not a string", field);
	s = json_string_value(v);
	n = json_string_length(v);
	if (n > max_chars)
		return cr_error_set(CR_EINVAL, "DSSE envelope: %s exceeds %zu base64 characters",
		                    field, max_chars);
	buf = malloc(n / 4 * 3 + 1);
	if (!buf)
		return cr_error_set(CR_ENOMEM, "out of memory");
	if ((rc = cr_base64_decode(buf, out_len, s, n)) != 0) {
		free(buf);
		return cr_error_set(CR_EINVAL,
		                    "DSSE envelope: %s is not standard padded base64: %s", field,
		                    cr_error_last());
	}
	buf[*out_len] = '\0';
	*out = buf;
	return 0;
}

/* One entry of "signatures": well-formed, and whether it is ours and verifies. */
static int check_signature(const json_t *sig, size_t i, const char *keyid, const cr_buf *pae,
                           EVP_PKEY *key, int *ours, int *valid)
{
	const char *k;
	json_t *v;
	char field[64], name[64];
	uint8_t *raw = NULL;
	size_t raw_len = 0;
	EVP_MD_CTX *md = NULL;
	int rc = 0, mine;

	if (!json_is_object(sig))
		return cr_error_set(CR_EINVAL, "DSSE envelope: signatures[%zu] is not an object",
		                    i);
	json_object_foreach ((json_t *)sig, k, v) {
		if (strcmp(k, "keyid") != 0 && strcmp(k, "sig") != 0)
			return cr_error_set(
			    CR_EINVAL, "DSSE envelope: signatures[%zu] has an unknown field \"%s\"",
			    i, shown(name, k));
	}
	/* DSSE: an absent keyid is the same as an empty one. */
	v = json_object_get(sig, "keyid");
	if (v && !json_is_string(v))
		return cr_error_set(CR_EINVAL,
		                    "DSSE envelope: signatures[%zu].keyid is not a string", i);
	if (v && json_string_length(v) > CR_DSSE_KEYID_MAX)
		return cr_error_set(CR_EINVAL,
		                    "DSSE envelope: signatures[%zu].keyid exceeds %d bytes", i,
		                    CR_DSSE_KEYID_MAX);
	mine = v && strcmp(json_string_value(v), keyid) == 0;
	v = json_object_get(sig, "sig");
	if (!v)
		return cr_error_set(CR_EINVAL, "DSSE envelope: signatures[%zu] has no \"sig\"", i);
	snprintf(field, sizeof(field), "signatures[%zu].sig", i);
	if ((rc = b64_field(&raw, &raw_len, v, field, CR_DSSE_SIG_BASE64_MAX)) != 0)
		return rc;
	if (!mine)
		goto done;
	*ours = 1;
	if (raw_len != ED25519_SIG_SIZE)
		goto done; /* not a valid Ed25519 signature: does not count */
	md = EVP_MD_CTX_new();
	if (!md || EVP_DigestVerifyInit(md, NULL, NULL, NULL, key) != 1) {
		rc = ossl_fail("Ed25519 verification setup");
		goto done;
	}
	if (EVP_DigestVerify(md, raw, raw_len, (const unsigned char *)pae->ptr, pae->len) == 1)
		*valid = 1;
	ERR_clear_error(); /* a bad signature leaves a queue entry */
done:
	EVP_MD_CTX_free(md);
	free(raw);
	return rc;
}

int cr_dsse_verify(char **out, size_t *out_len, const void *envelope, size_t len, const char *type,
                   EVP_PKEY *key)
{
	json_error_t jerr;
	json_t *env = NULL, *v, *sigs;
	const char *k;
	char keyid[CR_DSSE_KEYID_SIZE], name[64];
	uint8_t *payload = NULL;
	size_t payload_len = 0, i;
	cr_buf pae = CR_BUF_INIT;
	int rc, ours = 0, valid = 0;

	if (out)
		*out = NULL;
	if (out_len)
		*out_len = 0;
	if ((rc = check_key(key)) != 0 || (rc = check_type(type)) != 0)
		return rc;
	if (len > CR_DSSE_ENVELOPE_MAX)
		return cr_error_set(CR_EINVAL,
		                    "DSSE envelope of %zu bytes exceeds the %u byte limit", len,
		                    CR_DSSE_ENVELOPE_MAX);
	env = json_loadb(envelope, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!env)
		return cr_error_set(CR_EINVAL, "DSSE envelope is not JSON: %s at byte %d",
		                    jerr.text, jerr.position);
	if (!json_is_object(env)) {
		rc = cr_error_set(CR_EINVAL, "DSSE envelope is not a JSON object");
		goto done;
	}
	/* Unknown fields are refused, not ignored as DSSE allows: they are not
	 * signed, and a cleanroom envelope never has any. */
	json_object_foreach (env, k, v) {
		if (strcmp(k, "payload") != 0 && strcmp(k, "payloadType") != 0 &&
		    strcmp(k, "signatures") != 0) {
			rc = cr_error_set(CR_EINVAL, "DSSE envelope: unknown field \"%s\"",
			                  shown(name, k));
			goto done;
		}
	}
	v = json_object_get(env, "payloadType");
	if (!json_is_string(v)) {
		rc = cr_error_set(CR_EINVAL, "DSSE envelope: payloadType is %s",
		                  v ? "not a string" : "missing");
		goto done;
	}
	if (strcmp(json_string_value(v), type) != 0) {
		rc = cr_error_set(CR_EVERIFY,
		                  "DSSE envelope: payloadType is \"%s\", expected \"%s\"",
		                  shown(name, json_string_value(v)), type);
		goto done;
	}
	v = json_object_get(env, "payload");
	if (!v) {
		rc = cr_error_set(CR_EINVAL, "DSSE envelope: payload is missing");
		goto done;
	}
	if ((rc = b64_field(&payload, &payload_len, v, "payload",
	                    cr_base64_len(CR_DSSE_PAYLOAD_MAX))) != 0)
		goto done;
	sigs = json_object_get(env, "signatures");
	if (!json_is_array(sigs) || json_array_size(sigs) == 0 ||
	    json_array_size(sigs) > CR_DSSE_SIGNATURES_MAX) {
		rc = cr_error_set(CR_EINVAL,
		                  "DSSE envelope: signatures must be an array of 1 to %d entries",
		                  CR_DSSE_SIGNATURES_MAX);
		goto done;
	}
	if ((rc = cr_dsse_keyid(keyid, key)) != 0 ||
	    (rc = cr_dsse_pae(&pae, type, payload, payload_len)) != 0)
		goto done;
	for (i = 0; i < json_array_size(sigs); i++) {
		if ((rc = check_signature(json_array_get(sigs, i), i, keyid, &pae, key, &ours,
		                          &valid)) != 0)
			goto done;
	}
	if (!ours) {
		rc = cr_error_set(CR_EVERIFY, "DSSE envelope: no signature has the key's keyid %s",
		                  keyid);
		goto done;
	}
	if (!valid) {
		rc = cr_error_set(CR_EVERIFY,
		                  "DSSE envelope: the signature by key %s does not verify over "
		                  "PAE(payloadType, payload)",
		                  keyid);
		goto done;
	}
	if (out_len)
		*out_len = payload_len;
	if (out) {
		*out = (char *)payload;
		payload = NULL; /* now the caller's */
	}
done:
	free(payload);
	cr_buf_free(&pae);
	json_decref(env);
	return rc;
}
