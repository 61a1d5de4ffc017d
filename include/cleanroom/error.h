/*
 * cleanroom error codes and the thread-local error message.
 *
 * Every function that can fail returns int: 0 on success, a negative CR_E*
 * code otherwise, and sets a message where the failure happened. Codes are
 * only ever appended.
 */
#ifndef CLEANROOM_ERROR_H
#define CLEANROOM_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
	CR_OK = 0,
	CR_ERROR = -1,      /* generic failure */
	CR_ENOMEM = -2,     /* out of memory */
	CR_EIO = -3,        /* I/O error on a file or the store */
	CR_EINVAL = -4,     /* invalid argument or malformed input */
	CR_ENOTFOUND = -5,  /* no such file, event, key, ... */
	CR_EEXISTS = -6,    /* already exists */
	CR_EVERIFY = -7,    /* a verification failed (proof, signature, log) */
	CR_EGIT = -8,       /* libgit2 failure */
	CR_ESQLITE = -9,    /* SQLite failure */
	CR_ECRYPTO = -10,   /* OpenSSL failure */
	CR_ELOCKED = -11,   /* the store is locked by another writer */
	CR_ECORRUPT = -12,  /* the store is damaged or tampered with */
	CR_ERANGE = -13,    /* a size or index out of range */
	CR_EARCHIVE = -14   /* libarchive failure */
};

/* Set the calling thread's last error message (printf-style). Returns code. */
int cr_error_set(int code, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 2, 3)))
#endif
	;

/* Like cr_error_set, appending ": strerror(errno_value)". Returns code. */
int cr_error_set_errno(int code, int errno_value, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 3, 4)))
#endif
	;

/* The calling thread's last message; never NULL (empty when none). */
const char *cr_error_last(void);

/* Forget the calling thread's last message. */
void cr_error_clear(void);

/* A short constant name for a code ("CR_EIO"). */
const char *cr_error_name(int code);

#ifdef __cplusplus
}
#endif
#endif
