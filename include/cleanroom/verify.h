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
	const char *previous;     /* --previous: an older bundle of the same log (read first) */
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
 * (all reported through fn; a hostile or damaged archive is the failed
 * "archive" check). Other codes, with nothing reported, when nothing could
 * be checked: the bundle or opts->previous cannot be read as an archive at
 * all (missing, not a tar or gzip/zstd tar, its first member unreadable:
 * CR_EIO or CR_EARCHIVE); opts->public_pem is not an Ed25519 public key
 * (the codes of cr_key_load_public); a data or checkpoints folder is not a
 * folder (CR_ENOTFOUND, CR_EIO, CR_EINVAL); root_hex is not 64 hex digits
 * (CR_EINVAL); memory or temporary files ran out (CR_ENOMEM, CR_EIO).
 * Memory use does not grow with the number of events.
 */
int cr_verify_bundle(const cr_verify_options *opts, cr_verify_fn fn, void *ctx,
                     cr_verify_summary *out);

#ifdef __cplusplus
}
#endif
#endif
