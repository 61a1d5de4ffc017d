/* cleanroom record: run a command under the hook and record its lineage. */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/record.h"
#include "cli/common.h"

static const char help[] =
	"usage: cleanroom record [--store DIR] [--data DIR]... [--checkpoints GLOB]...\n"
	"                        [--jobs N] [--nice idle|N] [--no-delta] [--json] [--quiet]\n"
	"                        -- CMD [ARGS...]\n"
	"\n"
	"Run CMD with the cleanroom hook and record, as events in the store:\n"
	"  - the run (command, working folder, user, host, times, exit status, the\n"
	"    executable's hash, a selection of environment variables; never secrets);\n"
	"  - every data file read (path, SHA-256, size, first reader pid), once per\n"
	"    content however often it is read;\n"
	"  - every checkpoint written (files matching --checkpoints; default *.pt,\n"
	"    *.pth, *.ckpt, *.safetensors, *.gguf, *.onnx, *.bin), hashed from the very\n"
	"    file that was closed, with its lineage interval: the inputs read since the\n"
	"    previous checkpoint (see `cleanroom lineage`), its tensor manifest\n"
	"    (safetensors, PyTorch zip, GGUF, ONNX; per-tensor SHA-256) and its delta\n"
	"    from the run's previous checkpoint (see `cleanroom show`);\n"
	"  - every process of the run, and the code and libraries it loaded, as the\n"
	"    run's environment;\n"
	"  - what could not be observed (static or setuid executables, ...).\n"
	"Data are the files under the --data folders; without --data, every regular\n"
	"file read outside system, interpreter and library locations.\n"
	"\n"
	"Signals sent to cleanroom are passed to CMD. The exit status is CMD's (128 +\n"
	"signal if a signal ended it); 3 if the recording itself failed, 127 if CMD\n"
	"could not be started.\n"
	"\n"
	"  --store DIR         the store (default ./.cleanroom; created if missing)\n"
	"  --data DIR          a data folder (repeatable)\n"
	"  --checkpoints GLOB  a checkpoint pattern, matched against the file name or,\n"
	"                      if it holds a '/', the whole path (repeatable)\n"
	"  --jobs N            hashing threads (default: all CPUs but one)\n"
	"  --nice idle|N       once CMD has started, lower the recorder's own priority\n"
	"                      for the rest of the recording: idle (the default)\n"
	"                      hashes data only on CPUs CMD leaves idle (SCHED_IDLE)\n"
	"                      and runs the rest 10 levels lower; N runs all of it N\n"
	"                      levels lower (1..19); 0 leaves it as it is. CMD keeps\n"
	"                      its priority, and so does the checkpoint thread (a\n"
	"                      checkpoint may be rewritten soon)\n"
	"  --no-delta          no weight deltas between checkpoints (manifests are kept)\n"
	"  --json              print a JSON summary on stdout when the run ends\n"
	"  --quiet             no progress or summary on stderr\n";

/* The hook library: $CLEANROOM_PRELOAD, next to this binary, or installed. */
static int find_preload(char out[PATH_MAX])
{
	const char *env = getenv("CLEANROOM_PRELOAD");
	char self[PATH_MAX];
	ssize_t n;

	if (env && *env)
		return realpath(env, out) ? 0 : -1;
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		const char *dir = dirname(self); /* modifies self in place */

		if (snprintf(out, PATH_MAX, "%s/libcleanroom-preload.so", dir) < PATH_MAX &&
		    access(out, R_OK) == 0)
			return 0;
		if (snprintf(out, PATH_MAX, "%s/../lib/cleanroom/libcleanroom-preload.so", dir) < PATH_MAX &&
		    access(out, R_OK) == 0 && realpath(out, self)) {
			snprintf(out, PATH_MAX, "%s", self);
			return 0;
		}
	}
	return -1;
}

