/*
 * DSSE envelopes (github.com/secure-systems-lab/dsse, envelope and
 * protocol v1.0.0), signed with Ed25519 -- docs/formats/attestation.md.
 *
 * The signature covers PAE(payloadType, payload), never the JSON around
 * it. Envelopes are written with sorted keys and no whitespace, so the same
 * payload and key always give the same bytes (Ed25519 is deterministic).
 * The verifier accepts only what the writer writes: standard padded
 * base64, no unknown or duplicate fields.
 */
#ifndef CLEANROOM_DSSE_H
#define CLEANROOM_DSSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* OpenSSL's key type, without pulling <openssl/evp.h> into every user. */
typedef struct evp_pkey_st EVP_PKEY;

struct cr_buf;

/* The payload type of an in-toto Statement. */
#define CR_DSSE_INTOTO_TYPE "application/vnd.in-toto+json"

/* Limits on untrusted envelopes. The envelope limit is the bundle's limit
 * for a small member (CR_VERIFY_SMALL_MAX); the payload limit leaves room
 * for its base64 (4/3) and the rest of the envelope inside it. */
#define CR_DSSE_ENVELOPE_MAX   (16u * 1024 * 1024)
#define CR_DSSE_PAYLOAD_MAX    (12u * 1024 * 1024 - 65536)
#define CR_DSSE_TYPE_MAX       256  /* bytes in payloadType */
#define CR_DSSE_SIGNATURES_MAX 64   /* entries in "signatures" */
#define CR_DSSE_KEYID_MAX      256  /* bytes in one keyid */
#define CR_DSSE_SIG_BASE64_MAX 8192 /* base64 characters in one sig */

/* A key id: 64 lowercase hex digits and a NUL. */
#define CR_DSSE_KEYID_SIZE 65

/*
 * Append PAE(type, body) to out:
 *   "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body
 * with LEN the ASCII decimal byte count and SP one space (0x20).
 * CR_ENOMEM on failure (out unchanged but for capacity).
 */
int cr_dsse_pae(struct cr_buf *out, const char *type, const void *body, size_t len);

/*
 * The keyid cleanroom writes for key (private or public): the lowercase hex
 * SHA-256 of its public key's SubjectPublicKeyInfo DER, as printed by
 * `openssl pkey -pubin -in key.pub -outform DER | sha256sum`.
 */
int cr_dsse_keyid(char out[CR_DSSE_KEYID_SIZE], const EVP_PKEY *key);

/*
 * Sign payload[0..len) of the given type with key (an Ed25519 private key)
 * into a one-signature envelope. *out is malloc'ed, NUL-terminated, without
 * a trailing newline; *out_len its length. CR_EINVAL for a key that is not
 * Ed25519, an empty or oversized type, a payload over CR_DSSE_PAYLOAD_MAX
 * (CR_ERANGE); CR_ECRYPTO when OpenSSL fails.
 */
int cr_dsse_sign(char **out, size_t *out_len, const char *type, const void *payload, size_t len,
                 EVP_PKEY *key);

/*
 * Verify envelope[0..len) against key (Ed25519; its public half is used)
 * and the expected payload type. A signature counts when its keyid is
 * cr_dsse_keyid(key) and its sig verifies over PAE; signatures with other
 * keyids are ignored (they may be other parties' cosignatures) but must be
 * well-formed. On success *out (may be NULL) gets the payload, malloc'ed
 * and NUL-terminated, and *out_len (may be NULL) its length.
 *
 * CR_EINVAL, naming the field, when the envelope is malformed: over the
 * limits, not JSON, duplicate or unknown fields, a field of the wrong type,
 * base64 that is not standard and padded. CR_EVERIFY when it is well
 * formed but payloadType is not type, no signature carries the key's
 * keyid, or none of those verifies.
 */
int cr_dsse_verify(char **out, size_t *out_len, const void *envelope, size_t len, const char *type,
                   EVP_PKEY *key);

#ifdef __cplusplus
}
#endif
#endif
