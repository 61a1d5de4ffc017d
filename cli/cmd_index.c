/* cleanroom index rebuild: derive the SQLite index from the log again. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cli/common.h"

static const char help[] =
	"usage: cleanroom index rebuild [--store DIR] [--json]\n"
	"\n"
	"Drop every table of index.sqlite that is derived from the log (events,\n"
	"files, segments, tree nodes, state) and derive them again from log.git.\n"
	"The hash cache and the record of heads this store wrote are kept.\n"
	"Run `cleanroom check` first if you suspect tampering.\n";

int cmd_index(int argc, char **argv)
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
	char hex[65];
	int json = 0, c, rc, code = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'j': json = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("index", "bad option");
		}
	}
	if (optind == argc)
		return cli_usage_error("index", "name an action: rebuild");
	if (strcmp(argv[optind], "rebuild") != 0)
		return cli_usage_error("index", "unknown action '%s' (known: rebuild)", argv[optind]);
	if (optind + 1 != argc)
		return cli_usage_error("index", "unexpected argument '%s'", argv[optind + 1]);
	store = cli_open_store("index", cli_store_path(store_path), CR_STORE_WRITE | CR_STORE_RAW, &code);
	if (!store)
		return code;
	if ((rc = cr_store_rebuild_index(store)) != 0) {
		code = cli_fail("index", rc);
		if (code == EXIT_USAGE)
			code = EXIT_ENV;
		cr_store_free(store);
		return code;
	}
	cr_store_state_get(store, &state);
	if (json)
		cli_print_json(json_pack("{s:b,s:I,s:s}", "rebuilt", 1, "tree_size", (json_int_t)state.size,
		                         "root", cli_hex32(hex, state.root)));
	else
		printf("index rebuilt: %llu events, root %s\n", (unsigned long long)state.size,
		       cli_hex32(hex, state.root));
	cr_store_free(store);
	return EXIT_OK;
}
