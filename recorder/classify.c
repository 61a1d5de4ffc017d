/*
 * Path classification for recording and the environment-variable
 * selection. Pure functions over strings: no I/O.
 */
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "recorder/classify.h"

const char *const cr_default_checkpoint_globs[] = {
	"*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.gguf", "*.onnx", "*.bin", NULL,
};

struct cr_classifier {
	char **roots;
	size_t n_roots;
	char **globs;
	size_t n_globs;
};

static char **dup_list(const char *const *items, size_t n, int strip_slash)
{
	char **out = calloc(n ? n : 1, sizeof(*out));

	if (!out)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		size_t len;

		if ((out[i] = strdup(items[i])) == NULL) {
			while (i--)
				free(out[i]);
			free(out);
			return NULL;
		}
		len = strlen(out[i]);
		while (strip_slash && len > 1 && out[i][len - 1] == '/')
			out[i][--len] = '\0';
	}
	return out;
}

int cr_classifier_new(cr_classifier **out, const char *const *roots, size_t n_roots,
                      const char *const *globs, size_t n_globs)
{
	cr_classifier *c = calloc(1, sizeof(*c));

	*out = NULL;
	if (!c)
		return cr_error_set(CR_ENOMEM, "out of memory");
	if (n_globs == 0) {
		globs = cr_default_checkpoint_globs;
		while (globs[n_globs])
			n_globs++;
	}
	for (size_t i = 0; i < n_roots; i++) {
		if (roots[i][0] != '/') {
			free(c);
			return cr_error_set(CR_EINVAL, "data root %s is not absolute", roots[i]);
		}
	}
	c->roots = dup_list(roots, n_roots, 1);
	c->globs = dup_list(globs, n_globs, 0);
	c->n_roots = n_roots;
	c->n_globs = n_globs;
	if (!c->roots || !c->globs) {
		cr_classifier_free(c);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	*out = c;
	return 0;
}

void cr_classifier_free(cr_classifier *c)
{
	if (!c)
		return;
	for (size_t i = 0; c->roots && i < c->n_roots; i++)
		free(c->roots[i]);
	for (size_t i = 0; c->globs && i < c->n_globs; i++)
		free(c->globs[i]);
	free(c->roots);
	free(c->globs);
	free(c);
}

static int has_prefix_dir(const char *path, const char *dir)
{
	size_t n = strlen(dir);

	if (strcmp(dir, "/") == 0)
		return 1;
	return strncmp(path, dir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static int ignored(const char *path)
{
	return has_prefix_dir(path, "/proc") || has_prefix_dir(path, "/sys") ||
	       has_prefix_dir(path, "/dev") || has_prefix_dir(path, "/run");
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Code, libraries and configuration of the interpreter and the system. */
static int environmental(const char *path)
{
	static const char *const system_dirs[] = {
		"/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/etc", "/var/lib",
		"/var/cache", "/opt/conda", NULL,
	};
	static const char *const code_parts[] = {
		"/site-packages/", "/dist-packages/", "/__pycache__/", "/.cache/pip/", NULL,
	};
	static const char *const code_suffixes[] = {
		".py", ".pyc", ".pyi", ".pyx", ".so", ".pth.cfg", NULL,
	};
	const char *base = strrchr(path, '/');

	for (size_t i = 0; system_dirs[i]; i++)
		if (has_prefix_dir(path, system_dirs[i]))
			return 1;
	for (size_t i = 0; code_parts[i]; i++)
		if (strstr(path, code_parts[i]))
			return 1;
	for (size_t i = 0; code_suffixes[i]; i++)
		if (ends_with(path, code_suffixes[i]))
			return 1;
	/* Versioned shared libraries: libfoo.so.1.2 */
	if (base && strstr(base, ".so."))
		return 1;
	return 0;
}

int cr_classify_under_roots(const cr_classifier *c, const char *path)
{
	if (c->n_roots == 0)
		return 1;
	for (size_t i = 0; i < c->n_roots; i++)
		if (has_prefix_dir(path, c->roots[i]))
			return 1;
	return 0;
}

static int is_checkpoint(const cr_classifier *c, const char *path)
{
	const char *base = strrchr(path, '/');

	base = base ? base + 1 : path;
	for (size_t i = 0; i < c->n_globs; i++) {
		const char *g = c->globs[i];

		if (strchr(g, '/') ? fnmatch(g, path, FNM_PATHNAME) == 0 : fnmatch(g, base, 0) == 0)
			return 1;
	}
	return 0;
}

cr_class cr_classify_read(const cr_classifier *c, const char *path)
{
	if (ignored(path))
		return CR_CLASS_IGNORE;
	if (c->n_roots)
		return cr_classify_under_roots(c, path) ? CR_CLASS_DATA : CR_CLASS_ENV;
	return environmental(path) ? CR_CLASS_ENV : CR_CLASS_DATA;
}

cr_class cr_classify_written(const cr_classifier *c, const char *path)
{
	if (ignored(path))
		return CR_CLASS_IGNORE;
	return is_checkpoint(c, path) ? CR_CLASS_CHECKPOINT : CR_CLASS_IGNORE;
}

json_t *cr_classifier_roots_json(const cr_classifier *c)
{
	json_t *a = json_array();

	for (size_t i = 0; i < c->n_roots; i++)
		json_array_append_new(a, json_string(c->roots[i]));
	return a;
}

json_t *cr_classifier_globs_json(const cr_classifier *c)
{
	json_t *a = json_array();

	for (size_t i = 0; i < c->n_globs; i++)
		json_array_append_new(a, json_string(c->globs[i]));
	return a;
}

int cr_env_name_is_secret(const char *name)
{
	static const char *const words[] = {
		"TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "COOKIE",
		"PRIVATE", "SESSION", NULL,
	};
	char up[256];
	size_t i;

	for (i = 0; name[i] && i < sizeof(up) - 1; i++)
		up[i] = (char)(name[i] >= 'a' && name[i] <= 'z' ? name[i] - 32 : name[i]);
	up[i] = '\0';
	for (i = 0; words[i]; i++)
		if (strstr(up, words[i]))
			return 1;
	return 0;
}

static int allowed_name(const char *name)
{
	static const char *const exact[] = {
		"PATH", "LANG", "TZ", "HOSTNAME", "VIRTUAL_ENV", "WORLD_SIZE", "RANK", "LOCAL_RANK",
		"LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LD_LIBRARY_PATH", "SOURCE_DATE_EPOCH",
		NULL,
	};
	static const char *const prefixes[] = {
		"PYTHON", "CUDA_", "CUDNN_", "NCCL_", "OMP_", "MKL_", "OPENBLAS_", "TORCH", "PYTORCH_",
		"TF_", "XLA_", "JAX_", "HF_", "TRANSFORMERS_", "WANDB_", "MLFLOW_", "CONDA_", "SLURM_",
		"LC_", "KMP_", "NUMEXPR_", "CLEANROOM_RUN", NULL,
	};

	for (size_t i = 0; exact[i]; i++)
		if (strcmp(name, exact[i]) == 0)
			return 1;
	for (size_t i = 0; prefixes[i]; i++)
		if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
			return 1;
	return 0;
}

json_t *cr_env_selection(char *const *envp, json_t **redacted)
{
	json_t *sel = json_object(), *red = json_array();

	for (size_t i = 0; envp && envp[i]; i++) {
		const char *eq = strchr(envp[i], '=');
		char name[256];
		size_t n;

		if (!eq || (n = (size_t)(eq - envp[i])) == 0 || n >= sizeof(name))
			continue;
		memcpy(name, envp[i], n);
		name[n] = '\0';
		if (!allowed_name(name))
			continue;
		if (cr_env_name_is_secret(name)) {
			json_array_append_new(red, json_string(name));
			continue;
		}
		/* Values that are not UTF-8 are left out rather than mangled. */
		{
			json_t *v = json_string(eq + 1);

			if (v)
				json_object_set_new(sel, name, v);
		}
	}
	if (redacted)
		*redacted = red;
	else
		json_decref(red);
	return sel;
}
