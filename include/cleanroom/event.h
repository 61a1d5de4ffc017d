/*
 * The event model: one fact, one leaf of the Merkle tree.
 *
 * An event is a JSON object held as a jansson json_t while it is built or
 * read, and written as canonical JSON (docs/formats/events.md): keys sorted
 * by UTF-16 code units, no insignificant whitespace, UTF-8, RFC 8785 string
 * escapes, integers only (|n| <= 2^53 - 1). Every event carries "v" (schema
 * version) and "type". The canonical bytes are the leaf; they never contain
 * a raw newline, so a segment is the leaves joined by "\n".
 */
#ifndef CLEANROOM_EVENT_H
#define CLEANROOM_EVENT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The schema version this build writes. */
#define CR_EVENT_VERSION 1
/* Largest integer an event may hold (2^53 - 1, exact in IEEE doubles). */
#define CR_EVENT_INT_MAX 9007199254740991LL
/* Largest encoded event accepted by the parser. */
#define CR_EVENT_MAX_SIZE (16u * 1024 * 1024)

struct cr_buf;

/* A new event {"type": type, "v": CR_EVENT_VERSION}. *out is the caller's (json_decref). */
int cr_event_new(json_t **out, const char *type);

/* Append the canonical encoding of ev (no trailing newline) to out. */
int cr_event_encode(const json_t *ev, struct cr_buf *out);
/* Append one JSON string as cr_event_encode writes it (CR_EINVAL if not UTF-8). */
int cr_event_encode_string(struct cr_buf *out, const char *s, size_t len);

/*
 * Parse one encoded event. CR_EINVAL with a message when it is not JSON, not
 * an object, lacks "v"/"type", holds a real number or an integer out of
 * range, or is not in canonical form (the same bytes must re-encode).
 */
int cr_event_parse(json_t **out, const void *data, size_t len);

/* The event's "type" string, or "" when absent. Borrowed from ev. */
const char *cr_event_type(const json_t *ev);

/*
 * Store a path losslessly under key: as a string when it is valid UTF-8,
 * otherwise as key + "_b64" holding the base64 of the raw bytes.
 */
int cr_event_set_path(json_t *ev, const char *key, const char *path, size_t len);

/* Read back what cr_event_set_path stored (raw bytes, NUL-terminated). CR_ENOTFOUND if absent. */
int cr_event_get_path(const json_t *ev, const char *key, struct cr_buf *out);

/* Set key to a digest as lowercase hex. */
int cr_event_set_hex(json_t *ev, const char *key, const uint8_t *data, size_t n);

/* Set key to an RFC 3339 UTC time with microseconds ("2026-01-02T03:04:05.000006Z"). */
int cr_event_set_time(json_t *ev, const char *key, const struct timespec *ts);

/* Set key to an integer, CR_ERANGE beyond CR_EVENT_INT_MAX. */
int cr_event_set_int(json_t *ev, const char *key, int64_t value);

/* Set key to a string (must be valid UTF-8: CR_EINVAL otherwise). */
int cr_event_set_str(json_t *ev, const char *key, const char *value);

#ifdef __cplusplus
}
#endif
#endif
