/*
 * The PyTorch checkpoint reader: torch.save's zip format (PyTorch >= 1.6).
 *
 * A torch.save zip holds <archive>/data.pkl (the pickled object, whose
 * tensors name their storages by persistent ids), then one member
 * <archive>/data/<key> per storage, stored uncompressed, and small members
 * (version, byteorder, .data/serialization_id, ...). The reader:
 *
 *   1. parses the central directory itself (a pread of the file's tail) and
 *      checks it: sizes within the file, no overlapping or duplicate
 *      members, a bounded count, only stored or deflated members, and no
 *      more decompressed bytes than PT_MAX_RATIO times the file's size;
 *   2. reads the members through libarchive's seekable zip reader over its
 *      own read callback, in local-header order, checking each against the
 *      central directory entry at the same place (libarchive and torch's
 *      miniz then see the same members with the same bytes);
 *   3. parses data.pkl (pickle.c: nothing executed), maps it to tensors
 *      (cr_pt_map_pickle), declares them, and feeds every storage member's
 *      bytes to the engine as member "<archive>/data/<key>".
 *
 * One read of the bytes: the read callback hands every file byte to
 * cr_tpass_file exactly once, in order, at a "frontier". libarchive first
 * reads the file's tail (end of central directory, central directory) and
 * those reads are served without advancing the frontier; from the seek back
 * to the first member on, reads are sequential and advance it; what is left
 * at the end (the central directory) is read once more to finish. So the
 * tensor bytes are read once and only the metadata (a few KiB) twice. Bytes
 * reached before cr_tpass_begin (the members up to data.pkl) wait in
 * `pending` (at most data.pkl plus one block).
 *
 * data.pkl must be the first member (torch always writes it first): its
 * tensors must be declared before any storage byte goes by. A zip whose
 * first member is something else is refused with a message saying so. The
 * legacy format (torch.save(..., _use_new_zipfile_serialization=False), a
 * bare pickle stream) is recognised and refused as "legacy format, not
 * supported"; the engine then stands the whole file in for its tensors.
 *
 * libarchive's CRC-32 checks are off: every tensor's SHA-256 is taken
 * anyway, and a checkpoint with a flipped byte must still give a manifest
 * (that names the changed tensor) rather than fail as a whole.
 */
#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>

#include "cleanroom/error.h"
#include "cleanroom/tensors.h"
#include "recorder/tensors/pickle.h"
#include "recorder/tensors/tensors_internal.h"
#include "util/buf.h"

/* Largest data.pkl read into memory. */
#define PT_MAX_PICKLE (256u * 1024 * 1024)
/* Most members in one zip: a storage per tensor and a few more. */
#define PT_MAX_MEMBERS (CR_TENSOR_MAX_COUNT + 64u)
/* Largest central directory read into memory. */
#define PT_MAX_CD (128u * 1024 * 1024)
/* Longest member name. */
#define PT_MAX_MEMBER_NAME 4096u
/* Deflated members may not expand past RATIO x file size + SLACK in all. */
#define PT_MAX_RATIO 64u
#define PT_RATIO_SLACK (64u * 1024 * 1024)
/*
 * A deflated data.pkl may not expand past PICKLE_RATIO x file size + SLACK:
 * the parsed tree takes up to CR_PKL_BYTES_PER_BYTE times the pickle, so
 * without this a few KiB of zip could ask for a gigabyte. torch.save stores
 * data.pkl uncompressed; a recompressed one rarely shrinks more than 10x.
 */
#define PT_PICKLE_RATIO 32u
#define PT_PICKLE_SLACK (1024u * 1024)
/* A deflate stream cannot expand more than ~1032:1; claims beyond are bogus. */
#define PT_DEFLATE_MAX_RATIO 1040u
/* Read size of the callback. */
#define PT_BLOCK (1u << 20)
/* The "byteorder" member: "little" or "big". */
#define PT_MAX_BYTEORDER 16u
/* _rebuild_parameter(_rebuild_from_type_v2(...)) chains followed. */
#define PT_MAX_REBUILD_DEPTH 8

/* ------------------------------------------------------------------ */
/* A string -> index hash map over caller-owned keys.                  */

typedef struct smap_slot {
	const char *key;
	size_t len;
	size_t val;
} smap_slot;

typedef struct smap {
	smap_slot *slots;
	size_t cap, n;
} smap;

static uint64_t fnv1a(const char *s, size_t n)
{
	uint64_t h = 1469598103934665603ull;
	size_t i;

	for (i = 0; i < n; i++) {
		h ^= (uint8_t)s[i];
		h *= 1099511628211ull;
	}
	return h;
}

/* 1 and *val when key is in m, 0 otherwise. */
static int smap_get(const smap *m, const char *key, size_t len, size_t *val)
{
	size_t i;

	if (!m->cap)
		return 0;
	for (i = (size_t)fnv1a(key, len) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		const smap_slot *s = &m->slots[i];

		if (!s->key)
			return 0;
		if (s->len == len && memcmp(s->key, key, len) == 0) {
			if (val)
				*val = s->val;
			return 1;
		}
	}
}

static void smap_insert(smap *m, const char *key, size_t len, size_t val)
{
	size_t i;

	for (i = (size_t)fnv1a(key, len) & (m->cap - 1); m->slots[i].key; i = (i + 1) & (m->cap - 1))
		;
	m->slots[i].key = key;
	m->slots[i].len = len;
	m->slots[i].val = val;
	m->n++;
}

/* Add key (not already present; key's bytes must stay put while m lives). */
static int smap_put(smap *m, const char *key, size_t len, size_t val)
{
	if ((m->n + 1) * 10 >= m->cap * 7) {
		smap old = *m;
		size_t ncap = m->cap ? m->cap * 2 : 64, i;

		m->slots = calloc(ncap, sizeof(*m->slots));
		if (!m->slots) {
			*m = old;
			return cr_error_set(CR_ENOMEM, "out of memory");
		}
		m->cap = ncap;
		m->n = 0;
		for (i = 0; i < old.cap; i++)
			if (old.slots[i].key)
				smap_insert(m, old.slots[i].key, old.slots[i].len, old.slots[i].val);
		free(old.slots);
	}
	smap_insert(m, key, len, val);
	return 0;
}

