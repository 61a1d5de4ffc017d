/* cleanroom status: tree size, root hash and counts. */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cli/common.h"

static const char help[] =
	"usage: cleanroom status [--store DIR] [--json]\n"
	"\n"
	"Show the store's tree size, Merkle root (hex), head commit and counts of\n"
	"events by type, files and segments.\n";

static int add_type(void *ctx, const char *type, uint64_t n)
{
	json_object_set_new(ctx, type, json_integer((json_int_t)n));
	return 0;
}

int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_path = NULL;
	cr_store *store;
	cr_store_state state;
	cr_store_counts counts;
	json_t *types;
	char hex[65], b[32], abs[PATH_MAX];
	int json = 0, c, rc, code = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'j': json = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("status", "bad option");
		}
	}
	if (optind != argc)
		return cli_usage_error("status", "unexpected argument '%s'", argv[optind]);
	store_path = cli_store_path(store_path);
	if ((store = cli_open_store("status", store_path, 0, &code)) == NULL)
		return code;
	types = json_object();
	if ((rc = cr_store_counts_get(store, &counts)) != 0 ||
	    (rc = cr_store_type_counts(store, add_type, types)) != 0) {
		json_decref(types);
		code = cli_fail("status", rc);
		cr_store_free(store);
		return code;
	}
	cr_store_state_get(store, &state);
	if (!realpath(store_path, abs))
		snprintf(abs, sizeof(abs), "%s", store_path);
	if (json) {
		json_t *o = json_pack("{s:I,s:s,s:s?,s:I,s:o,s:I,s:I,s:I,s:I}",
		                         "tree_size", (json_int_t)state.size, "root", cli_hex32(hex, state.root),
		                         "head", state.commit[0] ? state.commit : NULL, "events",
		                         (json_int_t)counts.events, "events_by_type", types, "files",
		                         (json_int_t)counts.files, "file_bytes", (json_int_t)counts.file_bytes,
		                         "segments", (json_int_t)counts.segments, "hash_cache_entries",
		                         (json_int_t)counts.cache_entries);

		cli_json_set_path(o, "store", abs);
		cli_print_json(o);
	} else {
		const char *key;
		json_t *v;
		int first = 1;

		printf("store       %s\n", abs);
		printf("tree size   %llu\n", (unsigned long long)state.size);
		printf("root        %s\n", cli_hex32(hex, state.root));
		printf("head        %s\n", state.commit[0] ? state.commit : "(no commits)");
		printf("events      %llu", (unsigned long long)counts.events);
		json_object_foreach(types, key, v)
		{
			printf("%s%s %lld", first ? " (" : ", ", key, (long long)json_integer_value(v));
			first = 0;
		}
		printf("%s\n", json_object_size(types) ? ")" : "");
		printf("files       %llu (%s)\n", (unsigned long long)counts.files, cli_bytes(b, counts.file_bytes));
		printf("segments    %llu\n", (unsigned long long)counts.segments);
		printf("hash cache  %llu entries\n", (unsigned long long)counts.cache_entries);
		json_decref(types);
	}
	cr_store_free(store);
	return EXIT_OK;
}
