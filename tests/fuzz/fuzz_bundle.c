/*
 * libFuzzer target for the bundle verifier: any bytes, handed to
 * cr_verify_bundle as the bundle file, are verified or refused without a
 * crash, a leak or undefined behaviour, whatever the archive, compression
 * or members hold. The input goes into a memfd read back through
 * /proc/self/fd/N, so nothing touches the disk. No --key: the bundle's own
 * key.pub is used, so mutations of a valid corpus bundle reach the seal,
 * the events, the proofs, the attestation and the anchor checks.
 *
 * The verdict itself is checked too: the summary's counts must agree with
 * what was reported, and a verdict of "verified" must come with passing
 * checks only, among them the seal, the manifest and the events.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/verify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct tally {
	uint64_t checks, failures;
	int passed; /* PASSED_* bits: which essential checks reported a pass */
} tally;

enum { PASSED_SEAL = 1, PASSED_MANIFEST = 2, PASSED_EVENTS = 4 };

static void on_check(void *ctx, const char *check, int ok, const char *detail)
{
	tally *t = ctx;

	if (!check || !*check || !detail)
		abort();
	/* Details are printed to terminals and put in JSON: no control characters. */
	for (const unsigned char *p = (const unsigned char *)detail; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			abort();
	t->checks++;
	if (!ok)
		t->failures++;
	else if (strcmp(check, "seal") == 0)
		t->passed |= PASSED_SEAL;
	else if (strcmp(check, "manifest") == 0)
		t->passed |= PASSED_MANIFEST;
	else if (strcmp(check, "events") == 0)
		t->passed |= PASSED_EVENTS;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int fd = -1;
	char path[64];
	cr_verify_options o;
	cr_verify_summary sum;
	tally t = {0, 0, 0};
	int rc;

	if (fd < 0 && (fd = memfd_create("bundle", MFD_CLOEXEC)) < 0)
		abort();
	if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != (ssize_t)size))
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	memset(&o, 0, sizeof(o));
	o.bundle = path;
	rc = cr_verify_bundle(&o, on_check, &t, &sum);
	if (t.checks != sum.checks || t.failures != sum.failures)
		abort();
	if (rc == 0 && (sum.failures != 0 ||
	                t.passed != (PASSED_SEAL | PASSED_MANIFEST | PASSED_EVENTS)))
		abort(); /* verified, yet something failed, or the seal, manifest or events went unchecked */
	if (rc == CR_EVERIFY && sum.failures == 0)
		abort(); /* failed, yet no check says why */
	cr_error_clear();
	return 0;
}
