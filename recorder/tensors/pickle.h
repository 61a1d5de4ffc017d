/*
 * A minimal, safe reader of Python pickles (protocols 2 to 5, the binary
 * opcodes torch.save emits and a few protocol 0/1 ones picklers still use).
 *
 * Nothing is executed and nothing is imported: the opcodes are interpreted
 * into a small tree of values. A GLOBAL is just a (module, name) pair; REDUCE
 * and NEWOBJ make an "object" node holding the callable and its arguments;
 * BUILD attaches a state to it; BINPERSID wraps its persistent id. Readers
 * of a format (recorder/tensors/pytorch.c) then recognise the few callables
 * they know, such as torch._utils._rebuild_tensor_v2.
 *
 * The input is hostile: every length is checked against what is left and
 * against a limit, the memo, the stack, the marks and the number of values
 * are capped (cr_pkl_limits), memory is at most CR_PKL_BYTES_PER_BYTE times
 * the pickle's length, and an opcode outside the supported set is refused
 * with its name and position. No recursion happens while parsing,
 * so a deeply nested pickle cannot exhaust the C stack here; readers that
 * walk the tree bound their own depth.
 *
 * Ownership: the tree belongs to the cr_pkl and is freed with it. Strings,
 * byte strings, big integers and global names point into the caller's input
 * buffer, which must outlive the cr_pkl.
 */
#ifndef CR_RECORDER_TENSORS_PICKLE_H
#define CR_RECORDER_TENSORS_PICKLE_H

#include <stddef.h>
#include <stdint.h>

#include "cleanroom/tensors.h"

typedef enum cr_pkl_kind {
	CR_PKL_NONE = 0,
	CR_PKL_BOOL,      /* u.i is 0 or 1 */
	CR_PKL_INT,       /* u.i; fits int64 */
	CR_PKL_BIGINT,    /* u.s, len bytes, little-endian two's complement */
	CR_PKL_FLOAT,     /* u.f */
	CR_PKL_STR,       /* u.s, len bytes of UTF-8 (not NUL-terminated) */
	CR_PKL_BYTES,     /* u.s, len bytes */
	/* Kinds below live in a node (u.node). */
	CR_PKL_TUPLE,     /* items */
	CR_PKL_LIST,      /* items */
	CR_PKL_DICT,      /* pairs */
	CR_PKL_SET,       /* items */
	CR_PKL_FROZENSET, /* items */
	CR_PKL_GLOBAL,    /* module, name */
	CR_PKL_OBJECT,    /* callable, args [, state] [, pairs] [, items] */
	CR_PKL_PERSID     /* pid: a persistent id the loader would resolve */
} cr_pkl_kind;

typedef struct cr_pkl_node cr_pkl_node;
typedef struct cr_pkl_object cr_pkl_object;

typedef struct cr_pkl_val {
	cr_pkl_kind kind;
	uint32_t len;               /* byte length of STR, BYTES, BIGINT */
	union {
		int64_t i;
		double f;
		const uint8_t *s;
		cr_pkl_node *node;
	} u;
} cr_pkl_val;

struct cr_pkl_node {
	cr_pkl_kind kind;
	uint32_t mark;              /* free for the tree's reader (cycle marks); 0 after parsing */
	uint32_t n;                 /* items of TUPLE, LIST, SET, FROZENSET; APPENDs to an OBJECT */
	uint32_t cap;               /* the parser's */
	cr_pkl_val *items;
	uint32_t npairs;            /* DICT entries or SETITEMs to an OBJECT */
	uint32_t pcap;              /* the parser's */
	cr_pkl_val *pairs;          /* key, value, key, value, ... (2 * npairs values) */
	union {
		struct {
			const uint8_t *module, *name;
			uint32_t module_len, name_len;
		} global;
		cr_pkl_object *object;  /* OBJECT (kept apart: most nodes are not objects) */
		cr_pkl_val pid;         /* PERSID: the persistent id */
	} u;
};

/* callable(*args) for REDUCE; callable.__new__(callable, *args, **kwargs)
   for NEWOBJ and NEWOBJ_EX (kwargs is NONE for the others). */
struct cr_pkl_object {
	cr_pkl_val callable, args, kwargs;
	cr_pkl_val state;           /* BUILD's argument when has_state */
	uint8_t has_state, newobj;
};

/* Caps on what a pickle may make the reader hold. */
typedef struct cr_pkl_limits {
	size_t max_values;          /* values created (pushes, not memo lookups) */
	size_t max_stack;           /* values on the stack at once */
	size_t max_marks;           /* MARKs open at once */
	size_t max_memo;            /* highest memo index + 1 */
	size_t max_str;             /* bytes of one string, byte string or big integer */
	size_t max_items;           /* entries of one container */
	size_t max_bytes;           /* memory held by the tree, stack and memo */
} cr_pkl_limits;

