/*
 * libFuzzer target for the ONNX reader: any bytes, read as an ONNX model,
 * give a tensor manifest or CR_EINVAL, never a crash, a leak or undefined
 * behaviour. The input goes into a memfd, so nothing touches the disk (a
 * memfd has no folder, so external data is never opened).
 *
 * The manifest itself is checked: tensors lying in the file (member NULL)
 * must be inside it and hash to the SHA-256 of exactly those bytes; the
 * file's own SHA-256 must be right; the JSON form must build.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/hash.h"
#include "cleanroom/tensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	cr_manifest *m = NULL;
	uint8_t h[CR_SHA256_SIZE];
	json_t *j = NULL;
	int rc;

	if (fd < 0 && (fd = memfd_create("onnx", MFD_CLOEXEC)) < 0)
		abort();
	if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
		abort();
	o.name = "fuzz.onnx";
	o.format = "onnx";
	o.want_file_sha256 = 1;
	rc = cr_manifest_read(fd, &o, &m, NULL, NULL);
	if (rc != 0) {
		/* Malformed input is CR_EINVAL; anything else is a reader bug. */
		if (rc != CR_EINVAL || m != NULL || !strstr(cr_error_last(), "fuzz.onnx"))
			abort();
		cr_error_clear();
		return 0;
	}
	cr_sha256(h, data, size);
	if (!m->have_file_sha256 || memcmp(h, m->file_sha256, sizeof(h)) != 0)
		abort();
	for (size_t i = 0; i < m->n; i++) {
		const cr_tensor *t = &m->tensors[i];

		if (t->member)
			continue;
		if (t->offset > size || t->length > size - t->offset)
			abort();
		cr_sha256(h, data + t->offset, (size_t)t->length);
		if (memcmp(h, t->sha256, sizeof(h)) != 0)
			abort();
	}
	if (cr_manifest_json(m, &j) != 0)
		abort();
	json_decref(j);
	cr_manifest_free(m);
	return 0;
}
