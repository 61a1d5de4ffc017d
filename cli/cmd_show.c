/* cleanroom show: a recorded checkpoint with its tensor manifest and delta. */
#include <getopt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cli/common.h"
#include "util/buf.h"

static const char help[] =
	"usage: cleanroom show [--store DIR] [--json] [--all] CHECKPOINT\n"
	"\n"
	"Show a recorded checkpoint event: its file hash, its tensor manifest\n"
	"(name, dtype, shape, offset, length, SHA-256 of each tensor) and its delta\n"
	"from the previous checkpoint of its run (tensors added, removed, changed;\n"
	"L2 norm and max abs of the update for float tensors). CHECKPOINT is a path\n"
	"(as recorded, or a path resolving to it), a SHA-256 (hex) or an event\n"
	"index; when several checkpoint events match, the last one is shown.\n"
	"\n"
	"  --all    list every tensor (default: the first 50 and the changed ones)\n"
	"  --json   print {\"index\", \"event\", \"tensors\", \"delta\"}: the event as\n"
	"           recorded, its manifest and its delta (null when absent)\n";

static void print_shape(const json_t *shape)
{
	size_t i;
	json_t *d;

	printf("[");
	json_array_foreach(shape, i, d)
		printf("%s%lld", i ? "," : "", (long long)json_integer_value(d));
	printf("]");
}

static void print_text(uint64_t index, const json_t *ev, int all)
{
	const json_t *m = json_object_get(ev, "tensors"), *d = json_object_get(ev, "delta");
	const json_t *list = json_object_get(m, "tensors"), *t;
	cr_buf p = CR_BUF_INIT;
	char size[32];
	size_t i;

	if (cr_event_get_path(ev, "path", &p) != 0)
		cr_error_clear();
	printf("checkpoint  %s (event %llu, run %s)\n", p.ptr ? p.ptr : "?", (unsigned long long)index,
	       json_string_value(json_object_get(ev, "run")) ?: "?");
	printf("time        %s\n", json_string_value(json_object_get(ev, "time")) ?: "?");
	printf("sha256      %s\n", json_string_value(json_object_get(ev, "sha256")) ?: "(changed while written)");
	printf("size        %s\n", cli_bytes(size, (uint64_t)json_integer_value(json_object_get(ev, "size"))));
	cr_buf_free(&p);
	if (!m) {
		const char *why = json_string_value(json_object_get(ev, "tensors_error"));

		printf("tensors     none recorded%s%s\n", why ? ": " : "", why ? why : "");
		return;
	}
	printf("manifest    %s, %zu tensors, digest %s\n", json_string_value(json_object_get(m, "format")) ?: "?",
	       json_array_size(list), json_string_value(json_object_get(ev, "tensors_sha256")) ?: "?");
	if (json_object_get(m, "note"))
		printf("note        %s\n", json_string_value(json_object_get(m, "note")));
	if (d) {
		printf("delta       from event %lld: %zu changed, %zu added, %zu removed, %lld unchanged;"
		       " update L2 %s (relative %s)\n",
		       (long long)json_integer_value(json_object_get(d, "previous")),
		       json_array_size(json_object_get(d, "changed")), json_array_size(json_object_get(d, "added")),
		       json_array_size(json_object_get(d, "removed")),
		       (long long)json_integer_value(json_object_get(d, "unchanged")),
		       json_string_value(json_object_get(d, "l2")) ?: "-",
		       json_string_value(json_object_get(d, "rel")) ?: "-");
	} else {
		printf("delta       none (first checkpoint of its run, or deltas were off)\n");
	}
	printf("\n  %-48s %-6s %-18s %s\n", "tensor", "dtype", "shape", "sha256");
	json_array_foreach(list, i, t) {
		if (!all && i >= 50) {
			printf("  ... %zu more (--all lists them)\n", json_array_size(list) - i);
			break;
		}
		printf("  %-48s %-6s ", json_string_value(json_object_get(t, "name")) ?: "?",
		       json_string_value(json_object_get(t, "dtype")) ?: "?");
		print_shape(json_object_get(t, "shape"));
		printf(" %s\n", json_string_value(json_object_get(t, "sha256")) ?: "?");
	}
	if (d && json_array_size(json_object_get(d, "changed"))) {
		printf("\n  %-48s %-16s %-16s %s\n", "changed tensor", "l2", "max_abs", "relative");
		json_array_foreach(json_object_get(d, "changed"), i, t) {
			if (!all && i >= 50) {
				printf("  ... %zu more (--all lists them)\n", json_array_size(json_object_get(d, "changed")) - i);
				break;
			}
			printf("  %-48s %-16s %-16s %s\n", json_string_value(json_object_get(t, "name")) ?: "?",
			       json_string_value(json_object_get(t, "l2")) ?: "-",
			       json_string_value(json_object_get(t, "max_abs")) ?: "-",
			       json_string_value(json_object_get(t, "rel")) ?: "-");
		}
	}
}

int cmd_show(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"all", no_argument, NULL, 'a'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_path = NULL, *key;
	uint64_t index = UINT64_MAX;
	json_t *ev = NULL;
	cr_store *store;
	int json = 0, all = 0, c, code = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'j': json = 1; break;
		case 'a': all = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("show", "bad option");
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("show", "name one checkpoint (path, sha256 or event index)");
	key = argv[optind];
	if ((store = cli_open_store("show", cli_store_path(store_path), 0, &code)) == NULL)
		return code;
	if ((code = cli_checkpoint_event("show", store, key, &index, &ev)) != EXIT_OK)
		goto done;
	if (json) {
		json_t *m = json_object_get(ev, "tensors"), *d = json_object_get(ev, "delta");

		cli_print_json(json_pack("{s:I,s:O,s:O,s:O}", "index", (json_int_t)index, "event", ev,
		                         "tensors", m ? m : json_null(), "delta", d ? d : json_null()));
	} else {
		print_text(index, ev, all);
	}
done:
	json_decref(ev);
	cr_store_free(store);
	return code;
}
