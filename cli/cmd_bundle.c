/* cleanroom bundle: seal the log and write the audit bundle. */
#include <getopt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>

#include "cleanroom/anchor.h"
#include "cleanroom/attest.h"
#include "cleanroom/bundle.h"
#include "cleanroom/dsse.h"
#include "cleanroom/error.h"
#include "cleanroom/seal.h"
#include "cli/common.h"

static const char help[] =
	"usage: cleanroom bundle [--store DIR] [--key PRIVATE_PEM] [--name NAME]\n"
	"                        [-o FILE] [--gzip] [--prove-inputs] [--json]\n"
	"\n"
	"Seal the log (the seal is also kept in DIR/seals/) and write the audit bundle:\n"
	"one tar archive (zstd, or gzip with --gzip or a .gz name) with the events, the\n"
	"seal, an in-toto attestation in a DSSE envelope, inclusion proofs for every\n"
	"checkpoint, a consistency proof from every earlier seal in DIR/seals/ made\n"
	"with the same key, the public key and anchor.json (docs/formats/bundle.md).\n"
	"The same log, seals and key always give the same bytes. Check it with\n"
	"`cleanroom verify`.\n"
	"\n"
	"  --key PRIVATE_PEM  the signing key (default DIR/cleanroom.key)\n"
	"  --name NAME        the key name (default: from the .vkey beside the key)\n"
	"  -o FILE            the bundle (default cleanroom-bundle.tar.zst)\n"
	"  --gzip             gzip instead of zstd\n"
	"  --prove-inputs     also an inclusion proof for every input event\n"
	"  --json             print a JSON summary\n"
	"\n"
	"Exit status: 0 written; 2 bad usage; 3 store, key or I/O error (among them an\n"
	"earlier seal of this key whose root the log no longer has: a rewritten log).\n";

static char *public_pem(EVP_PKEY *key)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data = NULL, *out = NULL;
	long n;

	if (b && PEM_write_bio_PUBKEY(b, key) == 1 && (n = BIO_get_mem_data(b, &data)) > 0 &&
	    (out = malloc((size_t)n + 1)) != NULL) {
		memcpy(out, data, (size_t)n);
		out[n] = '\0';
	}
	BIO_free(b);
	return out;
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

