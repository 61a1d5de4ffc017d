/*
 * A tiny unit-test harness: CHECK() records a failure and carries on,
 * REQUIRE() stops the current test. main() comes from TEST_MAIN().
 */
#ifndef CR_TEST_HARNESS_H
#define CR_TEST_HARNESS_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

/*
 * A private folder for the test's files under $CR_TMP (else /tmp), made on
 * first use and removed at exit: harness_tmp_path("x") is its file "x".
 * The returned path is overwritten by the next call.
 */
static char harness_tmp_dir[4096];

static inline int harness_rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path);
}

static inline void harness_tmp_cleanup(void)
{
	if (harness_tmp_dir[0])
		nftw(harness_tmp_dir, harness_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static inline const char *harness_tmp_path(const char *name)
{
	static char path[4096 + 256];
	const char *base;

	if (!harness_tmp_dir[0]) {
		base = getenv("CR_TMP");
		if (!base || !*base)
			base = "/tmp";
		snprintf(harness_tmp_dir, sizeof(harness_tmp_dir), "%s/cr-test-XXXXXX", base);
		if (!mkdtemp(harness_tmp_dir)) {
			perror(harness_tmp_dir);
			exit(2);
		}
		atexit(harness_tmp_cleanup);
	}
	snprintf(path, sizeof(path), "%s/%s", harness_tmp_dir, name);
	return path;
}

#endif
