/*
 * State shared by the verifier's two halves: verify.c (the archive, the
 * manifest, the events, the proofs) and verify_checks.c (seal, --root,
 * --previous, files on disk). Internal to audit/.
 *
 * Memory is bounded whatever the number of events: the events go through
 * a compact Merkle state (64 hashes), and the inclusion proofs, spooled to
 * anonymous files, are read alongside the events (both are in event order),
 * so no leaf hash is kept.
 */
#ifndef CR_AUDIT_VERIFY_INTERNAL_H
#define CR_AUDIT_VERIFY_INTERNAL_H

#include <stdio.h>

#include <jansson.h>

#include "cleanroom/merkle.h"
#include "cleanroom/seal.h"
#include "cleanroom/verify.h"
#include "util/buf.h"

/* Indexes into small[] (the order of small_members in verify.c). */
enum {
	CR_SMALL_VERSION,
	CR_SMALL_MANIFEST,
	CR_SMALL_SEAL,
	CR_SMALL_PUB,
	CR_SMALL_VKEY,
	CR_SMALL_ANCHOR,
	CR_SMALL_ATTESTATION,
	CR_VERIFY_SMALL_COUNT
};

typedef struct cr_verify_member {
	char *name;
	uint64_t size;
	uint8_t sha[32];
	int listed;
} cr_verify_member;

/*
 * An inclusion proof member read alongside the events: the next proof (by
 * event index) is held while the events stream past it.
 */
typedef struct cr_proof_cursor {
	FILE *f;                /* the spooled member; NULL when absent */
	const char *name;       /* "proofs/checkpoints.jsonl" */
	const char *type;       /* the event type it proves every event of */
	char *line;
	size_t cap;
	uint64_t lineno;
	int primed;             /* the first proof was looked for */
	int have;               /* next_* hold the next proof */
	int next_bad;           /* ... which failed (reported already) */
	uint64_t next_line;
	uint64_t next_index;
	uint8_t next_leaf[CR_HASH_SIZE];
	int started;            /* a proof was taken: last_index is set */
	uint64_t last_index;
	uint64_t ok, bad;
} cr_proof_cursor;

/* A recorded file, for --data / --checkpoints. */
typedef struct cr_verify_file {
	char *path;
	char sha[65]; /* "" when recorded as changed */
	char *rel;
} cr_verify_file;

typedef struct cr_verify_files {
	cr_verify_file *v;
	size_t n, cap;
} cr_verify_files;

typedef struct cr_verify {
	const cr_verify_options *opts;
	cr_verify_fn fn;
	void *ctx;
	cr_verify_summary *sum;

	cr_buf small[CR_VERIFY_SMALL_COUNT];
	cr_verify_member *seen;
	size_t n_seen;
	cr_proof_cursor proofs[2]; /* checkpoints, inputs */
	FILE *consistency;

	cr_merkle_state tree;
	uint64_t n_leaves;      /* events taken into tree */
	uint64_t bad_events;
	int have_events;
	int sealed;             /* the seal parsed and its signature verified */

	int seal_done;          /* the seal hook ran */
	EVP_PKEY *trusted;      /* --key, loaded before the bundle is read (borrowed by --previous) */
	EVP_PKEY *key;          /* the key the seal verified with */
	cr_vkey vkey;           /* ... with the name it signed under (valid when sealed) */
	struct cr_attest_checker *att; /* fed every event when the attestation parsed */
	int att_failed;

	cr_verify_files inputs, checkpoints;
	json_t *data_roots;     /* every run's data_roots */

	/* --previous: read before this bundle, its findings reported after. */
	struct cr_verify_prev *prev;
	uint64_t prefix_size;   /* take the root after this many events (0: none) */
	int have_prefix;
	uint8_t prefix_root[CR_HASH_SIZE];
} cr_verify;

void cr_verify_fail(cr_verify *v, const char *check, const char *detail);
void cr_verify_pass(cr_verify *v, const char *check, const char *detail);

/*
 * Read and check one bundle into v (used for --previous too): 0 when it was
 * read (failures reported through v->fn), an error code when it cannot be
 * read at all (nothing reported then). Free v with cr_verify_free().
 */
int cr_verify_run(cr_verify *v, const char *path);
void cr_verify_free(cr_verify *v);

/* verify_checks.c */
int cr_verify_event_hook(cr_verify *v, uint64_t index, const char *leaf, size_t len,
                         const json_t *ev);
void cr_verify_seal_hook(cr_verify *v);
/* Checks of the auditor's own inputs (--key, --data, --checkpoints, --root)
 * before anything is read: an error code, nothing reported, when unusable. */
int cr_verify_preflight(cr_verify *v);
/* Read --previous (when given) before this bundle: an error code when it
 * cannot be read at all. */
int cr_verify_previous_read(cr_verify *v);
int cr_verify_finish_hooks(cr_verify *v);
void cr_verify_hooks_free(cr_verify *v);

#endif
