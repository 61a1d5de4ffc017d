/*
 * cleanroom: the command-line entry point. Dispatches to one cmd_*.c per
 * subcommand; each parses its own options and returns an exit code.
 */
#include <stdio.h>
#include <string.h>

#include "cleanroom/version.h"
#include "cli/common.h"



static const struct {
	const char *name;
	cli_cmd_fn fn;
	const char *summary;
} commands[] = {
	{"init", cmd_init, "create a store"},
	{"record", cmd_record, "run a command and record what it reads and writes"},
	{"lineage", cmd_lineage, "which inputs fed a checkpoint"},
	{"show", cmd_show, "a recorded checkpoint: tensor manifest and delta"},
	{"replay", cmd_replay, "check checkpoint history against the files"},
	{"diff", cmd_diff, "tensor-level delta of two checkpoints"},
	{"manifest", cmd_manifest, "tensor manifest of a checkpoint file (and its delta)"},
	{"find", cmd_find, "which runs and checkpoints a file or shard member fed"},
	{"add", cmd_add, "hash files and folders and record them as input events"},
	{"log", cmd_log, "list events, or export every leaf's exact bytes"},
	{"status", cmd_status, "tree size, root hash and counts"},
	{"prove", cmd_prove, "inclusion and consistency proofs"},
	{"check", cmd_check, "verify the log is append-only and matches its index"},
	{"keygen", cmd_keygen, "make an Ed25519 signing key"},
	{"seal", cmd_seal, "sign the log's tree head (C2SP signed note)"},
	{"bundle", cmd_bundle, "write the signed audit bundle"},
	{"verify", cmd_verify, "check an audit bundle offline"},
	{"index", cmd_index, "maintain the SQLite index (index rebuild)"},
};

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: cleanroom <command> [options] [args]\n"
	        "\n"
	        "Records what a training run reads and writes into an append-only,\n"
	        "tamper-evident lineage log (git + RFC 9162 Merkle tree).\n"
	        "\n"
	        "Commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fprintf(f,
	        "\n"
	        "Every command takes --help. The store is --store DIR, else $CLEANROOM_STORE,\n"
	        "else ./.cleanroom.\n"
	        "\n"
	        "Exit status: 0 ok; 1 verification failed or problems found; 2 bad usage;\n"
	        "3 environment, I/O or store error.\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return EXIT_OK;
	}
	if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "version") == 0) {
		printf("cleanroom %s\n", CLEANROOM_VERSION_STRING);
		return EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].fn(argc - 1, argv + 1);
	}
	fprintf(stderr, "cleanroom: unknown command '%s'\n\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
