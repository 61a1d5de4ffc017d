/*
 * Growable byte buffer: capacity doubles, every size computation is checked
 * for overflow, a failed growth leaves the buffer as it was.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "util/buf.h"

int cr_buf_grow(cr_buf *b, size_t n)
{
	size_t need, cap;
	char *p;

	if (__builtin_add_overflow(b->len, n, &need) || __builtin_add_overflow(need, 1, &need))
		return cr_error_set(CR_ENOMEM, "buffer size overflow");
	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 64;
	while (cap < need) {
		if (__builtin_mul_overflow(cap, 2, &cap))
			return cr_error_set(CR_ENOMEM, "buffer size overflow");
	}
	p = realloc(b->ptr, cap);
	if (!p)
		return cr_error_set(CR_ENOMEM, "out of memory (%zu bytes)", cap);
	b->ptr = p;
	b->cap = cap;
	return 0;
}

int cr_buf_put(cr_buf *b, const void *data, size_t n)
{
	int rc = cr_buf_grow(b, n);

	if (rc)
		return rc;
	if (n)
		memcpy(b->ptr + b->len, data, n);
	b->len += n;
	b->ptr[b->len] = '\0';
	return 0;
}

int cr_buf_puts(cr_buf *b, const char *s)
{
	return cr_buf_put(b, s, strlen(s));
}

int cr_buf_putc(cr_buf *b, char c)
{
	return cr_buf_put(b, &c, 1);
}

int cr_buf_printf(cr_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n, rc;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return cr_error_set(CR_EINVAL, "bad format");
	if ((rc = cr_buf_grow(b, (size_t)n)) != 0)
		return rc;
	va_start(ap, fmt);
	vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

void cr_buf_clear(cr_buf *b)
{
	b->len = 0;
	if (b->ptr)
		b->ptr[0] = '\0';
}

void cr_buf_free(cr_buf *b)
{
	if (!b)
		return;
	free(b->ptr);
	b->ptr = NULL;
	b->len = b->cap = 0;
}

char *cr_buf_detach(cr_buf *b)
{
	char *p = b->ptr;

	if (!p)
		p = calloc(1, 1);
	b->ptr = NULL;
	b->len = b->cap = 0;
	return p;
}
