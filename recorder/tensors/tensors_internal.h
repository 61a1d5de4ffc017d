/*
 * Internal interface between the tensor manifest engine (tensors.c) and the
 * format readers (safetensors.c, pytorch.c, gguf.c, onnx.c).
 *
 * A reader parses its format's metadata, declares every tensor with
 * cr_tpass_add (name, dtype, shape, member, offset, length), calls
 * cr_tpass_begin once, and then hands over bytes:
 *   - cr_tpass_file: every byte of the file, in order from offset 0, exactly
 *     once (the whole file's SHA-256 is computed over these when asked);
 *   - cr_tpass_feed: bytes of a member (NULL = the file itself) at a position;
 *     the engine routes them to the hash (and delta) of every tensor whose
 *     range they overlap. Each tensor must receive its bytes in increasing
 *     order without gaps; ranges of different tensors may overlap or be equal
 *     (shared storages, tied weights). Equal ranges are hashed once; partly
 *     overlapping ones each, up to 4x the bytes read + 64 MiB in all, beyond
 *     which the feed fails with CR_EINVAL ("too many overlapping tensors").
 * For a plain file layout (tensors at file offsets) cr_tpass_stream_fd does
 * both in one sequential read. When the reader's read() returns 0 the engine
 * finishes the pass (cr_tpass_end: a reader may call it itself, it runs
 * once): every tensor must have got all of its bytes and every byte of the
 * file must have been handed over, else the manifest is refused.
 *
 * Tensor names must be unique within a manifest (cr_tpass_begin refuses
 * duplicates), valid UTF-8 and free of NUL; dimensions at most 2^53 - 1;
 * offset + length at most 2^53 - 1 and, for member NULL, within the file.
 * Bytes fed before cr_tpass_begin are refused; bytes of a tensor that has
 * them already are ignored; a gap is an error in the file (CR_EINVAL).
 *
 * Readers never trust the input: every length, offset, count and dimension
 * is checked before use, and an error names the file (pass->name) and what
 * is wrong (cr_error_set(CR_EINVAL, ...)).
 */
#ifndef CR_RECORDER_TENSORS_INTERNAL_H
#define CR_RECORDER_TENSORS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/tensors.h"

typedef struct cr_tpass cr_tpass;

/* The file's name for messages ("<fd>" when none was given). */
const char *cr_tpass_name(const cr_tpass *p);
/* The file's size (from fstat before reading). */
uint64_t cr_tpass_size(const cr_tpass *p);

/*
 * Declare a tensor. t->name and t->member are copied; t->sha256 is ignored.
 * dtype must be set; fkind is derived from dtype when left CR_FLOAT_NONE.
 * CR_EINVAL for ndim > CR_TENSOR_MAX_DIMS, a name longer than
 * CR_TENSOR_MAX_NAME, more than CR_TENSOR_MAX_COUNT tensors, or a length
 * that disagrees with a plain dtype's element size times the shape.
 */
int cr_tpass_add(cr_tpass *p, const cr_tensor *t);

/* All tensors are declared: set up hashing and the delta. */
int cr_tpass_begin(cr_tpass *p);

/* Bytes of the file in order from offset 0 (each byte exactly once). */
int cr_tpass_file(cr_tpass *p, const void *data, size_t n);

/* Bytes at pos within member (NULL: the file itself). */
int cr_tpass_feed(cr_tpass *p, const char *member, uint64_t pos, const void *data, size_t n);

/* Read the file from offset 0 to its end through both of the above. */
int cr_tpass_stream_fd(cr_tpass *p, int fd);

/* Finish the pass (see above); idempotent. */
int cr_tpass_end(cr_tpass *p);

/* A note for the manifest (e.g. "external data file weights.bin"); appended with "; ". */
int cr_tpass_note(cr_tpass *p, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 2, 3)))
#endif
	;

/* pread exactly n bytes at off, CR_EINVAL ("truncated") when the file ends first. */
int cr_tpass_pread(cr_tpass *p, int fd, void *buf, size_t n, uint64_t off);

/* A format reader. */
typedef struct cr_tensor_reader {
	const char *format;
	/* 1 when the first bytes (up to 64, fewer for short files) look like this format. */
	int (*probe)(const uint8_t *head, size_t n, const char *name);
	/* Parse fd (size cr_tpass_size(p)), declare tensors, begin, hand over all bytes. */
	int (*read)(cr_tpass *p, int fd);
} cr_tensor_reader;

/*
 * cr_manifest_read with a given reader instead of detection (NULL: detect).
 * For tests and callers that know the format; same contract otherwise.
 */
int cr_manifest_read_with(int fd, const cr_manifest_opts *opts, const cr_tensor_reader *reader,
                          cr_manifest **out, cr_delta **delta_out, uint64_t **base_offsets_out);

extern const cr_tensor_reader cr_reader_safetensors;
extern const cr_tensor_reader cr_reader_pytorch;
extern const cr_tensor_reader cr_reader_gguf;
extern const cr_tensor_reader cr_reader_onnx;

#endif
