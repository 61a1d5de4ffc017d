/*
 * The lineage attestation (docs/formats/attestation.md): an in-toto
 * Statement v1 whose subjects are the checkpoints of the sealed log and
 * whose predicate summarises the log, its runs, inputs and checkpoints,
 * and carries the seal. It travels in a DSSE envelope (cleanroom/dsse.h).
 *
 * The builder walks the store's events once; the checker takes the events
 * one at a time, so neither keeps the log in memory: only the runs and
 * checkpoints the statement lists, whose total is bounded by
 * CR_ATTEST_STATEMENT_MAX.
 */
#ifndef CLEANROOM_ATTEST_H
#define CLEANROOM_ATTEST_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cleanroom/dsse.h"
#include "cleanroom/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CR_ATTEST_STATEMENT_TYPE "https://in-toto.io/Statement/v1"
#define CR_ATTEST_PREDICATE_TYPE "urn:cleanroom:lineage:v1"
/* A statement must fit in one DSSE payload. */
#define CR_ATTEST_STATEMENT_MAX CR_DSSE_PAYLOAD_MAX

/*
 * Build the statement for the first size events of store, where origin,
 * size and root come from the seal note note[0..note_len) (a signed note
 * over a seal body; its signature is not checked here), and the note is
 * carried whole in the predicate. Canonical JSON (sorted keys, no
 * whitespace, no trailing newline); *out is malloc'ed and NUL-terminated.
 *
 * CR_EINVAL when the note is not a seal; CR_EVERIFY when the store's root
 * at that size differs from the seal's; CR_ERANGE when the store holds
 * fewer events or the statement would exceed CR_ATTEST_STATEMENT_MAX;
 * CR_ECORRUPT when an event does not parse or a run starts twice.
 */
int cr_attest_build(char **out, size_t *out_len, cr_store *store, const char *note,
                    size_t note_len);

/*
 * Checking a statement against the events of a log, one event at a time.
 *
 *   cr_attest_checker_new(&c, statement, len, seal.note bytes)
 *   cr_attest_checker_feed(c, 0, leaf0, len0, NULL) ... (every event, in order)
 *   cr_attest_checker_finish(c)   -> 0, or CR_EVERIFY naming what differs
 *   cr_attest_checker_free(c)
 *
 * new() parses the statement strictly (CR_EINVAL naming the field when it
 * is malformed or not canonical) and checks what needs no events: the
 * seal inside it equals note[0..note_len) when note is not NULL, its log
 * block agrees with that seal, subjects and checkpoint names follow from
 * the listed checkpoints. feed() takes event `index` as its exact leaf
 * bytes, with ev its parsed form when the caller has it (NULL: parsed
 * here). The first difference found makes feed() and finish() return
 * CR_EVERIFY with a message from then on; the message is kept, so
 * finish() repeats it even if other errors were set in between.
 */
typedef struct cr_attest_checker cr_attest_checker;

int cr_attest_checker_new(cr_attest_checker **out, const char *statement, size_t len,
                          const char *note, size_t note_len);
int cr_attest_checker_feed(cr_attest_checker *c, uint64_t index, const char *leaf, size_t len,
                           const json_t *ev);
int cr_attest_checker_finish(cr_attest_checker *c);
void cr_attest_checker_free(cr_attest_checker *c); /* NULL-safe */

/* The checker over the first tree_size events of store (tree_size from the statement). */
int cr_attest_check(cr_store *store, const char *statement, size_t len, const char *note,
                    size_t note_len);

#ifdef __cplusplus
}
#endif
#endif
