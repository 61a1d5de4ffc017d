/*
 * Unit tests for the pickle reader (recorder/tensors/pickle.c), the mapping
 * of torch.save's data.pkl to tensors, and the PyTorch zip reader
 * (recorder/tensors/pytorch.c) through cr_manifest_read.
 *
 * Pickles are assembled here opcode by opcode (CPython's pickletools names);
 * zips by a small writer that can also produce the hostile layouts the
 * reader must refuse (duplicate names, overlapping members, a central
 * directory that disagrees with the local headers, zip bombs, ...). Every
 * refusal must be CR_EINVAL with a message saying what is wrong. Files go to
 * memfds; real torch.save files are covered by
 * tests/integration/test_tensors_pytorch.py.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "cleanroom/error.h"
#include "cleanroom/tensors.h"
#include "harness.h"
#include "recorder/tensors/pickle.h"
#include "recorder/tensors/tensors_internal.h"
#include "util/buf.h"

/* ------------------------------------------------------------ pickles -- */

static void op(cr_buf *b, uint8_t o)
{
	cr_buf_putc(b, (char)o);
}

static void u32le(cr_buf *b, uint32_t v)
{
	uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};

	cr_buf_put(b, x, 4);
}

static void str(cr_buf *b, const char *s) /* BINUNICODE */
{
	op(b, 'X');
	u32le(b, (uint32_t)strlen(s));
	cr_buf_puts(b, s);
}

static void int1(cr_buf *b, uint8_t v) /* BININT1 */
{
	op(b, 'K');
	op(b, v);
}

static void global(cr_buf *b, const char *mod, const char *name)
{
	op(b, 'c');
	cr_buf_printf(b, "%s\n%s\n", mod, name);
}

static void tuple_ints(cr_buf *b, const int *v, size_t n)
{
	size_t i;

	op(b, '(');
	for (i = 0; i < n; i++)
		int1(b, (uint8_t)v[i]);
	op(b, 't');
}

/*
 * A tensor as torch writes it: _rebuild_tensor_v2((pid), offset, size,
 * stride, False, OrderedDict()) with pid ('storage', torch.<stype>, key,
 * 'cpu', numel).
 */
static void tensor(cr_buf *b, const char *stype, const char *key, int numel, int offset,
                   const int *size, const int *stride, size_t ndim)
{
	global(b, "torch._utils", "_rebuild_tensor_v2");
	op(b, '(');
	op(b, '(');
	str(b, "storage");
	global(b, "torch", stype);
	str(b, key);
	str(b, "cpu");
	int1(b, (uint8_t)numel);
	op(b, 't');
	op(b, 'Q'); /* BINPERSID */
	int1(b, (uint8_t)offset);
	tuple_ints(b, size, ndim);
	tuple_ints(b, stride, ndim);
	op(b, 0x89); /* NEWFALSE */
	global(b, "collections", "OrderedDict");
	op(b, ')');
	op(b, 'R');
	op(b, 't');
	op(b, 'R');
}

static int parse(const cr_buf *b, const cr_pkl_limits *lim, cr_pkl **out)
{
	return cr_pkl_parse((const uint8_t *)b->ptr, b->len, "test.pkl", lim, out);
}

/* The parse fails with CR_EINVAL and a message containing what. */
static int refuses(const cr_buf *b, const cr_pkl_limits *lim, const char *what)
{
	cr_pkl *pk = NULL;
	int rc;

	cr_error_clear();
	rc = parse(b, lim, &pk);
	cr_pkl_free(pk);
	if (rc != CR_EINVAL || !strstr(cr_error_last(), what) ||
	    !strstr(cr_error_last(), "test.pkl")) {
		fprintf(stderr, "  wanted CR_EINVAL with '%s', got %d: %s\n", what, rc,
		        cr_error_last());
		return 0;
	}
	return 1;
}

static void test_parse_values(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pkl *pk = NULL;
	const cr_pkl_val *root;
	cr_pkl_node *d, *l;
	static const uint8_t long1[] = {0x8a, 2, 0x00, 0x80};  /* -32768 */
	static const uint8_t binfloat[] = {'G', 0x3f, 0xf8, 0, 0, 0, 0, 0, 0}; /* 1.5 */

	op(&b, 0x80);
	op(&b, 2);
	op(&b, '}');
	op(&b, 'q');
	op(&b, 0); /* BINPUT 0 */
	op(&b, '(');
	str(&b, "a");
	int1(&b, 5);
	op(&b, 0x8c); /* SHORT_BINUNICODE */
	op(&b, 1);
	cr_buf_puts(&b, "b");
	op(&b, ']');
	op(&b, '(');
	op(&b, 'N');
	op(&b, 0x88);
	cr_buf_put(&b, long1, sizeof(long1));
	cr_buf_put(&b, binfloat, sizeof(binfloat));
	op(&b, 'h');
	op(&b, 0); /* BINGET 0: the dict itself */
	op(&b, 'e'); /* APPENDS: [None, True, -32768, 1.5, <dict>] */
	op(&b, 'u');
	op(&b, '.');
	cr_buf_puts(&b, "trailing bytes are ignored");
	REQUIRE(parse(&b, NULL, &pk) == 0);
	root = cr_pkl_root(pk);
	REQUIRE((d = cr_pkl_as(root, CR_PKL_DICT)) != NULL);
	REQUIRE(d->npairs == 2);
	CHECK(cr_pkl_is_str(&d->pairs[0], "a"));
	CHECK(d->pairs[1].kind == CR_PKL_INT && d->pairs[1].u.i == 5);
	CHECK(cr_pkl_is_str(&d->pairs[2], "b"));
	REQUIRE((l = cr_pkl_as(&d->pairs[3], CR_PKL_LIST)) != NULL);
	REQUIRE(l->n == 5);
	CHECK(l->items[0].kind == CR_PKL_NONE);
	CHECK(l->items[1].kind == CR_PKL_BOOL && l->items[1].u.i == 1);
	CHECK(l->items[2].kind == CR_PKL_INT && l->items[2].u.i == -32768);
	CHECK(l->items[3].kind == CR_PKL_FLOAT && l->items[3].u.f == 1.5);
	CHECK(l->items[4].kind == CR_PKL_DICT && l->items[4].u.node == d);
	cr_pkl_free(pk);
	cr_buf_free(&b);
}

