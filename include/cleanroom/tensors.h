/*
 * Tensor manifests and weight deltas of checkpoints.
 *
 * A tensor manifest lists every tensor of a checkpoint: name, dtype, shape,
 * where its bytes lie, and the SHA-256 of those bytes. One reader per format
 * (safetensors, PyTorch zip, GGUF, ONNX) sits behind cr_manifest_read();
 * anything else falls back to a whole-file manifest, said plainly in
 * m->note. Every reader treats its input as hostile: each length and offset
 * is checked before use and a bad file gives CR_EINVAL with a message naming
 * what is wrong, never a crash.
 *
 * The bytes of a checkpoint are read once: the same pass yields the tensor
 * hashes, optionally the whole file's SHA-256, and optionally the delta from
 * a previous checkpoint (whose float tensors are kept in a "base" file).
 *
 * The manifest's JSON form (docs/formats/tensors.md) is canonical event JSON
 * and its digest is the SHA-256 of that encoding.
 */
#ifndef CLEANROOM_TENSORS_H
#define CLEANROOM_TENSORS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cleanroom/hash.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CR_TENSOR_MAX_DIMS 8
/* Readers refuse files declaring more tensors than this. */
#define CR_TENSOR_MAX_COUNT 1000000u
/* Longest tensor name accepted (bytes). */
#define CR_TENSOR_MAX_NAME 4096u

/* Element kinds a numeric delta is computed for. */
typedef enum cr_float_kind {
	CR_FLOAT_NONE = 0,
	CR_FLOAT_F64,
	CR_FLOAT_F32,
	CR_FLOAT_F16,
	CR_FLOAT_BF16
} cr_float_kind;

typedef struct cr_tensor {
	char *name;                 /* UTF-8; nested state dicts give dotted names */
	char dtype[16];             /* "F32", "BF16", "I64", "U8", "BOOL", "Q4_K", ... */
	cr_float_kind fkind;        /* set for F64/F32/F16/BF16 */
	uint32_t ndim;
	uint64_t shape[CR_TENSOR_MAX_DIMS];
	char *member;               /* the container member holding the bytes (PyTorch
	                               "archive/data/0", ONNX external data file), or NULL
	                               for the file itself */
	uint64_t offset;            /* first byte, within member (or the file) */
	uint64_t length;            /* bytes */
	uint8_t sha256[CR_SHA256_SIZE];
} cr_tensor;

typedef struct cr_manifest {
	char format[16];            /* "safetensors", "pytorch", "gguf", "onnx", "file" */
	char *note;                 /* why the whole file stands in for tensors, or NULL */
	uint64_t file_size;
	int have_file_sha256;
	uint8_t file_sha256[CR_SHA256_SIZE];
	size_t n;
	cr_tensor *tensors;         /* in the file's own order */
	uint8_t digest[CR_SHA256_SIZE]; /* SHA-256 of cr_manifest_json()'s canonical bytes */
} cr_manifest;

/* Numeric size of one tensor's update (float tensors of equal dtype and shape). */
typedef struct cr_tensor_delta {
	const char *name;           /* borrowed from the new manifest */
	int changed;                /* hashes differ */
	int numeric;                /* the fields below are meaningful */
	double l2;                  /* ||new - old||_2 */
	double max_abs;             /* max |new - old| */
	double old_l2;              /* ||old||_2; rel = l2 / old_l2 (0 when old_l2 == 0) */
	int nonfinite;              /* a NaN or infinity met in either tensor */
	uint8_t old_sha256[CR_SHA256_SIZE];
	uint8_t new_sha256[CR_SHA256_SIZE];
} cr_tensor_delta;

/*
 * The previous checkpoint a delta is computed against: its manifest and a
 * base file holding its float tensors' bytes (written by an earlier
 * cr_manifest_read with opts.base_out_fd, or the checkpoint file itself
 * when base_is_file is set: tensors are then read at their own offsets,
 * which works for safetensors and GGUF files, and any format when the base
 * was written by this module).
 */
typedef struct cr_delta_base {
	const cr_manifest *manifest;
	int fd;
	int base_is_file;
	/* Internal: where each tensor of manifest lies in the base file (set by
	   cr_manifest_read when it writes a base; NULL means base_is_file). */
	uint64_t *offsets;
} cr_delta_base;

