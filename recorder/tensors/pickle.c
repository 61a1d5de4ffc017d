/*
 * A minimal, safe pickle reader: opcodes in, a tree of values out, nothing
 * executed (pickle.h has the contract).
 *
 * Written from the opcode descriptions in CPython's Lib/pickletools.py. The
 * machine is the one pickletools describes: a stack, a stack of marks (each
 * the stack height at its MARK), and a memo indexed by integers. Python
 * keeps the items above the newest mark apart from the rest; here they are
 * one array and an opcode only ever sees the items above the newest mark
 * (floor()), which is the same thing.
 *
 * Every value pushed counts against limits.max_values, every allocation
 * (nodes, item arrays, stack, memo) against limits.max_bytes, and nothing
 * recurses, so the worst a hostile pickle gets is a clear CR_EINVAL.
 *
 * Memory is in proportion to the pickle: max_bytes is at most
 * CR_PKL_BYTES_PER_BYTE times its length plus CR_PKL_BYTES_SLACK. To keep
 * real pickles well inside that, containers closed from a MARK (TUPLE,
 * LIST, DICT, ...) get exactly sized item arrays carved from an arena,
 * growing ones (APPENDS, SETITEMS) grow by half, and the memo is a dense
 * array only as far as the indices in use are dense (Python numbers them
 * 0, 1, 2, ...); an index far beyond goes to a small hash table, so a PUT
 * at 16 million costs one entry, not 16 million.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cleanroom/error.h"
#include "recorder/tensors/pickle.h"

/* Nodes are carved from chunks of this many; the tree is freed chunk by chunk. */
#define NODES_PER_CHUNK 256u
/* Fixed item arrays are carved from arena chunks of this many values (64 KiB). */
#define ARENA_VALS 4096u
/* The dense memo grows to an index below 2 * (entries set) + MEMO_DENSE_SLACK. */
#define MEMO_DENSE_SLACK 1024u
/* Longest line of a text opcode (GLOBAL module or name, INT, GET, PUT). */
#define MAX_LINE 1024u
/* The highest protocol Python 3.8+ writes. */
#define MAX_PROTO 5

typedef struct node_chunk {
	struct node_chunk *next;
	size_t used;
	cr_pkl_node nodes[NODES_PER_CHUNK];
} node_chunk;

typedef struct object_chunk {
	struct object_chunk *next;
	size_t used;
	cr_pkl_object objects[NODES_PER_CHUNK];
} object_chunk;

typedef struct arena_chunk {
	struct arena_chunk *next;
	size_t used, size;          /* values */
	cr_pkl_val vals[];
} arena_chunk;

struct cr_pkl {
	node_chunk *chunks;
	object_chunk *objects;
	arena_chunk *arena;         /* the newest chunk first */
	size_t count;
	cr_pkl_val root;
};

/* A memo entry outside the dense part: key is the index + 1 (0: free). */
typedef struct memo_entry {
	uint64_t key;
	cr_pkl_val v;
} memo_entry;

/* One parse. */
typedef struct pstate {
	const uint8_t *data;
	size_t len, pos;
	size_t op_pos;              /* where the current opcode starts */
	uint8_t op;
	const char *what;
	cr_pkl_limits lim;
	cr_pkl *pk;
	size_t bytes;               /* memory accounted so far */
	cr_pkl_val *stack;
	size_t sp, stack_cap;
	size_t *marks;
	size_t nmarks, marks_cap;
	cr_pkl_val *memo;           /* dense part: indices below memo_len */
	uint8_t *memo_set;          /* a bit per dense slot */
	size_t memo_len;
	memo_entry *sparse;         /* indices beyond: open addressing, at most half full */
	size_t sparse_cap, sparse_n;
	size_t memo_count;          /* indices set (MEMOIZE's next index) */
} pstate;

enum {
	OP_MARK = '(',
	OP_STOP = '.',
	OP_POP = '0',
	OP_POP_MARK = '1',
	OP_DUP = '2',
	OP_FLOAT = 'F',
	OP_INT = 'I',
	OP_BININT = 'J',
	OP_BININT1 = 'K',
	OP_LONG = 'L',
	OP_BININT2 = 'M',
	OP_NONE = 'N',
	OP_PERSID = 'P',
	OP_BINPERSID = 'Q',
	OP_REDUCE = 'R',
	OP_STRING = 'S',
	OP_BINSTRING = 'T',
	OP_SHORT_BINSTRING = 'U',
	OP_UNICODE = 'V',
	OP_BINUNICODE = 'X',
	OP_APPEND = 'a',
	OP_BUILD = 'b',
	OP_GLOBAL = 'c',
	OP_DICT = 'd',
	OP_EMPTY_DICT = '}',
	OP_APPENDS = 'e',
	OP_GET = 'g',
	OP_BINGET = 'h',
	OP_INST = 'i',
	OP_LONG_BINGET = 'j',
	OP_LIST = 'l',
	OP_EMPTY_LIST = ']',
	OP_OBJ = 'o',
	OP_PUT = 'p',
	OP_BINPUT = 'q',
	OP_LONG_BINPUT = 'r',
	OP_SETITEM = 's',
	OP_TUPLE = 't',
	OP_EMPTY_TUPLE = ')',
	OP_SETITEMS = 'u',
	OP_BINFLOAT = 'G',
	OP_PROTO = 0x80,
	OP_NEWOBJ = 0x81,
	OP_EXT1 = 0x82,
	OP_EXT2 = 0x83,
	OP_EXT4 = 0x84,
	OP_TUPLE1 = 0x85,
	OP_TUPLE2 = 0x86,
	OP_TUPLE3 = 0x87,
	OP_NEWTRUE = 0x88,
	OP_NEWFALSE = 0x89,
	OP_LONG1 = 0x8a,
	OP_LONG4 = 0x8b,
	OP_BINBYTES = 'B',
	OP_SHORT_BINBYTES = 'C',
	OP_SHORT_BINUNICODE = 0x8c,
	OP_BINUNICODE8 = 0x8d,
	OP_BINBYTES8 = 0x8e,
	OP_EMPTY_SET = 0x8f,
	OP_ADDITEMS = 0x90,
	OP_FROZENSET = 0x91,
	OP_NEWOBJ_EX = 0x92,
	OP_STACK_GLOBAL = 0x93,
	OP_MEMOIZE = 0x94,
	OP_FRAME = 0x95,
	OP_BYTEARRAY8 = 0x96,
	OP_NEXT_BUFFER = 0x97,
	OP_READONLY_BUFFER = 0x98
};