/* Protocol 4's framing, memoizing and STACK_GLOBAL, as torch.save(pickle_protocol=4) writes. */
static void test_parse_protocol4(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pkl *pk = NULL;
	cr_pkl_node *o;

	op(&b, 0x80);
	op(&b, 4);
	op(&b, 0x95);
	u32le(&b, 30);
	u32le(&b, 0);
	op(&b, 0x8c);
	op(&b, 11);
	cr_buf_puts(&b, "collections");
	op(&b, 0x94);
	op(&b, 0x8c);
	op(&b, 11);
	cr_buf_puts(&b, "OrderedDict");
	op(&b, 0x94);
	op(&b, 0x93); /* STACK_GLOBAL */
	op(&b, 0x94);
	op(&b, ')');
	op(&b, 'R');
	op(&b, '.');
	REQUIRE(parse(&b, NULL, &pk) == 0);
	REQUIRE((o = cr_pkl_as(cr_pkl_root(pk), CR_PKL_OBJECT)) != NULL);
	CHECK(cr_pkl_is_global(&o->u.object->callable, "collections", "OrderedDict"));
	cr_pkl_free(pk);
	cr_buf_free(&b);
}

static void test_refuse_opcodes(void)
{
	cr_buf b = CR_BUF_INIT;

	op(&b, 0x80);
	op(&b, 2);
	op(&b, 0xff);
	CHECK(refuses(&b, NULL, "unknown opcode 0xff"));

	/* Opcodes that would import, call or fetch from outside are refused by name. */
	cr_buf_clear(&b);
	op(&b, 'i');
	cr_buf_puts(&b, "os\nsystem\n");
	CHECK(refuses(&b, NULL, "INST"));
	cr_buf_clear(&b);
	op(&b, 0x82);
	op(&b, 1);
	CHECK(refuses(&b, NULL, "EXT1"));
	cr_buf_clear(&b);
	op(&b, 'P');
	cr_buf_puts(&b, "0\n");
	CHECK(refuses(&b, NULL, "PERSID"));
	cr_buf_clear(&b);
	op(&b, 0x97);
	CHECK(refuses(&b, NULL, "NEXT_BUFFER"));

	cr_buf_clear(&b);
	op(&b, 0x80);
	op(&b, 6);
	CHECK(refuses(&b, NULL, "protocol 6"));
	cr_buf_free(&b);
}

static void test_refuse_structure(void)
{
	cr_buf b = CR_BUF_INIT;

	op(&b, '.'); /* STOP on an empty stack */
	CHECK(refuses(&b, NULL, "stack is empty"));
	cr_buf_clear(&b);
	op(&b, ')');
	int1(&b, 1);
	op(&b, 'a'); /* APPEND to a tuple */
	CHECK(refuses(&b, NULL, "cannot append to a tuple"));
	cr_buf_clear(&b);
	op(&b, ']');
	int1(&b, 1);
	int1(&b, 2);
	op(&b, 's'); /* SETITEM on a list */
	CHECK(refuses(&b, NULL, "cannot set items on a list"));
	cr_buf_clear(&b);
	global(&b, "os", "system");
	str(&b, "rm -rf /");
	op(&b, 'R'); /* REDUCE with a str as arguments */
	CHECK(refuses(&b, NULL, "not a tuple"));
	cr_buf_clear(&b);
	op(&b, '}');
	op(&b, '}');
	op(&b, 'b'); /* BUILD on a dict */
	CHECK(refuses(&b, NULL, "cannot set the state of a dict"));
	cr_buf_clear(&b);
	op(&b, 't'); /* TUPLE without MARK */
	CHECK(refuses(&b, NULL, "no MARK is open"));
	cr_buf_clear(&b);
	op(&b, '(');
	op(&b, 'N');
	op(&b, 'd'); /* DICT of an odd number of items */
	CHECK(refuses(&b, NULL, "odd number"));
	cr_buf_clear(&b);
	op(&b, 'X');
	u32le(&b, 2);
	cr_buf_put(&b, "\xc3\x28", 2);
	CHECK(refuses(&b, NULL, "not valid UTF-8"));
	cr_buf_free(&b);
}

static void test_refuse_memo(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pkl_limits lim;

	op(&b, 'h');
	op(&b, 7); /* BINGET of nothing */
	CHECK(refuses(&b, NULL, "memo index 7 was never set"));
	cr_buf_clear(&b);
	op(&b, 'N');
	op(&b, 'j');
	u32le(&b, 0xfffffff0u); /* LONG_BINGET far away */
	CHECK(refuses(&b, NULL, "never set"));
	cr_buf_clear(&b);
	op(&b, 'N');
	op(&b, 'r');
	u32le(&b, 0xfffffff0u); /* LONG_BINPUT beyond the memo's cap */
	CHECK(refuses(&b, NULL, "beyond the limit"));
	cr_buf_clear(&b);
	op(&b, 'q');
	op(&b, 0); /* BINPUT with nothing to remember */
	CHECK(refuses(&b, NULL, "stack is empty"));

	cr_pkl_limits_default(&lim);
	lim.max_memo = 4;
	cr_buf_clear(&b);
	op(&b, 'N');
	op(&b, 'q');
	op(&b, 3);
	op(&b, 'q');
	op(&b, 4);
	CHECK(refuses(&b, &lim, "memo index 4 is beyond the limit"));
	cr_buf_free(&b);
}

