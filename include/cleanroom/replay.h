/*
 * Replaying checkpoint history: every recorded checkpoint, in log order,
 * checked against the file on disk (whole-file SHA-256, tensor manifest)
 * and its delta from the previous checkpoint recomputed from the files.
 */
#ifndef CLEANROOM_REPLAY_H
#define CLEANROOM_REPLAY_H

#include <stdint.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cr_replay_options {
	const char *store;            /* replay a store's log ... */
	const char *bundle;           /* ... or an audit bundle's events (verified first) */
	const char *public_pem;       /* the trusted key for the bundle (NULL: its own) */
	const char *checkpoints_dir;  /* where the checkpoint files are */
} cr_replay_options;

/*
 * One checkpoint of the timeline:
 * {"index","path","file","time","run","inputs","status","format","tensors",
 *  "changed","added","removed","l2","rel","delta_checked","problems":[...]}
 * status: "ok", "mismatch", "missing", "superseded" (a later checkpoint was
 * written to the same file), "unverifiable" (changed while it was written).
 */
typedef void (*cr_replay_fn)(void *ctx, const json_t *row);

typedef struct cr_replay_summary {
	uint64_t checkpoints;
	uint64_t ok;
	uint64_t failed;              /* mismatch, missing or unverifiable */
	uint64_t superseded;
	uint64_t problems;
	uint64_t deltas_checked;
} cr_replay_summary;

/* 0 when every checkpoint matched, CR_EVERIFY when one did not, other codes when replay could not run. */
int cr_replay(const cr_replay_options *opts, cr_replay_fn fn, void *ctx, cr_replay_summary *out);

#ifdef __cplusplus
}
#endif
#endif
