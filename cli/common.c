/*
 * Shared CLI helpers. Messages go to stderr as "cleanroom <cmd>: ...";
 * data goes to stdout.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/seal.h"
#include "cli/common.h"
#include "util/codec.h"

const char *cli_store_path(const char *opt)
{
	const char *env;

	if (opt && *opt)
		return opt;
	env = getenv("CLEANROOM_STORE");
	if (env && *env)
		return env;
	return CR_STORE_DEFAULT_PATH;
}

int cli_fail(const char *cmd, int code)
{
	const char *msg = cr_error_last();

	fprintf(stderr, "cleanroom %s: %s\n", cmd, *msg ? msg : cr_error_name(code));
	switch (code) {
	case CR_EVERIFY:
	case CR_ECORRUPT:
		return EXIT_VERIFY;
	case CR_EINVAL:
	case CR_ERANGE:
		return EXIT_USAGE;
	default:
		return EXIT_ENV;
	}
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "cleanroom %s: ", cmd);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry `cleanroom %s --help`.\n", cmd);
	return EXIT_USAGE;
}

cr_store *cli_open_store(const char *cmd, const char *path, unsigned flags, int *exit_code)
{
	cr_store *s = NULL;
	int rc = cr_store_open(&s, path, flags);

	if (rc) {
		*exit_code = cli_fail(cmd, rc);
		/* A store that cannot be read is an environment problem, not bad usage. */
		if (*exit_code == EXIT_USAGE)
			*exit_code = EXIT_ENV;
		return NULL;
	}
	if (cr_store_notice(s))
		fprintf(stderr, "cleanroom %s: %s\n", cmd, cr_store_notice(s));
	return s;
}

int cli_parse_u64(const char *cmd, const char *what, const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	if (!s || !*s || *s == '-' || *s == '+') {
		cli_usage_error(cmd, "%s must be a non-negative integer, got '%s'", what, s ? s : "");
		return -1;
	}
	v = strtoull(s, &end, 10);
	if (errno || *end) {
		cli_usage_error(cmd, "%s must be a non-negative integer, got '%s'", what, s);
		return -1;
	}
	*out = v;
	return 0;
}

void cli_print_json(json_t *v)
{
	char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);

	if (s) {
		fputs(s, stdout);
		fputc('\n', stdout);
		free(s);
	}
	json_decref(v);
}

const char *cli_hex32(char out[65], const uint8_t h[32])
{
	cr_hex_encode(out, h, 32);
	return out;
}

const char *cli_bytes(char out[32], uint64_t n)
{
	static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double v = (double)n;
	int u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(out, 32, "%llu B", (unsigned long long)n);
	else
		snprintf(out, 32, "%.1f %s", v, units[u]);
	return out;
}

int cli_wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0)
			return 0;
		if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
			return 1;
	}
	return 0;
}

void cli_json_set_path(json_t *obj, const char *key, const char *path)
{
	if (cr_event_set_path(obj, key, path, strlen(path)) != 0)
		cr_error_clear();
}

int cli_load_signing_key(const char *store_path, const char *key_arg, const char *name_arg,
                         EVP_PKEY **key, char name[CR_NOTE_MAX_NAME + 1])
{
	char *key_path;
	size_t n;
	int rc;

	*key = NULL;
	n = (key_arg ? strlen(key_arg) : strlen(store_path) + sizeof(CR_KEY_PRIVATE_FILE) + 1) + 1;
	if ((key_path = malloc(n)) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	if (key_arg)
		snprintf(key_path, n, "%s", key_arg);
	else
		snprintf(key_path, n, "%s/%s", store_path, CR_KEY_PRIVATE_FILE);
	rc = cr_key_load_private(key, key_path);
	if (!rc && name_arg)
		snprintf(name, CR_NOTE_MAX_NAME + 1, "%s", name_arg);
	else if (!rc)
		rc = cr_key_name_load(name, key_path, *key);
	if (rc) {
		cr_key_free(*key);
		*key = NULL;
	}
	free(key_path);
	return rc;
}

static int keep_last(void *ctx, uint64_t index)
{
	*(uint64_t *)ctx = index;
	return 0;
}

int cli_checkpoint_event(const char *cmd, cr_store *store, const char *key, uint64_t *index,
                         json_t **ev)
{
	char abs[PATH_MAX], *leaf = NULL;
	size_t len;
	int rc;

	*index = UINT64_MAX;
	*ev = NULL;
	if ((rc = cr_store_find_files(store, key, "checkpoint", keep_last, index)) != 0 ||
	    (*index == UINT64_MAX && realpath(key, abs) &&
	     (rc = cr_store_find_files(store, abs, "checkpoint", keep_last, index)) != 0))
		return cli_fail(cmd, rc);
	if (*index == UINT64_MAX && *key && strspn(key, "0123456789") == strlen(key))
		*index = strtoull(key, NULL, 10);
	if (*index == UINT64_MAX) {
		fprintf(stderr, "cleanroom %s: no checkpoint recorded as %s\n", cmd, key);
		return EXIT_VERIFY;
	}
	rc = cr_store_event_get(store, *index, &leaf, &len);
	if (rc == 0)
		rc = cr_event_parse(ev, leaf, len);
	free(leaf);
	if (rc)
		return cli_fail(cmd, rc);
	if (strcmp(cr_event_type(*ev), "checkpoint") != 0) {
		fprintf(stderr, "cleanroom %s: event %llu is a %s event, not a checkpoint\n", cmd,
		        (unsigned long long)*index, cr_event_type(*ev));
		json_decref(*ev);
		*ev = NULL;
		return EXIT_VERIFY;
	}
	return EXIT_OK;
}