int cmd_bundle(int argc, char **argv)
{
	static const struct option opts[] = {
		{"store", required_argument, NULL, 's'},
		{"key", required_argument, NULL, 'k'},
		{"name", required_argument, NULL, 'n'},
		{"output", required_argument, NULL, 'o'},
		{"gzip", no_argument, NULL, 'g'},
		{"prove-inputs", no_argument, NULL, 'p'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *store_path = NULL, *key_arg = NULL, *name_arg = NULL;
	const char *out_path = "cleanroom-bundle.tar.zst";
	char name[CR_NOTE_MAX_NAME + 1], hex[65], abs[PATH_MAX];
	char vtext[CR_VKEY_MAX + 1]; /* the verifier key and a newline */
	char *origin = NULL, *note = NULL, *statement = NULL, *envelope = NULL;
	char *anchor = NULL, *pem = NULL;
	size_t note_len = 0, stmt_len = 0, env_len = 0, anchor_len = 0;
	cr_bundle_options bo = {0};
	cr_bundle_stats bs;
	cr_store *store = NULL;
	cr_store_state st;
	EVP_PKEY *key = NULL;
	cr_vkey vk;
	int json = 0, c, rc, code = EXIT_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "ho:", opts, NULL)) != -1) {
		switch (c) {
		case 's': store_path = optarg; break;
		case 'k': key_arg = optarg; break;
		case 'n': name_arg = optarg; break;
		case 'o': out_path = optarg; break;
		case 'g': bo.gzip = 1; break;
		case 'p': bo.prove_inputs = 1; break;
		case 'j': json = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("bundle", "bad option");
		}
	}
	if (optind != argc)
		return cli_usage_error("bundle", "unexpected argument '%s'", argv[optind]);
	if (!*out_path)
		return cli_usage_error("bundle", "-o needs a file name");
	if (ends_with(out_path, ".gz") || ends_with(out_path, ".tgz"))
		bo.gzip = 1;
	store_path = cli_store_path(store_path);
	if ((store = cli_open_store("bundle", store_path, 0, &code)) == NULL)
		return code;
	cr_store_state_get(store, &st);
	if (st.size == 0) {
		code = cli_fail("bundle", cr_error_set(CR_EINVAL, "store %s is empty: nothing to bundle",
		                                      store_path));
		code = EXIT_ENV;
		goto done;
	}
	if ((rc = cli_load_signing_key(store_path, key_arg, name_arg, &key, name)) != 0)
		goto fail;
	if ((pem = public_pem(key)) == NULL) {
		rc = cr_error_set(CR_ECRYPTO, "cannot write the public key");
		goto fail;
	}
	if ((rc = cr_seal_origin(&origin, store)) != 0 ||
	    (rc = cr_seal_make(&note, &note_len, store, key, name, origin)) != 0)
		goto fail;
	/* An earlier seal at this size (another key) is kept as evidence; the
	 * bundle carries its own. */
	if ((rc = cr_seal_save(NULL, store, note, note_len)) == CR_EEXISTS) {
		fprintf(stderr, "cleanroom bundle: note: %s; the store keeps the earlier seal\n",
		        cr_error_last());
		cr_error_clear();
	} else if (rc) {
		goto fail;
	}
	if ((rc = cr_vkey_from_key(&vk, key, name)) != 0 ||
	    (rc = cr_attest_build(&statement, &stmt_len, store, note, note_len)) != 0 ||
	    (rc = cr_dsse_sign(&envelope, &env_len, CR_DSSE_INTOTO_TYPE, statement, stmt_len, key)) != 0 ||
	    (rc = cr_anchor_build(&anchor, &anchor_len, note, note_len)) != 0)
		goto fail;
	cr_vkey_format(&vk, vtext);
	strcat(vtext, "\n");
	bo.tree_size = st.size;
	bo.origin = origin;
	bo.seal_note = note;
	bo.public_pem = pem;
	bo.vkey = vtext;
	bo.attestation = envelope;
	bo.anchor = anchor;
	if ((rc = cr_bundle_write(store, out_path, &bo, &bs)) != 0)
		goto fail;
	if (!realpath(out_path, abs))
		snprintf(abs, sizeof(abs), "%s", out_path);
	if (json) {
		json_t *o = json_pack("{s:I,s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "tree_size",
		                      (json_int_t)st.size, "root", cli_hex32(hex, st.root), "origin",
		                      origin, "events", (json_int_t)bs.events, "checkpoints",
		                      (json_int_t)bs.checkpoints, "inputs", (json_int_t)bs.inputs,
		                      "proofs", (json_int_t)bs.proofs, "bytes", (json_int_t)bs.bytes,
		                      "earlier_seals", (json_int_t)bs.consistency, "seals_skipped",
		                      (json_int_t)bs.seals_skipped);

		cli_json_set_path(o, "bundle", abs);
		cli_print_json(o);
	} else {
		printf("wrote %s: %llu events, %llu checkpoints, %llu proofs, %llu earlier seals; root %s\n",
		       abs, (unsigned long long)bs.events, (unsigned long long)bs.checkpoints,
		       (unsigned long long)bs.proofs, (unsigned long long)bs.consistency,
		       cli_hex32(hex, st.root));
	}
	if (bs.seals_skipped)
		fprintf(stderr, "cleanroom bundle: note: %llu earlier seals in %s/%s were left out "
		        "(another key, key name or origin, not a seal, or over %u bytes)\n",
		        (unsigned long long)bs.seals_skipped, store_path, CR_SEAL_DIR, CR_BUNDLE_SEAL_MAX);
	goto done;
fail:
	cli_fail("bundle", rc);
	code = EXIT_ENV;
done:
	cr_key_free(key);
	free(origin);
	free(note);
	free(statement);
	free(envelope);
	free(anchor);
	free(pem);
	cr_store_free(store);
	return code;
}
