/*
 * Verifying an audit bundle offline (docs/formats/bundle.md, "What
 * `cleanroom verify` checks"). The archive is read as a stream and never
 * extracted; every member is untrusted input.
 */
#ifndef CLEANROOM_VERIFY_H
#define CLEANROOM_VERIFY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Limits on what a bundle may hold. */
#define CR_VERIFY_SMALL_MAX (16u * 1024 * 1024)          /* any member but proofs and events */
#define CR_VERIFY_MEMBER_MAX (64ull * 1024 * 1024 * 1024) /* proofs and events */
#define CR_VERIFY_MEMBERS_MAX 4096

typedef struct cr_verify_options {
	const char *bundle;
	const char *public_pem;   /* --key: the trusted public key (PEM file); NULL: the bundle's own */
	const char *root_hex;     /* --root: the anchored root */
	const char *previous;     /* --previous: an older bundle of the same log */
	const char *data_dir;     /* --data */
	const char *checkpoints_dir; /* --checkpoints */
} cr_verify_options;

/* One check's outcome: its name, whether it passed, and detail (where, what). */
typedef void (*cr_verify_fn)(void *ctx, const char *check, int ok, const char *detail);

typedef struct cr_verify_summary {
	uint64_t checks;
	uint64_t failures;
	uint64_t events;
	uint64_t tree_size;
	uint8_t root[32];
	char origin[256];
	int key_from_bundle;      /* the signature was checked against the bundle's own key */
} cr_verify_summary;

/*
 * Verify. Returns 0 when every check passed, CR_EVERIFY when one failed
 * (all reported through fn), other codes when the bundle cannot be read at
 * all (unreadable file, not an archive).
 */
int cr_verify_bundle(const cr_verify_options *opts, cr_verify_fn fn, void *ctx,
                     cr_verify_summary *out);

#ifdef __cplusplus
}
#endif
#endif
