/*
 * The thread-local last-error message behind cr_error_set()/cr_error_last().
 * Messages are truncated to a fixed size; no allocation happens here so the
 * out-of-memory path can still report.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cleanroom/error.h"

#define ERROR_MAX 1024

static _Thread_local char last_error[ERROR_MAX];

/*
 * Callers may pass cr_error_last() itself as an argument (to add context to
 * a message), so format into a scratch buffer first.
 */
int cr_error_set(int code, const char *fmt, ...)
{
	char tmp[ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	memcpy(last_error, tmp, sizeof(tmp));
	return code;
}

int cr_error_set_errno(int code, int errno_value, const char *fmt, ...)
{
	char tmp[ERROR_MAX];
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	n = strlen(tmp);
	if (n < sizeof(tmp))
		snprintf(tmp + n, sizeof(tmp) - n, ": %s", strerror(errno_value));
	memcpy(last_error, tmp, sizeof(tmp));
	return code;
}

const char *cr_error_last(void)
{
	return last_error;
}

void cr_error_clear(void)
{
	last_error[0] = '\0';
}

const char *cr_error_name(int code)
{
	switch (code) {
	case CR_OK: return "CR_OK";
	case CR_ERROR: return "CR_ERROR";
	case CR_ENOMEM: return "CR_ENOMEM";
	case CR_EIO: return "CR_EIO";
	case CR_EINVAL: return "CR_EINVAL";
	case CR_ENOTFOUND: return "CR_ENOTFOUND";
	case CR_EEXISTS: return "CR_EEXISTS";
	case CR_EVERIFY: return "CR_EVERIFY";
	case CR_EGIT: return "CR_EGIT";
	case CR_ESQLITE: return "CR_ESQLITE";
	case CR_ECRYPTO: return "CR_ECRYPTO";
	case CR_ELOCKED: return "CR_ELOCKED";
	case CR_ECORRUPT: return "CR_ECORRUPT";
	case CR_ERANGE: return "CR_ERANGE";
	case CR_EARCHIVE: return "CR_EARCHIVE";
	default: return "CR_E?";
	}
}