static void test_refuse_limits(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pkl_limits lim;
	size_t i;

	/* The default stack cap: one more value than it allows. */
	for (i = 0; i <= CR_PKL_DEFAULT_MAX_STACK; i++)
		op(&b, 'N');
	CHECK(refuses(&b, NULL, "stack deeper than"));

	cr_buf_clear(&b);
	for (i = 0; i <= CR_PKL_DEFAULT_MAX_MARKS; i++)
		op(&b, '(');
	CHECK(refuses(&b, NULL, "MARKs open"));

	cr_pkl_limits_default(&lim);
	lim.max_values = 10;
	cr_buf_clear(&b);
	op(&b, ']');
	op(&b, '(');
	for (i = 0; i < 10; i++)
		op(&b, 'N');
	op(&b, 'e');
	op(&b, '.');
	CHECK(refuses(&b, &lim, "more than 10 values"));

	cr_pkl_limits_default(&lim);
	lim.max_items = 3;
	cr_buf_clear(&b);
	op(&b, ']');
	for (i = 0; i < 4; i++) {
		op(&b, 'N');
		op(&b, 'a');
	}
	CHECK(refuses(&b, &lim, "more than 3 entries"));

	cr_pkl_limits_default(&lim);
	lim.max_str = 8;
	cr_buf_clear(&b);
	str(&b, "123456789");
	CHECK(refuses(&b, &lim, "longer than the limit"));

	cr_pkl_limits_default(&lim);
	lim.max_bytes = 4096;
	cr_buf_clear(&b);
	for (i = 0; i < 1000; i++)
		op(&b, ')');
	CHECK(refuses(&b, &lim, "bytes of memory"));

	/* A string claiming more bytes than there are. */
	cr_buf_clear(&b);
	op(&b, 'X');
	u32le(&b, 0xffffffffu);
	cr_buf_puts(&b, "abc");
	CHECK(refuses(&b, NULL, "longer than the limit"));
	cr_buf_clear(&b);
	op(&b, 'X');
	u32le(&b, 100);
	cr_buf_puts(&b, "abc");
	CHECK(refuses(&b, NULL, "truncated"));
	cr_buf_free(&b);
}

static void u64le(cr_buf *b, uint64_t v)
{
	u32le(b, (uint32_t)v);
	u32le(b, (uint32_t)(v >> 32));
}

/* The items of the root, a list of n ints. */
static int list_of_ints(const cr_pkl *pk, const int64_t *want, size_t n)
{
	const cr_pkl_node *l = cr_pkl_as(cr_pkl_root(pk), CR_PKL_LIST);
	size_t i;

	if (!l || l->n != n)
		return 0;
	for (i = 0; i < n; i++)
		if (l->items[i].kind != CR_PKL_INT || l->items[i].u.i != want[i])
			return 0;
	return 1;
}

/*
 * The memo holds what was put, not the span of its indices: a PUT at
 * 16M - 1 costs one entry (it passes a 64 KiB memory cap), and an index
 * both put far away and later reached by MEMOIZE reads its newest value.
 */
static void test_memo_sparse(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pkl_limits lim;
	cr_pkl *pk = NULL;
	static const int64_t sevens[] = {7, 7}, fives[] = {5, 5, 5};
	size_t i;

	cr_pkl_limits_default(&lim);
	lim.max_bytes = 64 * 1024;
	op(&b, ']');
	int1(&b, 7);
	op(&b, 'r'); /* LONG_BINPUT */
	u32le(&b, CR_PKL_DEFAULT_MAX_MEMO - 1);
	op(&b, 'a');
	op(&b, 'j'); /* LONG_BINGET */
	u32le(&b, CR_PKL_DEFAULT_MAX_MEMO - 1);
	op(&b, 'a');
	op(&b, '.');
	REQUIRE(parse(&b, &lim, &pk) == 0);
	CHECK(list_of_ints(pk, sevens, 2));
	cr_pkl_free(pk);
	pk = NULL;

	cr_buf_clear(&b);
	op(&b, ']');
	op(&b, 'N');
	op(&b, 'r');
	u32le(&b, 3000); /* far beyond the dense part: kept apart */
	op(&b, '0');
	int1(&b, 5);
	for (i = 0; i < 3000; i++)
		op(&b, 0x94); /* MEMOIZE: 1 .. 2999, then 3000 again */
	op(&b, 'a');
	op(&b, 'j');
	u32le(&b, 3000);
	op(&b, 'a');
	op(&b, 'j');
	u32le(&b, 2999);
	op(&b, 'a');
	op(&b, '.');
	REQUIRE(parse(&b, NULL, &pk) == 0);
	CHECK(list_of_ints(pk, fives, 3));
	cr_pkl_free(pk);
	cr_buf_free(&b);
}

/*
 * The tree may take at most CR_PKL_BYTES_PER_BYTE times the pickle's
 * length (+ CR_PKL_BYTES_SLACK), whatever max_bytes allows: a million empty
 * dicts in one list, a byte each, need ~96 MB and are refused; a few
 * thousand fit in the slack.
 */
static void test_memory_scales(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pkl *pk = NULL;
	const cr_pkl_node *l;
	size_t i;

	op(&b, '(');
	for (i = 0; i < 4000; i++)
		op(&b, '}');
	op(&b, 'l');
	op(&b, '.');
	REQUIRE(parse(&b, NULL, &pk) == 0);
	l = cr_pkl_as(cr_pkl_root(pk), CR_PKL_LIST);
	CHECK(l && l->n == 4000 && l->items[3999].kind == CR_PKL_DICT);
	cr_pkl_free(pk);

	cr_buf_clear(&b);
	op(&b, '(');
	for (i = 0; i < CR_PKL_DEFAULT_MAX_STACK - 8; i++)
		op(&b, '}');
	op(&b, 'l');
	op(&b, '.');
	CHECK(refuses(&b, NULL, "bytes of memory"));
	cr_buf_free(&b);
}

/* Containers closed from a MARK are exactly sized; they still grow when appended to. */
static void test_container_growth(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pkl *pk = NULL;
	const cr_pkl_node *l, *d;
	static const int64_t want[] = {1, 2, 3, 4, 5, 6, 7};
	size_t i;

	op(&b, '(');
	int1(&b, 1);
	int1(&b, 2);
	op(&b, 'l'); /* LIST [1, 2] */
	int1(&b, 3);
	op(&b, 'a');
	op(&b, '(');
	for (i = 4; i <= 7; i++)
		int1(&b, (uint8_t)i);
	op(&b, 'e');
	op(&b, '.');
	REQUIRE(parse(&b, NULL, &pk) == 0);
	CHECK(list_of_ints(pk, want, 7));
	cr_pkl_free(pk);
	pk = NULL;

	cr_buf_clear(&b);
	op(&b, '(');
	str(&b, "a");
	int1(&b, 1);
	op(&b, 'd'); /* DICT {"a": 1} */
	str(&b, "b");
	int1(&b, 2);
	op(&b, 's');
	op(&b, '(');
	op(&b, 'l'); /* an empty LIST, then APPEND */
	int1(&b, 9);
	op(&b, 'a');
	op(&b, 'q');
	op(&b, 0);
	op(&b, '0');
	str(&b, "c");
	op(&b, 'h');
	op(&b, 0);
	op(&b, 's');
	op(&b, '.');
	REQUIRE(parse(&b, NULL, &pk) == 0);
	d = cr_pkl_as(cr_pkl_root(pk), CR_PKL_DICT);
	REQUIRE(d && d->npairs == 3);
	CHECK(cr_pkl_is_str(&d->pairs[2], "b") && d->pairs[3].u.i == 2);
	l = cr_pkl_as(&d->pairs[5], CR_PKL_LIST);
	CHECK(l && l->n == 1 && l->items[0].u.i == 9);
	cr_pkl_free(pk);
	cr_buf_free(&b);
}

