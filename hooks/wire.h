/*
 * The wire format between the preload hook (hooks/preload, libc only) and
 * the recorder (recorder/record.c). This header is all the two share.
 *
 * Transport. The recorder listens on a Unix SOCK_SEQPACKET socket whose
 * path is in $CLEANROOM_SOCKET. Each process of the run connects once, on
 * its first report, and sends CRW_MSG_HELLO carrying (SCM_RIGHTS) a memfd
 * of CRW_RING_BYTES bytes that both map MAP_SHARED: the ring. Frequent,
 * small records (opens, renames, forks, execs ...) go into the ring with no
 * system call; the recorder drains every ring on a short timer and when a
 * connection closes, so a process killed by SIGKILL loses nothing it wrote
 * to its ring. A file closed after writing travels as CRW_MSG_WRITTEN over
 * the socket with the open descriptor attached, so the recorder hashes the
 * exact inode that was written, whatever happens to the path afterwards.
 *
 * Everything here is read by the recorder as untrusted input: every length
 * is checked against the record and the ring before use.
 *
 * All integers are native-endian (same machine); all records are padded to
 * a multiple of 8 bytes.
 */
#ifndef CLEANROOM_WIRE_H
#define CLEANROOM_WIRE_H

#include <stdint.h>

#define CRW_VERSION 1

/* Environment the recorder sets for the run and the hook keeps alive. */
#define CRW_ENV_SOCKET "CLEANROOM_SOCKET"   /* path of the recorder's socket */
#define CRW_ENV_RUN "CLEANROOM_RUN"         /* run id (UUIDv7 text) */
#define CRW_ENV_PRELOAD "CLEANROOM_PRELOAD" /* absolute path of the hook library */

#define CRW_PATH_MAX 4096 /* longest path a record carries */
#define CRW_ARGV_MAX 4096 /* bytes of argv kept per exec/hello (NUL-separated) */

/* ---- socket messages -------------------------------------------------- */

enum crw_msg_type {
	CRW_MSG_HELLO = 1,   /* first message of a connection; memfd attached */
	CRW_MSG_WRITTEN = 2, /* a file closed after writing; its fd attached */
	CRW_MSG_NOTE = 3     /* explicit mark from hooks/python: JSON payload */
};

/* Flags of CRW_MSG_HELLO. */
#define CRW_HELLO_AFTER_EXEC 0x1 /* this image started by exec (not a fork) */

typedef struct crw_msg {
	uint32_t magic;   /* CRW_MAGIC */
	uint16_t version; /* CRW_VERSION */
	uint16_t type;    /* enum crw_msg_type */
	int32_t pid;
	int32_t ppid;
	uint64_t time_ns; /* CLOCK_REALTIME */
	uint32_t flags;
	uint32_t payload_len; /* bytes following this header */
	uint64_t ring_pos;    /* the ring's head when this was sent: records
	                         before it happened before this message */
} crw_msg;

#define CRW_MAGIC 0x43524d31u /* "CRM1" */

/*
 * HELLO payload: the executable path (NUL-terminated) followed by argv as
 * NUL-separated strings, at most CRW_ARGV_MAX bytes (cut at a string end).
 *
 * WRITTEN payload: crw_written followed by the path (path_len bytes, no NUL).
 */
typedef struct crw_file_id {
	uint64_t dev;
	uint64_t ino;
	uint64_t size;
	int64_t mtime_ns;
	int64_t ctime_ns;
} crw_file_id;

#define CRW_WRITTEN_MMAP 0x1     /* written through a shared writable mapping */
#define CRW_WRITTEN_UNLINKED 0x2 /* no name left (st_nlink 0): path is the last
                                    one, the kernel's " (deleted)" removed */

typedef struct crw_written {
	crw_file_id id; /* fstat at close */
	uint32_t flags;
	uint32_t path_len;
} crw_written;

/* ---- the ring ---------------------------------------------------------- */

#define CRW_RING_BYTES (1u << 20) /* whole memfd: control page + data */
#define CRW_RING_CONTROL 4096
#define CRW_RING_DATA (CRW_RING_BYTES - CRW_RING_CONTROL)

