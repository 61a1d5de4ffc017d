/* cleanroom find: which runs and checkpoints a file or shard member fed. */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cli/common.h"
#include "util/buf.h"

static const char help[] =
	"usage: cleanroom find [--store DIR] [--json] SHA256|NAME\n"
	"\n"
	"Which runs and checkpoints a given file fed. The key is a SHA-256 (hex) or\n"
	"a name: a path (as recorded, or one resolving to it), a file name, or the\n"
	"name of a member inside a data shard (tar, tar.gz, tar.zst, zip) whose\n"
	"member manifest was recorded. For\n"
	"every input event that matches, the checkpoints whose lineage interval holds\n"
	"it (trained on it directly) are listed, and the later checkpoints of the same\n"
	"run (downstream of it).\n"
	"\n"
	"  --json   print {\"key\", \"matches\": [{\"index\", \"run\", \"path\", \"sha256\",\n"
	"           \"member\"?, \"checkpoints\": [{\"index\", \"path\", \"sha256\",\n"
	"           \"direct\"}]}], \"runs\": {run: command}}\n"
	"\n"
	"Exit status: 0 found; 1 nothing recorded matches; 2 bad usage; 3 store error.\n";

typedef struct ckpt_info {
	uint64_t index;
	char *run;
	json_t *ev;             /* path, sha256, lineage */
} ckpt_info;

typedef struct find {
	const char *key;
	int is_sha;
	int prefilter;          /* the key appears verbatim in a matching leaf */
	json_t *matches;        /* [{index, run, path, sha256, member?}] */
	json_t *runs;           /* run -> command */
	ckpt_info *ck;
	size_t n_ck, cap_ck;
	cr_buf path;
} find;

static int name_matches(const char *key, const char *name)
{
	const char *slash;

	if (!name)
		return 0;
	if (strcmp(key, name) == 0)
		return 1;
	slash = strrchr(name, '/');
	return slash && strcmp(key, slash + 1) == 0;
}

static void add_match(find *f, uint64_t index, const json_t *ev, const char *path, const json_t *member)
{
	json_t *m = json_pack("{s:I,s:O,s:s}", "index", (json_int_t)index, "run",
	                      json_object_get(ev, "run") ?: json_null(), "path", path ? path : "");

	if (member) {
		json_object_set(m, "member", json_object_get(member, "name") ?: json_null());
		json_object_set(m, "sha256", json_object_get(member, "sha256") ?: json_null());
		json_object_set(m, "shard_sha256", json_object_get(ev, "sha256") ?: json_null());
	} else {
		json_object_set(m, "sha256", json_object_get(ev, "sha256") ?: json_null());
	}
	json_object_set_new(m, "checkpoints", json_array());
	json_array_append_new(f->matches, m);
}

static int scan(void *ctx, uint64_t index, const char *leaf, size_t len)
{
	find *f = ctx;
	int is_ck = memmem(leaf, len, "\"type\":\"checkpoint\"", 19) != NULL;
	int is_start = !is_ck && memmem(leaf, len, "\"type\":\"run_start\"", 18) != NULL;
	json_t *ev = NULL;
	const char *type;

	if (!is_ck && !is_start && f->prefilter && !memmem(leaf, len, f->key, strlen(f->key)))
		return 0;
	if (cr_event_parse(&ev, leaf, len) != 0) {
		cr_error_clear();
		return 0;
	}
	type = cr_event_type(ev);
	if (strcmp(type, "run_start") == 0) {
		json_t *argv = json_object_get(ev, "argv"), *a;
		cr_buf cmd = CR_BUF_INIT;
		size_t i;

		json_array_foreach(argv, i, a)
			cr_buf_printf(&cmd, "%s%s", i ? " " : "", json_string_value(a) ?: "?");
		if (json_object_get(ev, "run"))
			json_object_set_new(f->runs, json_string_value(json_object_get(ev, "run")),
			                    json_string(cmd.ptr ? cmd.ptr : ""));
		cr_buf_free(&cmd);
	} else if (strcmp(type, "checkpoint") == 0) {
		if (f->n_ck == f->cap_ck) {
			size_t cap = f->cap_ck ? 2 * f->cap_ck : 64;
			ckpt_info *v = realloc(f->ck, cap * sizeof(*v));

			if (!v) {
				json_decref(ev);
				return cr_error_set(CR_ENOMEM, "out of memory");
			}
			f->ck = v;
			f->cap_ck = cap;
		}
		f->ck[f->n_ck].index = index;
		f->ck[f->n_ck].run = strdup(json_string_value(json_object_get(ev, "run")) ?: "");
		f->ck[f->n_ck].ev = json_pack("{s:O,s:O,s:O}", "path", json_object_get(ev, "path") ?: json_null(),
		                              "sha256", json_object_get(ev, "sha256") ?: json_null(), "lineage",
		                              json_object_get(ev, "lineage") ?: json_null());
		f->n_ck++;
	} else if (strcmp(type, "input") == 0) {
		const char *sha = json_string_value(json_object_get(ev, "sha256"));
		const json_t *members = json_object_get(json_object_get(ev, "shard"), "members"), *m;
		size_t i;

		if (cr_event_get_path(ev, "path", &f->path) != 0)
			cr_error_clear();
		if ((f->is_sha && sha && strcmp(sha, f->key) == 0) ||
		    (!f->is_sha && name_matches(f->key, f->path.ptr)))
			add_match(f, index, ev, f->path.ptr, NULL);
		json_array_foreach(members, i, m) {
			const char *ms = json_string_value(json_object_get(m, "sha256"));
			const char *mn = json_string_value(json_object_get(m, "name"));

			if ((f->is_sha && ms && strcmp(ms, f->key) == 0) || (!f->is_sha && name_matches(f->key, mn)))
				add_match(f, index, ev, f->path.ptr, m);
		}
	}
	json_decref(ev);
	return 0;
}

