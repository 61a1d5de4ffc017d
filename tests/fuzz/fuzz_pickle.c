/*
 * libFuzzer target for the pickle reader (recorder/tensors/pickle.c) and
 * the mapping of torch.save's data.pkl to tensors (cr_pt_map_pickle in
 * pytorch.c). The input is parsed from an exact-size heap copy (a read past
 * its end is an ASan report); on success every value of the tree is visited
 * (strings touched byte by byte, pointing inside the input), and the map's
 * tensors must lie inside their storages with names of bounded length. The
 * corpus (tests/fuzz/corpus/pickle/) holds data.pkl files torch.save wrote
 * with pickle protocols 2, 4 and 5.
 *
 *   tests/fuzz/run.sh 60 build-fuzz fuzz_pickle
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "recorder/tensors/pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t sink;
static const uint8_t *lo, *hi;

static void touch(const uint8_t *p, size_t n)
{
	uint8_t acc = 0;
	size_t i;

	if (n && (p < lo || p + n > hi))
		abort();
	for (i = 0; i < n; i++)
		acc ^= p[i];
	sink ^= acc;
}

/* Deep enough for the corpus, shallow enough for this harness's own stack. */
#define MAX_VISIT_DEPTH 1000

/* Every value once: nodes are marked (the tree may share and cycle). */
static void visit(const cr_pkl_val *v, size_t *budget, size_t depth)
{
	cr_pkl_node *n;
	size_t i;

	if (!*budget || depth > MAX_VISIT_DEPTH)
		return;
	(*budget)--;
	switch (v->kind) {
	case CR_PKL_STR:
	case CR_PKL_BYTES:
	case CR_PKL_BIGINT: touch(v->u.s, v->len); return;
	default: break;
	}
	if (v->kind < CR_PKL_TUPLE)
		return;
	n = v->u.node;
	if (!n || n->kind != v->kind)
		abort();
	if (n->mark)
		return;
	n->mark = 1;
	for (i = 0; i < n->n; i++)
		visit(&n->items[i], budget, depth + 1);
	for (i = 0; i < 2 * n->npairs; i++)
		visit(&n->pairs[i], budget, depth + 1);
	switch (n->kind) {
	case CR_PKL_GLOBAL:
		touch(n->u.global.module, n->u.global.module_len);
		touch(n->u.global.name, n->u.global.name_len);
		break;
	case CR_PKL_OBJECT:
		visit(&n->u.object->callable, budget, depth + 1);
		visit(&n->u.object->args, budget, depth + 1);
		visit(&n->u.object->kwargs, budget, depth + 1);
		if (n->u.object->has_state)
			visit(&n->u.object->state, budget, depth + 1);
		break;
	case CR_PKL_PERSID: visit(&n->u.pid, budget, depth + 1); break;
	default: break;
	}
}

/* Undo the marks so the mapping (which uses them for cycles) starts clean. */
static void unmark(const cr_pkl_val *v, size_t *budget, size_t depth)
{
	cr_pkl_node *n;
	size_t i;

	if (!*budget || depth > MAX_VISIT_DEPTH + 1 || v->kind < CR_PKL_TUPLE || !v->u.node->mark)
		return;
	(*budget)--;
	n = v->u.node;
	n->mark = 0;
	for (i = 0; i < n->n; i++)
		unmark(&n->items[i], budget, depth + 1);
	for (i = 0; i < 2 * n->npairs; i++)
		unmark(&n->pairs[i], budget, depth + 1);
	if (n->kind == CR_PKL_OBJECT) {
		unmark(&n->u.object->callable, budget, depth + 1);
		unmark(&n->u.object->args, budget, depth + 1);
		unmark(&n->u.object->kwargs, budget, depth + 1);
		unmark(&n->u.object->state, budget, depth + 1);
	} else if (n->kind == CR_PKL_PERSID) {
		unmark(&n->u.pid, budget, depth + 1);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	cr_pkl_limits lim;
	cr_pkl *pk = NULL;
	cr_pt_map *m = NULL;
	uint8_t *copy;
	size_t budget, i;

	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	lo = copy;
	hi = copy + size;
	/* Smaller caps than the defaults keep each run fast; the code paths are the same. */
	cr_pkl_limits_default(&lim);
	lim.max_values = 1u << 16;
	lim.max_bytes = 64u << 20;
	cr_error_clear();
	if (cr_pkl_parse(copy, size, "fuzz", &lim, &pk) != 0) {
		if (!cr_error_last()[0])
			abort(); /* every refusal says why */
		free(copy);
		return 0;
	}
	if (cr_pkl_count(pk) > lim.max_values)
		abort();
	budget = 1u << 20;
	visit(cr_pkl_root(pk), &budget, 0);
	budget = 1u << 20;
	unmark(cr_pkl_root(pk), &budget, 0);
	if (cr_pt_map_pickle(pk, "fuzz", &m) == 0) {
		for (i = 0; i < m->n; i++) {
			const cr_pt_tensor *t = &m->tensors[i];

			if (t->storage >= m->nstorages || t->ndim > CR_TENSOR_MAX_DIMS ||
			    strlen(t->name) > CR_TENSOR_MAX_NAME + 32 ||
			    t->offset > m->storages[t->storage].nbytes ||
			    t->length > m->storages[t->storage].nbytes - t->offset)
				abort();
		}
		cr_pt_map_free(m);
	} else if (!cr_error_last()[0]) {
		abort();
	}
	cr_pkl_free(pk);
	free(copy);
	return 0;
}
