/* cleanroom lineage: which inputs fed a checkpoint. */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cli/common.h"
#include "util/buf.h"

static const char help[] =
	"usage: cleanroom lineage [--store DIR] [--json] [--inputs] CHECKPOINT\n"
	"\n"
	"Show a recorded checkpoint's lineage interval: the input events its run\n"
	"read since the previous checkpoint, how often, and by which processes.\n"
	"CHECKPOINT is a path (as recorded, or a path resolving to it), a SHA-256\n"
	"(hex), or an event index. When several checkpoint events match, the last\n"
	"one is shown.\n"
	"\n"
	"  --inputs   also list every input of the interval (index, path, sha256)\n"
	"  --json     print JSON: {\"index\", \"checkpoint\", \"lineage\", \"inputs\"?}\n";

typedef struct range_ctx {
	uint64_t end;
	json_t *list;
	int json;
	cr_buf path;
} range_ctx;

#define STOP 1

static int list_input(void *ctx, uint64_t index, const char *leaf, size_t len)
{
	range_ctx *r = ctx;
	json_t *ev = NULL;

	if (index > r->end)
		return STOP;
	if (cr_event_parse(&ev, leaf, len) != 0) {
		cr_error_clear();
		return 0;
	}
	if (r->json) {
		json_array_append_new(r->list, json_pack("{s:I,s:O}", "index", (json_int_t)index, "event", ev));
	} else {
		const char *sha = json_string_value(json_object_get(ev, "sha256"));

		if (cr_event_get_path(ev, "path", &r->path) != 0)
			cr_error_clear();
		printf("  %-8llu %s  %s\n", (unsigned long long)index, sha ? sha : "(changed during the run)",
		       r->path.ptr ? r->path.ptr : "");
	}
	json_decref(ev);
	return 0;
}

int cmd_lineage(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"inputs", no_argument, NULL, 'i'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_path = NULL, *key;
	uint64_t index = UINT64_MAX;
	json_t *ev = NULL, *lin, *ranges, *out = NULL;
	cr_store *store;
	int json = 0, inputs = 0, c, rc, code = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'j': json = 1; break;
		case 'i': inputs = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("lineage", "bad option");
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("lineage", "name one checkpoint (path, sha256 or event index)");
	key = argv[optind];
	if ((store = cli_open_store("lineage", cli_store_path(store_path), 0, &code)) == NULL)
		return code;
	if ((code = cli_checkpoint_event("lineage", store, key, &index, &ev)) != EXIT_OK)
		goto done;
	lin = json_object_get(ev, "lineage");
	ranges = json_object_get(lin, "inputs");
	if (json) {
		out = json_pack("{s:I,s:O,s:O}", "index", (json_int_t)index, "checkpoint", ev, "lineage",
		                lin ? lin : json_null());
	} else {
		cr_buf p = CR_BUF_INIT;
		json_t *readers = json_object_get(lin, "readers"), *prev = json_object_get(lin, "previous");
		const char *k;
		json_t *v;
		size_t i;

		if (cr_event_get_path(ev, "path", &p) != 0)
			cr_error_clear();
		printf("checkpoint  %s (event %llu, run %s)\n", p.ptr ? p.ptr : "?", (unsigned long long)index,
		       json_string_value(json_object_get(ev, "run")) ?: "?");
		printf("sha256      %s\n", json_string_value(json_object_get(ev, "sha256")) ?: "(changed)");
		if (json_is_integer(prev))
			printf("previous    event %lld\n", (long long)json_integer_value(prev));
		else
			printf("previous    none (first checkpoint of its run)\n");
		printf("inputs      %lld distinct, read %lld times since the previous checkpoint\n",
		       (long long)json_integer_value(json_object_get(lin, "input_count")),
		       (long long)json_integer_value(json_object_get(lin, "reads")));
		printf("readers    ");
		json_object_foreach(readers, k, v)
			printf(" pid %s (%lld)", k, (long long)json_integer_value(v));
		printf("\nranges     ");
		for (i = 0; i < json_array_size(ranges) && i < 20; i++)
			printf(" %lld-%lld", (long long)json_integer_value(json_array_get(json_array_get(ranges, i), 0)),
			       (long long)json_integer_value(json_array_get(json_array_get(ranges, i), 1)));
		if (json_array_size(ranges) > 20)
			printf(" ... (%zu ranges)", json_array_size(ranges));
		printf("\n");
		cr_buf_free(&p);
	}
	if (inputs) {
		range_ctx r = {0};

		r.json = json;
		r.list = json_array();
		if (!json)
			printf("input events:\n");
		for (size_t i = 0; i < json_array_size(ranges); i++) {
			json_t *pair = json_array_get(ranges, i);

			r.end = (uint64_t)json_integer_value(json_array_get(pair, 1));
			rc = cr_store_foreach_event(store, (uint64_t)json_integer_value(json_array_get(pair, 0)),
			                            list_input, &r);
			if (rc && rc != STOP) {
				json_decref(r.list);
				cr_buf_free(&r.path);
				goto fail;
			}
		}
		cr_buf_free(&r.path);
		if (json)
			json_object_set_new(out, "inputs", r.list);
		else
			json_decref(r.list);
	}
	if (out) {
		cli_print_json(out);
		out = NULL;
	}
	goto done;
fail:
	code = cli_fail("lineage", rc);
done:
	json_decref(out);
	json_decref(ev);
	cr_store_free(store);
	return code;
}
