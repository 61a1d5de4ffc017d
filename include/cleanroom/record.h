/*
 * Recording a run: start the command under the preload hook, take in what
 * every process of it reports, classify and hash, and append run, process,
 * input, checkpoint, environment and unobserved events to the store.
 */
#ifndef CLEANROOM_RECORD_H
#define CLEANROOM_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cr_record_options.nice: the recorder's hashing runs only on CPUs the command leaves idle. */
#define CR_RECORD_IDLE 20

typedef struct cr_record_options {
	char *const *argv;              /* the command; argv[0] searched in PATH */
	const char *const *data_roots;  /* absolute folders; none: see docs/recording.md */
	size_t n_data_roots;
	const char *const *checkpoint_globs; /* none: the defaults */
	size_t n_checkpoint_globs;
	const char *preload;            /* absolute path of libcleanroom-preload.so */
	unsigned hash_threads;          /* 0: all CPUs */
	int quiet;                      /* no progress on stderr */
	int no_delta;                   /* no weight deltas between checkpoints */
	int nice;                       /* once the command runs, the recorder lowers its own
	                                   priority by this much (0: unchanged; at most nice
	                                   19), or with CR_RECORD_IDLE its hashing threads run
	                                   at SCHED_IDLE and the rest 10 lower; the checkpoint
	                                   thread keeps its priority */
} cr_record_options;

typedef struct cr_record_result {
	char run_id[40];
	int exit_status;     /* the command's exit status, or 128 + signal */
	int signal;          /* the signal that ended it, or 0 */
	uint64_t processes;
	uint64_t inputs;     /* input events (content versions) */
	uint64_t input_bytes;
	uint64_t reads;      /* data reads seen, all epochs */
	uint64_t checkpoints;
	uint64_t env_files;
	uint64_t unobserved;
	uint64_t changed;    /* files that changed while the run used them */
	uint64_t first_event, last_event; /* leaf indexes of run_start and run_end */
} cr_record_result;

/*
 * Run and record. Fails (negative CR_E*) only when the recording itself
 * cannot be made (store, socket, fork); the command's own failure is its
 * exit status in out.
 */
int cr_record_run(cr_store *store, const cr_record_options *opts, cr_record_result *out);

/* A new UUIDv7 as text (36 chars + NUL). */
int cr_uuid7(char out[37]);

#ifdef __cplusplus
}
#endif
#endif