static void smap_free(smap *m)
{
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------------ */
/* data.pkl -> tensors                                                 */

typedef struct dtype_info {
	const char *storage;        /* torch.<storage> class name */
	const char *dtype_name;     /* torch.<dtype_name> (for _rebuild_tensor_v3) */
	const char *dtype;          /* our spelling */
	uint32_t esize;
} dtype_info;

static const dtype_info dtypes[] = {
	{"DoubleStorage", "float64", "F64", 8},
	{"FloatStorage", "float32", "F32", 4},
	{"HalfStorage", "float16", "F16", 2},
	{"BFloat16Storage", "bfloat16", "BF16", 2},
	{"LongStorage", "int64", "I64", 8},
	{"IntStorage", "int32", "I32", 4},
	{"ShortStorage", "int16", "I16", 2},
	{"CharStorage", "int8", "I8", 1},
	{"ByteStorage", "uint8", "U8", 1},
	{"BoolStorage", "bool", "BOOL", 1},
	{"UInt16Storage", "uint16", "U16", 2},
	{"UInt32Storage", "uint32", "U32", 4},
	{"UInt64Storage", "uint64", "U64", 8},
	{"ComplexHalfStorage", "complex32", "C32", 4},
	{"ComplexFloatStorage", "complex64", "C64", 8},
	{"ComplexDoubleStorage", "complex128", "C128", 16},
	{"Float8_e4m3fnStorage", "float8_e4m3fn", "F8_E4M3", 1},
	{"Float8_e5m2Storage", "float8_e5m2", "F8_E5M2", 1},
	{"QInt8Storage", "qint8", "QI8", 1},
	{"QUInt8Storage", "quint8", "QU8", 1},
	{"QInt32Storage", "qint32", "QI32", 4},
	{"QUInt4x2Storage", "quint4x2", "QU4X2", 1},
	{"QUInt2x4Storage", "quint2x4", "QU2X4", 1},
	/* Bytes without a type: what torch.UntypedStorage holds. */
	{"UntypedStorage", NULL, "U8", 1},
};

/*
 * The walk writes only the nodes' mark field (the tree reader's to use):
 * MARK_ON_PATH while a node is being walked (a container inside itself is
 * not entered again); MARK_KEYS once its repeated dict keys are known, with
 * mark >> MARK_SHIFT the place in `marked` (+1) of what was found;
 * MARK_TENSOR once it gave a tensor. Nodes with the last two are listed in
 * `marked`, and every mark is cleared before cr_pt_map_pickle returns.
 */
#define MARK_ON_PATH 1u
#define MARK_KEYS 2u
#define MARK_TENSOR 4u
#define MARK_SHIFT 3

/*
 * Shared references multiply tensors (tied weights, a module used twice):
 * at most PT_ALIAS_FACTOR names per distinct tensor node on average, plus
 * PT_ALIAS_SLACK, else a few hundred bytes of memo references could name
 * a million tensors.
 */
#define PT_ALIAS_FACTOR 16u
#define PT_ALIAS_SLACK 131072u

typedef struct marked {
	cr_pkl_node *node;
	size_t *winner;             /* NULL when no key repeats (see pair_winners) */
} marked;

typedef struct walker {
	const char *what;
	cr_pt_map *m;
	smap keys;                  /* storage key -> index */
	smap names;                 /* tensor name -> index */
	size_t *next_suffix;        /* per tensor: the next "#N" to try for its name (m->cap) */
	cr_buf name;
	size_t work;                /* containers visited and entries walked */
	size_t name_bytes;          /* bytes of tensor names made */
	marked *marked;             /* nodes with MARK_KEYS or MARK_TENSOR */
	size_t nmarked, mcap;
	size_t distinct;            /* tensor nodes (MARK_TENSOR) */
} walker;

static int bad(const walker *w, const char *fmt, const char *detail)
{
	return cr_error_set(CR_EINVAL, "%s: %s%s%s", w->what, fmt, detail ? ": " : "",
	                    detail ? detail : "");
}

static int global_in(const cr_pkl_node *g, const char *module)
{
	size_t n = strlen(module);

	return g->u.global.module_len == n && memcmp(g->u.global.module, module, n) == 0;
}

static int global_named(const cr_pkl_node *g, const char *name)
{
	size_t n = strlen(name);

	return g->u.global.name_len == n && memcmp(g->u.global.name, name, n) == 0;
}

static const dtype_info *storage_type(const cr_pkl_val *v)
{
	const cr_pkl_node *g = cr_pkl_as(v, CR_PKL_GLOBAL);
	size_t i;

	if (!g || !(global_in(g, "torch") || global_in(g, "torch.storage") ||
	            global_in(g, "torch.cuda")))
		return NULL;
	for (i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
		if (global_named(g, dtypes[i].storage))
			return &dtypes[i];
	return NULL;
}

static const dtype_info *dtype_global(const cr_pkl_val *v)
{
	const cr_pkl_node *g = cr_pkl_as(v, CR_PKL_GLOBAL);
	size_t i;

	if (!g || !global_in(g, "torch"))
		return NULL;
	for (i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
		if (dtypes[i].dtype_name && global_named(g, dtypes[i].dtype_name))
			return &dtypes[i];
	return NULL;
}

/*
 * Count n more steps of the walk. A list of N references to one dict of K
 * keys costs N * K steps: shared subtrees are walked each time they are
 * reached (each place gives other names), so the steps, not the nodes,
 * are what is bounded.
 */
static int charge(walker *w, size_t n)
{
	if (n > CR_PT_MAX_WALK || w->work > CR_PT_MAX_WALK - n) {
		char detail[96];

		snprintf(detail, sizeof(detail), "more than %u containers and entries walked",
		         CR_PT_MAX_WALK);
		return bad(w, "too many paths through shared objects", detail);
	}
	w->work += n;
	return 0;
}

/* List node d (with its winner array, now the walker's) for clearing its mark. */
static int remember(walker *w, cr_pkl_node *d, size_t *winner)
{
	if (w->nmarked == w->mcap) {
		size_t ncap = w->mcap ? w->mcap * 2 : 64;
		marked *nm;

		/* mark >> MARK_SHIFT must hold the place: far more than a pickle has nodes. */
		if (ncap > (UINT32_MAX >> MARK_SHIFT) ||
		    !(nm = realloc(w->marked, ncap * sizeof(*nm))))
			return cr_error_set(CR_ENOMEM, "out of memory");
		w->marked = nm;
		w->mcap = ncap;
	}
	w->marked[w->nmarked].node = d;
	w->marked[w->nmarked].winner = winner;
	w->nmarked++;
	return 0;
}

/* Storage keys name zip members: keep them short and plain. */
static int key_ok(const uint8_t *s, size_t n)
{
	size_t i;

	if (!n || n > CR_PT_MAX_KEY || (n == 1 && s[0] == '.') ||
	    (n == 2 && s[0] == '.' && s[1] == '.'))
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z') ||
		      (s[i] >= 'A' && s[i] <= 'Z') || s[i] == '_' || s[i] == '-' || s[i] == '.'))
			return 0;
	return 1;
}

/* The storage a persistent id names: ('storage', type, key, location, numel). */
static int storage_from_pid(walker *w, const cr_pkl_val *v, size_t *idx)
{
	const cr_pkl_node *persid = cr_pkl_as(v, CR_PKL_PERSID);
	const cr_pkl_node *pid;
	const dtype_info *dt;
	cr_pt_map *m = w->m;
	cr_pt_storage *s;
	const cr_pkl_val *key;
	uint64_t numel;
	size_t found;

	if (!persid)
		return bad(w, "a tensor's storage is not a persistent id", NULL);
	pid = cr_pkl_as(&persid->u.pid, CR_PKL_TUPLE);
	if (!pid || pid->n != 5 || !cr_pkl_is_str(&pid->items[0], "storage"))
		return bad(w, "persistent id is not ('storage', type, key, location, numel)", NULL);
	if (!(dt = storage_type(&pid->items[1])))
		return bad(w, "unknown storage type in a persistent id", NULL);
	key = &pid->items[2];
	if (key->kind != CR_PKL_STR || !key_ok(key->u.s, key->len))
		return bad(w, "storage key is not a short plain string", NULL);
	if (pid->items[3].kind != CR_PKL_STR)
		return bad(w, "storage location is not a string", NULL);
	if (pid->items[4].kind != CR_PKL_INT || pid->items[4].u.i < 0)
		return bad(w, "storage size is not a non-negative integer", NULL);
	numel = (uint64_t)pid->items[4].u.i;
	if (numel > UINT64_MAX / dt->esize)
		return bad(w, "storage size overflows", NULL);

	if (smap_get(&w->keys, (const char *)key->u.s, key->len, &found)) {
		s = &m->storages[found];
		/* torch.load keeps the first declaration; anything else is a forgery. */
		if (strcmp(s->dtype, dt->dtype) != 0 || s->esize != dt->esize || s->numel != numel)
			return bad(w, "storage declared twice with different types or sizes", s->key);
		*idx = found;
		return 0;
	}
	if (m->nstorages == m->scap) {
		size_t ncap = m->scap ? m->scap * 2 : 16;
		cr_pt_storage *ns = realloc(m->storages, ncap * sizeof(*ns));

		if (!ns)
			return cr_error_set(CR_ENOMEM, "out of memory");
		/* The map's keys point into the array: rebuild them after it moves. */
		if (ns != m->storages) {
			size_t i;

			m->storages = ns;
			smap_free(&w->keys);
			for (i = 0; i < m->nstorages; i++)
				if (smap_put(&w->keys, ns[i].key, strlen(ns[i].key), i) < 0)
					return CR_ENOMEM;
		}
		m->scap = ncap;
	}
	s = &m->storages[m->nstorages];
	memset(s, 0, sizeof(*s));
	memcpy(s->key, key->u.s, key->len);
	snprintf(s->dtype, sizeof(s->dtype), "%s", dt->dtype);
	s->esize = dt->esize;
	s->numel = numel;
	s->nbytes = numel * dt->esize;
	if (smap_put(&w->keys, s->key, key->len, m->nstorages) < 0)
		return CR_ENOMEM;
	*idx = m->nstorages++;
	return 0;
}

static int nonneg_int(const cr_pkl_val *v, uint64_t *out)
{
	if (v->kind != CR_PKL_INT || v->u.i < 0)
		return 0;
	*out = (uint64_t)v->u.i;
	return 1;
}

/*
 * _rebuild_tensor(storage, offset, size, stride),
 * _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]),
 * _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype[, metadata]).
 */
static int tensor_from_args(walker *w, const cr_pkl_node *args, int version, cr_pt_tensor *t)
{
	const cr_pkl_node *size, *stride;
	const dtype_info *dt = NULL;
	const cr_pt_storage *s;
	uint64_t off, numel = 1, span = 1, expect = 1, dims[CR_TENSOR_MAX_DIMS],
	              strides[CR_TENSOR_MAX_DIMS], esize, end;
	size_t i, nd;
	int rc, contiguous = 1;

	if ((version == 1 && args->n != 4) || (version == 2 && args->n != 6 && args->n != 7) ||
	    (version == 3 && args->n != 7 && args->n != 8))
		return bad(w, "torch._utils._rebuild_tensor called with the wrong number of arguments",
		           NULL);
	memset(t, 0, sizeof(*t));
	if ((rc = storage_from_pid(w, &args->items[0], &t->storage)) < 0)
		return rc;
	s = &w->m->storages[t->storage];
	size = cr_pkl_as(&args->items[2], CR_PKL_TUPLE);
	stride = cr_pkl_as(&args->items[3], CR_PKL_TUPLE);
	if (!nonneg_int(&args->items[1], &off) || !size || !stride || size->n != stride->n)
		return bad(w, "tensor offset, size or stride malformed", NULL);
	if (size->n > CR_TENSOR_MAX_DIMS)
		return bad(w, "tensor has too many dimensions", NULL);
	if (version == 3) {
		if (!(dt = dtype_global(&args->items[6])))
			return bad(w, "unknown tensor dtype", NULL);
		snprintf(t->dtype, sizeof(t->dtype), "%s", dt->dtype);
		esize = dt->esize;
	} else {
		snprintf(t->dtype, sizeof(t->dtype), "%s", s->dtype);
		esize = s->esize;
	}
	nd = size->n;
	for (i = 0; i < nd; i++) {
		if (!nonneg_int(&size->items[i], &dims[i]) ||
		    !nonneg_int(&stride->items[i], &strides[i]))
			return bad(w, "tensor size or stride is not a non-negative integer", NULL);
		if (dims[i] && numel > UINT64_MAX / dims[i])
			return bad(w, "tensor size overflows", NULL);
		numel *= dims[i];
	}
	/* Row-major contiguous, ignoring the strides of dimensions of size 1. */
	for (i = nd; i-- > 0;) {
		if (dims[i] != 1 && strides[i] != expect)
			contiguous = 0;
		if (dims[i] && expect > UINT64_MAX / dims[i])
			expect = UINT64_MAX; /* only compared with later strides */
		else
			expect *= dims[i];
	}
	if (numel == 0) {
		span = 0;
		contiguous = 1;
	} else if (contiguous) {
		span = numel;
	} else {
		/* Elements from the first to the last one the view touches. */
		for (i = 0; i < nd; i++) {
			uint64_t reach;

			if (__builtin_mul_overflow(dims[i] - 1, strides[i], &reach) ||
			    __builtin_add_overflow(span, reach, &span))
				return bad(w, "tensor stride overflows", NULL);
		}
	}
	if (__builtin_add_overflow(off, span, &end) || __builtin_mul_overflow(end, esize, &end) ||
	    end > s->nbytes)
		return bad(w, "tensor lies outside its storage", s->key);
	t->offset = off * esize;
	t->length = span * esize;
	if (contiguous) {
		t->ndim = (uint32_t)nd;
		memcpy(t->shape, dims, nd * sizeof(dims[0]));
	} else {
		t->ndim = 1;
		t->shape[0] = span;
		t->view = 1;
	}
	return 0;
}

/* 1 and *t when v rebuilds a tensor, 0 when it is anything else. */
static int as_tensor(walker *w, const cr_pkl_val *callable, const cr_pkl_val *argv, int depth,
                     cr_pt_tensor *t)
{
	const cr_pkl_node *g = cr_pkl_as(callable, CR_PKL_GLOBAL);
	const cr_pkl_node *args = cr_pkl_as(argv, CR_PKL_TUPLE);
	const cr_pkl_node *inner;
	int rc;

	if (!g || !args || depth > PT_MAX_REBUILD_DEPTH)
		return 0;
	if (global_in(g, "torch._utils")) {
		if (global_named(g, "_rebuild_tensor"))
			rc = tensor_from_args(w, args, 1, t);
		else if (global_named(g, "_rebuild_tensor_v2"))
			rc = tensor_from_args(w, args, 2, t);
		else if (global_named(g, "_rebuild_tensor_v3"))
			rc = tensor_from_args(w, args, 3, t);
		else if (global_named(g, "_rebuild_parameter") ||
		         global_named(g, "_rebuild_parameter_with_state")) {
			/* (data, requires_grad, hooks[, state]): the tensor is data. */
			if (args->n < 1 || !(inner = cr_pkl_as(&args->items[0], CR_PKL_OBJECT)))
				return 0;
			return as_tensor(w, &inner->u.object->callable, &inner->u.object->args,
			                 depth + 1, t);
		} else
			return 0;
		return rc < 0 ? rc : 1;
	}
	if (global_in(g, "torch._tensor") && global_named(g, "_rebuild_from_type_v2")) {
		/* (func, type, args, state): the tensor is func(*args). */
		if (args->n != 4)
			return 0;
		return as_tensor(w, &args->items[0], &args->items[2], depth + 1, t);
	}
	return 0;
}

static int name_push(walker *w, const char *s, size_t n, size_t *saved)
{
	int rc;

	*saved = w->name.len;
	if (w->name.len && (rc = cr_buf_putc(&w->name, '.')) < 0)
		return rc;
	if ((rc = cr_buf_put(&w->name, s, n)) < 0)
		return rc;
	if (w->name.len > CR_TENSOR_MAX_NAME)
		return bad(w, "a tensor name is longer than the limit", NULL);
	return 0;
}

static void name_pop(walker *w, size_t saved)
{
	w->name.len = saved;
	if (w->name.ptr)
		w->name.ptr[saved] = '\0';
}

/* Strict UTF-8 (no surrogates): what JSON needs. */
static int utf8_strict(const char *p, size_t n)
{
	const uint8_t *s = (const uint8_t *)p;
	size_t i = 0;

	while (i < n) {
		uint8_t c = s[i];
		uint32_t cp;
		size_t k, j;

		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf)
			k = 1, cp = c & 0x1f;
		else if (c >= 0xe0 && c <= 0xef)
			k = 2, cp = c & 0x0f;
		else if (c >= 0xf0 && c <= 0xf4)
			k = 3, cp = c & 0x07;
		else
			return 0;
		if (n - i <= k)
			return 0;
		for (j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
		    (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
			return 0;
		i += k + 1;
	}
	return 1;
}

/* A tensor from node n (its rebuild call or persistent id) at the current name. */
static int emit(walker *w, cr_pkl_node *n, cr_pt_tensor *t)
{
	cr_pt_map *m = w->m;
	/* torch.save(tensor): the tensor is the whole pickle and has no key. */
	const char *base = w->name.len ? w->name.ptr : "(root)";
	size_t len = strlen(base), first, i;
	char *name;
	int rc;

	if (m->n >= CR_TENSOR_MAX_COUNT)
		return bad(w, "more tensors than the limit", NULL);
	if (!(n->mark & MARK_TENSOR)) {
		if ((rc = remember(w, n, NULL)) < 0)
			return rc;
		n->mark |= MARK_TENSOR;
		w->distinct++;
	}
	if (m->n >= PT_ALIAS_SLACK && (m->n - PT_ALIAS_SLACK) / PT_ALIAS_FACTOR >= w->distinct) {
		char detail[96];

		snprintf(detail, sizeof(detail), "%zu names for %zu tensors", m->n, w->distinct);
		return bad(w, "too many references to the same tensors", detail);
	}
	if (len + 16 > CR_PT_MAX_NAME_BYTES - w->name_bytes)
		return bad(w, "too many tensor names: their bytes exceed the limit", NULL);
	if (!utf8_strict(base, len))
		return bad(w, "a tensor name is not valid UTF-8", NULL);
	if (m->n == m->cap) {
		size_t ncap = m->cap ? m->cap * 2 : 32;
		cr_pt_tensor *nt = realloc(m->tensors, ncap * sizeof(*nt));
		size_t *ns;

		if (!nt)
			return cr_error_set(CR_ENOMEM, "out of memory");
		m->tensors = nt;
		if (!(ns = realloc(w->next_suffix, ncap * sizeof(*ns))))
			return cr_error_set(CR_ENOMEM, "out of memory");
		w->next_suffix = ns;
		m->cap = ncap;
	}
	if (!(name = strdup(base)))
		return cr_error_set(CR_ENOMEM, "out of memory");
	/*
	 * Dots can make two paths one name ({"a.b": x, "a": {"b": y}}): number the
	 * later ones. The first holder of a name keeps the next number to try, so
	 * N tensors of one name cost O(N), not O(N^2).
	 */
	if (smap_get(&w->names, name, len, &first)) {
		m->nrenamed++;
		for (i = w->next_suffix[first];; i++) {
			free(name);
			if (asprintf(&name, "%s#%zu", base, i) < 0)
				return cr_error_set(CR_ENOMEM, "out of memory");
			if (!smap_get(&w->names, name, strlen(name), NULL))
				break;
		}
		w->next_suffix[first] = i + 1;
	}
	t->name = name;
	m->tensors[m->n] = *t;
	if ((rc = smap_put(&w->names, name, strlen(name), m->n)) < 0) {
		free(name);
		return rc;
	}
	w->next_suffix[m->n] = 2;
	w->name_bytes += strlen(name) + 1;
	m->n++;
	if (t->view)
		m->nviews++;
	return 0;
}

static int walk(walker *w, const cr_pkl_val *v, size_t depth);

/* A dict key as a name component; keys without a plain text form are "#<position>". */
static void key_text(const cr_pkl_val *k, size_t pos, char *buf, size_t bufsz, const char **s,
                     size_t *n)
{
	switch (k->kind) {
	case CR_PKL_STR:
		*s = (const char *)k->u.s;
		*n = k->len;
		return;
	case CR_PKL_INT: snprintf(buf, bufsz, "%lld", (long long)k->u.i); break;
	case CR_PKL_BOOL: snprintf(buf, bufsz, "%s", k->u.i ? "True" : "False"); break;
	case CR_PKL_NONE: snprintf(buf, bufsz, "None"); break;
	case CR_PKL_FLOAT: snprintf(buf, bufsz, "%.17g", k->u.f); break;
	default: snprintf(buf, bufsz, "#%zu", pos); break;
	}
	*s = buf;
	*n = strlen(buf);
}

/*
 * Which entries of a dict-like node d count. A key set twice keeps its
 * first place and its last value, as a Python dict does (for str and int
 * keys; keys of other kinds are taken as distinct). *out is NULL when no key
 * repeats; else (*out)[i] is the entry whose value goes at entry i's place,
 * SIZE_MAX for a later repeat. Worked out once per node and kept (see
 * MARK_KEYS): a dict reached through many references pays for its keys once.
 */
static int pair_winners(walker *w, cr_pkl_node *d, const size_t **out)
{
	size_t *winner = NULL, *toff = NULL, i;
	smap seen = {0};
	cr_buf texts = CR_BUF_INIT;
	int dup = 0, rc = 0;

	*out = NULL;
	if (d->npairs < 2)
		return 0;
	if (d->mark & MARK_KEYS) {
		size_t k = d->mark >> MARK_SHIFT;

		*out = k ? w->marked[k - 1].winner : NULL;
		return 0;
	}
	winner = malloc(d->npairs * sizeof(*winner));
	toff = malloc((d->npairs + 1) * sizeof(*toff));
	if (!winner || !toff) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	for (i = 0; i < d->npairs; i++) {
		const cr_pkl_val *k = &d->pairs[2 * i];

		winner[i] = i;
		toff[i] = texts.len;
		if (k->kind == CR_PKL_STR) {
			if ((rc = cr_buf_putc(&texts, 's')) < 0 ||
			    (rc = cr_buf_put(&texts, k->u.s, k->len)) < 0)
				goto done;
		} else if (k->kind == CR_PKL_INT) {
			if ((rc = cr_buf_printf(&texts, "i%lld", (long long)k->u.i)) < 0)
				goto done;
		}
	}
	toff[d->npairs] = texts.len;
	for (i = 0; i < d->npairs; i++) {
		size_t first, n = toff[i + 1] - toff[i];

		if (!n)
			continue;
		if (smap_get(&seen, texts.ptr + toff[i], n, &first)) {
			winner[first] = i;
			winner[i] = SIZE_MAX;
			dup = 1;
		} else if ((rc = smap_put(&seen, texts.ptr + toff[i], n, i)) < 0) {
			goto done;
		}
	}
	if ((rc = remember(w, d, dup ? winner : NULL)) < 0)
		goto done;
	d->mark |= MARK_KEYS | (dup ? (uint32_t)w->nmarked << MARK_SHIFT : 0);
	if (dup) {
		*out = winner;
		winner = NULL; /* now the walker's */
	}
done:
	free(winner);
	free(toff);
	smap_free(&seen);
	cr_buf_free(&texts);
	return rc;
}

/* Dict entries in order (see pair_winners for keys set twice). */
static int walk_pairs(walker *w, cr_pkl_node *d, size_t depth)
{
	const size_t *winner;
	size_t i;
	int rc;

	if ((rc = charge(w, d->npairs)) < 0 || (rc = pair_winners(w, d, &winner)) < 0)
		return rc;
	for (i = 0; i < d->npairs; i++) {
		const cr_pkl_val *val;
		char buf[64];
		const char *s;
		size_t n, saved;

		if (winner && winner[i] == SIZE_MAX)
			continue;
		val = &d->pairs[2 * (winner ? winner[i] : i) + 1];
		if (val->kind < CR_PKL_TUPLE)
			continue;
		key_text(&d->pairs[2 * i], i, buf, sizeof(buf), &s, &n);
		if ((rc = name_push(w, s, n, &saved)) < 0)
			return rc;
		rc = walk(w, val, depth + 1);
		name_pop(w, saved);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int walk_items(walker *w, const cr_pkl_val *items, size_t n, size_t depth)
{
	size_t i, saved;
	char buf[32];
	int rc;

	if ((rc = charge(w, n)) < 0)
		return rc;
	for (i = 0; i < n; i++) {
		if (items[i].kind < CR_PKL_TUPLE)
			continue;
		snprintf(buf, sizeof(buf), "%zu", i);
		if ((rc = name_push(w, buf, strlen(buf), &saved)) < 0)
			return rc;
		rc = walk(w, &items[i], depth + 1);
		name_pop(w, saved);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* An object's contents at its own level: its items, its state, its arguments. */
static int walk_object(walker *w, cr_pkl_node *o, size_t depth)
{
	const cr_pkl_node *st;
	int rc;

	if ((rc = walk_pairs(w, o, depth)) < 0)
		return rc;
	if ((rc = walk_items(w, o->items, o->n, depth)) < 0)
		return rc;
	if (o->u.object->has_state) {
		/* __dict__, or (__dict__, slots) from copyreg's reduce. */
		st = cr_pkl_as(&o->u.object->state, CR_PKL_TUPLE);
		if (st && st->n == 2 && (st->items[0].kind == CR_PKL_DICT ||
		                         st->items[0].kind == CR_PKL_NONE)) {
			size_t i;

			for (i = 0; i < 2; i++)
				if (st->items[i].kind == CR_PKL_DICT &&
				    (rc = walk_pairs(w, st->items[i].u.node, depth)) < 0)
					return rc;
		} else if (o->u.object->state.kind == CR_PKL_DICT) {
			if ((rc = walk_pairs(w, o->u.object->state.u.node, depth)) < 0)
				return rc;
		} else if ((rc = walk(w, &o->u.object->state, depth + 1)) < 0) {
			return rc;
		}
	}
	st = cr_pkl_as(&o->u.object->args, CR_PKL_TUPLE);
	if (st && (rc = walk_items(w, st->items, st->n, depth)) < 0)
		return rc;
	return 0;
}

static int walk(walker *w, const cr_pkl_val *v, size_t depth)
{
	cr_pkl_node *n;
	cr_pt_tensor t;
	int rc = 0;

	if (v->kind < CR_PKL_TUPLE)
		return 0;
	n = v->u.node;
	if (depth > CR_PT_MAX_DEPTH)
		return bad(w, "containers nested deeper than the limit", NULL);
	if ((rc = charge(w, 1)) < 0)
		return rc;
	/* A container inside itself: Python can build that, names cannot. */
	if (n->mark & MARK_ON_PATH)
		return 0;
	n->mark |= MARK_ON_PATH;
	switch (n->kind) {
	case CR_PKL_DICT: rc = walk_pairs(w, n, depth); break;
	case CR_PKL_TUPLE:
	case CR_PKL_LIST:
	case CR_PKL_SET:
	case CR_PKL_FROZENSET: rc = walk_items(w, n->items, n->n, depth); break;
	case CR_PKL_PERSID: {
		/* A storage saved on its own (torch.save(t.untyped_storage())). */
		const cr_pt_storage *s;

		memset(&t, 0, sizeof(t));
		if ((rc = storage_from_pid(w, v, &t.storage)) < 0)
			break;
		s = &w->m->storages[t.storage];
		snprintf(t.dtype, sizeof(t.dtype), "%s", s->dtype);
		t.ndim = 1;
		t.shape[0] = s->numel;
		t.length = s->nbytes;
		rc = emit(w, n, &t);
		break;
	}
	case CR_PKL_OBJECT:
		rc = as_tensor(w, &n->u.object->callable, &n->u.object->args, 0, &t);
		if (rc == 1)
			rc = emit(w, n, &t);
		else if (rc == 0)
			rc = walk_object(w, n, depth);
		break;
	default: break;
	}
	n->mark &= ~MARK_ON_PATH;
	return rc;
}

void cr_pt_map_free(cr_pt_map *m)
{
	size_t i;

	if (!m)
		return;
	for (i = 0; i < m->n; i++)
		free(m->tensors[i].name);
	free(m->tensors);
	free(m->storages);
	free(m);
}

int cr_pt_map_pickle(const cr_pkl *pk, const char *what, cr_pt_map **out)
{
	walker w;
	size_t i;
	int rc;

	*out = NULL;
	memset(&w, 0, sizeof(w));
	w.what = what ? what : "data.pkl";
	if (!(w.m = calloc(1, sizeof(*w.m))))
		return cr_error_set(CR_ENOMEM, "out of memory");
	if ((rc = cr_buf_puts(&w.name, "")) < 0)
		goto done;
	rc = walk(&w, cr_pkl_root(pk), 0);
done:
	for (i = 0; i < w.nmarked; i++) {
		w.marked[i].node->mark = 0;
		free(w.marked[i].winner);
	}
	free(w.marked);
	free(w.next_suffix);
	smap_free(&w.keys);
	smap_free(&w.names);
	cr_buf_free(&w.name);
	if (rc < 0) {
		cr_pt_map_free(w.m);
		return rc;
	}
	*out = w.m;
	return 0;
}

/* ------------------------------------------------------------------ */
/* The zip: central directory                                          */

typedef struct cd_entry {
	char *name;
	size_t name_len;
	uint64_t offset;            /* of the local header */
	uint64_t csize, usize;
	uint16_t method;
} cd_entry;

typedef struct pt_ctx {
	cr_tpass *p;
	int fd;
	const char *fname;
	uint64_t size;
	/* read callback */
	uint8_t *block;
	uint64_t cur;               /* where the next read starts */
	uint64_t frontier;          /* bytes [0, frontier) went to cr_tpass_file (or pending) */
	int began;
	cr_buf pending;
	int rc;                     /* an error met inside a callback */
	/* central directory, sorted by offset */
	cd_entry *cd;
	size_t ncd;
	/* torch */
	char *prefix;               /* "<archive>/" */
	cr_pt_map *map;
	char **members;             /* per storage: "<archive>/data/<key>" */
	uint8_t *seen;              /* per storage */
	smap keys;                  /* storage key -> index */
	size_t unused_storages;
	cr_buf pkl;
} pt_ctx;

static uint64_t rd16(const uint8_t *p)
{
	return (uint64_t)p[0] | (uint64_t)p[1] << 8;
}

static uint64_t rd32(const uint8_t *p)
{
	return rd16(p) | rd16(p + 2) << 16;
}

static uint64_t rd64(const uint8_t *p)
{
	return rd32(p) | rd32(p + 4) << 32;
}

static int zbad(pt_ctx *c, const char *msg, const char *detail)
{
	return cr_error_set(CR_EINVAL, "%s: %s%s%s", c->fname, msg, detail ? ": " : "",
	                    detail ? detail : "");
}

static int cd_cmp(const void *a, const void *b)
{
	const cd_entry *x = a, *y = b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* The zip64 extended-information extra field fills the fields saturated at 0xffffffff. */
static int zip64_extra(pt_ctx *c, const uint8_t *x, size_t n, cd_entry *e, int need_u, int need_c,
                       int need_o)
{
	while (n >= 4) {
		size_t id = (size_t)rd16(x), len = (size_t)rd16(x + 2), k = 0;

		if (len > n - 4)
			return zbad(c, "central directory extra field overruns its entry", NULL);
		if (id == 1) {
			if (need_u) {
				if (len < k + 8)
					return zbad(c, "short zip64 extra field", NULL);
				e->usize = rd64(x + 4 + k);
				k += 8;
			}
			if (need_c) {
				if (len < k + 8)
					return zbad(c, "short zip64 extra field", NULL);
				e->csize = rd64(x + 4 + k);
				k += 8;
			}
			if (need_o) {
				if (len < k + 8)
					return zbad(c, "short zip64 extra field", NULL);
				e->offset = rd64(x + 4 + k);
			}
			return 0;
		}
		x += 4 + len;
		n -= 4 + len;
	}
	if (need_u || need_c || need_o)
		return zbad(c, "zip64 sizes missing from a central directory entry", NULL);
	return 0;
}

static int pread_full(pt_ctx *c, void *buf, size_t n, uint64_t off)
{
	return cr_tpass_pread(c->p, c->fd, buf, n, off);
}

/*
 * Read and check the central directory (APPNOTE 4.3.12-4.3.16, zip64 4.3.14
 * and 4.3.15). Strict where torch's writer is regular: the end record ends
 * the file, the directory starts where it says and runs up to the end
 * records, members do not overlap.
 */
static int cd_read(pt_ctx *c)
{
	uint8_t *tail = NULL, *cdb = NULL, z[56];
	smap names = {0};
	size_t tail_len, i, pos;
	uint64_t eocd_pos, cd_off, cd_size, count, cd_end, expand = 0, limit;
	int rc = 0;
	long k;

	if (c->size < 22)
		return zbad(c, "too short for a zip", NULL);
	tail_len = (size_t)(c->size < 22 + 65535 ? c->size : 22 + 65535);
	if (!(tail = malloc(tail_len)))
		return cr_error_set(CR_ENOMEM, "out of memory");
	if ((rc = pread_full(c, tail, tail_len, c->size - tail_len)) < 0)
		goto done;
	/* The last end record whose comment runs exactly to the end of the file. */
	for (k = (long)tail_len - 22; k >= 0; k--)
		if (memcmp(tail + k, "PK\005\006", 4) == 0 &&
		    (size_t)k + 22 + rd16(tail + k + 20) == tail_len)
			break;
	if (k < 0) {
		rc = zbad(c, "no zip end of central directory record", NULL);
		goto done;
	}
	eocd_pos = c->size - tail_len + (uint64_t)k;
	if (rd16(tail + k + 4) != 0 || rd16(tail + k + 6) != 0 ||
	    rd16(tail + k + 8) != rd16(tail + k + 10)) {
		rc = zbad(c, "multi-disk zip archives are not supported", NULL);
		goto done;
	}
	count = rd16(tail + k + 10);
	cd_size = rd32(tail + k + 12);
	cd_off = rd32(tail + k + 16);
	cd_end = eocd_pos;
	if (k >= 20 && memcmp(tail + k - 20, "PK\006\007", 4) == 0) {
		uint64_t z64_pos = rd64(tail + k - 20 + 8);

		if (rd32(tail + k - 20 + 4) != 0 || rd32(tail + k - 20 + 16) != 1 ||
		    z64_pos > eocd_pos - 20 || eocd_pos - 20 - z64_pos < 56) {
			rc = zbad(c, "bad zip64 end of central directory locator", NULL);
			goto done;
		}
		if ((rc = pread_full(c, z, sizeof(z), z64_pos)) < 0)
			goto done;
		if (memcmp(z, "PK\006\006", 4) != 0 || rd32(z + 16) != 0 || rd32(z + 20) != 0 ||
		    rd64(z + 24) != rd64(z + 32)) {
			rc = zbad(c, "bad zip64 end of central directory record", NULL);
			goto done;
		}
		count = rd64(z + 32);
		cd_size = rd64(z + 40);
		cd_off = rd64(z + 48);
		cd_end = z64_pos;
	} else if (count == 0xffff || cd_size == 0xffffffffu || cd_off == 0xffffffffu) {
		rc = zbad(c, "zip64 end of central directory locator missing", NULL);
		goto done;
	}
	if (count == 0 || count > PT_MAX_MEMBERS) {
		rc = zbad(c, count ? "more zip members than the limit" : "empty zip", NULL);
		goto done;
	}
	if (cd_size > PT_MAX_CD || cd_off > cd_end || cd_end - cd_off != cd_size ||
	    cd_size < count * 46) {
		rc = zbad(c, "central directory size or place is inconsistent", NULL);
		goto done;
	}
	if (!(cdb = malloc(cd_size ? (size_t)cd_size : 1)) ||
	    !(c->cd = calloc((size_t)count, sizeof(*c->cd)))) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	if ((rc = pread_full(c, cdb, (size_t)cd_size, cd_off)) < 0)
		goto done;
	for (pos = 0, i = 0; i < count; i++) {
		const uint8_t *h = cdb + pos;
		cd_entry *e = &c->cd[i];
		size_t nlen, xlen, clen;
		uint16_t flags;

		if (cd_size - pos < 46 || memcmp(h, "PK\001\002", 4) != 0) {
			rc = zbad(c, "bad central directory entry", NULL);
			goto done;
		}
		flags = (uint16_t)rd16(h + 8);
		e->method = (uint16_t)rd16(h + 10);
		e->csize = rd32(h + 20);
		e->usize = rd32(h + 24);
		nlen = (size_t)rd16(h + 28);
		xlen = (size_t)rd16(h + 30);
		clen = (size_t)rd16(h + 32);
		e->offset = rd32(h + 42);
		if (cd_size - pos - 46 < nlen + xlen + clen) {
			rc = zbad(c, "central directory entry overruns the directory", NULL);
			goto done;
		}
		if (!nlen || nlen > PT_MAX_MEMBER_NAME || memchr(h + 46, '\0', nlen)) {
			rc = zbad(c, "bad member name in the central directory", NULL);
			goto done;
		}
		if (!(e->name = strndup((const char *)h + 46, nlen))) {
			rc = cr_error_set(CR_ENOMEM, "out of memory");
			goto done;
		}
		e->name_len = nlen;
		c->ncd = i + 1;
		if ((rc = zip64_extra(c, h + 46 + nlen, xlen, e, e->usize == 0xffffffffu,
		                      e->csize == 0xffffffffu, e->offset == 0xffffffffu)) < 0)
			goto done;
		if (rd16(h + 34) != 0 && rd16(h + 34) != 0xffff) {
			rc = zbad(c, "member on another disk", e->name);
			goto done;
		}
		if (flags & (1u | 1u << 6 | 1u << 13)) {
			rc = zbad(c, "encrypted member", e->name);
			goto done;
		}
		if (e->method != 0 && e->method != 8) {
			rc = zbad(c, "member compressed with a method other than store or deflate",
			          e->name);
			goto done;
		}
		if (e->method == 0 && e->csize != e->usize) {
			rc = zbad(c, "stored member whose sizes differ", e->name);
			goto done;
		}
		if (e->offset >= cd_off || e->csize > cd_off - e->offset ||
		    e->usize > UINT64_MAX / 2) {
			rc = zbad(c, "member lies outside the file", e->name);
			goto done;
		}
		if (e->method == 8) {
			if (e->usize / PT_DEFLATE_MAX_RATIO > e->csize + 1) {
				rc = zbad(c, "deflated member claims an impossible expansion (zip bomb?)",
				          e->name);
				goto done;
			}
			if (__builtin_add_overflow(expand, e->usize, &expand))
				expand = UINT64_MAX;
			if (nlen >= 9 && memcmp(e->name + nlen - 9, "/data.pkl", 9) == 0 &&
			    e->usize > c->size * PT_PICKLE_RATIO + PT_PICKLE_SLACK) {
				rc = zbad(c, "deflated data.pkl would expand too much for the "
				             "file's size (zip bomb?)",
				          e->name);
				goto done;
			}
		}
		if (smap_get(&names, e->name, nlen, NULL)) {
			rc = zbad(c, "duplicate member name", e->name);
			goto done;
		}
		if ((rc = smap_put(&names, e->name, nlen, i)) < 0)
			goto done;
		pos += 46 + nlen + xlen + clen;
	}
	if (pos != cd_size) {
		rc = zbad(c, "central directory holds more than its entries", NULL);
		goto done;
	}
	limit = c->size > (UINT64_MAX - PT_RATIO_SLACK) / PT_MAX_RATIO
	                ? UINT64_MAX
	                : c->size * PT_MAX_RATIO + PT_RATIO_SLACK;
	if (expand > limit) {
		rc = zbad(c, "deflated members would expand too much (zip bomb?)", NULL);
		goto done;
	}
	qsort(c->cd, c->ncd, sizeof(*c->cd), cd_cmp);
	for (i = 0; i < c->ncd; i++) {
		/* A local header is at least 30 bytes plus the name before the data. */
		uint64_t end = c->cd[i].offset + 30 + c->cd[i].name_len + c->cd[i].csize;

		if (i + 1 < c->ncd && end > c->cd[i + 1].offset) {
			rc = zbad(c, "members overlap", c->cd[i + 1].name);
			goto done;
		}
		if (end > cd_off) {
			rc = zbad(c, "member runs into the central directory", c->cd[i].name);
			goto done;
		}
	}
done:
	smap_free(&names);
	free(tail);
	free(cdb);
	return rc;
}

/* ------------------------------------------------------------------ */
/* The zip: libarchive over our read callback                          */

/* Bytes [from, from + n) of the file, in order: to the engine, or kept until it begins. */
static int emit_file(pt_ctx *c, const uint8_t *data, size_t n)
{
	if (c->began)
		return cr_tpass_file(c->p, data, n);
	if (c->pending.len + n > PT_MAX_PICKLE + 4u * PT_BLOCK)
		return zbad(c, "data.pkl is not within the first bytes of the file", NULL);
	return cr_buf_put(&c->pending, data, n);
}

/* Block [pos, pos + n) was read: pass on what lies past the frontier. */
static int advance(pt_ctx *c, const uint8_t *data, uint64_t pos, size_t n)
{
	int rc;

	if (pos <= c->frontier && pos + n > c->frontier) {
		size_t skip = (size_t)(c->frontier - pos);

		if ((rc = emit_file(c, data + skip, n - skip)) < 0)
			return rc;
		c->frontier = pos + n;
	}
	return 0;
}

/* Pass the file through the frontier up to end (a forward seek skipped it). */
static int fill_to(pt_ctx *c, uint64_t end)
{
	int rc;

	while (c->frontier < end) {
		size_t n = end - c->frontier < PT_BLOCK ? (size_t)(end - c->frontier) : PT_BLOCK;

		if ((rc = pread_full(c, c->block, n, c->frontier)) < 0 ||
		    (rc = advance(c, c->block, c->frontier, n)) < 0)
			return rc;
	}
	return 0;
}

static la_ssize_t la_read(struct archive *a, void *ud, const void **buf)
{
	pt_ctx *c = ud;
	size_t n;
	int rc = 0;

	*buf = c->block;
	if (c->cur >= c->size)
		return 0;
	n = c->size - c->cur < PT_BLOCK ? (size_t)(c->size - c->cur) : PT_BLOCK;
	/* Once the members are being read, reads only move forward: a gap is a
	   member libarchive skipped by seeking, and its bytes still count. Before
	   that, reads past the frontier are the central directory at the end. */
	if ((c->began && c->cur > c->frontier && (rc = fill_to(c, c->cur)) < 0) ||
	    (rc = pread_full(c, c->block, n, c->cur)) < 0 ||
	    (rc = advance(c, c->block, c->cur, n)) < 0) {
		c->rc = rc;
		archive_set_error(a, EIO, "%s", cr_error_last());
		return -1;
	}
	c->cur += n;
	return (la_ssize_t)n;
}

static la_int64_t la_seek(struct archive *a, void *ud, la_int64_t off, int whence)
{
	pt_ctx *c = ud;
	la_int64_t base;

	(void)a;
	switch (whence) {
	case SEEK_SET: base = 0; break;
	case SEEK_CUR: base = (la_int64_t)c->cur; break;
	case SEEK_END: base = (la_int64_t)c->size; break;
	default: return ARCHIVE_FATAL;
	}
	if ((off < 0 && base + off < 0) || (off > 0 && off > INT64_MAX - base))
		return ARCHIVE_FATAL;
	c->cur = (uint64_t)(base + off);
	return (la_int64_t)c->cur;
}

static int archive_fail(pt_ctx *c, struct archive *a, const char *what)
{
	if (c->rc < 0)
		return c->rc;
	return cr_error_set(CR_EINVAL, "%s: %s: %s", c->fname, what,
	                    archive_error_string(a) ? archive_error_string(a) : "zip error");
}

/*
 * The current member's bytes, block by block, to fn (or nowhere when fn is
 * NULL), checking they number exactly e->usize.
 */
typedef int (*member_fn)(pt_ctx *c, void *arg, uint64_t pos, const void *data, size_t n);

static int read_member(pt_ctx *c, struct archive *a, const cd_entry *e, member_fn fn, void *arg)
{
	uint64_t pos = 0;
	int rc;

	for (;;) {
		const void *data;
		size_t n;
		la_int64_t off;
		int r = archive_read_data_block(a, &data, &n, &off);

		if (r == ARCHIVE_EOF)
			break;
		if (r != ARCHIVE_OK)
			return archive_fail(c, a, e->name);
		if (off < 0 || (uint64_t)off != pos)
			return zbad(c, "member data out of order", e->name);
		if (n > e->usize - pos)
			return zbad(c, "member holds more bytes than its central directory entry says",
			            e->name);
		if (fn && n && (rc = fn(c, arg, pos, data, n)) < 0)
			return rc;
		pos += n;
	}
	if (pos != e->usize)
		return zbad(c, "member holds fewer bytes than its central directory entry says",
		            e->name);
	return 0;
}

static int to_buf(pt_ctx *c, void *arg, uint64_t pos, const void *data, size_t n)
{
	(void)c;
	(void)pos;
	return cr_buf_put(arg, data, n);
}

static int to_engine(pt_ctx *c, void *arg, uint64_t pos, const void *data, size_t n)
{
	return cr_tpass_feed(c->p, arg, pos, data, n);
}

static int declare(pt_ctx *c)
{
	cr_pt_map *m = c->map;
	size_t i;
	int rc;

	if (!(c->members = calloc(m->nstorages ? m->nstorages : 1, sizeof(*c->members))) ||
	    !(c->seen = calloc(m->nstorages ? m->nstorages : 1, 1)))
		return cr_error_set(CR_ENOMEM, "out of memory");
	for (i = 0; i < m->nstorages; i++) {
		if (asprintf(&c->members[i], "%sdata/%s", c->prefix, m->storages[i].key) < 0) {
			c->members[i] = NULL;
			return cr_error_set(CR_ENOMEM, "out of memory");
		}
		if ((rc = smap_put(&c->keys, m->storages[i].key, strlen(m->storages[i].key), i)) < 0)
			return rc;
	}
	for (i = 0; i < m->n; i++) {
		const cr_pt_tensor *pt = &m->tensors[i];
		cr_tensor t;

		memset(&t, 0, sizeof(t));
		t.name = pt->name;
		snprintf(t.dtype, sizeof(t.dtype), "%s", pt->dtype);
		t.ndim = pt->ndim;
		memcpy(t.shape, pt->shape, sizeof(t.shape));
		t.member = c->members[pt->storage];
		t.offset = pt->offset;
		t.length = pt->length;
		if ((rc = cr_tpass_add(c->p, &t)) < 0)
			return rc;
	}
	if (m->nviews) {
		for (i = 0; i < m->n && !m->tensors[i].view; i++)
			;
		if ((rc = cr_tpass_note(c->p,
		                        "%zu tensor(s) are non-contiguous views (the first: %s): "
		                        "each is listed as the 1-D range of its storage it spans",
		                        m->nviews, m->tensors[i].name)) < 0)
			return rc;
	}
	if (m->nrenamed && (rc = cr_tpass_note(c->p,
	                                       "%zu tensor name(s) occurred twice; later ones "
	                                       "carry a #N suffix",
	                                       m->nrenamed)) < 0)
		return rc;
	return 0;
}

/* data.pkl: read, parse, map, declare, begin. */
static int read_pickle(pt_ctx *c, struct archive *a, const cd_entry *e)
{
	cr_pkl *pk = NULL;
	char *what = NULL;
	int rc;

	if (e->usize > PT_MAX_PICKLE)
		return zbad(c, "data.pkl is larger than the limit", e->name);
	if ((rc = cr_buf_grow(&c->pkl, (size_t)e->usize + 1)) < 0)
		return rc;
	if ((rc = read_member(c, a, e, to_buf, &c->pkl)) < 0)
		return rc;
	if (asprintf(&what, "%s: %s", c->fname, e->name) < 0)
		return cr_error_set(CR_ENOMEM, "out of memory");
	if ((rc = cr_pkl_parse((const uint8_t *)c->pkl.ptr, c->pkl.len, what, NULL, &pk)) < 0 ||
	    (rc = cr_pt_map_pickle(pk, what, &c->map)) < 0)
		goto done;
	if ((rc = declare(c)) < 0 || (rc = cr_tpass_begin(c->p)) < 0)
		goto done;
	c->began = 1;
	if (c->pending.len && (rc = cr_tpass_file(c->p, c->pending.ptr, c->pending.len)) < 0)
		goto done;
	cr_buf_free(&c->pending);
done:
	cr_pkl_free(pk);
	free(what);
	return rc;
}

static int read_byteorder(pt_ctx *c, struct archive *a, const cd_entry *e)
{
	cr_buf b = CR_BUF_INIT;
	int rc;

	if (e->usize > PT_MAX_BYTEORDER)
		return zbad(c, "byteorder member too long", e->name);
	if ((rc = read_member(c, a, e, to_buf, &b)) == 0 &&
	    !(b.len == 6 && memcmp(b.ptr, "little", 6) == 0))
		rc = zbad(c, "big-endian (or unknown byte order) checkpoints are not supported",
		          e->name);
	cr_buf_free(&b);
	return rc;
}

static int read_storage(pt_ctx *c, struct archive *a, const cd_entry *e, size_t idx)
{
	const cr_pt_storage *s = &c->map->storages[idx];
	char msg[160];

	if (e->usize != s->nbytes) {
		snprintf(msg, sizeof(msg),
		         "storage member holds %llu bytes but data.pkl declares %llu (%llu x %s)",
		         (unsigned long long)e->usize, (unsigned long long)s->nbytes,
		         (unsigned long long)s->numel, s->dtype);
		return zbad(c, msg, e->name);
	}
	c->seen[idx] = 1;
	return read_member(c, a, e, to_engine, c->members[idx]);
}

/* What the member after data.pkl is: a storage, the byte order, or something to skip. */
static int read_other(pt_ctx *c, struct archive *a, const cd_entry *e)
{
	size_t plen = strlen(c->prefix), idx;

	if (e->name_len > plen && memcmp(e->name, c->prefix, plen) == 0) {
		const char *rest = e->name + plen;

		if (strncmp(rest, "data/", 5) == 0) {
			if (smap_get(&c->keys, rest + 5, strlen(rest + 5), &idx))
				return read_storage(c, a, e, idx);
			c->unused_storages++;
		} else if (strcmp(rest, "byteorder") == 0) {
			return read_byteorder(c, a, e);
		}
	}
	/* Skipping a member reads through it (no skip callback), advancing the frontier. */
	if (archive_read_data_skip(a) != ARCHIVE_OK)
		return archive_fail(c, a, e->name);
	return 0;
}

static int check_first(pt_ctx *c, const cd_entry *e)
{
	const char *slash = strchr(e->name, '/');

	if (!slash || slash == e->name || strcmp(slash + 1, "data.pkl") != 0)
		return zbad(c, "data.pkl is not the first member of the zip, as torch.save writes "
		               "it (first member)",
		            e->name);
	if (!(c->prefix = strndup(e->name, (size_t)(slash - e->name) + 1)))
		return cr_error_set(CR_ENOMEM, "out of memory");
	return 0;
}

static int read_zip(pt_ctx *c)
{
	struct archive *a = NULL;
	struct archive_entry *ae;
	locale_t utf8, saved = (locale_t)0;
	size_t i = 0;
	int rc = 0, r;

	if (!(c->block = malloc(PT_BLOCK)))
		return cr_error_set(CR_ENOMEM, "out of memory");
	/*
	 * torch marks member names UTF-8 (it names the archive after the file:
	 * "modèle.pt" holds "modèle/data.pkl"), and libarchive converts names to
	 * the current locale's charset, failing in the C locale. This thread reads
	 * in C.UTF-8 while libarchive runs (uselocale is per thread); where that
	 * locale is missing, ASCII names still read.
	 */
	utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
	if (utf8 != (locale_t)0)
		saved = uselocale(utf8);
	if (!(a = archive_read_new())) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	if (archive_read_support_format_zip_seekable(a) != ARCHIVE_OK ||
	    archive_read_set_format_option(a, "zip", "ignorecrc32", "1") != ARCHIVE_OK ||
	    archive_read_set_read_callback(a, la_read) != ARCHIVE_OK ||
	    archive_read_set_seek_callback(a, la_seek) != ARCHIVE_OK ||
	    archive_read_set_callback_data(a, c) != ARCHIVE_OK ||
	    archive_read_open1(a) != ARCHIVE_OK) {
		rc = archive_fail(c, a, "not a readable zip");
		goto done;
	}
	while ((r = archive_read_next_header(a, &ae)) != ARCHIVE_EOF) {
		const char *name;
		const cd_entry *e;

		if (r != ARCHIVE_OK) {
			rc = archive_fail(c, a, "zip member header");
			goto done;
		}
		/* libarchive walks the local headers in offset order; so does c->cd. */
		name = archive_entry_pathname(ae);
		if (i >= c->ncd || !name || strcmp(name, c->cd[i].name) != 0) {
			rc = zbad(c, "a local header does not match the central directory",
			          i < c->ncd ? c->cd[i].name : name);
			goto done;
		}
		if (archive_entry_is_encrypted(ae)) {
			rc = zbad(c, "encrypted member", name);
			goto done;
		}
		e = &c->cd[i++];
		if (i == 1)
			rc = check_first(c, e);
		if (rc == 0)
			rc = i == 1 ? read_pickle(c, a, e) : read_other(c, a, e);
		if (rc < 0)
			goto done;
	}
	if (i != c->ncd) {
		rc = zbad(c, "libarchive saw fewer members than the central directory lists", NULL);
		goto done;
	}
done:
	if (a)
		archive_read_free(a);
	if (utf8 != (locale_t)0) {
		uselocale(saved);
		freelocale(utf8);
	}
	return rc;
}

static int check_storages(pt_ctx *c)
{
	size_t i;
	int rc;

	for (i = 0; i < c->map->nstorages; i++)
		if (!c->seen[i])
			return zbad(c, "data.pkl names a storage the zip does not hold", c->members[i]);
	if (c->unused_storages &&
	    (rc = cr_tpass_note(c->p,
	                        "%zu storage member(s) hold bytes no tensor of data.pkl uses; they "
	                        "count only in the whole file's hash",
	                        c->unused_storages)) < 0)
		return rc;
	return 0;
}

/* The legacy (pre-1.6) format begins with the pickled magic number 0x1950a86a20f9469cfc6c. */
static const uint8_t legacy_magic[] = {0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                       0x20, 0x6a, 0xa8, 0x50, 0x19};

static int is_legacy(const uint8_t *h, size_t n)
{
	if (n >= 2 + sizeof(legacy_magic) && h[0] == 0x80 && h[1] >= 2 &&
	    memcmp(h + 2, legacy_magic, sizeof(legacy_magic)) == 0)
		return 1;
	/* Protocol 4 and 5 put a FRAME first. */
	return n >= 11 + sizeof(legacy_magic) && h[0] == 0x80 && h[1] >= 4 && h[2] == 0x95 &&
	       memcmp(h + 11, legacy_magic, sizeof(legacy_magic)) == 0;
}

/*
 * A zip whose first member is <archive>/data.pkl. Only 64 bytes are seen: a
 * longer name passes when what is visible can begin such a name (the read
 * then gives a clear error if it does not). The legacy format is declined
 * here, so the engine stands the whole file in for it; read with the format
 * forced, it is refused with a message saying it is the legacy format.
 */
static int pytorch_probe(const uint8_t *head, size_t n, const char *name)
{
	static const char tail[] = "/data.pkl";
	const char *m, *slash;
	size_t nlen, vis;

	(void)name;
	if (n < 30 || memcmp(head, "PK\003\004", 4) != 0)
		return 0;
	nlen = (size_t)rd16(head + 26);
	m = (const char *)head + 30;
	vis = n - 30 < nlen ? n - 30 : nlen;
	if (nlen < sizeof(tail) || !vis)
		return 0;
	slash = memchr(m, '/', vis);
	if (!slash)
		return vis < nlen; /* the slash may lie beyond what is visible */
	if (slash == m || (size_t)(slash - m) != nlen - (sizeof(tail) - 1))
		return 0;
	return memcmp(slash, tail, vis - (size_t)(slash - m)) == 0;
}

static int pytorch_read(cr_tpass *p, int fd)
{
	pt_ctx c;
	uint8_t head[32];
	size_t i;
	int rc;

	memset(&c, 0, sizeof(c));
	c.p = p;
	c.fd = fd;
	c.fname = cr_tpass_name(p);
	c.size = cr_tpass_size(p);
	if (c.size >= sizeof(head)) {
		if ((rc = cr_tpass_pread(p, fd, head, sizeof(head), 0)) < 0)
			return rc;
		if (is_legacy(head, sizeof(head)))
			return cr_error_set(CR_EINVAL,
			                    "%s: legacy torch.save format (before PyTorch 1.6, "
			                    "_use_new_zipfile_serialization=False) is not supported",
			                    c.fname);
	}
	if ((rc = cd_read(&c)) < 0 || (rc = read_zip(&c)) < 0)
		goto done;
	if (!c.began) {
		rc = zbad(&c, "no data.pkl", NULL);
		goto done;
	}
	if ((rc = fill_to(&c, c.size)) < 0 || (rc = check_storages(&c)) < 0)
		goto done;
done:
	for (i = 0; i < c.ncd; i++)
		free(c.cd[i].name);
	free(c.cd);
	if (c.members)
		for (i = 0; c.map && i < c.map->nstorages; i++)
			free(c.members[i]);
	free(c.members);
	free(c.seen);
	smap_free(&c.keys);
	cr_pt_map_free(c.map);
	free(c.prefix);
	free(c.block);
	cr_buf_free(&c.pending);
	cr_buf_free(&c.pkl);
	return rc;
}

const cr_tensor_reader cr_reader_pytorch = {"pytorch", pytorch_probe, pytorch_read};