static const char *op_name(uint8_t op)
{
	switch (op) {
	case OP_MARK: return "MARK";
	case OP_STOP: return "STOP";
	case OP_POP: return "POP";
	case OP_POP_MARK: return "POP_MARK";
	case OP_DUP: return "DUP";
	case OP_FLOAT: return "FLOAT";
	case OP_INT: return "INT";
	case OP_BININT: return "BININT";
	case OP_BININT1: return "BININT1";
	case OP_LONG: return "LONG";
	case OP_BININT2: return "BININT2";
	case OP_NONE: return "NONE";
	case OP_PERSID: return "PERSID";
	case OP_BINPERSID: return "BINPERSID";
	case OP_REDUCE: return "REDUCE";
	case OP_STRING: return "STRING";
	case OP_BINSTRING: return "BINSTRING";
	case OP_SHORT_BINSTRING: return "SHORT_BINSTRING";
	case OP_UNICODE: return "UNICODE";
	case OP_BINUNICODE: return "BINUNICODE";
	case OP_APPEND: return "APPEND";
	case OP_BUILD: return "BUILD";
	case OP_GLOBAL: return "GLOBAL";
	case OP_DICT: return "DICT";
	case OP_EMPTY_DICT: return "EMPTY_DICT";
	case OP_APPENDS: return "APPENDS";
	case OP_GET: return "GET";
	case OP_BINGET: return "BINGET";
	case OP_INST: return "INST";
	case OP_LONG_BINGET: return "LONG_BINGET";
	case OP_LIST: return "LIST";
	case OP_EMPTY_LIST: return "EMPTY_LIST";
	case OP_OBJ: return "OBJ";
	case OP_PUT: return "PUT";
	case OP_BINPUT: return "BINPUT";
	case OP_LONG_BINPUT: return "LONG_BINPUT";
	case OP_SETITEM: return "SETITEM";
	case OP_TUPLE: return "TUPLE";
	case OP_EMPTY_TUPLE: return "EMPTY_TUPLE";
	case OP_SETITEMS: return "SETITEMS";
	case OP_BINFLOAT: return "BINFLOAT";
	case OP_PROTO: return "PROTO";
	case OP_NEWOBJ: return "NEWOBJ";
	case OP_EXT1: return "EXT1";
	case OP_EXT2: return "EXT2";
	case OP_EXT4: return "EXT4";
	case OP_TUPLE1: return "TUPLE1";
	case OP_TUPLE2: return "TUPLE2";
	case OP_TUPLE3: return "TUPLE3";
	case OP_NEWTRUE: return "NEWTRUE";
	case OP_NEWFALSE: return "NEWFALSE";
	case OP_LONG1: return "LONG1";
	case OP_LONG4: return "LONG4";
	case OP_BINBYTES: return "BINBYTES";
	case OP_SHORT_BINBYTES: return "SHORT_BINBYTES";
	case OP_SHORT_BINUNICODE: return "SHORT_BINUNICODE";
	case OP_BINUNICODE8: return "BINUNICODE8";
	case OP_BINBYTES8: return "BINBYTES8";
	case OP_EMPTY_SET: return "EMPTY_SET";
	case OP_ADDITEMS: return "ADDITEMS";
	case OP_FROZENSET: return "FROZENSET";
	case OP_NEWOBJ_EX: return "NEWOBJ_EX";
	case OP_STACK_GLOBAL: return "STACK_GLOBAL";
	case OP_MEMOIZE: return "MEMOIZE";
	case OP_FRAME: return "FRAME";
	case OP_BYTEARRAY8: return "BYTEARRAY8";
	case OP_NEXT_BUFFER: return "NEXT_BUFFER";
	case OP_READONLY_BUFFER: return "READONLY_BUFFER";
	default: return NULL;
	}
}

const char *cr_pkl_kind_name(cr_pkl_kind k)
{
	switch (k) {
	case CR_PKL_NONE: return "None";
	case CR_PKL_BOOL: return "bool";
	case CR_PKL_INT: return "int";
	case CR_PKL_BIGINT: return "big int";
	case CR_PKL_FLOAT: return "float";
	case CR_PKL_STR: return "str";
	case CR_PKL_BYTES: return "bytes";
	case CR_PKL_TUPLE: return "tuple";
	case CR_PKL_LIST: return "list";
	case CR_PKL_DICT: return "dict";
	case CR_PKL_SET: return "set";
	case CR_PKL_FROZENSET: return "frozenset";
	case CR_PKL_GLOBAL: return "global";
	case CR_PKL_OBJECT: return "object";
	case CR_PKL_PERSID: return "persistent id";
	}
	return "?";
}

