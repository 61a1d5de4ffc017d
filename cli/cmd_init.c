/* cleanroom init: create a store. */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cli/common.h"

static const char help[] =
	"usage: cleanroom init [--store DIR] [--json]\n"
	"\n"
	"Create a store: DIR/log.git (the append-only log, a bare git repository)\n"
	"and DIR/index.sqlite (its index). DIR defaults to ./.cleanroom.\n"
	"\n"
	"  --store DIR   where to create the store\n"
	"  --json        print the result as JSON\n";

int cmd_init(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store = NULL;
	char abs[PATH_MAX];
	int json = 0, c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'j': json = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("init", "bad option");
		}
	}
	if (optind != argc)
		return cli_usage_error("init", "unexpected argument '%s'", argv[optind]);
	store = cli_store_path(store);
	if ((rc = cr_store_init(store)) != 0) {
		cli_fail("init", rc);
		return EXIT_ENV;
	}
	if (!realpath(store, abs))
		snprintf(abs, sizeof(abs), "%s", store);
	if (json)
	{
		json_t *o = json_pack("{s:b}", "created", 1);

		cli_json_set_path(o, "store", abs);
		cli_print_json(o);
	}
	else
		printf("Created an empty cleanroom store in %s\n", abs);
	return EXIT_OK;
}
