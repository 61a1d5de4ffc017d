/*
 * Tensor manifests and deltas as JSON: the delta's form for checkpoint
 * events, and a manifest read back from its recorded JSON (replay). The
 * manifest's own JSON form is built in tensors.c, next to its digest.
 *
 * A recorded manifest is untrusted input like any file: every field is
 * type- and range-checked here, and the digest recomputed from the fields.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "recorder/tensors/tensors_internal.h"
#include "util/buf.h"
#include "util/codec.h"

/* "%.9e": nine decimals are enough to tell float32 values apart. */
static json_t *real_str(double v)
{
	char s[64];

	snprintf(s, sizeof(s), "%.9e", v);
	return json_string(s);
}

static json_t *hex_str(const uint8_t *h)
{
	char hex[2 * CR_SHA256_SIZE + 1];

	cr_hex_encode(hex, h, CR_SHA256_SIZE);
	return json_string(hex);
}

static int names_json(json_t *o, const char *key, char **names, size_t n)
{
	json_t *arr = json_array();

	if (!arr || json_object_set_new(o, key, arr))
		return -1;
	for (size_t i = 0; i < n; i++)
		if (json_array_append_new(arr, json_string(names[i])))
			return -1;
	return 0;
}

int cr_delta_json(const cr_delta *d, json_t **out)
{
	json_t *o, *changed;

	*out = NULL;
	if ((o = json_object()) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	if (names_json(o, "added", d->added, d->n_added) ||
	    names_json(o, "removed", d->removed, d->n_removed) ||
	    json_object_set_new(o, "unchanged", json_integer((json_int_t)d->n_unchanged)) ||
	    json_object_set_new(o, "l2", real_str(d->l2)) ||
	    json_object_set_new(o, "rel", real_str(d->old_l2 > 0 ? d->l2 / d->old_l2 : 0)) ||
	    (changed = json_array()) == NULL || json_object_set_new(o, "changed", changed))
		goto fail;
	for (size_t i = 0; i < d->n_changed; i++) {
		const cr_tensor_delta *c = &d->changed[i];
		json_t *e = json_object();

		if (!e || json_array_append_new(changed, e) ||
		    json_object_set_new(e, "name", json_string(c->name)) ||
		    json_object_set_new(e, "old", hex_str(c->old_sha256)) ||
		    json_object_set_new(e, "new", hex_str(c->new_sha256)))
			goto fail;
		if (c->numeric && (json_object_set_new(e, "l2", real_str(c->l2)) ||
		                   json_object_set_new(e, "max_abs", real_str(c->max_abs)) ||
		                   json_object_set_new(
		                       e, "rel", real_str(c->old_l2 > 0 ? c->l2 / c->old_l2 : 0))))
			goto fail;
		if (c->numeric && c->nonfinite && json_object_set_new(e, "nonfinite", json_true()))
			goto fail;
	}
	*out = o;
	return 0;
fail:
	json_decref(o);
	return cr_error_set(CR_ENOMEM, "out of memory building a delta");
}

/* ------------------------------------------------------- from JSON -- */

static int bad(const char *what, size_t i)
{
	if (i == SIZE_MAX)
		return cr_error_set(CR_EINVAL, "tensor manifest: %s", what);
	return cr_error_set(CR_EINVAL, "tensor manifest: tensor %zu: %s", i, what);
}

static int get_uint(const json_t *o, const char *key, uint64_t *out)
{
	const json_t *v = json_object_get(o, key);

	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    json_integer_value(v) > CR_EVENT_INT_MAX)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int tensor_from_json(const json_t *e, cr_tensor *t, size_t i)
{
	const json_t *name = json_object_get(e, "name"), *dtype = json_object_get(e, "dtype");
	const json_t *shape = json_object_get(e, "shape"), *sha = json_object_get(e, "sha256");
	const json_t *member = json_object_get(e, "member");
	const char *key;
	json_t *v;
	uint64_t end;

	if (!json_is_object(e))
		return bad("not an object", i);
	json_object_foreach((json_t *)e, key, v)
	{
		if (strcmp(key, "name") && strcmp(key, "dtype") && strcmp(key, "shape") &&
		    strcmp(key, "sha256") && strcmp(key, "member") && strcmp(key, "offset") &&
		    strcmp(key, "length"))
			return bad("unknown field", i);
	}
	if (!json_is_string(name) || json_string_length(name) > CR_TENSOR_MAX_NAME ||
	    strlen(json_string_value(name)) != json_string_length(name))
		return bad("bad \"name\"", i);
	if (!json_is_string(dtype) || json_string_length(dtype) == 0 ||
	    json_string_length(dtype) >= sizeof(t->dtype))
		return bad("bad \"dtype\"", i);
	if (member && (!json_is_string(member) || json_string_length(member) > CR_TENSOR_MAX_NAME ||
	               strlen(json_string_value(member)) != json_string_length(member)))
		return bad("bad \"member\"", i);
	if (!json_is_array(shape) || json_array_size(shape) > CR_TENSOR_MAX_DIMS)
		return bad("bad \"shape\"", i);
	if (get_uint(e, "offset", &t->offset) || get_uint(e, "length", &t->length) ||
	    __builtin_add_overflow(t->offset, t->length, &end) || end > (uint64_t)CR_EVENT_INT_MAX)
		return bad("bad \"offset\" or \"length\"", i);
	if (!json_is_string(sha) || json_string_length(sha) != 2 * CR_SHA256_SIZE ||
	    cr_hex_decode(t->sha256, CR_SHA256_SIZE, json_string_value(sha),
	                  json_string_length(sha)))
		return bad("bad \"sha256\"", i);
	{
		char lower[2 * CR_SHA256_SIZE + 1];

		cr_hex_encode(lower, t->sha256, CR_SHA256_SIZE);
		if (strcmp(lower, json_string_value(sha)) != 0)
			return bad("\"sha256\" is not lowercase hex", i);
	}
	t->ndim = (uint32_t)json_array_size(shape);
	for (uint32_t k = 0; k < t->ndim; k++) {
		const json_t *d = json_array_get(shape, k);

		if (!json_is_integer(d) || json_integer_value(d) < 0 ||
		    json_integer_value(d) > CR_EVENT_INT_MAX)
			return bad("bad dimension in \"shape\"", i);
		t->shape[k] = (uint64_t)json_integer_value(d);
	}
	memcpy(t->dtype, json_string_value(dtype), json_string_length(dtype) + 1);
	if (strcmp(t->dtype, "F64") == 0)
		t->fkind = CR_FLOAT_F64;
	else if (strcmp(t->dtype, "F32") == 0)
		t->fkind = CR_FLOAT_F32;
	else if (strcmp(t->dtype, "F16") == 0)
		t->fkind = CR_FLOAT_F16;
	else if (strcmp(t->dtype, "BF16") == 0)
		t->fkind = CR_FLOAT_BF16;
	if ((t->name = strdup(json_string_value(name))) == NULL ||
	    (member && (t->member = strdup(json_string_value(member))) == NULL))
		return cr_error_set(CR_ENOMEM, "out of memory");
	return 0;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Names are what deltas and replay match on: refuse a manifest that repeats one. */
static int check_unique(const cr_manifest *m)
{
	const char **names;
	int rc = 0;

	if (m->n < 2)
		return 0;
	if ((names = malloc(m->n * sizeof(*names))) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	for (size_t i = 0; i < m->n; i++)
		names[i] = m->tensors[i].name;
	qsort(names, m->n, sizeof(*names), str_cmp);
	for (size_t i = 1; i < m->n && !rc; i++)
		if (strcmp(names[i], names[i - 1]) == 0)
			rc = cr_error_set(CR_EINVAL, "tensor manifest: tensor name '%s' appears twice",
			                  names[i]);
	free(names);
	return rc;
}

int cr_manifest_from_json(const json_t *j, cr_manifest **out)
{
	const json_t *format, *note, *tensors, *type, *v;
	cr_manifest *m = NULL;
	json_t *again = NULL;
	cr_buf b = CR_BUF_INIT;
	const char *key;
	json_t *val;
	uint64_t size;
	int rc;

	*out = NULL;
	if (!json_is_object(j))
		return bad("not a JSON object", SIZE_MAX);
	json_object_foreach((json_t *)j, key, val)
	{
		if (strcmp(key, "format") && strcmp(key, "note") && strcmp(key, "size") &&
		    strcmp(key, "tensors") && strcmp(key, "type") && strcmp(key, "v"))
			return bad("unknown field", SIZE_MAX);
	}
	format = json_object_get(j, "format");
	note = json_object_get(j, "note");
	tensors = json_object_get(j, "tensors");
	type = json_object_get(j, "type");
	v = json_object_get(j, "v");
	if (!json_is_string(type) || strcmp(json_string_value(type), "tensor_manifest") != 0 ||
	    !json_is_integer(v) || json_integer_value(v) != 1)
		return bad("not a version 1 tensor manifest", SIZE_MAX);
	if (!json_is_string(format) || json_string_length(format) == 0 ||
	    json_string_length(format) >= sizeof(m->format))
		return bad("bad \"format\"", SIZE_MAX);
	if (note && !json_is_string(note))
		return bad("bad \"note\"", SIZE_MAX);
	if (get_uint(j, "size", &size))
		return bad("bad \"size\"", SIZE_MAX);
	if (!json_is_array(tensors) || json_array_size(tensors) > CR_TENSOR_MAX_COUNT)
		return bad("bad \"tensors\"", SIZE_MAX);
	if ((m = calloc(1, sizeof(*m))) == NULL ||
	    (m->tensors = calloc(json_array_size(tensors) + 1, sizeof(cr_tensor))) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	memcpy(m->format, json_string_value(format), json_string_length(format) + 1);
	m->file_size = size;
	if (note && (m->note = strdup(json_string_value(note))) == NULL) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	for (size_t i = 0; i < json_array_size(tensors); i++) {
		rc = tensor_from_json(json_array_get(tensors, i), &m->tensors[i], i);
		m->n = i + 1; /* the tensor's strings are freed with m even on failure */
		if (rc)
			goto done;
	}
	if ((rc = check_unique(m)) != 0)
		goto done;
	/* The digest covers the canonical form of what was read, re-encoded from the fields. */
	if ((rc = cr_manifest_json(m, &again)) != 0 || (rc = cr_event_encode(again, &b)) != 0)
		goto done;
	cr_sha256(m->digest, b.ptr, b.len);
	*out = m;
	m = NULL;
done:
	json_decref(again);
	cr_buf_free(&b);
	cr_manifest_free(m);
	return rc;
}