/* Every proper prefix of a good pickle is refused as truncated (or malformed), never a crash. */
static void test_refuse_truncated(void)
{
	cr_buf b = CR_BUF_INIT, cut = CR_BUF_INIT;
	static const int size[] = {2, 3}, stride[] = {3, 1};
	cr_pkl *pk = NULL;
	size_t n;

	op(&b, 0x80);
	op(&b, 2);
	op(&b, '}');
	op(&b, '(');
	str(&b, "w");
	tensor(&b, "FloatStorage", "0", 6, 0, size, stride, 2);
	op(&b, 'u');
	op(&b, '.');
	REQUIRE(parse(&b, NULL, &pk) == 0);
	cr_pkl_free(pk);
	for (n = 0; n < b.len; n++) {
		int rc;

		cr_buf_clear(&cut);
		cr_buf_put(&cut, b.ptr, n);
		pk = NULL;
		cr_error_clear();
		rc = parse(&cut, NULL, &pk);
		cr_pkl_free(pk);
		CHECK(rc == CR_EINVAL && cr_error_last()[0]);
	}
	cr_buf_clear(&cut);
	cr_buf_put(&cut, b.ptr, b.len - 1);
	CHECK(refuses(&cut, NULL, "ends before its STOP"));
	cr_buf_free(&b);
	cr_buf_free(&cut);
}

/* ------------------------------------------------------ torch mapping -- */

static int map(const cr_buf *b, cr_pt_map **out)
{
	cr_pkl *pk = NULL;
	int rc;

	*out = NULL;
	cr_error_clear();
	if ((rc = parse(b, NULL, &pk)) == 0)
		rc = cr_pt_map_pickle(pk, "test.pkl", out);
	cr_pkl_free(pk);
	return rc;
}

static const cr_pt_tensor *find(const cr_pt_map *m, const char *name)
{
	size_t i;

	for (i = 0; i < m->n; i++)
		if (strcmp(m->tensors[i].name, name) == 0)
			return &m->tensors[i];
	return NULL;
}

/* {"epoch": 3, "model": OrderedDict(w, b), "optim": {"state": {0: {...}}, "param_groups": [...]}} */
static void state_dicts(cr_buf *b)
{
	static const int s23[] = {2, 3}, st23[] = {3, 1}, s3[] = {3}, st3[] = {1};

	op(b, 0x80);
	op(b, 2);
	op(b, '}');
	op(b, '(');
	str(b, "epoch");
	int1(b, 3);
	str(b, "model");
	global(b, "collections", "OrderedDict");
	op(b, ')');
	op(b, 'R');
	op(b, '(');
	str(b, "fc.weight");
	tensor(b, "FloatStorage", "0", 6, 0, s23, st23, 2);
	str(b, "fc.bias");
	tensor(b, "FloatStorage", "1", 3, 0, s3, st3, 1);
	op(b, 'u');
	str(b, "optim");
	op(b, '}');
	op(b, '(');
	str(b, "state");
	op(b, '}');
	int1(b, 0);
	op(b, '}');
	op(b, '(');
	str(b, "step");
	tensor(b, "FloatStorage", "2", 1, 0, NULL, NULL, 0);
	str(b, "exp_avg");
	tensor(b, "HalfStorage", "3", 6, 0, s23, st23, 2);
	op(b, 'u');
	op(b, 's');
	str(b, "param_groups");
	op(b, ']');
	op(b, '}');
	str(b, "lr");
	op(b, 'G');
	cr_buf_put(b, "\x3f\x50\x62\x4d\xd2\xf1\xa9\xfc", 8);
	op(b, 's');
	op(b, 'a');
	op(b, 'u');
	op(b, 'u');
	op(b, '.');
}

static void test_map_state_dicts(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pt_map *m = NULL;
	const cr_pt_tensor *t;

	state_dicts(&b);
	REQUIRE(map(&b, &m) == 0);
	REQUIRE(m->n == 4);
	CHECK(m->nstorages == 4);
	CHECK(strcmp(m->tensors[0].name, "model.fc.weight") == 0);
	CHECK(strcmp(m->tensors[1].name, "model.fc.bias") == 0);
	CHECK(strcmp(m->tensors[2].name, "optim.state.0.step") == 0);
	CHECK(strcmp(m->tensors[3].name, "optim.state.0.exp_avg") == 0);
	REQUIRE((t = find(m, "model.fc.weight")) != NULL);
	CHECK(strcmp(t->dtype, "F32") == 0 && t->ndim == 2 && t->shape[0] == 2 &&
	      t->shape[1] == 3 && t->offset == 0 && t->length == 24 && !t->view);
	CHECK(strcmp(m->storages[t->storage].key, "0") == 0);
	REQUIRE((t = find(m, "optim.state.0.step")) != NULL);
	CHECK(t->ndim == 0 && t->length == 4);
	REQUIRE((t = find(m, "optim.state.0.exp_avg")) != NULL);
	CHECK(strcmp(t->dtype, "F16") == 0 && t->length == 12);
	cr_pt_map_free(m);
	cr_buf_free(&b);
}

