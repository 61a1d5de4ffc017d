/*
 * The body shared by the tensor reader fuzz targets: define FUZZ_READER to
 * the reader under test, then include this file (one target per reader).
 */
#ifndef CR_FUZZ_TENSORS_H
#define CR_FUZZ_TENSORS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "recorder/tensors/tensors_internal.h"
#include "util/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int memfd_with(const uint8_t *data, size_t size)
{
	int fd = memfd_create("fuzz", MFD_CLOEXEC);
	size_t done = 0;

	if (fd < 0)
		abort();
	while (done < size) {
		ssize_t n = write(fd, data + done, size - done);

		if (n <= 0)
			abort();
		done += (size_t)n;
	}
	return fd;
}

static void check_manifest(const cr_manifest *m, size_t size)
{
	json_t *j = NULL;
	cr_manifest *back = NULL;

	if (m->file_size != size)
		abort();
	for (size_t i = 0; i < m->n; i++) {
		const cr_tensor *t = &m->tensors[i];

		if (!t->member && (t->offset > size || t->length > size - t->offset))
			abort();
		if (t->ndim > CR_TENSOR_MAX_DIMS)
			abort();
	}
	if (cr_manifest_json(m, &j) != 0)
		abort();
	if (cr_manifest_from_json(j, &back) != 0 ||
	    memcmp(back->digest, m->digest, sizeof(m->digest)) != 0)
		abort();
	cr_manifest_free(back);
	json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	cr_manifest *m = NULL, *m2 = NULL;
	cr_delta *d = NULL;
	uint64_t *offsets = NULL;
	int fd, bfd;

	fd = memfd_with(data, size);
	bfd = memfd_create("base", MFD_CLOEXEC);
	if (bfd < 0)
		abort();
	o.name = "fuzz";
	o.want_file_sha256 = 1;
	o.base_out_fd = bfd;
	if (cr_manifest_read_with(fd, &o, &FUZZ_READER, &m, NULL, &offsets) == 0) {
		cr_delta_base base;

		check_manifest(m, size);
		memset(&base, 0, sizeof(base));
		base.manifest = m;
		base.fd = bfd;
		base.offsets = offsets;
		o.base_out_fd = -1;
		o.want_file_sha256 = 0;
		o.prev = &base;
		if (cr_manifest_read_with(fd, &o, &FUZZ_READER, &m2, &d, NULL) != 0)
			abort(); /* the same bytes read the same way */
		if (d->n_changed || d->n_added || d->n_removed || d->n_unchanged != m->n)
			abort();
		{
			json_t *dj = NULL;

			if (cr_delta_json(d, &dj) != 0)
				abort();
			json_decref(dj);
		}
		/* and in place, as for a previous checkpoint file */
		cr_delta_free(d);
		d = NULL;
		base.fd = fd;
		base.base_is_file = 1;
		base.offsets = NULL;
		cr_manifest_free(m2);
		m2 = NULL;
		if (cr_manifest_read_with(fd, &o, &FUZZ_READER, &m2, &d, NULL) != 0)
			abort();
	} else if (cr_error_last()[0] == '\0') {
		abort(); /* every refusal says why */
	}
	cr_delta_free(d);
	cr_manifest_free(m);
	cr_manifest_free(m2);
	free(offsets);
	close(fd);
	close(bfd);
	cr_error_clear();
	return 0;
}

#endif
