/* cleanroom verify: check an audit bundle offline. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/verify.h"
#include "cli/common.h"
#include "util/codec.h"

static const char help[] =
	"usage: cleanroom verify [--key PUBLIC_PEM] [--data DIR] [--checkpoints DIR]\n"
	"                        [--root HEX] [--previous OLD_BUNDLE] [--json] BUNDLE\n"
	"\n"
	"Check an audit bundle without the store: the archive is safe and complete\n"
	"(manifest), the seal's signature, the Merkle root recomputed from every\n"
	"event, every inclusion proof, every consistency proof from an earlier seal\n"
	"(signed with the same key), the attestation (signature and statement\n"
	"against the events) and anchor.json. Each failure names what and where.\n"
	"\n"
	"  --key PUBLIC_PEM     the signer's public key you trust (without it, the key\n"
	"                       inside the bundle is used: that proves consistency only)\n"
	"  --data DIR           rehash every recorded input found under DIR; list\n"
	"                       missing, extra and changed files\n"
	"  --checkpoints DIR    the same for checkpoints\n"
	"  --root HEX           the root as anchored (read from the chain) must match\n"
	"  --previous OLD       an earlier bundle of the same log: this log must extend it\n"
	"  --json               one JSON object: {ok, checks: [{check, ok, detail}], ...}\n"
	"\n"
	"Exit status (docs/formats/bundle.md, \"Refusals and exit status\"):\n"
	"  0  every check passed\n"
	"  1  a check failed: the bundle (or the --previous one) is damaged, tampered\n"
	"     with or hostile (the \"archive\" check), or disagrees with --key, --root,\n"
	"     --previous, --data or --checkpoints\n"
	"  2  bad usage (an unknown option, not one bundle, --root not 64 hex digits)\n"
	"  3  nothing was checked: the bundle or --previous cannot be read as an archive\n"
	"     at all (missing, a folder, empty, not a tar, gzip or zstd stream, no\n"
	"     readable first member); --key cannot be loaded as an Ed25519 public key;\n"
	"     --data or --checkpoints is not a folder; memory or temporary space ran out\n";

typedef struct verify_ui {
	json_t *checks;
} verify_ui;

static void on_check(void *ctx, const char *check, int ok, const char *detail)
{
	verify_ui *ui = ctx;

	if (ui->checks) {
		json_t *o = json_pack("{s:s,s:b}", "check", check, "ok", ok);
		json_t *d = json_string(detail); /* NULL when the detail is not UTF-8 */

		json_object_set_new(o, "detail", d ? d : json_string("(not UTF-8)"));
		json_array_append_new(ui->checks, o);
	} else {
		printf("%-4s %-12s %s\n", ok ? "ok" : "FAIL", check, detail);
	}
}

int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{"key", required_argument, NULL, 'k'},
		{"data", required_argument, NULL, 'd'},
		{"checkpoints", required_argument, NULL, 'c'},
		{"root", required_argument, NULL, 'r'},
		{"previous", required_argument, NULL, 'p'},
		{"json", no_argument, NULL, 'j'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	cr_verify_options o = {0};
	cr_verify_summary sum;
	verify_ui ui = {0};
	char hex[65];
	int json = 0, c, rc;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'k': o.public_pem = optarg; break;
		case 'd': o.data_dir = optarg; break;
		case 'c': o.checkpoints_dir = optarg; break;
		case 'r': o.root_hex = optarg; break;
		case 'p': o.previous = optarg; break;
		case 'j': json = 1; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("verify", "bad option");
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("verify", "name one bundle");
	if (o.root_hex) {
		const char *h = strncmp(o.root_hex, "0x", 2) == 0 ? o.root_hex + 2 : o.root_hex;
		uint8_t root[32];

		if (cr_hex_decode(root, sizeof(root), h, strlen(h)) != 0) {
			cr_error_clear();
			return cli_usage_error("verify", "--root takes the 32-byte root as 64 hex digits");
		}
	}
	o.bundle = argv[optind];
	if (json)
		ui.checks = json_array();
	rc = cr_verify_bundle(&o, on_check, &ui, &sum);
	if (rc && rc != CR_EVERIFY) {
		json_decref(ui.checks);
		cli_fail("verify", rc);
		return EXIT_ENV;
	}
	if (json) {
		json_t *out = json_pack("{s:b,s:I,s:I,s:I,s:s,s:b,s:o}", "ok", rc == 0, "checks_run",
		                        (json_int_t)sum.checks, "failures", (json_int_t)sum.failures,
		                        "tree_size", (json_int_t)sum.tree_size, "root",
		                        cli_hex32(hex, sum.root), "key_from_bundle", sum.key_from_bundle,
		                        "checks", ui.checks);

		json_object_set_new(out, "origin", json_string(sum.origin));
		cli_print_json(out);
	} else {
		printf("%s: %s: %llu checks, %llu failed; %llu events, root %s%s\n", o.bundle,
		       rc == 0 ? "VERIFIED" : "FAILED", (unsigned long long)sum.checks,
		       (unsigned long long)sum.failures, (unsigned long long)sum.events,
		       cli_hex32(hex, sum.root),
		       sum.key_from_bundle ? " (key from the bundle itself: pass --key to trust it)" : "");
	}
	return rc == 0 ? EXIT_OK : EXIT_VERIFY;
}
