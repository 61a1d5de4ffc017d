/* cleanroom prove: inclusion and consistency proofs from the store. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/merkle.h"
#include "cli/common.h"

static const char help[] =
	"usage: cleanroom prove [--store DIR] [--json] [--size N] INDEX\n"
	"       cleanroom prove [--store DIR] [--json] --consistency OLD_SIZE [NEW_SIZE]\n"
	"\n"
	"Print an RFC 9162 inclusion proof of leaf INDEX (0-based) in the tree of\n"
	"size N (default: the whole log): index, tree size, leaf hash, audit path\n"
	"(hex, leaf level first) and root. With --consistency, print the proof that\n"
	"the tree of OLD_SIZE is a prefix of the tree of NEW_SIZE (default: the whole\n"
	"log) with both roots. Every proof is verified before it is printed.\n";

static json_t *path_json(uint8_t path[][CR_HASH_SIZE], size_t n)
{
	json_t *a = json_array();
	char hex[65];

	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(cli_hex32(hex, path[i])));
	return a;
}

static void print_path(uint8_t path[][CR_HASH_SIZE], size_t n)
{
	char hex[65];

	printf("path        %zu hashes\n", n);
	for (size_t i = 0; i < n; i++)
		printf("  %2zu  %s\n", i, cli_hex32(hex, path[i]));
}

int cmd_prove(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"size", required_argument, NULL, 'n'},
		{"consistency", no_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_path = NULL;
	uint8_t path[CR_MERKLE_MAX_PATH][CR_HASH_SIZE], root[CR_HASH_SIZE], root1[CR_HASH_SIZE],
		leaf[CR_HASH_SIZE];
	uint64_t size = 0, index, size1, size2 = 0;
	size_t n = 0;
	cr_store *store;
	cr_store_state state;
	char hex[65], hex2[65];
	int json = 0, consistency = 0, c, rc, code = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'j': json = 1; break;
		case 'n':
			if (cli_parse_u64("prove", "--size", optarg, &size))
				return EXIT_USAGE;
			if (size == 0)
				return cli_usage_error("prove", "--size must be at least 1");
			break;
		case 'c': consistency = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("prove", "bad option");
		}
	}
	if (consistency) {
		if (size)
			return cli_usage_error("prove", "--size goes with an inclusion proof; give NEW_SIZE instead");
		if (argc - optind < 1 || argc - optind > 2)
			return cli_usage_error("prove", "--consistency takes OLD_SIZE [NEW_SIZE]");
		if (cli_parse_u64("prove", "OLD_SIZE", argv[optind], &size1) ||
		    (argc - optind == 2 && cli_parse_u64("prove", "NEW_SIZE", argv[optind + 1], &size2)))
			return EXIT_USAGE;
		if (size1 == 0)
			return cli_usage_error("prove", "OLD_SIZE must be at least 1 (every log extends the empty one)");
	} else {
		if (argc - optind != 1)
			return cli_usage_error("prove", "give exactly one leaf INDEX");
		if (cli_parse_u64("prove", "INDEX", argv[optind], &index))
			return EXIT_USAGE;
	}
	if ((store = cli_open_store("prove", cli_store_path(store_path), 0, &code)) == NULL)
		return code;
	cr_store_state_get(store, &state);
	if (consistency) {
		if (size2 == 0)
			size2 = state.size;
		if (size2 > state.size || size1 > size2) {
			fprintf(stderr, "cleanroom prove: need OLD_SIZE <= NEW_SIZE <= %llu (the log's size)\n",
			        (unsigned long long)state.size);
			code = EXIT_USAGE;
			goto done;
		}
		if ((rc = cr_store_consistency_proof(store, size1, size2, path, &n)) != 0 ||
		    (rc = cr_store_root_at(store, size1, root1)) != 0 ||
		    (rc = cr_store_root_at(store, size2, root)) != 0 ||
		    (rc = cr_merkle_verify_consistency(size1, size2, root1, root, (const uint8_t (*)[32])path, n)) != 0) {
			code = cli_fail("prove", rc);
			goto done;
		}
		if (json)
			cli_print_json(json_pack("{s:I,s:I,s:s,s:s,s:o}", "old_size", (json_int_t)size1, "new_size",
			                         (json_int_t)size2, "old_root", cli_hex32(hex, root1), "new_root",
			                         cli_hex32(hex2, root), "proof", path_json(path, n)));
		else {
			printf("old size    %llu\nold root    %s\n", (unsigned long long)size1, cli_hex32(hex, root1));
			printf("new size    %llu\nnew root    %s\n", (unsigned long long)size2, cli_hex32(hex, root));
			print_path(path, n);
		}
		goto done;
	}
	if (size == 0)
		size = state.size;
	if (size > state.size || index >= size) {
		fprintf(stderr, "cleanroom prove: leaf %llu is not in a tree of size %llu (the log holds %llu)\n",
		        (unsigned long long)index, (unsigned long long)size, (unsigned long long)state.size);
		code = EXIT_USAGE;
		goto done;
	}
	if ((rc = cr_store_leaf_hash(store, index, leaf)) != 0 ||
	    (rc = cr_store_inclusion_proof(store, index, size, path, &n)) != 0 ||
	    (rc = cr_store_root_at(store, size, root)) != 0 ||
	    (rc = cr_merkle_verify_inclusion(leaf, index, size, (const uint8_t (*)[32])path, n, root)) != 0) {
		code = cli_fail("prove", rc);
		goto done;
	}
	if (json)
		cli_print_json(json_pack("{s:I,s:I,s:s,s:o,s:s}", "index", (json_int_t)index, "tree_size",
		                         (json_int_t)size, "leaf_hash", cli_hex32(hex, leaf), "audit_path",
		                         path_json(path, n), "root", cli_hex32(hex2, root)));
	else {
		printf("index       %llu\ntree size   %llu\n", (unsigned long long)index, (unsigned long long)size);
		printf("leaf hash   %s\n", cli_hex32(hex, leaf));
		print_path(path, n);
		printf("root        %s\n", cli_hex32(hex, root));
	}
done:
	cr_store_free(store);
	return code;
}