/* Tied weights (one storage, two tensors), views at an offset, and a non-contiguous view. */
static void test_map_shared_and_views(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pt_map *m = NULL;
	const cr_pt_tensor *t;
	static const int s23[] = {2, 3}, st23[] = {3, 1}, s32[] = {3, 2}, st32[] = {1, 3},
	                 s2[] = {2}, st2[] = {1};

	op(&b, '}');
	op(&b, '(');
	str(&b, "emb.weight");
	tensor(&b, "FloatStorage", "0", 6, 0, s23, st23, 2);
	str(&b, "head.weight");
	tensor(&b, "FloatStorage", "0", 6, 0, s23, st23, 2);
	str(&b, "tail");
	tensor(&b, "FloatStorage", "0", 6, 4, s2, st2, 1);
	str(&b, "transposed");
	tensor(&b, "FloatStorage", "0", 6, 0, s32, st32, 2);
	op(&b, 'u');
	op(&b, '.');
	REQUIRE(map(&b, &m) == 0);
	REQUIRE(m->n == 4);
	CHECK(m->nstorages == 1);
	CHECK(m->tensors[0].storage == m->tensors[1].storage);
	CHECK(m->tensors[0].offset == m->tensors[1].offset &&
	      m->tensors[0].length == m->tensors[1].length);
	REQUIRE((t = find(m, "tail")) != NULL);
	CHECK(t->offset == 16 && t->length == 8);
	REQUIRE((t = find(m, "transposed")) != NULL);
	/* The 3x2 transpose spans elements 0..5 of the storage. */
	CHECK(t->view && t->ndim == 1 && t->shape[0] == 6 && t->length == 24);
	CHECK(m->nviews == 1);
	cr_pt_map_free(m);
	cr_buf_free(&b);
}

/* A key set twice keeps its first place and last value; dotted collisions are numbered. */
static void test_map_names(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pt_map *m = NULL;
	static const int s1[] = {1}, st1[] = {1};

	op(&b, '}');
	op(&b, '(');
	str(&b, "a");
	tensor(&b, "FloatStorage", "0", 1, 0, s1, st1, 1);
	str(&b, "a.b");
	tensor(&b, "FloatStorage", "1", 1, 0, s1, st1, 1);
	str(&b, "a");
	tensor(&b, "LongStorage", "2", 1, 0, s1, st1, 1);
	str(&b, "x");
	op(&b, '}');
	str(&b, "y");
	op(&b, ']');
	op(&b, 'N');
	op(&b, 'a');
	tensor(&b, "FloatStorage", "3", 1, 0, s1, st1, 1);
	op(&b, 'a');
	op(&b, 's');
	str(&b, "a"); /* "a" a third time: a dict now, at the first place */
	op(&b, '}');
	str(&b, "b");
	tensor(&b, "FloatStorage", "4", 1, 0, s1, st1, 1);
	op(&b, 's');
	op(&b, 'u');
	op(&b, '.');
	REQUIRE(map(&b, &m) == 0);
	REQUIRE(m->n == 3);
	CHECK(strcmp(m->tensors[0].name, "a.b") == 0);
	CHECK(strcmp(m->storages[m->tensors[0].storage].key, "4") == 0);
	CHECK(strcmp(m->tensors[1].name, "a.b#2") == 0);
	CHECK(strcmp(m->tensors[2].name, "x.y.1") == 0);
	CHECK(m->nrenamed == 1);
	cr_pt_map_free(m);
	cr_buf_free(&b);
}

/* torch.save(model): tensors inside objects, through BUILD state and _rebuild_parameter. */
static void test_map_objects(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pt_map *m = NULL;
	static const int s2[] = {2}, st2[] = {1};

	global(&b, "torch.nn.modules.linear", "Linear");
	op(&b, ')');
	op(&b, 0x81); /* NEWOBJ */
	op(&b, '}');
	op(&b, '(');
	str(&b, "training");
	op(&b, 0x88);
	str(&b, "_parameters");
	global(&b, "collections", "OrderedDict");
	op(&b, ')');
	op(&b, 'R');
	op(&b, '(');
	str(&b, "weight");
	global(&b, "torch._utils", "_rebuild_parameter");
	op(&b, '(');
	tensor(&b, "FloatStorage", "0", 2, 0, s2, st2, 1);
	op(&b, 0x88);
	global(&b, "collections", "OrderedDict");
	op(&b, ')');
	op(&b, 'R');
	op(&b, 't');
	op(&b, 'R');
	op(&b, 'u');
	op(&b, 'u');
	op(&b, 'b'); /* BUILD */
	op(&b, '.');
	REQUIRE(map(&b, &m) == 0);
	REQUIRE(m->n == 1);
	CHECK(strcmp(m->tensors[0].name, "_parameters.weight") == 0);
	cr_pt_map_free(m);

	/* torch.save(tensor): the root. */
	cr_buf_clear(&b);
	tensor(&b, "BFloat16Storage", "0", 2, 0, s2, st2, 1);
	op(&b, '.');
	REQUIRE(map(&b, &m) == 0);
	REQUIRE(m->n == 1);
	CHECK(strcmp(m->tensors[0].name, "(root)") == 0);
	CHECK(strcmp(m->tensors[0].dtype, "BF16") == 0 && m->tensors[0].length == 4);
	cr_pt_map_free(m);

	/* A list that contains itself is walked once, not forever. */
	cr_buf_clear(&b);
	op(&b, ']');
	op(&b, 'q');
	op(&b, 0);
	op(&b, 'h');
	op(&b, 0);
	op(&b, 'a');
	tensor(&b, "FloatStorage", "0", 2, 0, s2, st2, 1);
	op(&b, 'a');
	op(&b, '.');
	REQUIRE(map(&b, &m) == 0);
	REQUIRE(m->n == 1);
	CHECK(strcmp(m->tensors[0].name, "1") == 0);
	cr_pt_map_free(m);
	cr_buf_free(&b);
}

static int map_refuses(const cr_buf *b, const char *what);

/* A list of n references (BINGET 0) to what was memoized as 0, after the list's own items. */
static void refs(cr_buf *b, size_t n)
{
	size_t i;

	op(b, 'q');
	op(b, 0);
	for (i = 1; i < n; i++) {
		op(b, 'h');
		op(b, 0);
	}
}

static double cpu_seconds(void)
{
	return (double)clock() / CLOCKS_PER_SEC;
}

/*
 * Shared subtrees: a dict reached through many references is walked each
 * time (its names differ), with its repeated keys worked out once, and the
 * walk's steps (containers and entries) are bounded: 4200 references to a
 * dict of 4096 keys are refused at once instead of walking 17 million
 * entries, however few containers that is.
 */
