/* cleanroom diff: the tensor-level delta of two checkpoints. */
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/tensors.h"
#include "cli/common.h"

static const char help[] =
	"usage: cleanroom diff [--store DIR] [--json] [--all] A B\n"
	"\n"
	"Show the tensor-level delta from checkpoint A to checkpoint B: tensors\n"
	"added, removed and changed (old and new SHA-256) and, for F64/F32/F16/BF16\n"
	"tensors of the same shape, the L2 norm and max abs of B - A and the update\n"
	"relative to A's norm.\n"
	"\n"
	"A and B are checkpoint files; a name that is not a file is looked up in the\n"
	"store as a recorded checkpoint (path, SHA-256 or event index) and its\n"
	"recorded tensor manifest is used: then only hashes can be compared (the\n"
	"norms need the bytes).\n"
	"\n"
	"  --all    list every changed tensor (default: the first 50)\n"
	"  --json   print {\"a\", \"b\", \"delta\"}\n";

typedef struct side {
	const char *arg;
	int is_file;
	cr_manifest *m;         /* from the file */
	json_t *mj;             /* manifest JSON (from the file or the event) */
	uint64_t index;         /* recorded: event index */
} side;

static int load_recorded(cr_store **store, const char *store_path, side *s, int *code)
{
	json_t *ev = NULL;

	if (!*store && (*store = cli_open_store("diff", cli_store_path(store_path), 0, code)) == NULL)
		return -1;
	/* Not a file: a recorded checkpoint, or nothing ("no checkpoint recorded as ..."). */
	if ((*code = cli_checkpoint_event("diff", *store, s->arg, &s->index, &ev)) != EXIT_OK)
		return -1;
	if (!json_object_get(ev, "tensors")) {
		fprintf(stderr, "cleanroom diff: event %llu is not a checkpoint with a tensor manifest\n",
		        (unsigned long long)s->index);
		json_decref(ev);
		*code = EXIT_VERIFY;
		return -1;
	}
	s->mj = json_incref(json_object_get(ev, "tensors"));
	json_decref(ev);
	return 0;
}

static const json_t *find_tensor(const json_t *list, const char *name)
{
	size_t i;
	const json_t *t;

	json_array_foreach(list, i, t)
		if (strcmp(json_string_value(json_object_get(t, "name")) ?: "", name) == 0)
			return t;
	return NULL;
}

/* A hash-only delta of two manifests as JSON (no bytes at hand). */
static json_t *hash_delta(const json_t *a, const json_t *b)
{
	const json_t *la = json_object_get(a, "tensors"), *lb = json_object_get(b, "tensors"), *t;
	json_t *d = json_pack("{s:[],s:[],s:[]}", "added", "removed", "changed");
	json_int_t same = 0;
	size_t i;

	json_array_foreach(lb, i, t) {
		const char *name = json_string_value(json_object_get(t, "name")) ?: "";
		const json_t *u = find_tensor(la, name);

		if (!u)
			json_array_append_new(json_object_get(d, "added"), json_string(name));
		else if (!json_equal(json_object_get(t, "sha256"), json_object_get(u, "sha256")))
			json_array_append_new(json_object_get(d, "changed"),
			                      json_pack("{s:s,s:O,s:O}", "name", name, "old", json_object_get(u, "sha256"),
			                                "new", json_object_get(t, "sha256")));
		else
			same++;
	}
	json_array_foreach(la, i, t) {
		const char *name = json_string_value(json_object_get(t, "name")) ?: "";

		if (!find_tensor(lb, name))
			json_array_append_new(json_object_get(d, "removed"), json_string(name));
	}
	json_object_set_new(d, "unchanged", json_integer(same));
	json_object_set_new(d, "numeric", json_false());
	return d;
}

