/* cleanroom check: the log is append-only, consistent, and matches its index. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cli/common.h"

static const char help[] =
	"usage: cleanroom check [--store DIR] [--json]\n"
	"\n"
	"Replay the whole log and verify it is append-only and consistent:\n"
	"  - the branch is one line of commits, each adding exactly the next segment\n"
	"    and never modifying or removing an existing path;\n"
	"  - every line of every segment is a canonical event;\n"
	"  - each commit's recorded tree size and root match its leaves;\n"
	"  - every head this store wrote is still in the history, unchanged;\n"
	"  - the index matches the log leaf by leaf.\n"
	"Each problem is printed with where it is (commit, segment, leaf).\n"
	"\n"
	"Exit status: 0 the store checks; 1 problems found; 3 the store cannot be read.\n";

typedef struct check_ui {
	json_t *problems;
} check_ui;

static void on_problem(void *ctx, const char *where, const char *what)
{
	check_ui *ui = ctx;

	if (ui->problems)
		json_array_append_new(ui->problems, json_pack("{s:s,s:s}", "where", where, "what", what));
	else
		printf("%s: %s\n", where, what);
}

int cmd_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_path = NULL;
	cr_store *store;
	cr_store_check_result r;
	check_ui ui = {0};
	char hex[65];
	int json = 0, c, rc, code = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'j': json = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("check", "bad option");
		}
	}
	if (optind != argc)
		return cli_usage_error("check", "unexpected argument '%s'", argv[optind]);
	if ((store = cli_open_store("check", cli_store_path(store_path), CR_STORE_RAW, &code)) == NULL)
		return code;
	if (json)
		ui.problems = json_array();
	rc = cr_store_check(store, on_problem, &ui, &r);
	if (rc && rc != CR_EVERIFY) {
		json_decref(ui.problems);
		code = cli_fail("check", rc);
		if (code != EXIT_VERIFY)
			code = EXIT_ENV;
		cr_store_free(store);
		return code;
	}
	if (json) {
		cli_print_json(json_pack("{s:b,s:I,s:I,s:s,s:I,s:o}", "ok", rc == 0, "commits",
		                         (json_int_t)r.commits, "tree_size", (json_int_t)r.size, "root",
		                         cli_hex32(hex, r.root), "problem_count", (json_int_t)r.problems,
		                         "problems", ui.problems));
	} else if (rc == 0) {
		printf("OK: %llu commits, %llu events, append-only; root %s\n", (unsigned long long)r.commits,
		       (unsigned long long)r.size, cli_hex32(hex, r.root));
	} else {
		printf("FAILED: %llu problem%s in %llu commits, %llu events\n", (unsigned long long)r.problems,
		       r.problems == 1 ? "" : "s", (unsigned long long)r.commits, (unsigned long long)r.size);
	}
	cr_store_free(store);
	return rc ? EXIT_VERIFY : EXIT_OK;
}