static void test_map_shared_budget(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pt_map *m = NULL;
	cr_pkl *pk = NULL;
	static const int s1[] = {1}, st1[] = {1};
	size_t i, pass;
	double t0;

	/* [d, d, d], d = {"a": t0, "b": t1, "a": t2}: names keep d's first places, last values */
	op(&b, ']');
	op(&b, '(');
	op(&b, '}');
	op(&b, '(');
	str(&b, "a");
	tensor(&b, "FloatStorage", "0", 1, 0, s1, st1, 1);
	str(&b, "b");
	tensor(&b, "FloatStorage", "1", 1, 0, s1, st1, 1);
	str(&b, "a");
	tensor(&b, "FloatStorage", "2", 1, 0, s1, st1, 1);
	op(&b, 'u');
	refs(&b, 3);
	op(&b, 'e');
	op(&b, '.');
	REQUIRE(parse(&b, NULL, &pk) == 0);
	/* Twice over one tree: the walk leaves no mark behind. */
	for (pass = 0; pass < 2; pass++) {
		REQUIRE(cr_pt_map_pickle(pk, "test.pkl", &m) == 0);
		REQUIRE(m->n == 6);
		for (i = 0; i < 3; i++) {
			char a[8], bn[8];

			snprintf(a, sizeof(a), "%zu.a", i);
			snprintf(bn, sizeof(bn), "%zu.b", i);
			CHECK(strcmp(m->tensors[2 * i].name, a) == 0 &&
			      strcmp(m->storages[m->tensors[2 * i].storage].key, "2") == 0);
			CHECK(strcmp(m->tensors[2 * i + 1].name, bn) == 0);
		}
		cr_pt_map_free(m);
		m = NULL;
	}
	cr_pkl_free(pk);

	cr_buf_clear(&b);
	op(&b, ']');
	op(&b, '(');
	op(&b, '}');
	op(&b, '(');
	for (i = 0; i < 4096; i++) {
		op(&b, 'J'); /* BININT */
		u32le(&b, (uint32_t)i);
		op(&b, 'N');
	}
	op(&b, 'u');
	refs(&b, 4200);
	op(&b, 'e');
	op(&b, '.');
	t0 = cpu_seconds();
	CHECK(map_refuses(&b, "too many paths through shared objects"));
	CHECK(cpu_seconds() - t0 < 2.0);
	cr_buf_free(&b);
}

/*
 * Names made twice get "#N" suffixes in O(1) each: 20000 float keys 1.0
 * (kept apart, as keys of a kind other than str and int are) all name "1".
 */
static void test_map_many_same_names(void)
{
	cr_buf b = CR_BUF_INIT;
	cr_pt_map *m = NULL;
	static const int s1[] = {1}, st1[] = {1};
	size_t i, n = 20000;
	double t0;

	tensor(&b, "FloatStorage", "0", 1, 0, s1, st1, 1);
	op(&b, 'q');
	op(&b, 0);
	op(&b, '0');
	op(&b, '}');
	op(&b, '(');
	for (i = 0; i < n; i++) {
		op(&b, 'G'); /* BINFLOAT 1.0, big-endian */
		u64le(&b, 0x000000000000f03full);
		op(&b, 'h');
		op(&b, 0);
	}
	op(&b, 'u');
	op(&b, '.');
	t0 = cpu_seconds();
	REQUIRE(map(&b, &m) == 0);
	CHECK(cpu_seconds() - t0 < 2.0);
	REQUIRE(m->n == n);
	CHECK(strcmp(m->tensors[0].name, "1") == 0 && strcmp(m->tensors[1].name, "1#2") == 0);
	CHECK(strcmp(m->tensors[n - 1].name, "1#20000") == 0);
	CHECK(m->nrenamed == n - 1);
	cr_pt_map_free(m);
	cr_buf_free(&b);
}

/*
 * References multiply names, so both are bounded: 140000 references to one
 * tensor (a few hundred bytes of memo references) are refused, as are
 * 40000 references under a 4000-byte key (160 MB of names).
 */
static void test_map_reference_caps(void)
{
	cr_buf b = CR_BUF_INIT;
	static const int s1[] = {1}, st1[] = {1};
	char *key = malloc(4001);

	REQUIRE(key);
	op(&b, ']');
	op(&b, '(');
	tensor(&b, "FloatStorage", "0", 1, 0, s1, st1, 1);
	refs(&b, 140000);
	op(&b, 'e');
	op(&b, '.');
	CHECK(map_refuses(&b, "too many references to the same tensors"));

	memset(key, 'k', 4000);
	key[4000] = '\0';
	cr_buf_clear(&b);
	op(&b, '}');
	str(&b, key);
	op(&b, ']');
	op(&b, '(');
	tensor(&b, "FloatStorage", "0", 1, 0, s1, st1, 1);
	refs(&b, 40000);
	op(&b, 'e');
	op(&b, 's');
	op(&b, '.');
	CHECK(map_refuses(&b, "too many tensor names"));
	free(key);
	cr_buf_free(&b);
}

/* The mapping fails with CR_EINVAL and a message containing what. */
static int map_refuses(const cr_buf *b, const char *what)
{
	cr_pt_map *m = NULL;
	int rc = map(b, &m);

	cr_pt_map_free(m);
	if (rc != CR_EINVAL || !strstr(cr_error_last(), what)) {
		fprintf(stderr, "  wanted CR_EINVAL with '%s', got %d: %s\n", what, rc,
		        cr_error_last());
		return 0;
	}
	return 1;
}

