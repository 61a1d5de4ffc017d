/*
 * State shared by the verifier's two halves: verify.c (the archive, the
 * manifest, the events, the proofs) and verify_checks.c (seal, --root,
 * --previous, files on disk). Internal to audit/.
 */
#ifndef CR_AUDIT_VERIFY_INTERNAL_H
#define CR_AUDIT_VERIFY_INTERNAL_H

#include <stdio.h>

#include <jansson.h>

#include "cleanroom/merkle.h"
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
	FILE *proofs[2];        /* checkpoints, inputs */
	FILE *consistency;

	cr_merkle_state tree;
	uint8_t (*leaves)[CR_HASH_SIZE];
	size_t n_leaves, cap_leaves;
	uint64_t bad_events;
	int have_events;
	int sealed;             /* the seal parsed and its signature verified */

	int seal_done;          /* the seal hook ran */
	struct evp_pkey_st *key;  /* the key the seal verified with */
	struct cr_attest_checker *att; /* fed every event when the attestation parsed */
	int att_failed;

	cr_verify_files inputs, checkpoints;
	json_t *data_roots;     /* every run's data_roots */
} cr_verify;

void cr_verify_fail(cr_verify *v, const char *check, const char *detail);
void cr_verify_pass(cr_verify *v, const char *check, const char *detail);

/* Read one bundle into v (used for --previous too). */
int cr_verify_run(cr_verify *v, const char *path);

/* verify_checks.c */
int cr_verify_event_hook(cr_verify *v, uint64_t index, const char *leaf, size_t len,
                         const json_t *ev);
void cr_verify_seal_hook(cr_verify *v);
int cr_verify_finish_hooks(cr_verify *v);
void cr_verify_hooks_free(cr_verify *v);

#endif
