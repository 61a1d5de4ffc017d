/*
 * Member manifests of data shards: a data file that is an archive (tar,
 * tar.gz, tar.zst, tar.bz2, zip: WebDataset-style shards) is listed
 * member by member (name, size, SHA-256) so that one sample can be traced
 * into a training run.
 *
 * The archive is read once, in one streaming pass through libarchive: the
 * raw bytes are hashed (the whole file's SHA-256) as they pass through the
 * read callback, the members' bytes as they are decompressed. The archive
 * is hostile input: member count, name length and total uncompressed bytes
 * (absolute, and relative to the compressed bytes read: compression bombs)
 * are capped, and a truncated or malformed archive is a clear error naming
 * the file. Nothing is ever extracted to disk.
 *
 * The manifest's JSON form (docs/formats/shards.md) is canonical event JSON
 * and its digest is the SHA-256 of that encoding.
 */
#ifndef CLEANROOM_SHARDS_H
#define CLEANROOM_SHARDS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cleanroom/hash.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default limits (cr_shard_opts: 0 means these). */
#define CR_SHARD_MAX_MEMBERS 1000000u      /* archive entries of any kind */
#define CR_SHARD_MAX_NAME    4096u         /* bytes of a member name or link target */
#define CR_SHARD_MAX_TOTAL   (1ull << 40)  /* uncompressed member bytes: 1 TiB */
#define CR_SHARD_MAX_RATIO   1000u         /* uncompressed / compressed bytes read ... */
#define CR_SHARD_RATIO_FLOOR (64ull << 20) /* ... checked once past 64 MiB uncompressed */

/* Bytes of a file's head cr_shard_probe wants (fewer for short files). */
#define CR_SHARD_PROBE_SIZE 4096u

typedef enum cr_shard_kind {
	CR_SHARD_FILE = 0, /* a regular file: size and sha256 are set */
	CR_SHARD_SYMLINK,  /* target set; no bytes, no hash */
	CR_SHARD_HARDLINK  /* target set (the member it links to); no bytes, no hash */
} cr_shard_kind;

typedef struct cr_shard_member {
	char *name; /* raw bytes as stored, NUL-terminated (never holds a NUL) */
	size_t name_len;
	cr_shard_kind kind;
	char *target; /* links: raw bytes, NUL-terminated; NULL for files */
	size_t target_len;
	uint64_t size; /* bytes of the member's content (0 for links) */
	uint8_t sha256[CR_SHA256_SIZE];
	int duplicate; /* an earlier member has the same name */
} cr_shard_member;

typedef struct cr_shard {
	char format[16];    /* "tar", "tar.gz", "tar.zst", "tar.bz2", "zip" */
	uint64_t file_size; /* bytes of the archive file */
	uint8_t file_sha256[CR_SHA256_SIZE];
	size_t n;
	cr_shard_member *members; /* in archive order */
	size_t n_duplicates;      /* members flagged duplicate */
	size_t n_skipped;    /* entries not listed: devices, fifos, sockets (not directories) */
	uint64_t total_size; /* sum of the members' sizes */
	uint8_t digest[CR_SHA256_SIZE]; /* SHA-256 of cr_shard_json()'s canonical bytes */
} cr_shard;

/* Limits for cr_shard_read_ext; a zero field takes the default above. */
typedef struct cr_shard_opts {
	uint64_t max_members;
	uint64_t max_name;
	uint64_t max_total;
	uint64_t max_ratio;
	uint64_t ratio_floor;
} cr_shard_opts;

/*
 * 1 when the head of a file (its first n bytes, CR_SHARD_PROBE_SIZE wanted)
 * is a shard cleanroom lists: a tar archive (header checksum), plain or
 * compressed with gzip, zstd or bzip2 (the compressed head is inflated
 * in memory to see the tar header), or a zip archive (local file header).
 * Decided by content, never by name alone: name (may be NULL) only breaks a
 * tie for an empty tar. Note that a PyTorch checkpoint is a zip too: which
 * files are data is the caller's decision.
 */
int cr_shard_probe(const uint8_t *head, size_t n, const char *name);

/*
 * Read the archive open at fd (from offset 0 with pread; the descriptor's
 * offset is not used) and fill *out (free with cr_shard_free). name is for
 * messages. Errors: CR_EINVAL (message naming the file and the problem) for
 * anything that is not a well-formed archive of a listed format, a
 * truncated archive, an encrypted member, or a limit exceeded; CR_EIO for
 * read errors; CR_ENOMEM.
 */
int cr_shard_read(int fd, const char *name, cr_shard **out);
int cr_shard_read_ext(int fd, const char *name, const cr_shard_opts *opts, cr_shard **out);

void cr_shard_free(cr_shard *s);

/*
 * The member manifest as JSON (docs/formats/shards.md):
 * {"format":F,"members":[{"name"|"name_b64","sha256","size"} |
 *   {"kind":"symlink"|"hardlink","name"|"name_b64","target"|"target_b64"}
 *   (each [,"duplicate":true]) ...],"sha256":FILE,"size":FILE_BYTES
 *  [,"skipped":N],"type":"shard_manifest","v":1}. *out is the caller's.
 * Its canonical encoding (cr_event_encode) is what s->digest covers.
 */
int cr_shard_json(const cr_shard *s, json_t **out);

#ifdef __cplusplus
}
#endif
#endif
