/* cleanroom replay: checkpoint history checked against the files. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/replay.h"
#include "cli/common.h"

static const char help[] =
	"usage: cleanroom replay [--store DIR | BUNDLE] [--key PUBLIC_PEM]\n"
	"                        --checkpoints DIR [--json]\n"
	"\n"
	"Replay checkpoint history: in log order, every recorded checkpoint's file\n"
	"under DIR is read once and checked against its recorded SHA-256 and tensor\n"
	"manifest (every tensor's hash, dtype, shape, offset and length), and its\n"
	"delta from the previous checkpoint is recomputed from the files and compared\n"
	"with the recorded one. Prints the timeline: checkpoint, time, inputs read\n"
	"since the previous checkpoint, tensors changed, update size. Any mismatch\n"
	"names the file and the tensor.\n"
	"\n"
	"Recorded paths are mapped below DIR relative to the checkpoints' common\n"
	"folder (as `cleanroom verify --checkpoints` does). A checkpoint overwritten\n"
	"later by one of the same name is listed as superseded, not as a failure.\n"
	"\n"
	"  --store DIR          replay the store's log (default ./.cleanroom)\n"
	"  BUNDLE               replay an audit bundle's events instead; the bundle is\n"
	"                       verified first (with --key, against that key)\n"
	"  --checkpoints DIR    where the checkpoint files are (required)\n"
	"  --json               one JSON object: {ok, checkpoints: [...], summary}\n"
	"\n"
	"Exit status: 0 every checkpoint matched; 1 a mismatch, a missing file, no\n"
	"checkpoint recorded at all, or a bundle that does not verify; 2 bad usage;\n"
	"3 the store or bundle cannot be read.\n";

typedef struct replay_ui {
	json_t *rows;
} replay_ui;

static void on_row(void *ctx, const json_t *row)
{
	replay_ui *ui = ctx;
	const json_t *problems = json_object_get(row, "problems"), *p;
	const char *status = json_string_value(json_object_get(row, "status")) ?: "?";
	const char *t = json_string_value(json_object_get(row, "time")) ?: "?";
	const char *l2 = json_string_value(json_object_get(row, "l2"));
	const char *rel = json_string_value(json_object_get(row, "rel"));
	const char *file = json_string_value(json_object_get(row, "file")) ?: "?";
	const char *name = strrchr(file, '/');
	char update[64] = "-";
	size_t i;

	if (ui->rows) {
		json_array_append(ui->rows, (json_t *)row);
		return;
	}
	if (l2)
		snprintf(update, sizeof(update), "%s (rel %s)", l2, rel ? rel : "-");
	printf("%-8lld %-27s %-28s %8lld %8lld  %-30s %s\n",
	       (long long)json_integer_value(json_object_get(row, "index")), t, name ? name + 1 : file,
	       (long long)json_integer_value(json_object_get(row, "inputs")),
	       (long long)json_integer_value(json_object_get(row, "changed")), update, status);
	json_array_foreach(problems, i, p)
		printf("         ! %s\n", json_string_value(p));
	if (json_object_get(row, "delta_note") && strcmp(status, "superseded") != 0)
		printf("           (delta %s)\n", json_string_value(json_object_get(row, "delta_note")));
}

int cmd_replay(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"key", required_argument, NULL, 'k'},
		{"checkpoints", required_argument, NULL, 'c'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	cr_replay_options o = {0};
	cr_replay_summary sum;
	replay_ui ui = {0};
	const char *store_path = NULL;
	int json = 0, c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'k': o.public_pem = optarg; break;
		case 'c': o.checkpoints_dir = optarg; break;
		case 'j': json = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("replay", "bad option");
		}
	}
	if (argc - optind > 1)
		return cli_usage_error("replay", "name at most one bundle");
	if (argc - optind == 1 && store_path)
		return cli_usage_error("replay", "give either --store or a bundle, not both");
	if (!o.checkpoints_dir)
		return cli_usage_error("replay", "--checkpoints DIR is required");
	if (argc - optind == 1)
		o.bundle = argv[optind];
	else
		o.store = cli_store_path(store_path);
	if (json)
		ui.rows = json_array();
	else
		printf("%-8s %-27s %-28s %8s %8s  %-30s %s\n", "event", "time", "checkpoint", "inputs",
		       "changed", "update (L2)", "status");
	rc = cr_replay(&o, on_row, &ui, &sum);
	if (rc && rc != CR_EVERIFY) {
		json_decref(ui.rows);
		return cli_fail("replay", rc);
	}
	if (rc == CR_EVERIFY && sum.checkpoints == 0) {
		/* the bundle did not verify, or there was nothing to replay */
		json_decref(ui.rows);
		fprintf(stderr, "cleanroom replay: %s\n", cr_error_last());
		return EXIT_VERIFY;
	}
	if (json) {
		json_t *out = json_pack("{s:b,s:o,s:{s:I,s:I,s:I,s:I,s:I,s:I}}", "ok", rc == 0, "checkpoints",
		                        ui.rows, "summary", "checkpoints", (json_int_t)sum.checkpoints, "ok",
		                        (json_int_t)sum.ok, "failed", (json_int_t)sum.failed, "superseded",
		                        (json_int_t)sum.superseded, "problems", (json_int_t)sum.problems,
		                        "deltas_checked", (json_int_t)sum.deltas_checked);

		cli_print_json(out);
	} else {
		printf("%s: %llu checkpoints: %llu match, %llu failed, %llu superseded; %llu deltas recomputed\n",
		       rc == 0 ? "REPLAYED" : "FAILED", (unsigned long long)sum.checkpoints,
		       (unsigned long long)sum.ok, (unsigned long long)sum.failed,
		       (unsigned long long)sum.superseded, (unsigned long long)sum.deltas_checked);
	}
	return rc == 0 ? EXIT_OK : EXIT_VERIFY;
}
