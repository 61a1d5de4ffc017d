/*
 * The recorder's side of the hook wire (hooks/wire.h): listening, one
 * connection per traced process, its shared ring, and strict parsing of
 * every message and record (they come from the traced program and are
 * untrusted: every length is checked before use).
 */
#ifndef CR_RECORDER_WIRE_H
#define CR_RECORDER_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "hooks/wire.h"

/* Types beyond the ring record types (enum crw_rec_type). */
#define CR_WIRE_HELLO 100
#define CR_WIRE_WRITTEN 101
#define CR_WIRE_NOTE 102

/* One parsed message or record. Pointers borrow from the connection's buffers. */
typedef struct cr_wire_event {
	int type;             /* enum crw_rec_type or CR_WIRE_* */
	int32_t pid, tid, ppid;
	uint64_t time_ns;
	uint32_t flags;
	crw_file_id id;       /* OPEN, WRITTEN */
	int32_t fd;           /* OPEN: descriptor number in the traced process */
	const char *path;     /* OPEN, RENAME/LINK (old), UNLINK, TRUNCATE, EXEC, SPAWN,
	                         UNOBSERVED, WRITTEN, HELLO (executable) */
	size_t path_len;
	const char *path2;    /* RENAME/LINK: the new path */
	size_t path2_len;
	const char *argv;     /* EXEC, SPAWN, UNOBSERVED, HELLO: NUL-separated */
	size_t argv_len;
	const char *payload;  /* NOTE: JSON text */
	size_t payload_len;
	int64_t arg;          /* FORK: child pid; SPAWN: child pid; EXIT: status */
	uint64_t ring_pos;    /* socket messages: ring head when sent */
	int passed_fd;        /* WRITTEN: the received descriptor; the callback owns it
	                         (close it); -1 otherwise */
} cr_wire_event;

/* Return nonzero to stop; that value is passed up. */
typedef int (*cr_wire_fn)(void *ctx, const cr_wire_event *ev);

/* Parse one ring record (data[0..len) holds exactly one record). CR_EINVAL when malformed. */
int cr_wire_parse_record(const uint8_t *data, size_t len, cr_wire_event *out);
/* Parse one socket message (header + payload). CR_EINVAL when malformed. */
int cr_wire_parse_msg(const uint8_t *data, size_t len, cr_wire_event *out);

typedef struct cr_wire_conn cr_wire_conn;

/* Listen on a new SOCK_SEQPACKET socket at path (mode 0600). */
int cr_wire_listen(const char *path, int *out_fd);
/* Accept one connection (non-blocking fd). CR_ENOTFOUND when none is waiting. */
int cr_wire_accept(int listen_fd, cr_wire_conn **out);
int cr_wire_conn_fd(const cr_wire_conn *c);
/* The peer's pid from its HELLO (0 before it). */
int32_t cr_wire_conn_pid(const cr_wire_conn *c);
/*
 * Read every message waiting on the socket (never blocks), calling fn for
 * each. Before a message is passed on, ring records up to its ring_pos are
 * drained through fn, so fn sees one process's activity in order. HELLO maps
 * the ring. Returns 0, 1 when the peer closed (after draining the whole
 * ring), or a negative CR_E* code when the peer broke the protocol.
 */
int cr_wire_conn_read(cr_wire_conn *c, cr_wire_fn fn, void *ctx);
/* Drain every published ring record through fn. */
int cr_wire_conn_drain(cr_wire_conn *c, cr_wire_fn fn, void *ctx);
/* Records the process reported it could not write (ring full too long). */
uint64_t cr_wire_conn_dropped(const cr_wire_conn *c);
void cr_wire_conn_free(cr_wire_conn *c);

#endif
