/*
 * append_events: append N synthetic "input" events to a fresh store through
 * the public library API, and print how fast that went.
 *
 * usage: append_events [-b BATCH] STORE_DIR N
 *
 *   STORE_DIR  created with cr_store_init(); must not hold a store yet
 *   N          events to append
 *   -b BATCH   cr_store_flush() after every BATCH events (one git commit
 *              each, as `cleanroom add` does with 4096); 0 (the default)
 *              leaves segmenting to the store, which commits a segment when
 *              it reaches CR_STORE_SEGMENT_EVENTS events or
 *              CR_STORE_SEGMENT_BYTES bytes, plus one final flush.
 *
 * Each event is what `cleanroom add` records for one file of an ML data
 * set: {"path":"/data/train/samples/7/0123456.npy","sha256":<random>,
 * "size":<1024..8192>,"time":<advancing>,"type":"input","v":1,"via":"add"}.
 * The random numbers come from a fixed-seed generator and the times are
 * synthetic, so every run appends byte-identical events.
 *
 * Output (one "key value" per line, for the scripts): events, batch,
 * seconds_open, seconds_append (the loop, with the flushes it does),
 * seconds_flush (the last flush), seconds_close (cr_store_free), and
 * events_per_second: N / (append + last flush), i.e. from the first append
 * until the last event is committed to git and the index.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/store.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

/* splitmix64: fast, and good enough for synthetic hashes. */
static uint64_t rng(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "append_events: %s failed (%d): %s\n", what, rc, cr_error_last());
	exit(1);
}

static void usage(void)
{
	fputs("usage: append_events [-b BATCH] STORE_DIR N\n", stderr);
	exit(2);
}

int main(int argc, char **argv)
{
	cr_store *store = NULL;
	unsigned long long n, batch = 0;
	struct timespec t = {.tv_sec = 1795000000, .tv_nsec = 0}; /* Nov 2026 */
	double t0, t1, t2, t3, t4;
	char path[64], *end;
	int c, rc;

	while ((c = getopt(argc, argv, "b:")) != -1) {
		if (c != 'b')
			usage();
		batch = strtoull(optarg, &end, 10);
		if (*end)
			usage();
	}
	if (argc - optind != 2)
		usage();
	n = strtoull(argv[optind + 1], &end, 10);
	if (*end || n == 0)
		usage();

	if ((rc = cr_store_init(argv[optind])) != 0)
		die("cr_store_init", rc);
	t0 = now_s();
	if ((rc = cr_store_open(&store, argv[optind], CR_STORE_WRITE)) != 0)
		die("cr_store_open", rc);
	t1 = now_s();

	for (unsigned long long i = 0; i < n; i++) {
		uint64_t r = rng();
		uint64_t sha[4] = {rng(), rng(), rng(), rng()};
		json_t *ev = NULL;
		int len;

		/* ~100 folders of data; file numbers in order, like a sharded set. */
		len = snprintf(path, sizeof(path), "/data/train/samples/%u/%07llu.npy",
		               (unsigned)(r % 100), i);
		/* Files are read ~every 50 µs: a busy data loader. */
		t.tv_nsec += 40000 + (long)(r >> 40) % 20000;
		if (t.tv_nsec >= 1000000000) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000;
		}
		if ((rc = cr_event_new(&ev, "input")) != 0 ||
		    (rc = cr_event_set_path(ev, "path", path, (size_t)len)) != 0 ||
		    (rc = cr_event_set_hex(ev, "sha256", (const uint8_t *)sha, sizeof(sha))) != 0 ||
		    (rc = cr_event_set_int(ev, "size", 1024 + (int64_t)((r >> 8) % 7169))) != 0 ||
		    (rc = cr_event_set_time(ev, "time", &t)) != 0 ||
		    (rc = cr_event_set_str(ev, "via", "add")) != 0)
			die("building an event", rc);
		if ((rc = cr_store_append(store, ev, NULL)) != 0)
			die("cr_store_append", rc);
		json_decref(ev);
		if (batch && (i + 1) % batch == 0) {
			if ((rc = cr_store_flush(store)) != 0)
				die("cr_store_flush", rc);
		}
	}
	t2 = now_s();
	if ((rc = cr_store_flush(store)) != 0)
		die("cr_store_flush", rc);
	t3 = now_s();
	{
		cr_store_state st;

		cr_store_state_get(store, &st);
		if (st.size != n) {
			fprintf(stderr, "append_events: store holds %llu events, not %llu\n",
			        (unsigned long long)st.size, n);
			return 1;
		}
	}
	cr_store_free(store);
	t4 = now_s();

	printf("events %llu\n", n);
	printf("batch %llu\n", batch);
	printf("seconds_open %.6f\n", t1 - t0);
	printf("seconds_append %.6f\n", t2 - t1);
	printf("seconds_flush %.6f\n", t3 - t2);
	printf("seconds_close %.6f\n", t4 - t3);
	printf("events_per_second %.0f\n", (double)n / (t3 - t1));
	return 0;
}
