/* cleanroom log: list events, or export every leaf's exact bytes. */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/merkle.h"
#include "cli/common.h"
#include "util/buf.h"

static const char help[] =
	"usage: cleanroom log [--store DIR] [--json] [--from N] [--limit N]\n"
	"       cleanroom log [--store DIR] --export-leaves FILE\n"
	"\n"
	"List the events of the log in leaf order.\n"
	"\n"
	"  --json                one JSON object per line: {\"index\", \"leaf_hash\", \"event\"}\n"
	"  --from N              start at leaf N (default 0)\n"
	"  --limit N             list at most N events\n"
	"  --export-leaves FILE  write every leaf's exact bytes, one per line, in leaf\n"
	"                        order: what the Merkle root is computed over (- for stdout)\n";

typedef struct log_ctx {
	int json;
	uint64_t limit, shown;
	FILE *out;
	cr_buf path;
	int failed;
} log_ctx;

#define STOP_LIMIT 1

static int show_event(void *ctx, uint64_t index, const char *leaf, size_t len)
{
	log_ctx *l = ctx;
	uint8_t hash[CR_HASH_SIZE];
	char hex[65];
	json_t *ev = NULL;

	if (l->limit && l->shown >= l->limit)
		return STOP_LIMIT;
	l->shown++;
	if (l->out) {
		if (fwrite(leaf, 1, len, l->out) != len || fputc('\n', l->out) == EOF)
			return cr_error_set_errno(CR_EIO, errno, "writing leaves");
		return 0;
	}
	cr_merkle_leaf_hash(hash, leaf, len);
	if (cr_event_parse(&ev, leaf, len) != 0) {
		/* Show what is there; `cleanroom check` explains what is wrong. */
		fprintf(stderr, "cleanroom log: leaf %llu: %s\n", (unsigned long long)index, cr_error_last());
		l->failed = 1;
		ev = json_loads("{}", 0, NULL);
	}
	if (l->json) {
		cli_print_json(json_pack("{s:I,s:s,s:o}", "index", (json_int_t)index, "leaf_hash",
		                         cli_hex32(hex, hash), "event", ev));
		return 0;
	}
	{
		const char *sha = json_string_value(json_object_get(ev, "sha256"));
		const char *time = json_string_value(json_object_get(ev, "time"));
		json_t *size = json_object_get(ev, "size");

		printf("%-8llu %-12s %s", (unsigned long long)index, cr_event_type(ev), time ? time : "-");
		if (cr_event_get_path(ev, "path", &l->path) == 0)
			printf("  %s", l->path.ptr);
		else
			cr_error_clear();
		if (sha)
			printf("  sha256:%.16s", sha);
		if (json_is_integer(size))
			printf("  %lld bytes", (long long)json_integer_value(size));
		putchar('\n');
	}
	json_decref(ev);
	return 0;
}

int cmd_log(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"from", required_argument, NULL, 'f'},
		{"limit", required_argument, NULL, 'n'},
		{"export-leaves", required_argument, NULL, 'x'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_path = NULL, *export = NULL;
	uint64_t from = 0;
	log_ctx l = {0};
	cr_store *store;
	int c, rc, code = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "hn:", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'j': l.json = 1; break;
		case 'f':
			if (cli_parse_u64("log", "--from", optarg, &from))
				return EXIT_USAGE;
			break;
		case 'n':
			if (cli_parse_u64("log", "--limit", optarg, &l.limit))
				return EXIT_USAGE;
			break;
		case 'x': export = optarg; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("log", "bad option");
		}
	}
	if (optind != argc)
		return cli_usage_error("log", "unexpected argument '%s'", argv[optind]);
	if (export && (l.json || from || l.limit))
		return cli_usage_error("log", "--export-leaves writes every leaf; it takes no --json, --from or --limit");
	if ((store = cli_open_store("log", cli_store_path(store_path), 0, &code)) == NULL)
		return code;
	if (export) {
		l.out = strcmp(export, "-") == 0 ? stdout : fopen(export, "wb");
		if (!l.out) {
			fprintf(stderr, "cleanroom log: cannot write %s: %s\n", export, strerror(errno));
			cr_store_free(store);
			return EXIT_ENV;
		}
	}
	rc = cr_store_foreach_event(store, from, show_event, &l);
	if (rc == STOP_LIMIT)
		rc = 0;
	if (l.out && l.out != stdout && fclose(l.out) != 0 && !rc)
		rc = cr_error_set_errno(CR_EIO, errno, "writing %s", export);
	if (rc)
		code = cli_fail("log", rc);
	else if (l.failed)
		code = EXIT_VERIFY;
	cr_buf_free(&l.path);
	cr_store_free(store);
	return code;
}
