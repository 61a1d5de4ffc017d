/*
 * The anchor (docs/formats/anchor.md): what it takes to publish a seal on
 * a public ledger. anchor.json holds the seal's origin, size and root, the
 * 32-byte commitment SHA-256(seal note bytes), and ready-to-send call data
 * for two ways of publishing it on an EVM chain: cleanroom's minimal
 * anchor contract, and the Ethereum Attestation Service's timestamp(). A
 * "published" block stays null until someone fills in where it went.
 *
 * Function selectors and event topics use Keccak-256 (the original
 * Keccak padding, not FIPS 202 SHA3-256), implemented here because
 * OpenSSL 3.0 has no Keccak-256.
 */
#ifndef CLEANROOM_ANCHOR_H
#define CLEANROOM_ANCHOR_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CR_ANCHOR_VERSION 1
/* Largest anchor.json the checker reads. */
#define CR_ANCHOR_MAX (64u * 1024)

#define CR_KECCAK256_SIZE 32

/* The calls anchor.json prepares. */
#define CR_ANCHOR_FUNCTION "anchor(bytes32,uint64,bytes32)"
#define CR_ANCHOR_EVENT    "Anchored(bytes32,uint64,bytes32)"
#define CR_EAS_FUNCTION    "timestamp(bytes32)"
#define CR_EAS_EVENT       "Timestamped(bytes32,uint64)"

/* Keccak-256 as Ethereum uses it (domain byte 0x01). */
void cr_keccak256(uint8_t out[CR_KECCAK256_SIZE], const void *data, size_t len);

/*
 * The Keccak[c=512] sponge with a 256-bit output and the given domain byte
 * before the final 0x80: 0x01 is Keccak-256, 0x06 is FIPS 202 SHA3-256. The
 * second exists so tests can hold the permutation against OpenSSL's SHA3.
 */
void cr_keccak256_domain(uint8_t out[CR_KECCAK256_SIZE], const void *data, size_t len,
                         uint8_t domain);

/* An EVM function selector: the first 4 bytes of Keccak-256(signature). */
void cr_anchor_selector(uint8_t out[4], const char *signature);

/*
 * Build anchor.json for the seal note note[0..len): origin, size and root
 * come from its signed text, the commitment is SHA-256 of all len bytes.
 * Canonical JSON (sorted keys, no whitespace, no trailing newline); *out
 * is malloc'ed and NUL-terminated. CR_EINVAL when the note's text is not a
 * seal body. The signature is not checked here.
 */
int cr_anchor_build(char **out, size_t *out_len, const char *note, size_t note_len);

/*
 * Check anchor[0..len) against the seal note: every field must be what
 * cr_anchor_build() writes (key order and whitespace may differ, since
 * people fill in "published" with their own tools), and "published" must
 * hold only null or well-formed values. CR_EVERIFY naming the first field
 * that disagrees, CR_EINVAL when it is not JSON or over CR_ANCHOR_MAX.
 * *published (may be NULL) is set to 1 when the "published" block claims a
 * publication (any field not null): a claim about a chain that cannot be
 * checked offline, which the caller should report as such.
 */
int cr_anchor_check(const void *anchor, size_t len, const char *note, size_t note_len,
                    int *published);

#ifdef __cplusplus
}
#endif
#endif
