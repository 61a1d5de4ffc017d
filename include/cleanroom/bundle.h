/*
 * Writing the audit bundle (docs/formats/bundle.md): one tar archive,
 * zstd or gzip, members in a fixed order with fixed metadata, so the same
 * log, seals and key give the same bytes. The caller supplies the signed
 * pieces (seal, attestation, anchor, public key); this module adds the
 * events, the inclusion proofs, a consistency proof from every earlier
 * seal of the store made with the same key, and the manifest.
 */
#ifndef CLEANROOM_BUNDLE_H
#define CLEANROOM_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CR_BUNDLE_VERSION 1
/* The largest earlier seal a consistency proof line carries (bytes). */
#define CR_BUNDLE_SEAL_MAX 4096u

typedef struct cr_bundle_options {
	uint64_t tree_size;          /* the sealed size (events beyond it are left out) */
	const char *origin;
	const char *seal_note;       /* seal.note */
	const char *public_pem;      /* key.pub */
	const char *vkey;            /* key.vkey: the C2SP verifier key (name and key); earlier
	                                seals are included when they verify with it */
	const char *attestation;     /* attestation.dsse.json (may be NULL) */
	const char *anchor;          /* anchor.json (may be NULL) */
	int prove_inputs;            /* proofs/inputs.jsonl too */
	int gzip;                    /* gzip instead of zstd */
} cr_bundle_options;

typedef struct cr_bundle_stats {
	uint64_t events;
	uint64_t checkpoints;
	uint64_t inputs;
	uint64_t proofs;             /* inclusion proofs */
	uint64_t bytes;              /* uncompressed member bytes */
	uint64_t consistency;        /* consistency proofs: earlier seals included */
	uint64_t seals_skipped;      /* earlier seals left out: another key, name or origin,
	                                malformed, or over CR_BUNDLE_SEAL_MAX bytes */
} cr_bundle_stats;

/*
 * Write the bundle to path (replaced atomically: written to path.tmp,
 * renamed). CR_EINVAL without a seal, public key or verifier key;
 * CR_ERANGE for a tree size of 0 or beyond the log; CR_ECORRUPT when the
 * log is damaged, or when an earlier seal made with this key and origin
 * names a root the log no longer has at its size (the log was rewritten);
 * CR_EIO / CR_EARCHIVE when writing fails.
 */
int cr_bundle_write(cr_store *store, const char *path, const cr_bundle_options *opts,
                    cr_bundle_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