/*
 * The control page. Writers (the process's threads, serialised by a
 * process-private lock) write a record at data[head % CRW_RING_DATA] and
 * then publish it by storing head + len with release order. The reader
 * consumes up to head (acquire) and stores tail. A record never wraps: a
 * writer that would cross the end writes a CRW_REC_PAD record to the end
 * first. A writer that finds no room waits for the reader; after
 * CRW_RING_WAIT_NS it drops the record and counts it in `dropped`, which the
 * recorder reports as unobserved activity.
 */
typedef struct crw_ring {
	uint32_t magic; /* CRW_RING_MAGIC */
	uint32_t version;
	uint64_t data_bytes;      /* CRW_RING_DATA */
	uint64_t head;            /* written by the process (atomic) */
	uint8_t pad1[64 - 24];
	uint64_t tail;            /* written by the recorder (atomic) */
	uint8_t pad2[64 - 8];
	uint64_t dropped;         /* records the process could not write (atomic) */
} crw_ring;

#define CRW_RING_MAGIC 0x43525231u /* "CRR1" */
#define CRW_RING_WAIT_NS (10ull * 1000000000ull)

enum crw_rec_type {
	CRW_REC_PAD = 0,        /* skip len bytes */
	CRW_REC_OPEN = 1,       /* a regular file opened (crw_open + path) */
	CRW_REC_RENAME = 2,     /* crw_two_paths: old, new */
	CRW_REC_LINK = 3,       /* crw_two_paths: existing, new name */
	CRW_REC_UNLINK = 4,     /* crw_path */
	CRW_REC_TRUNCATE = 5,   /* crw_path: truncate(2) by name */
	CRW_REC_FORK = 6,       /* crw_proc: child pid (fork, vfork, _Fork, clone) */
	CRW_REC_EXEC = 7,       /* crw_exec: about to exec path with argv */
	CRW_REC_SPAWN = 8,      /* crw_exec: posix_spawn(p) child pid, path, argv */
	CRW_REC_UNOBSERVED = 9, /* crw_exec: an exec the hook cannot follow, and why */
	CRW_REC_EXIT = 10       /* crw_proc: the process is exiting (status in arg) */
};

/* Every record starts with this. len includes it and is a multiple of 8. */
typedef struct crw_rec {
	uint32_t len;
	uint16_t type;
	uint16_t flags;
	int32_t pid;
	int32_t tid;
	uint64_t time_ns; /* CLOCK_REALTIME */
} crw_rec;

/* Open flags reported (CRW_REC_OPEN flags field). */
#define CRW_OPEN_READ 0x1
#define CRW_OPEN_WRITE 0x2
#define CRW_OPEN_CREATE 0x4
#define CRW_OPEN_TRUNC 0x8

typedef struct crw_open {
	crw_rec h;
	crw_file_id id; /* fstat right after the open succeeded */
	int32_t fd;
	uint32_t path_len; /* absolute path follows */
} crw_open;

typedef struct crw_path {
	crw_rec h;
	uint32_t path_len;
	uint32_t reserved;
} crw_path;

typedef struct crw_two_paths {
	crw_rec h;
	uint32_t old_len; /* old path follows, then new path */
	uint32_t new_len;
} crw_two_paths;

typedef struct crw_proc {
	crw_rec h;
	int64_t arg; /* child pid (FORK) or exit status (EXIT) */
} crw_proc;

/* Why an exec cannot be followed (flags of CRW_REC_UNOBSERVED). */
#define CRW_UNOBS_STATIC 0x1   /* no PT_INTERP: the loader never runs the hook */
#define CRW_UNOBS_SETUID 0x2   /* setuid/setgid: the loader ignores LD_PRELOAD */
#define CRW_UNOBS_DROPPED 0x4  /* hook removed from the environment (recorder-side) */
#define CRW_UNOBS_SILENT 0x8   /* exec'd image never connected (recorder-side) */

typedef struct crw_exec {
	crw_rec h;
	int64_t child;     /* SPAWN: child pid; else 0 */
	uint32_t path_len; /* path follows, then argv (NUL-separated) */
	uint32_t argv_len;
} crw_exec;

#endif
