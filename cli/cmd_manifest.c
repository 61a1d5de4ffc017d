/* cleanroom manifest: the tensor manifest of a checkpoint file, and its delta from another. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/tensors.h"
#include "cli/common.h"

int cmd_manifest(int argc, char **argv);

static const char help[] =
    "usage: cleanroom manifest [--json] [--against OLD] [--format F] FILE\n"
    "\n"
    "Read a checkpoint file (safetensors, PyTorch zip, GGUF v2/v3, ONNX) and\n"
    "print its tensor manifest: every tensor's name, dtype, shape, offset,\n"
    "length and SHA-256, the manifest's digest and the file's SHA-256, all in\n"
    "one read of the bytes. A file of no known format is hashed whole, with a\n"
    "note saying so. No store is needed.\n"
    "\n"
    "  --against OLD  also print the delta from checkpoint OLD to FILE: tensors\n"
    "                 added, removed and changed (old and new SHA-256) and, for\n"
    "                 F64/F32/F16/BF16 tensors of equal dtype and shape, the L2\n"
    "                 norm and max abs of FILE - OLD and the update relative to\n"
    "                 OLD's norm\n"
    "  --format F     read as F (safetensors, pytorch, gguf, onnx, file) instead\n"
    "                 of detecting the format\n"
    "  --json         print {\"path\", \"sha256\", \"digest\", \"manifest\"[, \"against\",\n"
    "                 \"against_digest\", \"delta\"]} (docs/formats/tensors.md)\n"
    "  --no-file-sha256  skip the whole file's SHA-256 (tensor hashes only;\n"
    "                 \"sha256\" is then absent)\n"
    "\n"
    "Exit status: 0 ok; 1 a file is malformed (the message names it and what is\n"
    "wrong); 2 bad usage; 3 a file cannot be opened or read.\n";

/* Map a library error on a checkpoint: malformed input is "problems found". */
static int fail(int rc)
{
	int code = cli_fail("manifest", rc);

	return rc == CR_EINVAL ? EXIT_VERIFY : (code == EXIT_USAGE ? EXIT_ENV : code);
}

static int open_file(const char *path, int *fd)
{
	if ((*fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		cr_error_set_errno(CR_EIO, errno, "cannot open %s", path);
		return CR_EIO;
	}
	return 0;
}

/* An unlinked temporary file for the old checkpoint's float tensors. */
static int temp_base(int *fd)
{
	const char *dir = getenv("TMPDIR");

	if (!dir || !*dir)
		dir = "/tmp";
	if ((*fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)) < 0)
		return cr_error_set_errno(CR_EIO, errno, "temporary file in %s", dir);
	return 0;
}

static void print_shape(const cr_tensor *t)
{
	putchar('[');
	for (uint32_t k = 0; k < t->ndim; k++)
		printf("%s%llu", k ? "," : "", (unsigned long long)t->shape[k]);
	putchar(']');
}

static void print_manifest(const char *path, const cr_manifest *m)
{
	char hex[65], b[32];

	printf("file      %s\n", path);
	printf("format    %s\n", m->format);
	printf("size      %s (%llu bytes)\n", cli_bytes(b, m->file_size),
	       (unsigned long long)m->file_size);
	if (m->have_file_sha256)
		printf("sha256    %s\n", cli_hex32(hex, m->file_sha256));
	printf("digest    %s\n", cli_hex32(hex, m->digest));
	if (m->note)
		printf("note      %s\n", m->note);
	printf("tensors   %zu\n", m->n);
	for (size_t i = 0; i < m->n; i++) {
		const cr_tensor *t = &m->tensors[i];

		printf("  %s  %s ", cli_hex32(hex, t->sha256), t->dtype);
		print_shape(t);
		printf(" %s%s@%llu+%llu  %s\n", t->member ? t->member : "", t->member ? ":" : "",
		       (unsigned long long)t->offset, (unsigned long long)t->length, t->name);
	}
}

static void print_delta(const char *old_path, const cr_delta *d)
{
	char o[65], n[65];

	printf("delta from %s\n", old_path);
	printf("  added %zu, removed %zu, changed %zu, unchanged %zu\n", d->n_added, d->n_removed,
	       d->n_changed, d->n_unchanged);
	printf("  l2 %.9e  rel %.9e\n", d->l2, d->old_l2 > 0 ? d->l2 / d->old_l2 : 0.0);
	for (size_t i = 0; i < d->n_added; i++)
		printf("  + %s\n", d->added[i]);
	for (size_t i = 0; i < d->n_removed; i++)
		printf("  - %s\n", d->removed[i]);
	for (size_t i = 0; i < d->n_changed; i++) {
		const cr_tensor_delta *c = &d->changed[i];

		printf("  ~ %s  %.12s.. -> %.12s..", c->name, cli_hex32(o, c->old_sha256),
		       cli_hex32(n, c->new_sha256));
		if (c->numeric)
			printf("  l2 %.9e  max_abs %.9e  rel %.9e%s", c->l2, c->max_abs,
			       c->old_l2 > 0 ? c->l2 / c->old_l2 : 0.0,
			       c->nonfinite ? "  (non-finite values)" : "");
		putchar('\n');
	}
}

