/*
 * libFuzzer target for data-shard member manifests: any bytes, read as a
 * shard (tar, tar.gz/zst/bz2, zip), give a member manifest or CR_EINVAL,
 * never a crash, a leak or undefined behaviour; the probe never crashes
 * either. The input goes into a memfd, so nothing touches the disk. Limits
 * are small so that bombs are stopped quickly.
 *
 * A manifest is checked too: the file's SHA-256 and size are those of the
 * input, the members' sizes add up, the duplicate count matches the flags,
 * and the digest is the SHA-256 of the canonical JSON.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "cleanroom/shards.h"
#include "util/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	cr_shard_opts o;
	cr_shard *s = NULL;
	uint8_t h[CR_SHA256_SIZE];
	uint64_t total = 0;
	size_t dups = 0;
	cr_buf b = CR_BUF_INIT;
	json_t *j = NULL;
	int rc;

	if (fd < 0 && (fd = memfd_create("shard", MFD_CLOEXEC)) < 0)
		abort();
	if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
		abort();
	(void)cr_shard_probe(data, size < CR_SHARD_PROBE_SIZE ? size : CR_SHARD_PROBE_SIZE,
	                     "f.tar");
	memset(&o, 0, sizeof(o));
	o.max_members = 10000;
	o.max_total = 64u << 20;
	o.ratio_floor = 1u << 20;
	rc = cr_shard_read_ext(fd, "fuzz-shard", &o, &s);
	if (rc != 0) {
		if (rc != CR_EINVAL || s != NULL || !strstr(cr_error_last(), "fuzz-shard"))
			abort();
		cr_error_clear();
		return 0;
	}
	cr_sha256(h, data, size);
	if (s->file_size != size || memcmp(h, s->file_sha256, sizeof(h)) != 0)
		abort();
	for (size_t i = 0; i < s->n; i++) {
		const cr_shard_member *m = &s->members[i];

		if (!m->name || strlen(m->name) != m->name_len || m->name_len > CR_SHARD_MAX_NAME)
			abort();
		if (m->kind != CR_SHARD_FILE && (!m->target || m->size != 0))
			abort();
		total += m->size;
		dups += m->duplicate != 0;
	}
	if (total != s->total_size || dups != s->n_duplicates)
		abort();
	if (cr_shard_json(s, &j) != 0 || cr_event_encode(j, &b) != 0)
		abort();
	cr_sha256(h, b.ptr, b.len);
	if (memcmp(h, s->digest, sizeof(h)) != 0)
		abort();
	json_decref(j);
	cr_buf_free(&b);
	cr_shard_free(s);
	return 0;
}