typedef struct cr_manifest_opts {
	const char *name;           /* the file's name: error messages, format guess */
	int want_file_sha256;       /* also compute the whole file's SHA-256 */
	const cr_delta_base *prev;  /* compute the delta against this, or NULL */
	int base_out_fd;            /* >= 0: write this checkpoint's float tensors here
	                               (an empty, writable file) for the next delta;
	                               -1 otherwise */
	const char *format;         /* force a format ("safetensors", ...), or NULL to detect */
} cr_manifest_opts;

/* Options with nothing asked: no file hash, no delta, no base (base_out_fd -1). */
#define CR_MANIFEST_OPTS_INIT {NULL, 0, NULL, -1, NULL}

/* The result of a delta computation against opts.prev. */
typedef struct cr_delta {
	size_t n_added, n_removed, n_changed, n_unchanged;
	char **added;               /* names (borrowed from the new manifest) */
	char **removed;             /* names (borrowed from the previous manifest) */
	cr_tensor_delta *changed;   /* n_changed entries, in the new manifest's order */
	double l2;                  /* ||new - old||_2 over every tensor compared numerically */
	double old_l2;              /* ||old||_2 over the same tensors (changed or not) */
} cr_delta;

/*
 * Read the checkpoint open at fd (read from offset 0 with pread; fd's
 * position is not used) and fill *out (free with cr_manifest_free). opts may
 * be NULL (CR_MANIFEST_OPTS_INIT); a zeroed struct means base_out_fd 0, so
 * start from the macro. When opts->prev is set, *delta_out (may be NULL
 * otherwise) receives the delta (free with cr_delta_free before either
 * manifest: it borrows their names). When opts->base_out_fd >= 0,
 * *base_offsets_out receives a malloc'd array of m->n offsets (UINT64_MAX
 * for tensors not kept: all but F64/F32/F16/BF16) for a later cr_delta_base.
 *
 * Errors: CR_EINVAL (with the file's name and what is wrong) for a malformed
 * file of a recognised format or a file that is not regular; CR_EIO for read
 * errors and a file that changed while it was read; CR_ENOMEM. A file of no
 * recognised format is not an error: format "file", one tensor "(file)"
 * covering every byte, and a note saying why.
 */
int cr_manifest_read(int fd, const cr_manifest_opts *opts, cr_manifest **out,
                     cr_delta **delta_out, uint64_t **base_offsets_out);

void cr_manifest_free(cr_manifest *m);
void cr_delta_free(cr_delta *d);

/* Compute the delta of two checkpoint files (both read once). */
int cr_delta_files(int old_fd, const char *old_name, int new_fd, const char *new_name,
                   cr_manifest **old_m, cr_manifest **new_m, cr_delta **out);

/*
 * The manifest as JSON (docs/formats/tensors.md):
 * {"format":F,[,"note":N],"size":BYTES,"tensors":[{"dtype","length"[,"member"],"name",
 *  "offset","sha256","shape"}...],"type":"tensor_manifest","v":1}; *out is the
 * caller's. Its canonical encoding (cr_event_encode) is what m->digest covers.
 * cr_manifest_from_json parses it back (for replay of a recorded manifest),
 * checking every field, and recomputes the digest; the file hash is not part
 * of the JSON (have_file_sha256 is 0 in the result).
 */
int cr_manifest_json(const cr_manifest *m, json_t **out);
int cr_manifest_from_json(const json_t *j, cr_manifest **out);

/*
 * The delta as JSON: {"added":[..],"changed":[{"l2":"..","max_abs":"..","name",
 * "new":hex,"old":hex,"rel":".."[,"nonfinite":true]}..],"l2":"..","rel":"..",
 * "removed":[..],"unchanged":N}. l2/max_abs/rel of a changed tensor are present
 * only when it was compared numerically. Real numbers are decimal strings
 * ("%.9e") since events hold integers only.
 */
int cr_delta_json(const cr_delta *d, json_t **out);

/* The dtype's element size in bytes for plain types (0 for block-quantised or unknown). */
size_t cr_dtype_size(const char *dtype);

#ifdef __cplusplus
}
#endif
#endif