void cr_pkl_limits_default(cr_pkl_limits *out)
{
	out->max_values = CR_PKL_DEFAULT_MAX_VALUES;
	out->max_stack = CR_PKL_DEFAULT_MAX_STACK;
	out->max_marks = CR_PKL_DEFAULT_MAX_MARKS;
	out->max_memo = CR_PKL_DEFAULT_MAX_MEMO;
	out->max_str = CR_PKL_DEFAULT_MAX_STR;
	out->max_items = CR_PKL_DEFAULT_MAX_ITEMS;
	out->max_bytes = CR_PKL_DEFAULT_MAX_BYTES;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int fail(pstate *st, const char *fmt, ...)
{
	char msg[512];
	const char *name = op_name(st->op);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (name)
		return cr_error_set(CR_EINVAL, "%s: pickle opcode %s at byte %zu: %s", st->what, name,
		                    st->op_pos, msg);
	return cr_error_set(CR_EINVAL, "%s: pickle byte %zu: %s", st->what, st->op_pos, msg);
}

static int nomem(pstate *st)
{
	return cr_error_set(CR_ENOMEM, "%s: out of memory reading the pickle", st->what);
}

/* Count n more bytes of memory against the limit. */
static int account(pstate *st, size_t n)
{
	if (n > st->lim.max_bytes || st->bytes > st->lim.max_bytes - n)
		return fail(st, "the pickle needs more than %zu bytes of memory", st->lim.max_bytes);
	st->bytes += n;
	return 0;
}

/* Grow *arr (of elem-sized entries, *cap of them) to hold need entries. */
static int grow(pstate *st, void **arr, size_t *cap, size_t need, size_t elem, size_t max)
{
	size_t ncap;
	void *p;
	int rc;

	if (need <= *cap)
		return 0;
	if (need > max)
		return fail(st, "more than %zu entries", max);
	ncap = *cap ? *cap : (max < 8 ? max : 8);
	while (ncap < need)
		ncap = ncap > max / 2 ? max : ncap * 2;
	if ((rc = account(st, (ncap - *cap) * elem)) < 0)
		return rc;
	p = realloc(*arr, ncap * elem);
	if (!p)
		return nomem(st);
	*arr = p;
	*cap = ncap;
	return 0;
}

static int new_node(pstate *st, cr_pkl_kind kind, cr_pkl_node **out)
{
	node_chunk *c = st->pk->chunks;
	int rc;

	if (!c || c->used == NODES_PER_CHUNK) {
		if ((rc = account(st, sizeof(*c))) < 0)
			return rc;
		c = calloc(1, sizeof(*c));
		if (!c)
			return nomem(st);
		c->next = st->pk->chunks;
		st->pk->chunks = c;
	}
	*out = &c->nodes[c->used++];
	(*out)->kind = kind;
	return 0;
}

static int new_object(pstate *st, cr_pkl_object **out)
{
	object_chunk *c = st->pk->objects;
	int rc;

	if (!c || c->used == NODES_PER_CHUNK) {
		if ((rc = account(st, sizeof(*c))) < 0)
			return rc;
		c = calloc(1, sizeof(*c));
		if (!c)
			return nomem(st);
		c->next = st->pk->objects;
		st->pk->objects = c;
	}
	*out = &c->objects[c->used++];
	return 0;
}

/* n values from the arena (n > 0); they live as long as the tree. */
static int arena_vals(pstate *st, size_t n, cr_pkl_val **out)
{
	arena_chunk *c = st->pk->arena;
	size_t size;
	int rc;

	if (!c || c->size - c->used < n) {
		/* A big array gets a chunk of its own; the current one stays in use. */
		size = n > ARENA_VALS / 4 ? n : ARENA_VALS;
		if ((rc = account(st, sizeof(*c) + size * sizeof(cr_pkl_val))) < 0)
			return rc;
		if (!(c = malloc(sizeof(*c) + size * sizeof(cr_pkl_val))))
			return nomem(st);
		c->size = size;
		c->used = 0;
		if (size == ARENA_VALS || !st->pk->arena) {
			c->next = st->pk->arena;
			st->pk->arena = c;
		} else {
			c->next = st->pk->arena->next;
			st->pk->arena->next = c;
		}
	}
	*out = c->vals + c->used;
	c->used += n;
	return 0;
}

/*
 * Make room for need values in a node's array (*arr, *cap of them, n used).
 * cap 0 with a non-NULL array: a fixed array in the arena, moved to the
 * heap when it has to grow. Growth is by half: what a pickle makes a
 * container hold stays near what it pays for in bytes.
 */
static int reserve(pstate *st, cr_pkl_val **arr, uint32_t *cap, uint32_t n, size_t need,
                   size_t max)
{
	size_t ncap;
	cr_pkl_val *p;
	int rc;

	if (need <= *cap)
		return 0;
	if (need > max)
		return fail(st, "more than %zu entries", max);
	ncap = (size_t)*cap + *cap / 2;
	if (ncap < need)
		ncap = need;
	if (ncap > max)
		ncap = max;
	if ((rc = account(st, (ncap - *cap) * sizeof(*p))) < 0)
		return rc;
	if (*cap == 0 && *arr) {
		if (!(p = malloc(ncap * sizeof(*p))))
			return nomem(st);
		memcpy(p, *arr, n * sizeof(*p));
	} else if (!(p = realloc(*arr, ncap * sizeof(*p)))) {
		return nomem(st);
	}
	*arr = p;
	*cap = (uint32_t)ncap;
	return 0;
}

/* Append count values to a node's items (pairs: count is even, key, value, ...). */
static int node_extend(pstate *st, cr_pkl_node *n, const cr_pkl_val *v, size_t count, int pairs)
{
	size_t have = pairs ? 2 * (size_t)n->npairs : n->n;
	int rc;

	if (pairs) {
		if (count / 2 > st->lim.max_items - n->npairs)
			return fail(st, "more than %zu entries", st->lim.max_items);
		rc = reserve(st, &n->pairs, &n->pcap, 2 * n->npairs, have + count,
		             2 * st->lim.max_items);
	} else {
		rc = reserve(st, &n->items, &n->cap, n->n, have + count, st->lim.max_items);
	}
	if (rc < 0)
		return rc;
	memcpy((pairs ? n->pairs : n->items) + have, v, count * sizeof(*v));
	if (pairs)
		n->npairs += (uint32_t)(count / 2);
	else
		n->n += (uint32_t)count;
	return 0;
}

/* Push v; fresh values (not memo lookups or DUP) count against max_values. */
static int push(pstate *st, cr_pkl_val v, int fresh)
{
	int rc;

	if (fresh) {
		if (st->pk->count >= st->lim.max_values)
			return fail(st, "more than %zu values", st->lim.max_values);
		st->pk->count++;
	}
	if (st->sp >= st->lim.max_stack)
		return fail(st, "stack deeper than %zu values", st->lim.max_stack);
	if ((rc = grow(st, (void **)&st->stack, &st->stack_cap, st->sp + 1, sizeof(v),
	               st->lim.max_stack)) < 0)
		return rc;
	st->stack[st->sp++] = v;
	return 0;
}

static int push_node(pstate *st, cr_pkl_kind kind, cr_pkl_node **out)
{
	cr_pkl_val v;
	int rc;

	v.kind = kind;
	v.len = 0;
	if ((rc = new_node(st, kind, &v.u.node)) < 0)
		return rc;
	if (out)
		*out = v.u.node;
	return push(st, v, 1);
}

/* Items above the newest mark. */
static size_t floor_(const pstate *st)
{
	return st->nmarks ? st->marks[st->nmarks - 1] : 0;
}

static int pop(pstate *st, cr_pkl_val *out)
{
	if (st->sp <= floor_(st))
		return fail(st, "the stack is empty");
	*out = st->stack[--st->sp];
	return 0;
}

static int top(pstate *st, cr_pkl_val **out)
{
	if (st->sp <= floor_(st))
		return fail(st, "the stack is empty");
	*out = &st->stack[st->sp - 1];
	return 0;
}

/* Close the newest mark: *start is where its items begin on the stack. */
static int pop_mark(pstate *st, size_t *start)
{
	if (!st->nmarks)
		return fail(st, "no MARK is open");
	*start = st->marks[--st->nmarks];
	return 0;
}

static int need(pstate *st, size_t n)
{
	if (st->len - st->pos < n)
		return fail(st, "truncated: %zu bytes needed, %zu left", n, st->len - st->pos);
	return 0;
}

static uint64_t le(const uint8_t *p, size_t n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | p[n];
	return v;
}

/* A line ending in '\n' (text opcodes): *s and *n exclude the newline. */
static int line(pstate *st, const uint8_t **s, size_t *n)
{
	size_t max = st->len - st->pos;
	const uint8_t *nl;

	if (max > MAX_LINE + 1)
		max = MAX_LINE + 1;
	nl = memchr(st->data + st->pos, '\n', max);
	if (!nl)
		return fail(st, "no end of line within %u bytes", MAX_LINE);
	*s = st->data + st->pos;
	*n = (size_t)(nl - *s);
	st->pos += *n + 1;
	return 0;
}

/* A decimal line (INT, GET, PUT): optional sign, digits, nothing else. */
static int decimal(pstate *st, int64_t *out)
{
	const uint8_t *s;
	size_t n, i = 0;
	int neg = 0, rc;
	uint64_t v = 0;

	if ((rc = line(st, &s, &n)) < 0)
		return rc;
	if (n && (s[0] == '-' || s[0] == '+')) {
		neg = s[0] == '-';
		i = 1;
	}
	if (i == n)
		return fail(st, "not a decimal number");
	for (; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return fail(st, "not a decimal number");
		if (v > ((uint64_t)INT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return fail(st, "number out of range");
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = neg ? -(int64_t)v : (int64_t)v;
	return 0;
}

/*
 * Well-formed UTF-8 (no overlong forms, nothing above U+10FFFF). Encoded
 * surrogates pass: Python writes and reads them ("surrogatepass").
 */
static int utf8_ok(const uint8_t *s, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		size_t k, j;
		uint32_t cp;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			k = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			k = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			k = 3;
			cp = c & 0x07;
		} else {
			return 0;
		}
		if (n - i <= k)
			return 0;
		for (j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return 0;
		i += k + 1;
	}
	return 1;
}

/* A counted string of n bytes at pos: STR (checked UTF-8) or BYTES. */
static int counted(pstate *st, uint64_t n, cr_pkl_kind kind)
{
	cr_pkl_val v;
	int rc;

	if (n > st->lim.max_str || n > UINT32_MAX)
		return fail(st, "a string of %llu bytes is longer than the limit (%zu)",
		            (unsigned long long)n, st->lim.max_str);
	if ((rc = need(st, (size_t)n)) < 0)
		return rc;
	if (kind == CR_PKL_STR && !utf8_ok(st->data + st->pos, (size_t)n))
		return fail(st, "string is not valid UTF-8");
	v.kind = kind;
	v.len = (uint32_t)n;
	v.u.s = st->data + st->pos;
	st->pos += (size_t)n;
	return push(st, v, 1);
}

/* LONG1/LONG4: n bytes of little-endian two's complement. */
static int long_bytes(pstate *st, uint64_t n)
{
	const uint8_t *p;
	cr_pkl_val v;
	int rc;

	if (n > st->lim.max_str || n > UINT32_MAX)
		return fail(st, "an integer of %llu bytes is longer than the limit (%zu)",
		            (unsigned long long)n, st->lim.max_str);
	if ((rc = need(st, (size_t)n)) < 0)
		return rc;
	p = st->data + st->pos;
	st->pos += (size_t)n;
	if (n <= 8) {
		uint64_t u = le(p, (size_t)n);

		/* Sign-extend from the top bit of the last byte. */
		if (n && n < 8 && (p[n - 1] & 0x80))
			u |= ~(uint64_t)0 << (8 * n);
		v.kind = CR_PKL_INT;
		v.len = 0;
		memcpy(&v.u.i, &u, sizeof(u));
		return push(st, v, 1);
	}
	v.kind = CR_PKL_BIGINT;
	v.len = (uint32_t)n;
	v.u.s = p;
	return push(st, v, 1);
}

static int push_int(pstate *st, cr_pkl_kind kind, int64_t i)
{
	cr_pkl_val v;

	v.kind = kind;
	v.len = 0;
	v.u.i = i;
	return push(st, v, 1);
}

static size_t memo_hash(uint64_t idx, size_t cap)
{
	return (size_t)((idx * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
}

/* The sparse entry for idx, or NULL. */
static memo_entry *sparse_find(const pstate *st, uint64_t idx)
{
	size_t i;

	if (!st->sparse_n)
		return NULL;
	for (i = memo_hash(idx, st->sparse_cap);; i = (i + 1) & (st->sparse_cap - 1)) {
		memo_entry *e = &st->sparse[i];

		if (e->key == idx + 1)
			return e;
		if (!e->key)
			return NULL;
	}
}

/* The sparse entry for idx, made when missing (*fresh then 1). */
static int sparse_slot(pstate *st, uint64_t idx, memo_entry **out, int *fresh)
{
	size_t i;
	int rc;

	*fresh = 0;
	if ((*out = sparse_find(st, idx)) != NULL)
		return 0;
	if (2 * (st->sparse_n + 1) > st->sparse_cap) {
		size_t ncap = st->sparse_cap ? 2 * st->sparse_cap : 16;
		memo_entry *old = st->sparse, *t;

		if ((rc = account(st, (ncap - st->sparse_cap) * sizeof(*t))) < 0)
			return rc;
		if (!(t = calloc(ncap, sizeof(*t))))
			return nomem(st);
		for (i = 0; i < st->sparse_cap; i++) {
			size_t k;

			if (!old[i].key)
				continue;
			k = memo_hash(old[i].key - 1, ncap);
			while (t[k].key)
				k = (k + 1) & (ncap - 1);
			t[k] = old[i];
		}
		free(old);
		st->sparse = t;
		st->sparse_cap = ncap;
	}
	i = memo_hash(idx, st->sparse_cap);
	while (st->sparse[i].key)
		i = (i + 1) & (st->sparse_cap - 1);
	st->sparse[i].key = idx + 1;
	st->sparse_n++;
	*out = &st->sparse[i];
	*fresh = 1;
	return 0;
}

static int memo_put(pstate *st, uint64_t idx)
{
	cr_pkl_val *v = NULL;
	int rc, fresh;

	if ((rc = top(st, &v)) < 0)
		return rc;
	if (idx >= st->lim.max_memo)
		return fail(st, "memo index %llu is beyond the limit (%zu)", (unsigned long long)idx,
		            st->lim.max_memo);
	if (idx >= st->memo_len && idx < 2 * (uint64_t)st->memo_count + MEMO_DENSE_SLACK) {
		size_t len = st->memo_len + st->memo_len / 2, bits;
		cr_pkl_val *m;
		uint8_t *set;

		if (len <= idx)
			len = (size_t)idx + 1;
		if (len > st->lim.max_memo)
			len = st->lim.max_memo;
		bits = (len + 7) / 8;
		if ((rc = account(st, (len - st->memo_len) * sizeof(*m) + bits -
		                          (st->memo_len + 7) / 8)) < 0)
			return rc;
		if (!(m = realloc(st->memo, len * sizeof(*m))))
			return nomem(st);
		st->memo = m;
		if (!(set = realloc(st->memo_set, bits)))
			return nomem(st);
		memset(set + (st->memo_len + 7) / 8, 0, bits - (st->memo_len + 7) / 8);
		st->memo_set = set;
		st->memo_len = len;
	}
	if (idx < st->memo_len) {
		uint8_t bit = (uint8_t)(1u << (idx % 8));

		if (!(st->memo_set[idx / 8] & bit) && !sparse_find(st, idx))
			st->memo_count++;
		st->memo_set[idx / 8] |= bit;
		st->memo[idx] = *v;
		return 0;
	}
	{
		memo_entry *e;

		if ((rc = sparse_slot(st, idx, &e, &fresh)) < 0)
			return rc;
		if (fresh)
			st->memo_count++;
		e->v = *v;
	}
	return 0;
}

static int memo_get(pstate *st, uint64_t idx)
{
	const memo_entry *e;

	if (idx < st->memo_len && (st->memo_set[idx / 8] & (1u << (idx % 8))))
		return push(st, st->memo[idx], 0);
	if ((e = sparse_find(st, idx)) != NULL)
		return push(st, e->v, 0);
	return fail(st, "memo index %llu was never set", (unsigned long long)idx);
}

/* TUPLE (from the mark), TUPLE1..3 (n from the stack), LIST, DICT, FROZENSET. */
static int collect(pstate *st, cr_pkl_kind kind, size_t start)
{
	size_t n = st->sp - start;
	cr_pkl_node *node;
	cr_pkl_val v;
	int rc;

	if (kind == CR_PKL_DICT && n % 2)
		return fail(st, "odd number of items for a dict");
	if ((kind == CR_PKL_DICT ? n / 2 : n) > st->lim.max_items)
		return fail(st, "more than %zu entries", st->lim.max_items);
	v.kind = kind;
	v.len = 0;
	if ((rc = new_node(st, kind, &node)) < 0)
		return rc;
	v.u.node = node;
	/* Exactly sized, in the arena: such a container rarely grows afterwards. */
	if (n) {
		cr_pkl_val *arr = NULL;

		if ((rc = arena_vals(st, n, &arr)) < 0)
			return rc;
		memcpy(arr, st->stack + start, n * sizeof(*arr));
		if (kind == CR_PKL_DICT) {
			node->pairs = arr;
			node->npairs = (uint32_t)(n / 2);
		} else {
			node->items = arr;
			node->n = (uint32_t)n;
		}
	}
	st->sp = start;
	return push(st, v, 1);
}

/* APPEND(S) and SETITEM(S) go to a list/dict, or are kept on an object. */
static int add_items(pstate *st, size_t start, int pairs)
{
	cr_pkl_node *target;
	cr_pkl_val *t = NULL;
	int rc;

	if (start == 0 || start <= floor_(st))
		return fail(st, "no container below the items");
	t = &st->stack[start - 1];
	target = t->kind >= CR_PKL_TUPLE ? t->u.node : NULL;
	if (pairs) {
		if ((st->sp - start) % 2)
			return fail(st, "odd number of items for SETITEMS");
		if (!target || (target->kind != CR_PKL_DICT && target->kind != CR_PKL_OBJECT))
			return fail(st, "cannot set items on a %s", cr_pkl_kind_name(t->kind));
	} else {
		if (!target || (target->kind != CR_PKL_LIST && target->kind != CR_PKL_OBJECT &&
		                target->kind != CR_PKL_SET))
			return fail(st, "cannot append to a %s", cr_pkl_kind_name(t->kind));
	}
	if (st->sp > start &&
	    (rc = node_extend(st, target, st->stack + start, st->sp - start, pairs)) < 0)
		return rc;
	st->sp = start;
	return 0;
}

static int make_object(pstate *st, const cr_pkl_val *callable, const cr_pkl_val *args,
                       const cr_pkl_val *kwargs, int newobj)
{
	cr_pkl_node *o;
	cr_pkl_object *ob = NULL;
	int rc;

	if (args->kind != CR_PKL_TUPLE)
		return fail(st, "arguments are a %s, not a tuple", cr_pkl_kind_name(args->kind));
	if (kwargs && kwargs->kind != CR_PKL_DICT)
		return fail(st, "keyword arguments are a %s, not a dict",
		            cr_pkl_kind_name(kwargs->kind));
	if (callable->kind != CR_PKL_GLOBAL && callable->kind != CR_PKL_OBJECT)
		return fail(st, "cannot call a %s", cr_pkl_kind_name(callable->kind));
	if ((rc = new_object(st, &ob)) < 0 || (rc = push_node(st, CR_PKL_OBJECT, &o)) < 0)
		return rc;
	o->u.object = ob;
	o->u.object->callable = *callable;
	o->u.object->args = *args;
	if (kwargs)
		o->u.object->kwargs = *kwargs;
	o->u.object->newobj = (uint8_t)newobj;
	return 0;
}

static int make_global(pstate *st, const uint8_t *mod, size_t mod_len, const uint8_t *name,
                       size_t name_len)
{
	cr_pkl_node *g;
	int rc;

	if (!mod_len || !name_len || mod_len > MAX_LINE || name_len > MAX_LINE)
		return fail(st, "bad global name");
	if (!utf8_ok(mod, mod_len) || !utf8_ok(name, name_len))
		return fail(st, "global name is not valid UTF-8");
	if ((rc = push_node(st, CR_PKL_GLOBAL, &g)) < 0)
		return rc;
	g->u.global.module = mod;
	g->u.global.module_len = (uint32_t)mod_len;
	g->u.global.name = name;
	g->u.global.name_len = (uint32_t)name_len;
	return 0;
}

static int step(pstate *st, int *stopped)
{
	cr_pkl_val a, b, c;
	cr_pkl_val *t = NULL;
	cr_pkl_node *n;
	size_t start = 0;
	int64_t i64;
	int rc;

	st->op_pos = st->pos;
	st->op = st->data[st->pos++];
	switch (st->op) {
	case OP_PROTO:
		if ((rc = need(st, 1)) < 0)
			return rc;
		if (st->data[st->pos] > MAX_PROTO)
			return fail(st, "protocol %u is not supported", st->data[st->pos]);
		st->pos++;
		return 0;
	case OP_FRAME:
		/* Frames only group opcodes for buffering; the whole pickle is in memory. */
		if ((rc = need(st, 8)) < 0)
			return rc;
		if (le(st->data + st->pos, 8) > st->len - st->pos - 8)
			return fail(st, "frame longer than the rest of the pickle");
		st->pos += 8;
		return 0;
	case OP_STOP:
		if ((rc = pop(st, &a)) < 0)
			return rc;
		st->pk->root = a;
		*stopped = 1;
		return 0;
	case OP_MARK:
		if (st->nmarks >= st->lim.max_marks)
			return fail(st, "more than %zu MARKs open", st->lim.max_marks);
		if ((rc = grow(st, (void **)&st->marks, &st->marks_cap, st->nmarks + 1,
		               sizeof(*st->marks), st->lim.max_marks)) < 0)
			return rc;
		st->marks[st->nmarks++] = st->sp;
		return 0;
	case OP_POP:
		if (st->sp > floor_(st)) {
			st->sp--;
			return 0;
		}
		if ((rc = pop_mark(st, &start)) < 0)
			return rc;
		return 0;
	case OP_POP_MARK:
		if ((rc = pop_mark(st, &start)) < 0)
			return rc;
		st->sp = start;
		return 0;
	case OP_DUP:
		if ((rc = top(st, &t)) < 0)
			return rc;
		return push(st, *t, 0);

	case OP_NONE: return push_int(st, CR_PKL_NONE, 0);
	case OP_NEWTRUE: return push_int(st, CR_PKL_BOOL, 1);
	case OP_NEWFALSE: return push_int(st, CR_PKL_BOOL, 0);
	case OP_BININT:
		if ((rc = need(st, 4)) < 0)
			return rc;
		i64 = (int32_t)(uint32_t)le(st->data + st->pos, 4);
		st->pos += 4;
		return push_int(st, CR_PKL_INT, i64);
	case OP_BININT1:
		if ((rc = need(st, 1)) < 0)
			return rc;
		return push_int(st, CR_PKL_INT, st->data[st->pos++]);
	case OP_BININT2:
		if ((rc = need(st, 2)) < 0)
			return rc;
		i64 = (int64_t)le(st->data + st->pos, 2);
		st->pos += 2;
		return push_int(st, CR_PKL_INT, i64);
	case OP_INT: {
		const uint8_t *s;
		size_t len;
		size_t save = st->pos;

		/* "I00\n" and "I01\n" are protocol 0's False and True. */
		if ((rc = line(st, &s, &len)) < 0)
			return rc;
		if (len == 2 && s[0] == '0' && (s[1] == '0' || s[1] == '1'))
			return push_int(st, CR_PKL_BOOL, s[1] == '1');
		st->pos = save;
		if ((rc = decimal(st, &i64)) < 0)
			return rc;
		return push_int(st, CR_PKL_INT, i64);
	}
	case OP_LONG1:
		if ((rc = need(st, 1)) < 0)
			return rc;
		return long_bytes(st, st->data[st->pos++]);
	case OP_LONG4:
		if ((rc = need(st, 4)) < 0)
			return rc;
		i64 = (int32_t)(uint32_t)le(st->data + st->pos, 4);
		st->pos += 4;
		if (i64 < 0)
			return fail(st, "negative length");
		return long_bytes(st, (uint64_t)i64);
	case OP_BINFLOAT: {
		uint64_t bits = 0;
		cr_pkl_val v;
		size_t k;

		if ((rc = need(st, 8)) < 0)
			return rc;
		for (k = 0; k < 8; k++)
			bits = bits << 8 | st->data[st->pos + k];
		st->pos += 8;
		v.kind = CR_PKL_FLOAT;
		v.len = 0;
		memcpy(&v.u.f, &bits, sizeof(bits));
		return push(st, v, 1);
	}

	case OP_SHORT_BINUNICODE:
	case OP_SHORT_BINSTRING:
	case OP_SHORT_BINBYTES:
		if ((rc = need(st, 1)) < 0)
			return rc;
		return counted(st, st->data[st->pos++],
		               st->op == OP_SHORT_BINBYTES ? CR_PKL_BYTES : CR_PKL_STR);
	case OP_BINUNICODE:
	case OP_BINSTRING:
	case OP_BINBYTES: {
		uint64_t len;

		if ((rc = need(st, 4)) < 0)
			return rc;
		len = le(st->data + st->pos, 4);
		/* BINSTRING's length is signed. */
		if (st->op == OP_BINSTRING && len > INT32_MAX)
			return fail(st, "negative length");
		st->pos += 4;
		return counted(st, len, st->op == OP_BINBYTES ? CR_PKL_BYTES : CR_PKL_STR);
	}
	case OP_BINUNICODE8:
	case OP_BINBYTES8:
	case OP_BYTEARRAY8: {
		uint64_t len;

		if ((rc = need(st, 8)) < 0)
			return rc;
		len = le(st->data + st->pos, 8);
		st->pos += 8;
		return counted(st, len, st->op == OP_BINUNICODE8 ? CR_PKL_STR : CR_PKL_BYTES);
	}

	case OP_EMPTY_TUPLE: return push_node(st, CR_PKL_TUPLE, NULL);
	case OP_EMPTY_LIST: return push_node(st, CR_PKL_LIST, NULL);
	case OP_EMPTY_DICT: return push_node(st, CR_PKL_DICT, NULL);
	case OP_EMPTY_SET: return push_node(st, CR_PKL_SET, NULL);
	case OP_TUPLE:
	case OP_LIST:
	case OP_DICT:
	case OP_FROZENSET:
		if ((rc = pop_mark(st, &start)) < 0)
			return rc;
		return collect(st, st->op == OP_TUPLE  ? CR_PKL_TUPLE
		                   : st->op == OP_LIST ? CR_PKL_LIST
		                   : st->op == OP_DICT ? CR_PKL_DICT
		                                       : CR_PKL_FROZENSET,
		               start);
	case OP_TUPLE1:
	case OP_TUPLE2:
	case OP_TUPLE3: {
		size_t k = (size_t)(st->op - OP_TUPLE1) + 1;

		if (st->sp - floor_(st) < k)
			return fail(st, "fewer than %zu items on the stack", k);
		return collect(st, CR_PKL_TUPLE, st->sp - k);
	}
	case OP_APPEND:
	case OP_SETITEM: {
		size_t k = st->op == OP_APPEND ? 1 : 2;

		if (st->sp - floor_(st) < k + 1)
			return fail(st, "fewer than %zu items on the stack", k + 1);
		return add_items(st, st->sp - k, st->op == OP_SETITEM);
	}
	case OP_APPENDS:
	case OP_SETITEMS:
	case OP_ADDITEMS:
		if ((rc = pop_mark(st, &start)) < 0)
			return rc;
		if (st->op == OP_ADDITEMS && (start == 0 || start <= floor_(st) ||
		                              st->stack[start - 1].kind != CR_PKL_SET))
			return fail(st, "ADDITEMS needs a set");
		return add_items(st, start, st->op == OP_SETITEMS);

	case OP_BINPUT:
		if ((rc = need(st, 1)) < 0)
			return rc;
		return memo_put(st, st->data[st->pos++]);
	case OP_LONG_BINPUT:
		if ((rc = need(st, 4)) < 0)
			return rc;
		st->pos += 4;
		return memo_put(st, le(st->data + st->pos - 4, 4));
	case OP_MEMOIZE: return memo_put(st, st->memo_count);
	case OP_PUT:
		if ((rc = decimal(st, &i64)) < 0)
			return rc;
		if (i64 < 0)
			return fail(st, "negative memo index");
		return memo_put(st, (uint64_t)i64);
	case OP_BINGET:
		if ((rc = need(st, 1)) < 0)
			return rc;
		return memo_get(st, st->data[st->pos++]);
	case OP_LONG_BINGET:
		if ((rc = need(st, 4)) < 0)
			return rc;
		st->pos += 4;
		return memo_get(st, le(st->data + st->pos - 4, 4));
	case OP_GET:
		if ((rc = decimal(st, &i64)) < 0)
			return rc;
		if (i64 < 0)
			return fail(st, "negative memo index");
		return memo_get(st, (uint64_t)i64);

	case OP_GLOBAL: {
		const uint8_t *mod, *name;
		size_t mod_len, name_len;

		if ((rc = line(st, &mod, &mod_len)) < 0 || (rc = line(st, &name, &name_len)) < 0)
			return rc;
		return make_global(st, mod, mod_len, name, name_len);
	}
	case OP_STACK_GLOBAL:
		if ((rc = pop(st, &b)) < 0 || (rc = pop(st, &a)) < 0)
			return rc;
		if (a.kind != CR_PKL_STR || b.kind != CR_PKL_STR)
			return fail(st, "module and name must be strings");
		return make_global(st, a.u.s, a.len, b.u.s, b.len);
	case OP_REDUCE:
		if ((rc = pop(st, &b)) < 0 || (rc = pop(st, &a)) < 0)
			return rc;
		return make_object(st, &a, &b, NULL, 0);
	case OP_NEWOBJ:
		if ((rc = pop(st, &b)) < 0 || (rc = pop(st, &a)) < 0)
			return rc;
		return make_object(st, &a, &b, NULL, 1);
	case OP_NEWOBJ_EX:
		if ((rc = pop(st, &c)) < 0 || (rc = pop(st, &b)) < 0 || (rc = pop(st, &a)) < 0)
			return rc;
		return make_object(st, &a, &b, &c, 1);
	case OP_BUILD:
		if ((rc = pop(st, &a)) < 0 || (rc = top(st, &t)) < 0)
			return rc;
		n = cr_pkl_as(t, CR_PKL_OBJECT);
		if (!n)
			return fail(st, "cannot set the state of a %s", cr_pkl_kind_name(t->kind));
		if (n->u.object->has_state)
			return fail(st, "state set twice");
		n->u.object->state = a;
		n->u.object->has_state = 1;
		return 0;
	case OP_BINPERSID:
		if ((rc = pop(st, &a)) < 0)
			return rc;
		if ((rc = push_node(st, CR_PKL_PERSID, &n)) < 0)
			return rc;
		n->u.pid = a;
		return 0;

	default:
		if (op_name(st->op))
			return fail(st, "not supported (this reader executes nothing)");
		return fail(st, "unknown opcode 0x%02x", st->op);
	}
}

int cr_pkl_parse(const uint8_t *data, size_t len, const char *what, const cr_pkl_limits *limits,
                 cr_pkl **out)
{
	pstate st;
	int stopped = 0, rc = 0;

	*out = NULL;
	memset(&st, 0, sizeof(st));
	st.data = data;
	st.len = len;
	st.what = what ? what : "pickle";
	if (limits)
		st.lim = *limits;
	else
		cr_pkl_limits_default(&st.lim);
	/* Memory in proportion to the pickle (a few KiB of zip can inflate to megabytes of it). */
	if (len <= (SIZE_MAX - CR_PKL_BYTES_SLACK) / CR_PKL_BYTES_PER_BYTE &&
	    st.lim.max_bytes > len * CR_PKL_BYTES_PER_BYTE + CR_PKL_BYTES_SLACK)
		st.lim.max_bytes = len * CR_PKL_BYTES_PER_BYTE + CR_PKL_BYTES_SLACK;
	/* Node counts are 32-bit, pairs twice the entries. */
	if (st.lim.max_items > UINT32_MAX / 2)
		st.lim.max_items = UINT32_MAX / 2;
	st.pk = calloc(1, sizeof(*st.pk));
	if (!st.pk)
		return nomem(&st);
	while (!stopped) {
		if (st.pos >= st.len) {
			st.op_pos = st.pos;
			st.op = 0;
			rc = fail(&st, "truncated: the pickle ends before its STOP opcode");
			break;
		}
		if ((rc = step(&st, &stopped)) < 0)
			break;
	}
	free(st.stack);
	free(st.marks);
	free(st.memo);
	free(st.memo_set);
	free(st.sparse);
	if (rc < 0) {
		cr_pkl_free(st.pk);
		return rc;
	}
	*out = st.pk;
	return 0;
}

const cr_pkl_val *cr_pkl_root(const cr_pkl *pk)
{
	return &pk->root;
}

size_t cr_pkl_count(const cr_pkl *pk)
{
	return pk->count;
}

void cr_pkl_free(cr_pkl *pk)
{
	node_chunk *c, *next;
	object_chunk *o, *onext;
	arena_chunk *a, *anext;
	size_t i;

	if (!pk)
		return;
	for (o = pk->objects; o; o = onext) {
		onext = o->next;
		free(o);
	}
	for (c = pk->chunks; c; c = next) {
		next = c->next;
		/* Arrays with cap 0 are the arena's. */
		for (i = 0; i < c->used; i++) {
			if (c->nodes[i].cap)
				free(c->nodes[i].items);
			if (c->nodes[i].pcap)
				free(c->nodes[i].pairs);
		}
		free(c);
	}
	for (a = pk->arena; a; a = anext) {
		anext = a->next;
		free(a);
	}
	free(pk);
}

cr_pkl_node *cr_pkl_as(const cr_pkl_val *v, cr_pkl_kind k)
{
	if (!v || v->kind != k || k < CR_PKL_TUPLE)
		return NULL;
	return v->u.node;
}

int cr_pkl_is_str(const cr_pkl_val *v, const char *s)
{
	size_t n = strlen(s);

	return v && v->kind == CR_PKL_STR && v->len == n && memcmp(v->u.s, s, n) == 0;
}

int cr_pkl_is_global(const cr_pkl_val *v, const char *module, const char *name)
{
	const cr_pkl_node *g = cr_pkl_as(v, CR_PKL_GLOBAL);
	size_t ml = strlen(module), nl = strlen(name);

	return g && g->u.global.module_len == ml && g->u.global.name_len == nl &&
	       memcmp(g->u.global.module, module, ml) == 0 &&
	       memcmp(g->u.global.name, name, nl) == 0;
}