/*
 * The old checkpoint's manifest and a base for the delta: the file itself
 * when its tensors lie at file offsets, else a temporary copy of its float
 * tensors (read again for that: formats with members only).
 */
static int load_against(const char *path, const char *format, cr_manifest **m, int *fd,
                        int *base_fd, uint64_t **offsets, cr_delta_base *base)
{
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	int in_place = 1, rc;

	o.name = path;
	o.format = format;
	if ((rc = open_file(path, fd)) != 0 || (rc = cr_manifest_read(*fd, &o, m, NULL, NULL)) != 0)
		return rc;
	for (size_t i = 0; i < (*m)->n; i++)
		if ((*m)->tensors[i].member)
			in_place = 0;
	memset(base, 0, sizeof(*base));
	if (in_place) {
		base->manifest = *m;
		base->fd = *fd;
		base->base_is_file = 1;
		return 0;
	}
	cr_manifest_free(*m);
	*m = NULL;
	if ((rc = temp_base(base_fd)) != 0)
		return rc;
	o.base_out_fd = *base_fd;
	if ((rc = cr_manifest_read(*fd, &o, m, NULL, offsets)) != 0)
		return rc;
	base->manifest = *m;
	base->fd = *base_fd;
	base->offsets = *offsets;
	return 0;
}

int cmd_manifest(int argc, char **argv)
{
	static const struct option opts[] = {
	    {"json", no_argument, NULL, 'j'},         {"against", required_argument, NULL, 'a'},
	    {"format", required_argument, NULL, 'f'}, {"no-file-sha256", no_argument, NULL, 'n'},
	    {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
	};
	const char *against = NULL, *format = NULL, *path;
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	cr_manifest *m = NULL, *old = NULL;
	cr_delta *delta = NULL;
	cr_delta_base base;
	uint64_t *offsets = NULL;
	int json = 0, file_hash = 1, c, rc, code = EXIT_OK, fd = -1, old_fd = -1, base_fd = -1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = 1; break;
		case 'a': against = optarg; break;
		case 'f': format = optarg; break;
		case 'n': file_hash = 0; break;
		case 'h': fputs(help, stdout); return EXIT_OK;
		default: return cli_usage_error("manifest", "bad option");
		}
	}
	if (argc - optind != 1)
		return cli_usage_error("manifest", "name one checkpoint file");
	path = argv[optind];
	if (format && strcmp(format, "safetensors") && strcmp(format, "pytorch") &&
	    strcmp(format, "gguf") && strcmp(format, "onnx") && strcmp(format, "file"))
		return cli_usage_error("manifest", "unknown format '%s'", format);
	if (against &&
	    (rc = load_against(against, format, &old, &old_fd, &base_fd, &offsets, &base)) != 0) {
		code = fail(rc);
		goto done;
	}
	o.name = path;
	o.format = format;
	o.want_file_sha256 = file_hash;
	o.prev = against ? &base : NULL;
	if ((rc = open_file(path, &fd)) != 0 ||
	    (rc = cr_manifest_read(fd, &o, &m, against ? &delta : NULL, NULL)) != 0) {
		code = fail(rc);
		goto done;
	}
	if (json) {
		json_t *out = json_object(), *mj = NULL, *dj = NULL;
		char hex[65];

		if ((rc = cr_manifest_json(m, &mj)) != 0 ||
		    (delta && (rc = cr_delta_json(delta, &dj)) != 0)) {
			json_decref(out);
			json_decref(mj);
			code = fail(rc);
			goto done;
		}
		cli_json_set_path(out, "path", path);
		if (m->have_file_sha256)
			json_object_set_new(out, "sha256",
			                    json_string(cli_hex32(hex, m->file_sha256)));
		json_object_set_new(out, "digest", json_string(cli_hex32(hex, m->digest)));
		json_object_set_new(out, "manifest", mj);
		if (delta) {
			cli_json_set_path(out, "against", against);
			json_object_set_new(out, "against_digest",
			                    json_string(cli_hex32(hex, old->digest)));
			json_object_set_new(out, "delta", dj);
		}
		cli_print_json(out);
	} else {
		print_manifest(path, m);
		if (delta)
			print_delta(against, delta);
	}
done:
	cr_delta_free(delta);
	cr_manifest_free(m);
	cr_manifest_free(old);
	free(offsets);
	if (fd >= 0)
		close(fd);
	if (old_fd >= 0)
		close(old_fd);
	if (base_fd >= 0)
		close(base_fd);
	return code;
}