/* Does the checkpoint's lineage interval hold leaf i? */
static int interval_holds(const json_t *lineage, uint64_t i)
{
	const json_t *ranges = json_object_get(lineage, "inputs"), *r;
	size_t k;

	json_array_foreach(ranges, k, r) {
		json_int_t a = json_integer_value(json_array_get(r, 0)), b = json_integer_value(json_array_get(r, 1));

		if ((json_int_t)i >= a && (json_int_t)i <= b)
			return 1;
	}
	return 0;
}

static void link_checkpoints(find *f)
{
	size_t i;
	json_t *m;

	json_array_foreach(f->matches, i, m) {
		uint64_t leaf = (uint64_t)json_integer_value(json_object_get(m, "index"));
		const char *run = json_string_value(json_object_get(m, "run")) ?: "";
		json_t *list = json_object_get(m, "checkpoints");
		int fed = 0;

		for (size_t k = 0; k < f->n_ck; k++) {
			ckpt_info *c = &f->ck[k];
			int direct = interval_holds(json_object_get(c->ev, "lineage"), leaf);

			if (c->index < leaf || strcmp(c->run, run) != 0)
				continue;
			if (direct)
				fed = 1;
			if (direct || fed)
				json_array_append_new(list, json_pack("{s:I,s:O,s:O,s:b}", "index", (json_int_t)c->index,
				                                      "path", json_object_get(c->ev, "path"), "sha256",
				                                      json_object_get(c->ev, "sha256"), "direct", direct));
		}
	}
}

static void print_text(const find *f)
{
	size_t i, k;
	json_t *m, *c;

	json_array_foreach(f->matches, i, m) {
		const char *run = json_string_value(json_object_get(m, "run")) ?: "?";
		const char *member = json_string_value(json_object_get(m, "member"));
		const char *cmd = json_string_value(json_object_get(f->runs, run));

		printf("input event %lld: %s%s%s\n  sha256 %s\n  run %s%s%s%s\n",
		       (long long)json_integer_value(json_object_get(m, "index")),
		       json_string_value(json_object_get(m, "path")) ?: "?", member ? " member " : "",
		       member ? member : "", json_string_value(json_object_get(m, "sha256")) ?: "(changed)", run,
		       cmd ? " (" : "", cmd ? cmd : "", cmd ? ")" : "");
		if (!json_array_size(json_object_get(m, "checkpoints")))
			printf("  no checkpoint of its run was written after it\n");
		json_array_foreach(json_object_get(m, "checkpoints"), k, c)
			printf("  %s checkpoint event %lld: %s %s\n",
			       json_is_true(json_object_get(c, "direct")) ? "fed     " : "upstream of",
			       (long long)json_integer_value(json_object_get(c, "index")),
			       json_string_value(json_object_get(c, "path")) ?: "?",
			       json_string_value(json_object_get(c, "sha256")) ?: "(changed)");
	}
}

int cmd_find(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_path = NULL;
	char abs[PATH_MAX];
	cr_store *store;
	find f;
	int json = 0, c, rc, code = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'j': json = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("find", "bad option");
		}
	}
	if (argc - optind != 1 || !*argv[optind])
		return cli_usage_error("find", "name one SHA-256 or name");
	memset(&f, 0, sizeof(f));
	f.key = argv[optind];
	f.is_sha = strlen(f.key) == 64 && strspn(f.key, "0123456789abcdef") == 64;
	/* A file given by a relative path is recorded under its absolute one. */
	if (!f.is_sha && strchr(f.key, '/') && realpath(f.key, abs))
		f.key = abs;
	/* A key with nothing JSON escapes appears verbatim in the leaf. */
	f.prefilter = strcspn(f.key, "\"\\") == strlen(f.key) &&
	              !memchr(f.key, 0x7f, strlen(f.key));
	for (const unsigned char *p = (const unsigned char *)f.key; *p; p++)
		if (*p < 0x20)
			f.prefilter = 0;
	if ((store = cli_open_store("find", cli_store_path(store_path), 0, &code)) == NULL)
		return code;
	f.matches = json_array();
	f.runs = json_object();
	if ((rc = cr_store_foreach_event(store, 0, scan, &f)) != 0) {
		code = cli_fail("find", rc);
		goto done;
	}
	link_checkpoints(&f);
	if (json)
		cli_print_json(json_pack("{s:s,s:O,s:O}", "key", f.key, "matches", f.matches, "runs", f.runs));
	else
		print_text(&f);
	if (!json_array_size(f.matches)) {
		if (!json)
			fprintf(stderr, "cleanroom find: nothing recorded matches %s\n", f.key);
		code = EXIT_VERIFY;
	}
done:
	for (size_t i = 0; i < f.n_ck; i++) {
		free(f.ck[i].run);
		json_decref(f.ck[i].ev);
	}
	free(f.ck);
	cr_buf_free(&f.path);
	json_decref(f.matches);
	json_decref(f.runs);
	cr_store_free(store);
	return code;
}
