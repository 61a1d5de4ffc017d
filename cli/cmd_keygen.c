/* cleanroom keygen: make the Ed25519 key pair that seals a store. */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/seal.h"
#include "cli/common.h"

static const char help[] =
    "usage: cleanroom keygen [--out DIR] [--name NAME] [--force] [--json]\n"
    "\n"
    "Generate an Ed25519 key pair for `cleanroom seal` and write:\n"
    "  DIR/cleanroom.key   the private key (PKCS#8 PEM), created mode 0600; keep it secret\n"
    "  DIR/cleanroom.pub   the public key (SubjectPublicKeyInfo PEM), for auditors\n"
    "  DIR/cleanroom.vkey  the C2SP verifier key NAME+KEYID+BASE64; the only place the\n"
    "                      key name is kept (seal reads it from there)\n"
    "\n"
    "  --out DIR    where to write (default: the store folder: --store, $CLEANROOM_STORE,\n"
    "               else ./.cleanroom); created mode 0700 when missing\n"
    "  --name NAME  the key name on signature lines (default \"cleanroom\"; no spaces or '+')\n"
    "  --force      replace an existing key pair (the old private key is lost)\n"
    "  --json       print {key_name, key_id, vkey, private_key, public_key, vkey_path}\n"
    "\n"
    "Exit status: 0 ok; 2 bad usage; 3 key files exist (without --force) or I/O error.\n"
    "See docs/formats/seal.md.\n";

int cmd_keygen(int argc, char **argv)
{
	static const struct option opts[] = {
		{"out", required_argument, NULL, 'o'},
		{"store", required_argument, NULL, 's'},
		{"name", required_argument, NULL, 'n'},
		{"force", no_argument, NULL, 'f'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *dir = NULL, *store = NULL, *name = CR_KEY_DEFAULT_NAME;
	char vtext[CR_VKEY_MAX], abs[PATH_MAX], id[9];
	char *paths[3] = {NULL, NULL, NULL};
	static const char *const files[3] = {CR_KEY_PRIVATE_FILE, CR_KEY_PUBLIC_FILE,
	                                     CR_KEY_VKEY_FILE};
	int json = 0, force = 0, c, rc, code = EXIT_OK;
	cr_vkey vk;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'o': dir = optarg; break;
		case 's': store = optarg; break;
		case 'n': name = optarg; break;
		case 'f': force = 1; break;
		case 'j': json = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("keygen", "bad option");
		}
	}
	if (optind != argc)
		return cli_usage_error("keygen", "unexpected argument '%s'", argv[optind]);
	if (!cr_note_name_valid(name, strlen(name)))
		return cli_usage_error("keygen",
		                       "--name '%s' is not a valid key name: 1 to %d bytes "
		                       "of UTF-8 without spaces, '+' or control characters",
		                       name, CR_NOTE_MAX_NAME);
	if (!dir || !*dir)
		dir = cli_store_path(store);

	if ((rc = cr_key_generate(dir, name, force, &vk)) != 0) {
		code = cli_fail("keygen", rc);
		if (rc == CR_EEXISTS)
			fprintf(
			    stderr,
			    "cleanroom keygen: pass --force to replace the key pair "
			    "(anything sealed with the old key then needs its .pub to verify)\n");
		/* An existing key or a bad folder is the environment, not the command line. */
		return code == EXIT_USAGE ? EXIT_ENV : code;
	}
	cr_vkey_format(&vk, vtext);
	snprintf(id, sizeof(id), "%08x", (unsigned)vk.id);
	if (!realpath(dir, abs))
		snprintf(abs, sizeof(abs), "%s", dir);
	for (int i = 0; i < 3; i++) {
		size_t n = strlen(abs) + strlen(files[i]) + 2;

		if ((paths[i] = malloc(n)) == NULL) {
			fprintf(stderr, "cleanroom keygen: out of memory\n");
			code = EXIT_ENV;
			goto done;
		}
		snprintf(paths[i], n, "%s/%s", abs, files[i]);
	}
	if (json) {
		json_t *o =
		    json_pack("{s:s,s:s,s:s}", "key_name", vk.name, "key_id", id, "vkey", vtext);

		cli_json_set_path(o, "private_key", paths[0]);
		cli_json_set_path(o, "public_key", paths[1]);
		cli_json_set_path(o, "vkey_path", paths[2]);
		cli_print_json(o);
	} else {
		printf("private key   %s (mode 0600: keep it secret, never put it in a bundle)\n",
		       paths[0]);
		printf("public key    %s\n", paths[1]);
		printf("verifier key  %s\n", paths[2]);
		printf("key name      %s\n", vk.name);
		printf("key id        %s\n", id);
		printf("%s\n", vtext);
	}
done:
	for (int i = 0; i < 3; i++)
		free(paths[i]);
	return code;
}
