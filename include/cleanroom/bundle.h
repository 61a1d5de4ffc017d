/*
 * Writing the audit bundle (docs/formats/bundle.md): one tar archive,
 * zstd or gzip, members in a fixed order with fixed metadata, so the same
 * log and key give the same bytes. The caller supplies the signed pieces
 * (seal, attestation, anchor, public key); this module adds the events,
 * proofs and manifest from the store.
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

typedef struct cr_bundle_options {
	uint64_t tree_size;          /* the sealed size (events beyond it are left out) */
	const char *origin;
	const char *seal_note;       /* seal.note */
	const char *public_pem;      /* key.pub */
	const char *vkey;            /* key.vkey (may be NULL) */
	const char *attestation;     /* attestation.dsse.json (may be NULL) */
	const char *anchor;          /* anchor.json (may be NULL) */
	int prove_inputs;            /* proofs/inputs.jsonl too */
	int gzip;                    /* gzip instead of zstd */
} cr_bundle_options;

typedef struct cr_bundle_stats {
	uint64_t events;
	uint64_t checkpoints;
	uint64_t inputs;
	uint64_t proofs;
	uint64_t bytes;              /* uncompressed member bytes */
} cr_bundle_stats;

/* Write the bundle to path (replaced atomically: written to path.tmp, renamed). */
int cr_bundle_write(cr_store *store, const char *path, const cr_bundle_options *opts,
                    cr_bundle_stats *stats);

#ifdef __cplusplus
}
#endif
#endif
