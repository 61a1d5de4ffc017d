/* cleanroom add: hash files and folders, record one input event per file. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cleanroom/add.h"
#include "cleanroom/error.h"
#include "cli/common.h"

static const char help[] =
	"usage: cleanroom add [--store DIR] [--jobs N] [--nice N] [--json] [--quiet] PATH...\n"
	"\n"
	"Hash every regular file under each PATH (files or folders) and append one\n"
	"input event per file to the log, in sorted path order. Paths are recorded\n"
	"absolute. A file whose path and content are already recorded is counted as\n"
	"unchanged and not appended again; a file unchanged on disk since it was last\n"
	"hashed (same device, inode, size, mtime, ctime) is not hashed again.\n"
	"A file named as an archive (.tar, .tar.gz, .tgz, .tar.zst, .tar.bz2, .zip, ...)\n"
	"also gets a member manifest in its event: each member's name, size and\n"
	"SHA-256 (see `cleanroom find`), as `cleanroom record` gives data shards.\n"
	"Symbolic links and special files inside folders are skipped and listed.\n"
	"\n"
	"  --store DIR   the store (default ./.cleanroom)\n"
	"  --jobs N      hashing threads (default: all CPUs)\n"
	"  --nice N      run the hashing threads N priority levels below the thread\n"
	"                that writes the log, so that it keeps up (0..19, default 10;\n"
	"                they still take every CPU it leaves)\n"
	"  --json        print the summary as JSON\n"
	"  --quiet       no progress or per-file messages\n"
	"\n"
	"Exit status: 0 all recorded; 1 some files could not be recorded (listed);\n"
	"2 bad usage; 3 store or I/O error.\n";

typedef struct add_ui {
	int quiet;
	int tty;
	json_t *problems;
	struct timespec start;
} add_ui;

static void on_problem(void *ctx, const char *path, const char *what)
{
	add_ui *ui = ctx;

	if (ui->problems) {
		json_t *o = json_object();

		cli_json_set_path(o, "path", path);
		json_object_set_new(o, "problem", json_string(what));
		json_array_append_new(ui->problems, o);
	}
	if (!ui->quiet)
		fprintf(stderr, "cleanroom add: %s: %s\n", path, what);
}

static void on_progress(void *ctx, const cr_add_stats *st)
{
	add_ui *ui = ctx;
	char b[32];

	if (ui->quiet || !ui->tty)
		return;
	fprintf(stderr, "\r%llu files, %s, %llu hashed, %llu cached, %llu recorded",
	        (unsigned long long)st->files, cli_bytes(b, st->bytes),
	        (unsigned long long)st->hashed_files, (unsigned long long)st->cached_files,
	        (unsigned long long)st->recorded);
}

int cmd_add(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"jobs", required_argument, NULL, 'j'},
		{"nice", required_argument, NULL, 'n'},
		{"json", no_argument, NULL, 'J'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_path = NULL;
	cr_add_options o = {0};
	cr_add_stats st;
	add_ui ui = {0};
	cr_store_state state;
	cr_store *store;
	uint64_t jobs, nice = 10;
	struct timespec end;
	double secs;
	char hex[65], b[32];
	int json = 0, c, rc, code = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "hj:q", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'j':
			if (cli_parse_u64("add", "--jobs", optarg, &jobs) || jobs == 0 || jobs > 1024)
				return cli_usage_error("add", "--jobs must be 1..1024");
			o.threads = (unsigned)jobs;
			break;
		case 'n':
			if (cli_parse_u64("add", "--nice", optarg, &nice) || nice > 19)
				return cli_usage_error("add", "--nice must be 0..19");
			break;
		case 'J': json = 1; break;
		case 'q': ui.quiet = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("add", "bad option");
		}
	}
	if (optind == argc)
		return cli_usage_error("add", "name at least one file or folder to add");
	if ((store = cli_open_store("add", cli_store_path(store_path), CR_STORE_WRITE, &code)) == NULL)
		return code;
	ui.tty = isatty(2);
	if (json)
		ui.problems = json_array();
	o.nice = (int)nice;
	o.problem = on_problem;
	o.progress = on_progress;
	o.ctx = &ui;
	clock_gettime(CLOCK_MONOTONIC, &ui.start);
	rc = cr_add_paths(store, (const char *const *)argv + optind, (size_t)(argc - optind), &o, &st);
	clock_gettime(CLOCK_MONOTONIC, &end);
	secs = (double)(end.tv_sec - ui.start.tv_sec) + (double)(end.tv_nsec - ui.start.tv_nsec) / 1e9;
	if (ui.tty && !ui.quiet)
		fputc('\n', stderr);
	if (rc) {
		code = cli_fail("add", rc);
		if (code == EXIT_USAGE || code == EXIT_VERIFY)
			code = EXIT_ENV;
		json_decref(ui.problems);
		cr_store_free(store);
		return code;
	}
	cr_store_state_get(store, &state);
	if (st.failed)
		code = EXIT_VERIFY;
	if (json) {
		cli_print_json(json_pack(
			"{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:I,s:s,s:o}", "files", (json_int_t)st.files,
			"bytes", (json_int_t)st.bytes, "recorded", (json_int_t)st.recorded, "unchanged",
			(json_int_t)st.unchanged, "hashed_files", (json_int_t)st.hashed_files, "hashed_bytes",
			(json_int_t)st.hashed_bytes, "cached_files", (json_int_t)st.cached_files, "skipped",
			(json_int_t)st.skipped, "failed", (json_int_t)st.failed, "shards",
			(json_int_t)st.shards, "seconds", secs, "tree_size",
			(json_int_t)state.size, "root", cli_hex32(hex, state.root), "problems", ui.problems));
	} else {
		printf("added %llu files (%s): %llu recorded, %llu unchanged, %llu hashed, %llu from cache",
		       (unsigned long long)st.files, cli_bytes(b, st.bytes), (unsigned long long)st.recorded,
		       (unsigned long long)st.unchanged, (unsigned long long)st.hashed_files,
		       (unsigned long long)st.cached_files);
		if (st.shards)
			printf(", %llu archives with member manifests", (unsigned long long)st.shards);
		if (st.skipped)
			printf(", %llu skipped", (unsigned long long)st.skipped);
		if (st.failed)
			printf(", %llu FAILED", (unsigned long long)st.failed);
		printf("\ntree size %llu, root %s\n", (unsigned long long)state.size,
		       cli_hex32(hex, state.root));
	}
	cr_store_free(store);
	return code;
}