#define CR_PKL_DEFAULT_MAX_VALUES (32u * 1024 * 1024)
#define CR_PKL_DEFAULT_MAX_STACK (1024u * 1024)
#define CR_PKL_DEFAULT_MAX_MARKS 4096u
#define CR_PKL_DEFAULT_MAX_MEMO (16u * 1024 * 1024)
#define CR_PKL_DEFAULT_MAX_STR (64u * 1024 * 1024)
#define CR_PKL_DEFAULT_MAX_ITEMS (16u * 1024 * 1024)
#define CR_PKL_DEFAULT_MAX_BYTES (1024u * 1024 * 1024)
/* Whatever the limits say, max_bytes is at most PER_BYTE x the pickle's length + SLACK. */
#define CR_PKL_BYTES_PER_BYTE 64u
#define CR_PKL_BYTES_SLACK (1024u * 1024)

/* The defaults above, for callers that tighten one of them. */
void cr_pkl_limits_default(cr_pkl_limits *out);

typedef struct cr_pkl cr_pkl;

/*
 * Parse the pickle in data[0..len) up to its STOP opcode (bytes after it are
 * ignored, as Python does). what names the input in error messages
 * ("ckpt.pt: archive/data.pkl"). limits may be NULL for the defaults.
 * 0 and *out (free with cr_pkl_free) on success; CR_EINVAL for a malformed,
 * truncated or unsupported pickle or a limit exceeded, CR_ENOMEM.
 */
int cr_pkl_parse(const uint8_t *data, size_t len, const char *what,
                 const cr_pkl_limits *limits, cr_pkl **out);

/* The value STOP returned; borrowed while pk lives. */
const cr_pkl_val *cr_pkl_root(const cr_pkl *pk);

/* How many values the parse created. */
size_t cr_pkl_count(const cr_pkl *pk);

void cr_pkl_free(cr_pkl *pk); /* NULL-safe */

/* 1 when v is a STR equal to s. */
int cr_pkl_is_str(const cr_pkl_val *v, const char *s);

/* 1 when v is a GLOBAL module.name. */
int cr_pkl_is_global(const cr_pkl_val *v, const char *module, const char *name);

/* The node of a value of kind k, or NULL when v is of another kind. */
cr_pkl_node *cr_pkl_as(const cr_pkl_val *v, cr_pkl_kind k);

/* A short name of a kind ("tuple", "dict", ...). */
const char *cr_pkl_kind_name(cr_pkl_kind k);

/*
 * torch.save's data.pkl read as a tensor map (implemented in pytorch.c, the
 * only user; declared here so tests and the fuzzer reach it without a zip).
 *
 * Storages come from persistent ids ('storage', torch.<T>Storage, key,
 * location, numel); tensors from torch._utils._rebuild_tensor(_v2, _v3)
 * calls, through _rebuild_parameter(_with_state) and _rebuild_from_type_v2.
 * Names join dict keys and list/tuple indices with dots ("model.fc.weight",
 * "optim.state.0.exp_avg"); objects contribute their SETITEMs, APPENDs,
 * BUILD state and arguments. Values that are not tensors are ignored.
 */
#define CR_PT_MAX_KEY 64            /* longest storage key */
#define CR_PT_MAX_DEPTH 256         /* nesting of containers walked */
/* Containers visited plus the entries walked in them; shared subtrees count each time. */
#define CR_PT_MAX_WALK (16u * 1024 * 1024)
#define CR_PT_MAX_NAME_BYTES (128u * 1024 * 1024) /* all tensor names together */

typedef struct cr_pt_storage {
	char key[CR_PT_MAX_KEY + 1];  /* the zip member is <archive>/data/<key> */
	char dtype[16];
	uint32_t esize;               /* bytes per element */
	uint64_t numel;               /* elements, as the persistent id says */
	uint64_t nbytes;              /* numel * esize */
} cr_pt_storage;

typedef struct cr_pt_tensor {
	char *name;
	size_t storage;               /* index into storages */
	char dtype[16];
	uint32_t ndim;
	uint64_t shape[CR_TENSOR_MAX_DIMS];
	uint64_t offset, length;      /* bytes within the storage */
	int view;                     /* a non-contiguous view: shape is the 1-D storage
	                                 span it covers (see docs/formats/tensors.md) */
} cr_pt_tensor;

typedef struct cr_pt_map {
	cr_pt_tensor *tensors;        /* in the pickle's order */
	size_t n, cap;
	cr_pt_storage *storages;      /* in order of first use */
	size_t nstorages, scap;
	size_t nviews;                /* tensors with view set */
	size_t nrenamed;              /* names made unique with a "#N" suffix */
} cr_pt_map;

/*
 * Map the tree of a parsed data.pkl (pk) to tensors and storages. what names
 * the input in messages. CR_EINVAL for a malformed tensor or storage, a name
 * longer than CR_TENSOR_MAX_NAME or not valid UTF-8, too many tensors (or
 * names: CR_PT_MAX_NAME_BYTES, or many times more names than tensor nodes,
 * from shared references), nesting deeper than CR_PT_MAX_DEPTH, a walk of
 * more than CR_PT_MAX_WALK steps; CR_ENOMEM. The nodes' mark fields are
 * used during the walk and are 0 again on return.
 */
int cr_pt_map_pickle(const cr_pkl *pk, const char *what, cr_pt_map **out);
void cr_pt_map_free(cr_pt_map *m); /* NULL-safe */

#endif
