/*
 * libFuzzer target for the hook wire parsers (recorder/wire.c):
 * cr_wire_parse_record and cr_wire_parse_msg, both fed every input. The
 * first byte chooses which parser sees the input first (corpus files start
 * with 'R' or 'M'), the rest is the record or message. On success, every
 * byte the event points at is read, so ASan catches a length that escapes
 * the input.
 *
 *   clang -fsanitize=fuzzer,address,undefined -Iinclude -I. \
 *       tests/fuzz/fuzz_wire.c recorder/wire.c util/error.c -o fuzz_wire
 *   ./fuzz_wire -max_total_time=60 tests/fuzz/corpus/wire
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "recorder/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;

static void touch(const char *p, size_t n)
{
	uint8_t acc = 0;
	size_t i;

	if (!p && n)
		abort();
	for (i = 0; i < n; i++)
		acc ^= (uint8_t)p[i];
	sink ^= acc;
}

static void check(const cr_wire_event *ev, const uint8_t *buf, size_t len)
{
	const char *lo = (const char *)buf, *hi = (const char *)buf + len;

	touch(ev->path, ev->path_len);
	touch(ev->path2, ev->path2_len);
	touch(ev->argv, ev->argv_len);
	touch(ev->payload, ev->payload_len);
	/* Everything points inside the input, and argv ends with NUL. */
	if (ev->path && (ev->path < lo || ev->path + ev->path_len > hi))
		abort();
	if (ev->argv_len && ev->argv[ev->argv_len - 1] != '\0')
		abort();
	if (ev->path && memchr(ev->path, '\0', ev->path_len))
		abort();
	if (ev->path_len > CRW_PATH_MAX || ev->path2_len > CRW_PATH_MAX)
		abort();
	if (ev->passed_fd != -1)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cr_wire_event ev;
	uint8_t *copy;
	size_t n;

	if (size < 1)
		return 0;
	n = size - 1;
	/* An exact-size heap copy: any read past the end is an ASan report. */
	copy = malloc(n ? n : 1);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, n);
	if (data[0] == 'M') {
		if (cr_wire_parse_msg(copy, n, &ev) == 0)
			check(&ev, copy, n);
		if (cr_wire_parse_record(copy, n, &ev) == 0)
			check(&ev, copy, n);
	} else {
		if (cr_wire_parse_record(copy, n, &ev) == 0)
			check(&ev, copy, n);
		if (cr_wire_parse_msg(copy, n, &ev) == 0)
			check(&ev, copy, n);
	}
	if (!cr_error_last())
		abort();
	free(copy);
	return 0;
}
