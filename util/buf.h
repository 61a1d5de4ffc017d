/*
 * A growable byte buffer. ptr is always NUL-terminated after a successful
 * call (the NUL is not counted in len), so text can be used as a C string.
 * A zeroed cr_buf (CR_BUF_INIT) is empty and valid.
 */
#ifndef CR_UTIL_BUF_H
#define CR_UTIL_BUF_H

#include <stdarg.h>
#include <stddef.h>

typedef struct cr_buf {
	char *ptr;
	size_t len;
	size_t cap;
} cr_buf;

#define CR_BUF_INIT {NULL, 0, 0}

/* Make room for n more bytes. CR_ENOMEM on failure (buffer unchanged). */
int cr_buf_grow(cr_buf *b, size_t n);
int cr_buf_put(cr_buf *b, const void *data, size_t n);
int cr_buf_puts(cr_buf *b, const char *s);
int cr_buf_putc(cr_buf *b, char c);
int cr_buf_printf(cr_buf *b, const char *fmt, ...)
#if defined(__GNUC__)
	__attribute__((format(printf, 2, 3)))
#endif
	;
/* Empty the buffer, keep the memory. */
void cr_buf_clear(cr_buf *b);
/* Free the memory; the buffer is empty and reusable afterwards. NULL-safe. */
void cr_buf_free(cr_buf *b);
/* Hand the memory to the caller (who frees it); the buffer becomes empty. */
char *cr_buf_detach(cr_buf *b);

#endif