int cmd_record(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"data", required_argument, NULL, 'd'},
		{"checkpoints", required_argument, NULL, 'c'},
		{"jobs", required_argument, NULL, 'j'},
		{"json", no_argument, NULL, 'J'},
		{"quiet", no_argument, NULL, 'q'},
		{"no-delta", no_argument, NULL, 'D'},
		{"nice", required_argument, NULL, 'n'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_path = NULL;
	char **roots = NULL, preload[PATH_MAX];
	const char **globs = NULL;
	size_t n_roots = 0, n_globs = 0;
	cr_record_options o = {0};
	cr_record_result res;
	cr_store *store = NULL;
	cr_store_state state;
	uint64_t jobs, nice = CR_RECORD_IDLE;
	char hex[65];
	int json = 0, quiet = 0, no_delta = 0, c, rc, code = EXIT_OK;

	roots = calloc((size_t)argc, sizeof(*roots));
	globs = calloc((size_t)argc, sizeof(*globs));
	if (!roots || !globs) {
		fprintf(stderr, "cleanroom record: out of memory\n");
		code = EXIT_ENV;
		goto done;
	}
	optind = 1;
	/* "+": stop at the first non-option, so CMD's own options stay CMD's. */
	while ((c = getopt_long(argc, argv, "+hj:q", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'd':
			if ((roots[n_roots] = realpath(optarg, NULL)) == NULL) {
				fprintf(stderr, "cleanroom record: data folder %s: %s\n", optarg, strerror(errno));
				code = EXIT_USAGE;
				goto done;
			}
			n_roots++;
			break;
		case 'c': globs[n_globs++] = optarg; break;
		case 'j':
			if (cli_parse_u64("record", "--jobs", optarg, &jobs) || jobs == 0 || jobs > 1024) {
				code = cli_usage_error("record", "--jobs must be 1..1024");
				goto done;
			}
			o.hash_threads = (unsigned)jobs;
			break;
		case 'J': json = 1; break;
		case 'q': quiet = 1; break;
		case 'D': no_delta = 1; break;
		case 'n':
			if (strcmp(optarg, "idle") == 0) {
				nice = CR_RECORD_IDLE;
			} else if (cli_parse_u64("record", "--nice", optarg, &nice) || nice > 19) {
				code = cli_usage_error("record", "--nice must be idle or 0..19");
				goto done;
			}
			break;
		case 'h': fputs(help, stdout); goto done;
		default: code = cli_usage_error("record", "bad option"); goto done;
		}
	}
	if (optind == argc) {
		code = cli_usage_error("record", "give the command to record after --");
		goto done;
	}
	if (find_preload(preload) != 0) {
		fprintf(stderr, "cleanroom record: cannot find libcleanroom-preload.so next to the "
		                "cleanroom binary (set CLEANROOM_PRELOAD)\n");
		code = EXIT_ENV;
		goto done;
	}
	store_path = cli_store_path(store_path);
	if (access(store_path, F_OK) != 0 && (rc = cr_store_init(store_path)) != 0) {
		cli_fail("record", rc);
		code = EXIT_ENV;
		goto done;
	}
	if ((store = cli_open_store("record", store_path, CR_STORE_WRITE, &code)) == NULL)
		goto done;
	o.argv = argv + optind;
	o.data_roots = (const char *const *)roots;
	o.n_data_roots = n_roots;
	o.checkpoint_globs = globs;
	o.n_checkpoint_globs = n_globs;
	o.preload = preload;
	o.quiet = quiet;
	o.no_delta = no_delta;
	o.nice = (int)nice;
	rc = cr_record_run(store, &o, &res);
	if (rc && rc != CR_ENOTFOUND) {
		cli_fail("record", rc);
		code = EXIT_ENV;
		goto done;
	}
	if (rc == CR_ENOTFOUND) {
		fprintf(stderr, "cleanroom record: %s\n", cr_error_last());
		code = 127;
		goto done;
	}
	code = res.exit_status;
	cr_store_state_get(store, &state);
	if (json) {
		cli_print_json(json_pack(
			"{s:s,s:i,s:i,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:s}", "run", res.run_id,
			"exit_status", res.exit_status, "signal", res.signal, "processes",
			(json_int_t)res.processes, "inputs", (json_int_t)res.inputs, "input_bytes",
			(json_int_t)res.input_bytes, "reads", (json_int_t)res.reads, "checkpoints",
			(json_int_t)res.checkpoints, "environment_files", (json_int_t)res.env_files,
			"unobserved", (json_int_t)res.unobserved, "changed", (json_int_t)res.changed,
			"first_event", (json_int_t)res.first_event, "tree_size", (json_int_t)state.size,
			"root", cli_hex32(hex, state.root)));
	}
	if (!quiet) {
		char b[32];

		fprintf(stderr,
		        "cleanroom: run %s: exit %d; %llu inputs (%s), %llu reads, %llu checkpoints, "
		        "%llu processes, %llu environment files, %llu unobserved%s\n",
		        res.run_id, res.exit_status, (unsigned long long)res.inputs,
		        cli_bytes(b, res.input_bytes), (unsigned long long)res.reads,
		        (unsigned long long)res.checkpoints, (unsigned long long)res.processes,
		        (unsigned long long)res.env_files, (unsigned long long)res.unobserved,
		        res.changed ? "; SOME FILES CHANGED DURING THE RUN" : "");
		fprintf(stderr, "cleanroom: tree size %llu, root %s\n", (unsigned long long)state.size,
		        cli_hex32(hex, state.root));
	}
done:
	for (size_t i = 0; roots && i < n_roots; i++)
		free(roots[i]);
	free(roots);
	free(globs);
	cr_store_free(store);
	return code;
}
