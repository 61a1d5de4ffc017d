/*
 * What a path read or written during a run is: data, a checkpoint, part of
 * the run's environment (code, libraries, configuration), or noise. Also
 * the selection of environment variables a run records (never secrets).
 */
#ifndef CR_RECORDER_CLASSIFY_H
#define CR_RECORDER_CLASSIFY_H

#include <stddef.h>

#include <jansson.h>

typedef enum cr_class {
	CR_CLASS_IGNORE = 0, /* /proc, /sys, /dev, ... */
	CR_CLASS_DATA,
	CR_CLASS_CHECKPOINT,
	CR_CLASS_ENV
} cr_class;

/* The default checkpoint patterns (NULL-terminated). */
extern const char *const cr_default_checkpoint_globs[];

typedef struct cr_classifier cr_classifier;

/*
 * data_roots: absolute folders holding the data (none: everything read
 * outside system, interpreter and library locations is data). globs:
 * checkpoint patterns, matched against the file name, or against the whole
 * path when the pattern holds a '/' (none: the defaults).
 */
int cr_classifier_new(cr_classifier **out, const char *const *data_roots, size_t n_roots,
                      const char *const *globs, size_t n_globs);
void cr_classifier_free(cr_classifier *c);

/* A file the run read. */
cr_class cr_classify_read(const cr_classifier *c, const char *path);
/* A file the run wrote: CR_CLASS_CHECKPOINT when it matches a pattern, else CR_CLASS_IGNORE. */
cr_class cr_classify_written(const cr_classifier *c, const char *path);
/* Nonzero when path is under one of the data roots (or there are none). */
int cr_classify_under_roots(const cr_classifier *c, const char *path);

/* The roots and patterns in effect, as JSON arrays (new references). */
json_t *cr_classifier_roots_json(const cr_classifier *c);
json_t *cr_classifier_globs_json(const cr_classifier *c);

/* Nonzero when an environment variable's name suggests a secret. */
int cr_env_name_is_secret(const char *name);
/*
 * The variables a run records: those whose names are on the allow list
 * (PATH, PYTHON*, CUDA_*, OMP_*, TORCH_*, ...), minus anything that looks
 * secret. *redacted gets the names of allowed-looking variables withheld.
 */
json_t *cr_env_selection(char *const *envp, json_t **redacted);

#endif
