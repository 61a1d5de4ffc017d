/*
 * libFuzzer target for the bundle's attestation and anchor members: every
 * input is given to the DSSE envelope verifier (a fixed Ed25519 key whose
 * envelope of a real statement is in the corpus, so the fuzzer reaches the
 * signature check), to the attestation statement parser, and to the
 * anchor.json checker (both against a fixed seal note signed by that key;
 * the corpus holds the matching statement and anchor.json).
 *
 * Any input is accepted or rejected with CR_EINVAL/CR_EVERIFY and a
 * message; an accepted envelope yields its payload.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "cleanroom/anchor.h"
#include "cleanroom/attest.h"
#include "cleanroom/dsse.h"
#include "cleanroom/error.h"
#include "cleanroom/seal.h"

/* The seal of the unit test's store (tests/unit/test_attest.c), signed by the fixed key. */
#define FUZZ_BODY     "cleanroom.local/test\n12\n4gBUQhYqlBecRWIkopnyzmBC48O/s0VkDLoBsbfr5hQ=\n"
#define FUZZ_KEY_NAME "fuzz.example/key"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static EVP_PKEY *key;
static char *note;
static size_t note_len;

static void setup(void)
{
	uint8_t seed[32];

	for (int i = 0; i < 32; i++)
		seed[i] = (uint8_t)(i + 1);
	key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, seed, sizeof(seed));
	if (!key ||
	    cr_note_sign(&note, &note_len, FUZZ_BODY, strlen(FUZZ_BODY), FUZZ_KEY_NAME, key) != 0)
		abort();
}

/* A rejection must be one of the documented codes and say why. */
static void rejected(int rc)
{
	if (rc != CR_EINVAL && rc != CR_EVERIFY && rc != CR_ENOMEM)
		abort();
	if (!cr_error_last()[0])
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cr_attest_checker *c = NULL;
	char *payload = NULL;
	size_t payload_len = 0;
	int rc, published = -1;

	if (!key)
		setup();
	cr_error_clear();
	rc = cr_dsse_verify(&payload, &payload_len, data, size, CR_DSSE_INTOTO_TYPE, key);
	if (rc == 0) {
		if (!payload || payload[payload_len] != '\0')
			abort();
	} else {
		if (payload)
			abort();
		rejected(rc);
	}
	free(payload);

	cr_error_clear();
	rc = cr_attest_checker_new(&c, (const char *)data, size, note, note_len);
	if (rc == 0) {
		/* No events: a statement of an empty log passes, any other must not. */
		rc = cr_attest_checker_finish(c);
		if (rc != 0)
			rejected(rc);
		cr_attest_checker_free(c);
	} else {
		if (c)
			abort();
		rejected(rc);
	}

	cr_error_clear();
	rc = cr_anchor_check(data, size, note, note_len, &published);
	if (rc == 0 && published != 0 && published != 1)
		abort();
	if (rc != 0)
		rejected(rc);
	return 0;
}