static void test_map_refusals(void)
{
	cr_buf b = CR_BUF_INIT;
	static const int s2[] = {2}, st2[] = {1}, s4[] = {4};
	size_t i;

	/* A tensor reaching past its storage. */
	tensor(&b, "FloatStorage", "0", 3, 2, s2, st2, 1);
	op(&b, '.');
	CHECK(map_refuses(&b, "outside its storage"));
	cr_buf_clear(&b);
	tensor(&b, "FloatStorage", "0", 3, 0, s4, st2, 1);
	op(&b, '.');
	CHECK(map_refuses(&b, "outside its storage"));

	/* One key, two declarations. */
	cr_buf_clear(&b);
	op(&b, ']');
	tensor(&b, "FloatStorage", "0", 2, 0, s2, st2, 1);
	op(&b, 'a');
	tensor(&b, "FloatStorage", "0", 4, 0, s2, st2, 1);
	op(&b, 'a');
	op(&b, '.');
	CHECK(map_refuses(&b, "declared twice"));

	cr_buf_clear(&b);
	tensor(&b, "EvilStorage", "0", 2, 0, s2, st2, 1);
	op(&b, '.');
	CHECK(map_refuses(&b, "unknown storage type"));

	cr_buf_clear(&b);
	tensor(&b, "FloatStorage", "../../etc/passwd", 2, 0, s2, st2, 1);
	op(&b, '.');
	CHECK(map_refuses(&b, "storage key"));

	cr_buf_clear(&b);
	global(&b, "torch._utils", "_rebuild_tensor_v2");
	op(&b, '(');
	str(&b, "not a persistent id");
	op(&b, 't');
	op(&b, 'R');
	op(&b, '.');
	CHECK(map_refuses(&b, "wrong number of arguments"));

	/* Nesting deeper than the walk goes. */
	cr_buf_clear(&b);
	for (i = 0; i <= CR_PT_MAX_DEPTH + 1; i++)
		op(&b, ']');
	tensor(&b, "FloatStorage", "0", 2, 0, s2, st2, 1);
	for (i = 0; i <= CR_PT_MAX_DEPTH + 1; i++)
		op(&b, 'a');
	op(&b, '.');
	CHECK(map_refuses(&b, "nested deeper"));
	cr_buf_free(&b);
}

/* --------------------------------------------------------------- zips -- */

typedef struct zmember {
	const char *name;          /* in the local header */
	const char *cd_name;       /* in the central directory (NULL: same) */
	const void *data;
	size_t len;
	uint16_t method;
	uint64_t cd_usize;         /* 0: len */
	int64_t cd_offset_delta;   /* added to the local header's offset in the directory */
} zmember;

static void u16le(cr_buf *b, uint16_t v)
{
	uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};

	cr_buf_put(b, x, 2);
}

/* A zip of stored members (CRCs zero: the reader does not check them). */
static void zip(cr_buf *b, const zmember *m, size_t n, uint16_t count_override)
{
	uint32_t offs[16];
	size_t i, cd_start;

	cr_buf_clear(b);
	for (i = 0; i < n; i++) {
		offs[i] = (uint32_t)b->len;
		cr_buf_put(b, "PK\003\004", 4);
		u16le(b, 20);
		u16le(b, 0);
		u16le(b, m[i].method);
		u32le(b, 0);
		u32le(b, 0);
		u32le(b, (uint32_t)m[i].len);
		u32le(b, (uint32_t)m[i].len);
		u16le(b, (uint16_t)strlen(m[i].name));
		u16le(b, 0);
		cr_buf_puts(b, m[i].name);
		cr_buf_put(b, m[i].data, m[i].len);
	}
	cd_start = b->len;
	for (i = 0; i < n; i++) {
		const char *name = m[i].cd_name ? m[i].cd_name : m[i].name;

		cr_buf_put(b, "PK\001\002", 4);
		u16le(b, 20);
		u16le(b, 20);
		u16le(b, 0);
		u16le(b, m[i].method);
		u32le(b, 0);
		u32le(b, 0);
		u32le(b, (uint32_t)m[i].len);
		u32le(b, (uint32_t)(m[i].cd_usize ? m[i].cd_usize : m[i].len));
		u16le(b, (uint16_t)strlen(name));
		u16le(b, 0);
		u16le(b, 0);
		u16le(b, 0);
		u16le(b, 0);
		u32le(b, 0);
		u32le(b, (uint32_t)((int64_t)offs[i] + m[i].cd_offset_delta));
		cr_buf_puts(b, name);
	}
	cr_buf_put(b, "PK\005\006", 4);
	u16le(b, 0);
	u16le(b, 0);
	u16le(b, count_override ? count_override : (uint16_t)n);
	u16le(b, count_override ? count_override : (uint16_t)n);
	u32le(b, (uint32_t)(b->len - cd_start - 12));
	u32le(b, (uint32_t)cd_start);
	u16le(b, 0);
}

static int memfd_of(const cr_buf *b)
{
	int fd = memfd_create("pt", MFD_CLOEXEC);

	if (fd < 0 || write(fd, b->ptr, b->len) != (ssize_t)b->len)
		abort();
	return fd;
}

static int read_zip(const cr_buf *b, cr_manifest **out)
{
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	int fd = memfd_of(b), rc;

	o.name = "ckpt.pt";
	o.want_file_sha256 = 1;
	cr_error_clear();
	rc = cr_manifest_read_with(fd, &o, &cr_reader_pytorch, out, NULL, NULL);
	close(fd);
	return rc;
}

static int zip_refuses(const cr_buf *b, const char *what)
{
	cr_manifest *m = NULL;
	int rc = read_zip(b, &m);

	cr_manifest_free(m);
	if (rc != CR_EINVAL || !strstr(cr_error_last(), what) ||
	    !strstr(cr_error_last(), "ckpt.pt")) {
		fprintf(stderr, "  wanted CR_EINVAL with '%s', got %d: %s\n", what, rc,
		        cr_error_last());
		return 0;
	}
	return 1;
}

/* data.pkl of {"w": Tensor(2 floats, storage "0"), "v": same storage, second float}. */
static void small_pickle(cr_buf *b)
{
	static const int s2[] = {2}, st2[] = {1}, s1[] = {1};

	cr_buf_clear(b);
	op(b, 0x80);
	op(b, 2);
	op(b, '}');
	op(b, '(');
	str(b, "w");
	tensor(b, "FloatStorage", "0", 2, 0, s2, st2, 1);
	str(b, "v");
	tensor(b, "FloatStorage", "0", 2, 1, s1, st2, 1);
	op(b, 'u');
	op(b, '.');
}

