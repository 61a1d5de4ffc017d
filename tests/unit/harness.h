/*
 * A tiny unit-test harness: CHECK() records a failure and carries on,
 * REQUIRE() stops the current test. main() comes from TEST_MAIN().
 */
#ifndef CR_TEST_HARNESS_H
#define CR_TEST_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int harness_failures;
static int harness_checks;

#define CHECK(cond)                                                              \
	do {                                                                         \
		harness_checks++;                                                        \
		if (!(cond)) {                                                           \
			harness_failures++;                                                  \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
		}                                                                        \
	} while (0)

#define REQUIRE(cond)                                                            \
	do {                                                                         \
		harness_checks++;                                                        \
		if (!(cond)) {                                                           \
			harness_failures++;                                                  \
			fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
			return;                                                              \
		}                                                                        \
	} while (0)

#define CHECK_MEM(a, b, n) CHECK(memcmp((a), (b), (n)) == 0)

typedef void (*harness_fn)(void);
struct harness_case {
	const char *name;
	harness_fn fn;
};

#define TEST_MAIN(...)                                                           \
	int main(void)                                                               \
	{                                                                            \
		struct harness_case cases[] = {__VA_ARGS__};                             \
		size_t i;                                                                \
		for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {                 \
			int before = harness_failures;                                       \
			cases[i].fn();                                                       \
			fprintf(stderr, "%-40s %s\n", cases[i].name,                         \
			        harness_failures == before ? "ok" : "FAILED");               \
		}                                                                        \
		fprintf(stderr, "%d checks, %d failures\n", harness_checks, harness_failures); \
		return harness_failures ? 1 : 0;                                         \
	}
#define TEST(fn) {#fn, fn}

#endif