static void print_delta(const side *a, const side *b, const json_t *d, int all)
{
	const json_t *changed = json_object_get(d, "changed"), *t;
	size_t i;

	printf("from  %s\nto    %s\n", a->arg, b->arg);
	printf("%zu changed, %zu added, %zu removed, %lld unchanged", json_array_size(changed),
	       json_array_size(json_object_get(d, "added")), json_array_size(json_object_get(d, "removed")),
	       (long long)json_integer_value(json_object_get(d, "unchanged")));
	if (json_object_get(d, "l2"))
		printf("; update L2 %s (relative %s)", json_string_value(json_object_get(d, "l2")),
		       json_string_value(json_object_get(d, "rel")) ?: "-");
	printf("\n");
	if (json_array_size(changed))
		printf("\n  %-48s %-16s %-16s %-12s %s\n", "changed tensor", "l2", "max_abs", "relative",
		       "old -> new sha256");
	json_array_foreach(changed, i, t) {
		if (!all && i >= 50) {
			printf("  ... %zu more (--all lists them)\n", json_array_size(changed) - i);
			break;
		}
		printf("  %-48s %-16s %-16s %-12s %.12s -> %.12s\n",
		       json_string_value(json_object_get(t, "name")) ?: "?",
		       json_string_value(json_object_get(t, "l2")) ?: "-",
		       json_string_value(json_object_get(t, "max_abs")) ?: "-",
		       json_string_value(json_object_get(t, "rel")) ?: "-",
		       json_string_value(json_object_get(t, "old")) ?: "?",
		       json_string_value(json_object_get(t, "new")) ?: "?");
	}
	json_array_foreach(json_object_get(d, "added"), i, t)
		printf("  + %s\n", json_string_value(t));
	json_array_foreach(json_object_get(d, "removed"), i, t)
		printf("  - %s\n", json_string_value(t));
	if (json_is_false(json_object_get(d, "numeric")))
		printf("(hashes only: give both checkpoint files for update norms)\n");
}

static int is_regular(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int cmd_diff(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"all", no_argument, NULL, 'a'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_path = NULL;
	cr_store *store = NULL;
	side s[2];
	json_t *d = NULL;
	int json = 0, all = 0, c, rc, code = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'j': json = 1; break;
		case 'a': all = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("diff", "bad option");
		}
	}
	if (argc - optind != 2)
		return cli_usage_error("diff", "name two checkpoints");
	memset(s, 0, sizeof(s));
	for (int i = 0; i < 2; i++) {
		s[i].arg = argv[optind + i];
		s[i].is_file = is_regular(s[i].arg);
	}
	if (s[0].is_file && s[1].is_file) {
		int fa = open(s[0].arg, O_RDONLY | O_CLOEXEC), fb = open(s[1].arg, O_RDONLY | O_CLOEXEC);
		cr_delta *delta = NULL;

		if (fa < 0 || fb < 0) {
			if (fa >= 0)
				close(fa);
			if (fb >= 0)
				close(fb);
			fprintf(stderr, "cleanroom diff: cannot open %s\n", fa < 0 ? s[0].arg : s[1].arg);
			return EXIT_ENV;
		}
		rc = cr_delta_files(fa, s[0].arg, fb, s[1].arg, &s[0].m, &s[1].m, &delta);
		close(fa);
		close(fb);
		if (rc == 0)
			rc = cr_delta_json(delta, &d);
		cr_delta_free(delta);
		if (rc) {
			code = rc == CR_EINVAL ? (cli_fail("diff", rc), EXIT_VERIFY) : cli_fail("diff", rc);
			goto done;
		}
		json_object_set_new(d, "numeric", json_true());
	} else {
		for (int i = 0; i < 2; i++) {
			if (s[i].is_file) {
				int fd = open(s[i].arg, O_RDONLY | O_CLOEXEC);
				cr_manifest_opts mo;

				memset(&mo, 0, sizeof(mo));
				mo.name = s[i].arg;
				mo.base_out_fd = -1;
				if (fd < 0) {
					fprintf(stderr, "cleanroom diff: cannot open %s\n", s[i].arg);
					code = EXIT_ENV;
					goto done;
				}
				rc = cr_manifest_read(fd, &mo, &s[i].m, NULL, NULL);
				close(fd);
				if (rc == 0)
					rc = cr_manifest_json(s[i].m, &s[i].mj);
				if (rc) {
					code = rc == CR_EINVAL ? (cli_fail("diff", rc), EXIT_VERIFY) : cli_fail("diff", rc);
					goto done;
				}
			} else if (load_recorded(&store, store_path, &s[i], &code) != 0) {
				goto done;
			}
		}
		d = hash_delta(s[0].mj, s[1].mj);
	}
	if (json) {
		json_t *out = json_pack("{s:s,s:s,s:O}", "a", s[0].arg, "b", s[1].arg, "delta", d);

		cli_print_json(out);
	} else {
		print_delta(&s[0], &s[1], d, all);
	}
done:
	json_decref(d);
	for (int i = 0; i < 2; i++) {
		cr_manifest_free(s[i].m);
		json_decref(s[i].mj);
	}
	cr_store_free(store);
	return code;
}