static void test_zip_good(void)
{
	cr_buf pkl = CR_BUF_INIT, z = CR_BUF_INIT;
	static const float w[2] = {1.5f, -2.0f};
	cr_manifest *m = NULL;
	uint8_t h[32];
	zmember mem[3];

	small_pickle(&pkl);
	memset(mem, 0, sizeof(mem));
	mem[0] = (zmember){"ck/data.pkl", NULL, pkl.ptr, pkl.len, 0, 0, 0};
	mem[1] = (zmember){"ck/data/0", NULL, w, sizeof(w), 0, 0, 0};
	mem[2] = (zmember){"ck/version", NULL, "3\n", 2, 0, 0, 0};
	zip(&z, mem, 3, 0);
	CHECK(cr_reader_pytorch.probe((const uint8_t *)z.ptr, 64, "x"));
	REQUIRE(read_zip(&z, &m) == 0);
	CHECK(strcmp(m->format, "pytorch") == 0);
	REQUIRE(m->n == 2);
	CHECK(strcmp(m->tensors[0].name, "w") == 0 && strcmp(m->tensors[0].member, "ck/data/0") == 0);
	SHA256((const uint8_t *)w, sizeof(w), h);
	CHECK_MEM(m->tensors[0].sha256, h, 32);
	SHA256((const uint8_t *)&w[1], sizeof(w[1]), h);
	CHECK(strcmp(m->tensors[1].name, "v") == 0 && m->tensors[1].offset == 4);
	CHECK_MEM(m->tensors[1].sha256, h, 32);
	/* every byte of the file went through the whole-file hash, once */
	SHA256((const uint8_t *)z.ptr, z.len, h);
	CHECK(m->have_file_sha256);
	CHECK_MEM(m->file_sha256, h, 32);
	cr_manifest_free(m);
	cr_buf_free(&pkl);
	cr_buf_free(&z);
}

static void test_zip_refusals(void)
{
	cr_buf pkl = CR_BUF_INIT, z = CR_BUF_INIT, legacy = CR_BUF_INIT;
	static const float w[2] = {1.5f, -2.0f};
	zmember mem[4];

	small_pickle(&pkl);
	mem[0] = (zmember){"ck/data.pkl", NULL, pkl.ptr, pkl.len, 0, 0, 0};
	mem[1] = (zmember){"ck/data/0", NULL, w, sizeof(w), 0, 0, 0};
	mem[2] = (zmember){"ck/version", NULL, "3\n", 2, 0, 0, 0};

	/* the storage member missing */
	zip(&z, (zmember[]){mem[0], mem[2]}, 2, 0);
	CHECK(zip_refuses(&z, "names a storage the zip does not hold"));
	/* the storage member shorter than the pickle says */
	mem[1].len = 4;
	zip(&z, mem, 3, 0);
	CHECK(zip_refuses(&z, "storage member holds 4 bytes but data.pkl declares 8"));
	mem[1].len = sizeof(w);
	/* data.pkl not first */
	zip(&z, (zmember[]){mem[1], mem[0], mem[2]}, 3, 0);
	CHECK(zip_refuses(&z, "data.pkl is not the first member"));
	/* a duplicate member name */
	zip(&z, (zmember[]){mem[0], mem[1], mem[1], mem[2]}, 4, 0);
	CHECK(zip_refuses(&z, "duplicate member name"));
	/* the central directory names a member differently from its local header */
	mem[1].cd_name = "ck/data/9";
	zip(&z, mem, 3, 0);
	CHECK(zip_refuses(&z, "does not match the central directory"));
	mem[1].cd_name = NULL;
	/* overlapping members: the directory points the version inside the storage */
	mem[2].cd_offset_delta = -8;
	zip(&z, mem, 3, 0);
	CHECK(zip_refuses(&z, "overlap"));
	mem[2].cd_offset_delta = 0;
	/* a deflated member claiming a 1 GiB expansion of 2 bytes */
	mem[2].method = 8;
	mem[2].cd_usize = 1u << 30;
	zip(&z, mem, 3, 0);
	CHECK(zip_refuses(&z, "zip bomb"));
	mem[2].method = 0;
	mem[2].cd_usize = 0;
	/* a deflated data.pkl claiming far more than the file could hold in pickled values */
	{
		static uint8_t junk[4096];

		mem[0].data = junk;
		mem[0].len = sizeof(junk);
		mem[0].method = 8;
		mem[0].cd_usize = 4u << 20;
		zip(&z, mem, 3, 0);
		CHECK(zip_refuses(&z, "deflated data.pkl would expand too much"));
		mem[0] = (zmember){"ck/data.pkl", NULL, pkl.ptr, pkl.len, 0, 0, 0};
	}
	/* a stored member whose directory sizes differ */
	mem[2].cd_usize = 5;
	zip(&z, mem, 3, 0);
	CHECK(zip_refuses(&z, "stored member whose sizes differ"));
	mem[2].cd_usize = 0;
	/* more members than the directory holds */
	zip(&z, mem, 3, 60000);
	CHECK(zip_refuses(&z, "central directory"));
	/* truncated: every cut of the file is refused */
	zip(&z, mem, 3, 0);
	{
		size_t cut;

		for (cut = 0; cut < z.len; cut += 7) {
			cr_buf part = CR_BUF_INIT;
			cr_manifest *m = NULL;
			int rc;

			cr_buf_put(&part, z.ptr, cut);
			rc = read_zip(&part, &m);
			CHECK(rc == CR_EINVAL && cr_error_last()[0]);
			cr_manifest_free(m);
			cr_buf_free(&part);
		}
	}
	/* the legacy format: declined by the probe, refused by name when forced */
	cr_buf_put(&legacy, "\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.", 15);
	cr_buf_put(&legacy, "\x80\x02M\xe9\x03.........................................", 40);
	CHECK(!cr_reader_pytorch.probe((const uint8_t *)legacy.ptr, legacy.len, "x.pt"));
	CHECK(zip_refuses(&legacy, "legacy torch.save format"));
	/* a zip whose first member is not data.pkl is not probed as torch's */
	zip(&z, (zmember[]){mem[2], mem[0]}, 2, 0);
	CHECK(!cr_reader_pytorch.probe((const uint8_t *)z.ptr, 64, "x.pt"));
	cr_buf_free(&pkl);
	cr_buf_free(&z);
	cr_buf_free(&legacy);
}

TEST_MAIN(TEST(test_parse_values), TEST(test_parse_protocol4), TEST(test_refuse_opcodes),
          TEST(test_refuse_structure), TEST(test_refuse_memo), TEST(test_refuse_limits),
          TEST(test_memo_sparse), TEST(test_memory_scales), TEST(test_container_growth),
          TEST(test_refuse_truncated), TEST(test_map_state_dicts),
          TEST(test_map_shared_and_views), TEST(test_map_names), TEST(test_map_objects),
          TEST(test_map_shared_budget), TEST(test_map_many_same_names),
          TEST(test_map_reference_caps), TEST(test_map_refusals), TEST(test_zip_good),
          TEST(test_zip_refusals))
