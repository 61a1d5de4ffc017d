/*
 * libFuzzer target for the strict event parser: any input either parses
 * (and then re-encodes to exactly the same bytes) or is rejected cleanly;
 * paths read back from a parsed event never crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "util/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *ev = NULL;
	cr_buf b = CR_BUF_INIT;

	if (cr_event_parse(&ev, data, size) == 0) {
		if (cr_event_encode(ev, &b) != 0 || b.len != size || memcmp(b.ptr, data, size) != 0)
			abort(); /* canonical form must round-trip */
		cr_buf_clear(&b);
		(void)cr_event_get_path(ev, "path", &b);
		(void)cr_event_type(ev);
	}
	cr_buf_free(&b);
	json_decref(ev);
	return 0;
}
