/*
 * libFuzzer target for the seal parsers: the signed-note verifier (with a
 * fixed verifier key, sum.golang.org's, whose real checkpoint is in the
 * corpus so the fuzzer reaches the signature check), the seal body
 * (tlog-checkpoint) parser and the verifier-key parser. Any input is either
 * accepted or rejected cleanly with CR_EINVAL/CR_EVERIFY and a message;
 * what is accepted must round-trip.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/seal.h"

#define FUZZ_VKEY "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_body(const char *text, size_t len)
{
	cr_seal_body body;
	char *again = NULL;
	size_t n = 0;

	if (cr_seal_body_parse(&body, text, len) != 0) {
		if (body.origin || body.extensions || !cr_error_last()[0])
			abort();
		return;
	}
	/* Formatting what was parsed gives the input back, extension lines aside
	 * (the formatter refuses origins longer than a store would make). */
	if (cr_seal_body_format(&again, &n, body.origin, body.size, body.root) == 0) {
		if (n + strlen(body.extensions) != len || memcmp(again, text, n) != 0 ||
		    memcmp(body.extensions, text + n, len - n) != 0)
			abort();
		free(again);
	}
	cr_seal_body_free(&body);
}

static void check_vkey(const char *s, size_t len)
{
	char text[CR_VKEY_MAX];
	cr_vkey vk, again;
	size_t n;

	if (cr_vkey_parse(&vk, s, len) != 0)
		return;
	/* Re-parsing the canonical form gives the same key (hex case may differ). */
	n = cr_vkey_format(&vk, text);
	if (n != len || cr_vkey_parse(&again, text, n) != 0 || memcmp(&vk, &again, sizeof(vk)) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static cr_vkey vk;
	static int ready;
	const char *s = (const char *)data;
	size_t text_len = 1;
	int rc;

	if (!ready) {
		if (cr_vkey_parse(&vk, FUZZ_VKEY, strlen(FUZZ_VKEY)) != 0)
			abort();
		ready = 1;
	}
	cr_error_clear();
	rc = cr_note_verify(s, size, &vk, &text_len);
	if (rc == 0) {
		if (text_len == 0 || text_len >= size || s[text_len - 1] != '\n')
			abort();
		check_body(s, text_len);
	} else if ((rc != CR_EINVAL && rc != CR_EVERIFY) || text_len != 0 || !cr_error_last()[0]) {
		abort();
	}
	check_body(s, size);
	check_vkey(s, size);
	return 0;
}
