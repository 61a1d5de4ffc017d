/* cleanroom seal: sign the store's tree head as a C2SP checkpoint and keep it. */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/seal.h"
#include "cli/common.h"
#include "util/codec.h"

static const char help[] =
    "usage: cleanroom seal [--store DIR] [--key PRIVATE_PEM] [--name NAME] [--json]\n"
    "\n"
    "Sign the store's committed tree head -- origin, tree size, root hash -- as a\n"
    "C2SP tlog-checkpoint in a C2SP signed note (Ed25519), save it as\n"
    "DIR/seals/<tree size, 16 digits>.note and print it.\n"
    "\n"
    "  --key PRIVATE_PEM  the private key (default DIR/cleanroom.key, from `cleanroom\n"
    "                     keygen`); refused when group or others may read it\n"
    "  --name NAME        the key name on the signature line (default: the name in the\n"
    "                     .vkey beside the key, e.g. cleanroom.vkey for cleanroom.key)\n"
    "  --json             print {origin, tree_size, root, key_name, key_id, vkey, note, path}\n"
    "\n"
    "The origin is read from DIR/origin, which the first seal creates as\n"
    "cleanroom.local/<random UUID>. Sealing an empty store is an error. A seal is\n"
    "never replaced: sealing again at the same size with another key or name fails.\n"
    "\n"
    "Exit status: 0 ok; 1 the store is damaged; 2 bad usage; 3 key, store or I/O error.\n"
    "See docs/formats/seal.md (it shows how to check a seal with openssl by hand).\n";

/* Print the library's message; a bad key or store file is the environment, not usage. */
static int fail(int rc)
{
	int code = cli_fail("seal", rc);

	return code == EXIT_USAGE ? EXIT_ENV : code;
}

int cmd_seal(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"key", required_argument, NULL, 'k'},
		{"name", required_argument, NULL, 'n'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_path = NULL, *key_arg = NULL, *name_arg = NULL;
	char name[CR_NOTE_MAX_NAME + 1], vtext[CR_VKEY_MAX], hex[65], id[9], abs[PATH_MAX];
	char *origin = NULL, *note = NULL, *saved = NULL;
	size_t note_len = 0;
	cr_store *store = NULL;
	cr_store_state st;
	EVP_PKEY *key = NULL;
	cr_vkey vk;
	int json = 0, c, rc, code = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'k': key_arg = optarg; break;
		case 'n': name_arg = optarg; break;
		case 'j': json = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("seal", "bad option");
		}
	}
	if (optind != argc)
		return cli_usage_error("seal", "unexpected argument '%s'", argv[optind]);
	if (key_arg && !*key_arg)
		return cli_usage_error("seal", "--key needs a file name");
	if (name_arg && !cr_note_name_valid(name_arg, strlen(name_arg)))
		return cli_usage_error("seal",
		                       "--name '%s' is not a valid key name: 1 to %d bytes "
		                       "of UTF-8 without spaces, '+' or control characters",
		                       name_arg, CR_NOTE_MAX_NAME);
	store_path = cli_store_path(store_path);
	if ((store = cli_open_store("seal", store_path, 0, &code)) == NULL)
		return code;

	if ((rc = cli_load_signing_key(store_path, key_arg, name_arg, &key, name)) != 0) {
		code = fail(rc);
		if (rc == CR_ENOTFOUND && !name_arg)
			fprintf(stderr, "cleanroom seal: pass --name NAME to name the key\n");
		goto done;
	}
	/* Sealing an empty store would create its origin for nothing: check first. */
	cr_store_state_get(store, &st);
	if (st.size == 0) {
		code = fail(cr_error_set(CR_EINVAL,
		                         "store %s is empty: there is nothing to seal yet "
		                         "(record or add something first)",
		                         store_path));
		goto done;
	}
	if ((rc = cr_seal_origin(&origin, store)) != 0 ||
	    (rc = cr_seal_make(&note, &note_len, store, key, name, origin)) != 0 ||
	    (rc = cr_vkey_from_key(&vk, key, name)) != 0 ||
	    (rc = cr_seal_save(&saved, store, note, note_len)) != 0) {
		code = fail(rc);
		goto done;
	}

	if (json) {
		json_t *o;

		cr_vkey_format(&vk, vtext);
		snprintf(id, sizeof(id), "%08x", (unsigned)vk.id);
		o = json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:s}", "origin", origin, "tree_size",
		              (json_int_t)st.size, "root", cli_hex32(hex, st.root), "key_name",
		              name, "key_id", id, "vkey", vtext, "note", note);
		if (!realpath(saved, abs))
			snprintf(abs, sizeof(abs), "%s", saved);
		cli_json_set_path(o, "path", abs);
		cli_print_json(o);
	} else {
		fwrite(note, 1, note_len, stdout);
	}
done:
	free(saved);
	free(note);
	free(origin);
	cr_key_free(key);
	cr_store_free(store);
	return code;
}
