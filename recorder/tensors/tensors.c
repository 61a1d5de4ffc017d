/*
 * The tensor manifest engine: format detection, one sequential pass over a
 * checkpoint's bytes, per-tensor SHA-256, the whole file's SHA-256 on a
 * second thread, the numeric delta against a previous checkpoint, and the
 * base file that keeps this checkpoint's float tensors for the next delta.
 *
 * A format reader (safetensors.c, gguf.c, pytorch.c, onnx.c) declares every
 * tensor with cr_tpass_add, calls cr_tpass_begin, then hands over bytes:
 * every byte of the file once through cr_tpass_file, and the bytes of each
 * tensor's range through cr_tpass_feed (cr_tpass_stream_fd does both for
 * tensors at file offsets). The engine routes fed bytes to every tensor
 * whose range they overlap, in the order they come, so the bytes are read
 * once whatever the layout.
 *
 * Tensors with equal (member, offset, length) ranges share one span: its
 * bytes are hashed, written to the base and compared once, and the digest
 * is copied to each (a hundred thousand aliases of one storage cost one
 * hash). Partly overlapping ranges are hashed each, while the work stays
 * within WORK_FACTOR times the bytes read plus WORK_SLACK; beyond, the file
 * is refused (CR_EINVAL), as is a reader handing bytes out of order.
 *
 * Memory is bounded by the buffers (two CR_TPASS_BUF blocks when the file
 * hash runs on its own thread, one otherwise), one hash context per span
 * whose bytes are arriving (freed as each completes), and per-tensor
 * bookkeeping. The checkpoint is never held whole in memory.
 *
 * Ownership: the pass owns the manifest it builds until cr_manifest_read
 * hands it out; a delta borrows tensor names from both manifests and must be
 * freed before them.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "recorder/tensors/tensors_internal.h"
#include "util/buf.h"
#include "util/codec.h"

/*
 * Read block: 1 MiB matched 4 MiB within noise for plain SHA-256 of a cached
 * file (recorder/hash.c) and keeps both blocks of the double buffer in L2/L3.
 */
#define CR_TPASS_BUF (1u << 20)
/* Below this size the file hash runs inline: a thread costs more than it saves. */
#define THREAD_MIN_SIZE (8u * CR_TPASS_BUF)
/* Old bytes of a tensor are read for the delta in blocks of this size. */
#define DELTA_BUF (1u << 20)
/* Probe bytes handed to each reader. */
#define PROBE_SIZE 64u

static const char FILE_TENSOR_NAME[] = "(file)";

/* ------------------------------------------------------------ SHA-256 -- */

static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static const EVP_MD *md_sha256;

static void md_fetch(void)
{
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);

	if (md) {
		md_sha256 = md; /* kept for the life of the process */
		return;
	}
#endif
	md_sha256 = EVP_sha256();
}

static EVP_MD_CTX *md_new(void)
{
	EVP_MD_CTX *ctx;

	pthread_once(&md_once, md_fetch);
	if ((ctx = EVP_MD_CTX_new()) == NULL)
		return NULL;
	if (EVP_DigestInit_ex(ctx, md_sha256, NULL) != 1) {
		EVP_MD_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static int md_final(EVP_MD_CTX *ctx, uint8_t out[CR_SHA256_SIZE])
{
	unsigned int n = 0;

	if (EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != CR_SHA256_SIZE)
		return cr_error_set(CR_ECRYPTO, "SHA-256 failed");
	return 0;
}

/* -------------------------------------------------------------- dtypes -- */

/* clang-format off */
static const struct {
	const char *name;
	size_t size;
	cr_float_kind fkind;
} dtypes[] = {
	{"F64", 8, CR_FLOAT_F64},  {"F32", 4, CR_FLOAT_F32},  {"F16", 2, CR_FLOAT_F16},
	{"BF16", 2, CR_FLOAT_BF16}, {"I64", 8, CR_FLOAT_NONE}, {"I32", 4, CR_FLOAT_NONE},
	{"I16", 2, CR_FLOAT_NONE}, {"I8", 1, CR_FLOAT_NONE},  {"U64", 8, CR_FLOAT_NONE},
	{"U32", 4, CR_FLOAT_NONE}, {"U16", 2, CR_FLOAT_NONE}, {"U8", 1, CR_FLOAT_NONE},
	{"BOOL", 1, CR_FLOAT_NONE}, {"F8_E4M3", 1, CR_FLOAT_NONE},
	{"F8_E5M2", 1, CR_FLOAT_NONE}, {"F8_E8M0", 1, CR_FLOAT_NONE},
	{"C64", 8, CR_FLOAT_NONE}, {"C128", 16, CR_FLOAT_NONE},
};
/* clang-format on */

size_t cr_dtype_size(const char *dtype)
{
	if (!dtype)
		return 0;
	for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
		if (strcmp(dtype, dtypes[i].name) == 0)
			return dtypes[i].size;
	return 0;
}

static cr_float_kind dtype_fkind(const char *dtype)
{
	for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++)
		if (strcmp(dtype, dtypes[i].name) == 0)
			return dtypes[i].fkind;
	return CR_FLOAT_NONE;
}

static size_t fkind_size(cr_float_kind k)
{
	switch (k) {
	case CR_FLOAT_F64: return 8;
	case CR_FLOAT_F32: return 4;
	case CR_FLOAT_F16:
	case CR_FLOAT_BF16: return 2;
	default: return 0;
	}
}

/* ---------------------------------------------------------- the pass -- */

/*
 * A distinct (member, offset, length) range and its hash. Tensors with the
 * same range (tied weights, aliases) share one span, so their bytes are
 * hashed, written to the base and compared once whatever their number.
 */
typedef struct span {
	const char *member;
	uint64_t offset, length;
	uint64_t got;      /* bytes received so far */
	EVP_MD_CTX *md;    /* while bytes arrive */
	uint64_t base_off; /* where its bytes go in the base being written, or UINT64_MAX */
	int base_write;    /* one of its tensors is a float: its bytes go to the base */
	int done;
	size_t first, n;   /* its tensors: order[first .. first + n) */
	size_t dfirst, dn; /* tensors computing its deltas: dlead[dfirst .. dfirst + dn) */
} span;

/* Numeric delta state of a new tensor matched to a previous one. */
typedef struct dstate {
	size_t prev;      /* index in the previous manifest, SIZE_MAX when none */
	int numeric;      /* old bytes are readable and comparable */
	uint64_t old_off; /* where the old tensor's bytes lie in the base fd */
	uint8_t carry[8]; /* an element split across two feeds */
	unsigned carry_n;
	double sum_d2, sum_old2, max_abs;
	int nonfinite;
	/* The tensor whose dstate holds this one's figures: itself, or an alias
	   with the same range, float kind and old bytes. */
	size_t lead;
} dstate;

/* Spans of one member (NULL: the file), sorted by offset. */
typedef struct group {
	const char *member;
	size_t first, n; /* range in spans[] */
	uint64_t hwm;    /* the member's bytes fed so far reach this far */
} group;

/* The whole file's SHA-256 on a second thread, over two buffers in turn. */
typedef struct fhash {
	pthread_t thread;
	int running;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	uint8_t *buf[2];
	size_t len[2];
	int busy[2]; /* handed to the thread, not yet hashed */
	int next;    /* the slot the thread hashes next */
	int stop;
	int failed;
	EVP_MD_CTX *md;
} fhash;

struct cr_tpass {
	const char *name;
	char fdname[32];
	uint64_t size;
	int fd;
	const cr_manifest_opts *opts;
	cr_manifest *m;
	size_t cap;
	int begun, ended;

	/* routing of fed bytes */
	size_t *order; /* tensor indices sorted by (member, offset, length) */
	span *spans;   /* distinct ranges, in that order */
	size_t n_spans;
	size_t *span_of;  /* per tensor: its span */
	uint64_t *maxend; /* running max of span ends along spans[], per group */
	size_t *live;     /* skips spans that need no more bytes (see live_find) */
	group *groups;
	size_t n_groups;
	size_t last_group;
	size_t *dlead;     /* per span, the tensors that compute its deltas */
	uint64_t hashed;   /* bytes hashed so far */
	uint64_t compared; /* bytes compared with the previous checkpoint so far */
	uint64_t fed;      /* distinct member bytes fed so far (sum of the groups' hwm) */

	/* the whole file */
	int hash_file;      /* the file's SHA-256 is wanted and computed here */
	int file_is_tensor; /* the fallback: the one tensor is the file */
	int file_init;
	uint64_t file_pos;   /* bytes handed through cr_tpass_file */
	EVP_MD_CTX *file_md; /* inline hashing */
	fhash fh;            /* threaded hashing */
	int threaded;
	int slot;     /* the producer's current slot */
	size_t fill;  /* bytes copied into it by cr_tpass_file */
	uint8_t *buf; /* stream_fd's block when not threaded */

	/* delta */
	dstate *ds;
	uint8_t *scratch;
	cr_delta *delta;

	/* base out */
	uint64_t *base_offsets;
	uint64_t base_len;
};

const char *cr_tpass_name(const cr_tpass *p)
{
	return p->name;
}

uint64_t cr_tpass_size(const cr_tpass *p)
{
	return p->size;
}

int cr_tpass_note(cr_tpass *p, const char *fmt, ...)
{
	cr_buf b = CR_BUF_INIT;
	va_list ap;
	int rc;

	if (p->m->note && (rc = cr_buf_printf(&b, "%s; ", p->m->note)) != 0)
		return rc;
	va_start(ap, fmt);
	{
		va_list aq;
		int n;

		va_copy(aq, ap);
		n = vsnprintf(NULL, 0, fmt, aq);
		va_end(aq);
		rc = n < 0 ? cr_error_set(CR_EINVAL, "bad note format")
		           : cr_buf_grow(&b, (size_t)n + 1);
		if (!rc) {
			vsnprintf(b.ptr + b.len, (size_t)n + 1, fmt, ap);
			b.len += (size_t)n;
		}
	}
	va_end(ap);
	if (rc) {
		cr_buf_free(&b);
		return rc;
	}
	free(p->m->note);
	p->m->note = cr_buf_detach(&b);
	return 0;
}

int cr_tpass_pread(cr_tpass *p, int fd, void *buf, size_t n, uint64_t off)
{
	uint8_t *d = buf;
	size_t done = 0;
	ssize_t r;

	if (off > (uint64_t)INT64_MAX || n > (uint64_t)INT64_MAX - off)
		return cr_error_set(CR_EINVAL, "%s: offset %llu is out of range", p->name,
		                    (unsigned long long)off);
	while (done < n) {
		r = pread(fd, d + done, n - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return cr_error_set_errno(CR_EIO, errno, "%s: read", p->name);
		if (r == 0)
			return cr_error_set(CR_EINVAL,
			                    "%s: truncated: %zu bytes wanted at offset %llu, "
			                    "the file ends first",
			                    p->name, n, (unsigned long long)off);
		done += (size_t)r;
	}
	return 0;
}

/* Printable ASCII without quotes: what a dtype name may hold. */
static int dtype_ok(const char *d)
{
	size_t n = strnlen(d, 16);

	if (n == 0 || n >= 16)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (d[i] <= ' ' || d[i] > '~' || d[i] == '"' || d[i] == '\\')
			return 0;
	return 1;
}

int cr_tpass_add(cr_tpass *p, const cr_tensor *t)
{
	cr_tensor *dst;
	size_t nlen, esize;
	uint64_t elems = 1, end;

	if (p->begun)
		return cr_error_set(CR_ERROR, "%s: tensor declared after the pass began", p->name);
	if (!t->name)
		return cr_error_set(CR_EINVAL, "%s: a tensor has no name", p->name);
	nlen = strnlen(t->name, CR_TENSOR_MAX_NAME + 1);
	if (nlen > CR_TENSOR_MAX_NAME)
		return cr_error_set(CR_EINVAL, "%s: a tensor name is longer than %u bytes", p->name,
		                    CR_TENSOR_MAX_NAME);
	if (!cr_utf8_valid((const uint8_t *)t->name, nlen))
		return cr_error_set(CR_EINVAL, "%s: a tensor name is not valid UTF-8", p->name);
	if (t->member && (strnlen(t->member, CR_TENSOR_MAX_NAME + 1) > CR_TENSOR_MAX_NAME ||
	                  !cr_utf8_valid((const uint8_t *)t->member, strlen(t->member))))
		return cr_error_set(CR_EINVAL,
		                    "%s: tensor '%s': member name is too long or not UTF-8",
		                    p->name, t->name);
	if (!dtype_ok(t->dtype))
		return cr_error_set(CR_EINVAL, "%s: tensor '%s' has no valid dtype name", p->name,
		                    t->name);
	if (t->ndim > CR_TENSOR_MAX_DIMS)
		return cr_error_set(CR_EINVAL, "%s: tensor '%s' has %u dimensions (at most %d)",
		                    p->name, t->name, t->ndim, CR_TENSOR_MAX_DIMS);
	if (p->m->n >= CR_TENSOR_MAX_COUNT)
		return cr_error_set(CR_EINVAL, "%s: more than %u tensors", p->name,
		                    CR_TENSOR_MAX_COUNT);
	for (uint32_t i = 0; i < t->ndim; i++) {
		if (t->shape[i] > (uint64_t)CR_EVENT_INT_MAX)
			return cr_error_set(CR_EINVAL,
			                    "%s: tensor '%s': dimension %u is absurd (%llu)",
			                    p->name, t->name, i, (unsigned long long)t->shape[i]);
		if (elems && __builtin_mul_overflow(elems, t->shape[i], &elems))
			elems = UINT64_MAX; /* refused below when the dtype has a size */
	}
	if (__builtin_add_overflow(t->offset, t->length, &end) || end > (uint64_t)CR_EVENT_INT_MAX)
		return cr_error_set(
		    CR_EINVAL, "%s: tensor '%s': offset %llu + length %llu is out of range",
		    p->name, t->name, (unsigned long long)t->offset, (unsigned long long)t->length);
	esize = cr_dtype_size(t->dtype);
	if (esize) {
		uint64_t want;

		if (elems == UINT64_MAX || __builtin_mul_overflow(elems, (uint64_t)esize, &want))
			return cr_error_set(CR_EINVAL,
			                    "%s: tensor '%s': shape is absurd (element count "
			                    "overflows)",
			                    p->name, t->name);
		if (want != t->length)
			return cr_error_set(
			    CR_EINVAL, "%s: tensor '%s': %llu bytes, but %s x shape needs %llu",
			    p->name, t->name, (unsigned long long)t->length, t->dtype,
			    (unsigned long long)want);
	}
	if (!t->member && end > p->size)
		return cr_error_set(CR_EINVAL,
		                    "%s: tensor '%s': bytes %llu..%llu lie beyond the end of "
		                    "the file (%llu bytes)",
		                    p->name, t->name, (unsigned long long)t->offset,
		                    (unsigned long long)end, (unsigned long long)p->size);
	if (p->m->n == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 16;
		cr_tensor *nt;

		if ((nt = realloc(p->m->tensors, cap * sizeof(*nt))) == NULL)
			return cr_error_set(CR_ENOMEM, "out of memory for %zu tensors", cap);
		p->m->tensors = nt;
		p->cap = cap;
	}
	dst = &p->m->tensors[p->m->n];
	memset(dst, 0, sizeof(*dst));
	memcpy(dst->dtype, t->dtype, strlen(t->dtype) + 1);
	dst->fkind = t->fkind != CR_FLOAT_NONE ? t->fkind : dtype_fkind(t->dtype);
	/* A float kind the dtype's size contradicts would misread the bytes. */
	if (dst->fkind != CR_FLOAT_NONE && esize && esize != fkind_size(dst->fkind))
		dst->fkind = CR_FLOAT_NONE;
	dst->ndim = t->ndim;
	memcpy(dst->shape, t->shape, sizeof(dst->shape[0]) * t->ndim);
	dst->offset = t->offset;
	dst->length = t->length;
	if ((dst->name = strndup(t->name, nlen)) == NULL ||
	    (t->member && (dst->member = strdup(t->member)) == NULL)) {
		free(dst->name);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	p->m->n++;
	return 0;
}

/* --------------------------------------------------- the file's hash -- */

static void *fhash_main(void *arg)
{
	fhash *h = arg;

	for (;;) {
		int slot;

		pthread_mutex_lock(&h->mu);
		while (!h->busy[h->next] && !h->stop)
			pthread_cond_wait(&h->cv, &h->mu);
		if (!h->busy[h->next]) {
			pthread_mutex_unlock(&h->mu);
			break;
		}
		slot = h->next;
		pthread_mutex_unlock(&h->mu);
		if (!h->failed && EVP_DigestUpdate(h->md, h->buf[slot], h->len[slot]) != 1)
			h->failed = 1;
		pthread_mutex_lock(&h->mu);
		h->busy[slot] = 0;
		h->next ^= 1;
		pthread_cond_broadcast(&h->cv);
		pthread_mutex_unlock(&h->mu);
	}
	return NULL;
}

/* Wait until the thread is done with slot; it is then the producer's. */
static uint8_t *fhash_acquire(fhash *h, int slot)
{
	pthread_mutex_lock(&h->mu);
	while (h->busy[slot])
		pthread_cond_wait(&h->cv, &h->mu);
	pthread_mutex_unlock(&h->mu);
	return h->buf[slot];
}

static void fhash_submit(fhash *h, int slot, size_t len)
{
	pthread_mutex_lock(&h->mu);
	h->len[slot] = len;
	h->busy[slot] = 1;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
}

static void fhash_stop(fhash *h)
{
	if (!h->running)
		return;
	pthread_mutex_lock(&h->mu);
	h->stop = 1;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	pthread_join(h->thread, NULL);
	pthread_mutex_destroy(&h->mu);
	pthread_cond_destroy(&h->cv);
	h->running = 0;
}

static int file_setup(cr_tpass *p)
{
	if (p->file_init)
		return 0;
	p->file_init = 1;
	if (!p->hash_file)
		return 0;
	if ((p->file_md = md_new()) == NULL)
		return cr_error_set(CR_ECRYPTO, "SHA-256 context");
	if (p->size < THREAD_MIN_SIZE)
		return 0;
	p->fh.buf[0] = aligned_alloc(4096, CR_TPASS_BUF);
	p->fh.buf[1] = aligned_alloc(4096, CR_TPASS_BUF);
	if (!p->fh.buf[0] || !p->fh.buf[1])
		return cr_error_set(CR_ENOMEM, "out of memory for read buffers");
	p->fh.md = p->file_md;
	pthread_mutex_init(&p->fh.mu, NULL);
	pthread_cond_init(&p->fh.cv, NULL);
	if (pthread_create(&p->fh.thread, NULL, fhash_main, &p->fh) != 0) {
		/* No thread: hash inline, just slower. */
		pthread_mutex_destroy(&p->fh.mu);
		pthread_cond_destroy(&p->fh.cv);
		return 0;
	}
	p->fh.running = 1;
	p->threaded = 1;
	return 0;
}

int cr_tpass_file(cr_tpass *p, const void *data, size_t n)
{
	const uint8_t *d = data;
	int rc;

	if ((rc = file_setup(p)) != 0)
		return rc;
	if (n > p->size - p->file_pos)
		return cr_error_set(CR_ERROR, "%s: reader handed more bytes than the file holds",
		                    p->name);
	p->file_pos += n;
	if (!p->hash_file)
		return 0;
	if (!p->threaded) {
		if (EVP_DigestUpdate(p->file_md, d, n) != 1)
			return cr_error_set(CR_ECRYPTO, "SHA-256 failed");
		return 0;
	}
	/* The caller's buffer is not ours to keep: copy into the current slot. */
	while (n > 0) {
		uint8_t *buf = fhash_acquire(&p->fh, p->slot);
		size_t take = CR_TPASS_BUF - p->fill;

		if (take > n)
			take = n;
		memcpy(buf + p->fill, d, take);
		p->fill += take;
		d += take;
		n -= take;
		if (p->fill == CR_TPASS_BUF) {
			fhash_submit(&p->fh, p->slot, p->fill);
			p->slot ^= 1;
			p->fill = 0;
		}
	}
	return 0;
}

static int file_finish(cr_tpass *p)
{
	if (!p->hash_file || !p->file_init)
		return 0;
	if (p->threaded) {
		if (p->fill) {
			fhash_acquire(&p->fh, p->slot);
			fhash_submit(&p->fh, p->slot, p->fill);
			p->fill = 0;
		}
		fhash_stop(&p->fh);
		p->threaded = 0;
		if (p->fh.failed)
			return cr_error_set(CR_ECRYPTO, "SHA-256 failed");
	}
	return md_final(p->file_md, p->m->file_sha256);
}

/* ------------------------------------------------------------ routing -- */

static const cr_manifest *sort_m;

static int member_cmp(const char *a, const char *b)
{
	if (!a || !b)
		return a ? 1 : (b ? -1 : 0);
	return strcmp(a, b);
}

static int order_cmp(const void *x, const void *y)
{
	const cr_tensor *a = &sort_m->tensors[*(const size_t *)x];
	const cr_tensor *b = &sort_m->tensors[*(const size_t *)y];
	int c = member_cmp(a->member, b->member);

	if (c)
		return c;
	if (a->offset != b->offset)
		return a->offset < b->offset ? -1 : 1;
	if (a->length != b->length)
		return a->length < b->length ? -1 : 1;
	return *(const size_t *)x < *(const size_t *)y ? -1 : 1;
}

static int name_cmp(const void *x, const void *y)
{
	const cr_tensor *a = &sort_m->tensors[*(const size_t *)x];
	const cr_tensor *b = &sort_m->tensors[*(const size_t *)y];

	return strcmp(a->name, b->name);
}

/*
 * Indices of m's tensors sorted by name (qsort's comparator cannot take a
 * context in C11; the static is only touched under this lock).
 */
static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t *sorted_indices(const cr_manifest *m, int (*cmp)(const void *, const void *))
{
	size_t *idx = malloc((m->n ? m->n : 1) * sizeof(*idx));

	if (!idx)
		return NULL;
	for (size_t i = 0; i < m->n; i++)
		idx[i] = i;
	if (m->n > 1) {
		pthread_mutex_lock(&sort_lock);
		sort_m = m;
		qsort(idx, m->n, sizeof(*idx), cmp);
		sort_m = NULL;
		pthread_mutex_unlock(&sort_lock);
	}
	return idx;
}

/* Index in m of the tensor named name, using idx from sorted_indices(name_cmp). */
static size_t find_name(const cr_manifest *m, const size_t *idx, const char *name)
{
	size_t lo = 0, hi = m->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(m->tensors[idx[mid]].name, name);

		if (c == 0)
			return idx[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return SIZE_MAX;
}

/*
 * Sort the tensors by (member, offset, length), make one span per distinct
 * range and one group per member, and set up the routing: maxend (for the
 * walk back in cr_tpass_feed) and live (to skip spans that are complete).
 */
static int build_spans(cr_tpass *p)
{
	cr_manifest *m = p->m;
	size_t n1 = m->n ? m->n : 1;

	if ((p->order = sorted_indices(m, order_cmp)) == NULL ||
	    (p->spans = calloc(n1, sizeof(*p->spans))) == NULL ||
	    (p->span_of = malloc(n1 * sizeof(*p->span_of))) == NULL ||
	    (p->maxend = malloc(n1 * sizeof(*p->maxend))) == NULL ||
	    (p->live = malloc((n1 + 1) * sizeof(*p->live))) == NULL ||
	    (p->groups = malloc(n1 * sizeof(*p->groups))) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory for %zu tensors", m->n);
	p->live[0] = 0;
	for (size_t i = 0; i < m->n; i++) {
		const cr_tensor *t = &m->tensors[p->order[i]];
		uint64_t end = t->offset + t->length;
		span *s = p->n_spans ? &p->spans[p->n_spans - 1] : NULL;
		size_t k;

		if (s && member_cmp(s->member, t->member) == 0 && s->offset == t->offset &&
		    s->length == t->length) {
			s->n++;
			p->span_of[p->order[i]] = p->n_spans - 1;
			continue;
		}
		k = p->n_spans++;
		s = &p->spans[k];
		s->member = t->member;
		s->offset = t->offset;
		s->length = t->length;
		s->base_off = UINT64_MAX;
		s->first = i;
		s->n = 1;
		/* An empty range needs no bytes: it is never live. */
		p->live[k + 1] = t->length ? k + 1 : k;
		p->span_of[p->order[i]] = k;
		if (k == 0 || member_cmp(t->member, p->spans[k - 1].member) != 0) {
			group *g = &p->groups[p->n_groups++];

			g->member = t->member;
			g->first = k;
			g->n = 0;
			g->hwm = 0;
			p->maxend[k] = end;
		} else {
			p->maxend[k] = end > p->maxend[k - 1] ? end : p->maxend[k - 1];
		}
		p->groups[p->n_groups - 1].n++;
	}
	return 0;
}

/*
 * The last span at or before position x (span x - 1; 0 means none) that
 * still waits for bytes. live[x] == x for such a span; a complete one points
 * to x - 1. Paths are compressed, so the walk back in cr_tpass_feed skips
 * complete spans in amortised constant time.
 */
static size_t live_find(size_t *live, size_t x)
{
	size_t r = x;

	while (live[r] != r)
		r = live[r];
	while (live[x] != r) {
		size_t next = live[x];

		live[x] = r;
		x = next;
	}
	return r;
}

static group *find_group(cr_tpass *p, const char *member)
{
	size_t lo = 0, hi = p->n_groups;

	if (p->last_group < p->n_groups && member_cmp(p->groups[p->last_group].member, member) == 0)
		return &p->groups[p->last_group];
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = member_cmp(p->groups[mid].member, member);

		if (c == 0) {
			p->last_group = mid;
			return &p->groups[mid];
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* ------------------------------------------------------------- delta -- */

static pthread_once_t f16_once = PTHREAD_ONCE_INIT;
static float f16_table[65536];

static void f16_init(void)
{
	for (uint32_t h = 0; h < 65536; h++) {
		uint32_t e = (h >> 10) & 0x1f, f = h & 0x3ff;
		float v;

		if (e == 0)
			v = ldexpf((float)f, -24);
		else if (e == 31)
			v = f ? NAN : INFINITY;
		else
			v = ldexpf((float)(f | 0x400), (int)e - 25);
		f16_table[h] = (h & 0x8000) ? -v : v;
	}
}

static inline double load_elem(cr_float_kind k, const uint8_t *b)
{
	switch (k) {
	case CR_FLOAT_F64: {
		uint64_t u = (uint64_t)b[0] | (uint64_t)b[1] << 8 | (uint64_t)b[2] << 16 |
		             (uint64_t)b[3] << 24 | (uint64_t)b[4] << 32 | (uint64_t)b[5] << 40 |
		             (uint64_t)b[6] << 48 | (uint64_t)b[7] << 56;
		double d;

		memcpy(&d, &u, 8);
		return d;
	}
	case CR_FLOAT_F32: {
		uint32_t u = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
		             (uint32_t)b[3] << 24;
		float f;

		memcpy(&f, &u, 4);
		return f;
	}
	case CR_FLOAT_F16: return f16_table[(uint32_t)b[0] | (uint32_t)b[1] << 8];
	case CR_FLOAT_BF16: {
		uint32_t u = ((uint32_t)b[0] | (uint32_t)b[1] << 8) << 16;
		float f;

		memcpy(&f, &u, 4);
		return f;
	}
	default: return 0;
	}
}

/* Accumulate n elements of new (a) against old (b). */
static void accumulate(dstate *ds, cr_float_kind k, const uint8_t *a, const uint8_t *b, size_t n)
{
	size_t es = fkind_size(k);
	double sd = 0, so = 0, mx = ds->max_abs;
	int nonfinite = 0;

	for (size_t i = 0; i < n; i++) {
		double x = load_elem(k, a + i * es), y = load_elem(k, b + i * es), d;

		if (!isfinite(x) || !isfinite(y)) {
			nonfinite = 1;
			continue;
		}
		d = x - y;
		sd += d * d;
		so += y * y;
		d = fabs(d);
		if (d > mx)
			mx = d;
	}
	ds->sum_d2 += sd;
	ds->sum_old2 += so;
	ds->max_abs = mx;
	if (nonfinite)
		ds->nonfinite = 1;
}

/* Old bytes at tensor position tpos; a short or failed read turns the numeric delta off. */
static int read_old(cr_tpass *p, dstate *ds, uint8_t *buf, size_t n, uint64_t tpos)
{
	const cr_delta_base *base = p->opts->prev;
	size_t done = 0;

	while (done < n) {
		ssize_t r =
		    pread(base->fd, buf + done, n - done, (off_t)(ds->old_off + tpos + done));

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			ds->numeric = 0;
			return -1;
		}
		done += (size_t)r;
	}
	return 0;
}

static void delta_update(cr_tpass *p, size_t ti, const uint8_t *d, size_t len, uint64_t tpos)
{
	const cr_tensor *t = &p->m->tensors[ti];
	dstate *ds = &p->ds[ti];
	size_t es = fkind_size(t->fkind);

	if (ds->carry_n) {
		size_t take = es - ds->carry_n;
		uint8_t old[8];

		if (take > len)
			take = len;
		memcpy(ds->carry + ds->carry_n, d, take);
		ds->carry_n += (unsigned)take;
		d += take;
		len -= take;
		tpos += take;
		if (ds->carry_n < es)
			return;
		ds->carry_n = 0;
		if (read_old(p, ds, old, es, tpos - es) != 0)
			return;
		accumulate(ds, t->fkind, ds->carry, old, 1);
	}
	while (len >= es) {
		size_t chunk = len - len % es;

		if (chunk > DELTA_BUF)
			chunk = DELTA_BUF;
		if (read_old(p, ds, p->scratch, chunk, tpos) != 0)
			return;
		accumulate(ds, t->fkind, d, p->scratch, chunk / es);
		d += chunk;
		len -= chunk;
		tpos += chunk;
	}
	if (len) {
		memcpy(ds->carry, d, len);
		ds->carry_n = (unsigned)len;
	}
}

typedef struct djob {
	size_t span;
	cr_float_kind fkind;
	uint64_t old_off;
	size_t ti;
} djob;

static int djob_cmp(const void *x, const void *y)
{
	const djob *a = x, *b = y;

	if (a->span != b->span)
		return a->span < b->span ? -1 : 1;
	if (a->fkind != b->fkind)
		return a->fkind < b->fkind ? -1 : 1;
	if (a->old_off != b->old_off)
		return a->old_off < b->old_off ? -1 : 1;
	return a->ti < b->ti ? -1 : a->ti > b->ti;
}

/*
 * Tensors of one span that read their old bytes at the same place as the
 * same float kind get the same figures: the first of them (the lead)
 * computes them for all, so a thousand aliases of one range cost one.
 */
static int delta_leads(cr_tpass *p)
{
	size_t n = p->m->n, nj = 0, nl = 0;
	djob *jobs;

	if ((jobs = malloc((n ? n : 1) * sizeof(*jobs))) == NULL ||
	    (p->dlead = malloc((n ? n : 1) * sizeof(*p->dlead))) == NULL) {
		free(jobs);
		return cr_error_set(CR_ENOMEM, "out of memory for the delta");
	}
	for (size_t i = 0; i < n; i++)
		if (p->ds[i].numeric)
			jobs[nj++] =
			    (djob){p->span_of[i], p->m->tensors[i].fkind, p->ds[i].old_off, i};
	qsort(jobs, nj, sizeof(*jobs), djob_cmp);
	for (size_t k = 0; k < nj; k++) {
		const djob *j = &jobs[k];

		if (k == 0 || j->span != jobs[k - 1].span || j->fkind != jobs[k - 1].fkind ||
		    j->old_off != jobs[k - 1].old_off) {
			span *s = &p->spans[j->span];

			if (!s->dn)
				s->dfirst = nl;
			s->dn++;
			p->dlead[nl++] = j->ti;
		}
		p->ds[j->ti].lead = p->dlead[nl - 1];
	}
	free(jobs);
	return 0;
}

/* Match new tensors to previous ones; decide which get a numeric delta. */
static int delta_setup(cr_tpass *p)
{
	const cr_delta_base *base = p->opts->prev;
	const cr_manifest *old = base->manifest;
	size_t *idx;
	int file_mode = base->base_is_file || !base->offsets;

	if (!old)
		return cr_error_set(CR_EINVAL, "delta base without a manifest");
	if ((p->ds = calloc(p->m->n ? p->m->n : 1, sizeof(*p->ds))) == NULL ||
	    (idx = sorted_indices(old, name_cmp)) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory for the delta");
	for (size_t i = 0; i < p->m->n; i++) {
		const cr_tensor *t = &p->m->tensors[i], *o;
		dstate *ds = &p->ds[i];
		size_t j = find_name(old, idx, t->name);

		ds->lead = i;
		ds->prev = j;
		if (j == SIZE_MAX)
			continue;
		o = &old->tensors[j];
		if (t->fkind == CR_FLOAT_NONE || o->fkind != t->fkind ||
		    strcmp(o->dtype, t->dtype) || o->ndim != t->ndim || o->length != t->length ||
		    memcmp(o->shape, t->shape, sizeof(t->shape[0]) * t->ndim) != 0 ||
		    t->length % fkind_size(t->fkind) != 0)
			continue;
		if (file_mode) {
			if (o->member)
				continue;
			ds->old_off = o->offset;
		} else {
			if (base->offsets[j] == UINT64_MAX)
				continue;
			ds->old_off = base->offsets[j];
		}
		if (base->fd < 0)
			continue;
		ds->numeric = 1;
	}
	free(idx);
	pthread_once(&f16_once, f16_init);
	if ((p->scratch = malloc(DELTA_BUF)) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory for the delta");
	return delta_leads(p);
}

/* ------------------------------------------------------- begin / feed -- */

static int base_setup(cr_tpass *p)
{
	cr_manifest *m = p->m;

	if ((p->base_offsets = malloc((m->n ? m->n : 1) * sizeof(uint64_t))) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	/* One copy per span with a float tensor: tied weights share theirs. */
	for (size_t k = 0; k < p->n_spans; k++) {
		span *s = &p->spans[k];

		for (size_t i = s->first; i < s->first + s->n; i++) {
			if (m->tensors[p->order[i]].fkind == CR_FLOAT_NONE)
				continue;
			s->base_off = p->base_len;
			s->base_write = 1;
			p->base_len += s->length;
			break;
		}
	}
	for (size_t i = 0; i < m->n; i++)
		p->base_offsets[i] = m->tensors[i].fkind == CR_FLOAT_NONE
		                         ? UINT64_MAX
		                         : p->spans[p->span_of[i]].base_off;
	return 0;
}

int cr_tpass_begin(cr_tpass *p)
{
	cr_manifest *m = p->m;
	size_t *idx = NULL;
	int rc;

	if (p->begun)
		return cr_error_set(CR_ERROR, "%s: the pass began twice", p->name);
	p->begun = 1;
	/* Names are what deltas and replay match on: each must be unique. */
	if ((idx = sorted_indices(m, name_cmp)) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory for %zu tensors", m->n);
	for (size_t i = 1; i < m->n; i++) {
		if (strcmp(m->tensors[idx[i]].name, m->tensors[idx[i - 1]].name) == 0) {
			rc = cr_error_set(CR_EINVAL, "%s: tensor name '%s' appears twice", p->name,
			                  m->tensors[idx[i]].name);
			free(idx);
			return rc;
		}
	}
	free(idx);
	if ((rc = build_spans(p)) != 0)
		return rc;
	if (p->opts->base_out_fd >= 0 && (rc = base_setup(p)) != 0)
		return rc;
	if (p->opts->prev && (rc = delta_setup(p)) != 0)
		return rc;
	return file_setup(p);
}

/*
 * Hashing, and comparing with the previous checkpoint, may each cost at most
 * WORK_FACTOR times the bytes read plus WORK_SLACK: spans overlap only a
 * little in real checkpoints (a view and its base), and a hostile file that
 * lays thousands of overlapping ranges over one storage is refused instead
 * of hashing for hours.
 */
#define WORK_FACTOR 4u
#define WORK_SLACK  (64u * 1024 * 1024)

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
	return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

/* Bytes [pos, pos + n) of span k's member. */
static int deliver(cr_tpass *p, size_t k, uint64_t pos, const uint8_t *data, size_t n)
{
	span *s = &p->spans[k];
	const cr_tensor *t = &p->m->tensors[p->order[s->first]];
	uint64_t start = pos > s->offset ? pos : s->offset;
	uint64_t end = pos + n, tend = s->offset + s->length, want = s->offset + s->got;
	uint64_t read, limit;
	const uint8_t *d;
	size_t len;

	if (end > tend)
		end = tend;
	if (start >= end || end <= want)
		return 0; /* not this span's, or bytes it already has */
	if (start > want)
		return cr_error_set(CR_EINVAL,
		                    "%s: tensor '%s': bytes at %llu arrive before those at "
		                    "%llu",
		                    p->name, t->name, (unsigned long long)start,
		                    (unsigned long long)want);
	d = data + (want - pos);
	len = (size_t)(end - want);
	read = p->file_pos > p->fed ? p->file_pos : p->fed;
	limit = sat_add(sat_mul(read, WORK_FACTOR), WORK_SLACK);
	p->hashed = sat_add(p->hashed, len);
	p->compared = sat_add(p->compared, sat_mul(len, s->dn));
	if (p->hashed > limit || p->compared > limit)
		return cr_error_set(CR_EINVAL,
		                    "%s: too many overlapping tensors: %s them takes more than "
		                    "%u x the %llu bytes read + %u MiB (at tensor '%s')",
		                    p->name, p->hashed > limit ? "hashing" : "comparing",
		                    WORK_FACTOR, (unsigned long long)read, WORK_SLACK >> 20,
		                    t->name);
	if (!s->md && (s->md = md_new()) == NULL)
		return cr_error_set(CR_ECRYPTO, "SHA-256 context");
	if (EVP_DigestUpdate(s->md, d, len) != 1)
		return cr_error_set(CR_ECRYPTO, "SHA-256 failed");
	if (s->base_write) {
		size_t done = 0;

		while (done < len) {
			ssize_t r = pwrite(p->opts->base_out_fd, d + done, len - done,
			                   (off_t)(s->base_off + s->got + done));

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return cr_error_set_errno(CR_EIO, r < 0 ? errno : ENOSPC,
				                          "%s: writing the delta base", p->name);
			done += (size_t)r;
		}
	}
	for (size_t j = s->dfirst; j < s->dfirst + s->dn; j++)
		if (p->ds[p->dlead[j]].numeric)
			delta_update(p, p->dlead[j], d, len, s->got);
	s->got += len;
	if (s->got == s->length) {
		uint8_t digest[CR_SHA256_SIZE];
		int rc = md_final(s->md, digest);

		EVP_MD_CTX_free(s->md);
		s->md = NULL;
		s->done = 1;
		p->live[k + 1] = k;
		if (rc)
			return rc;
		for (size_t i = s->first; i < s->first + s->n; i++)
			memcpy(p->m->tensors[p->order[i]].sha256, digest, CR_SHA256_SIZE);
	}
	return 0;
}

int cr_tpass_feed(cr_tpass *p, const char *member, uint64_t pos, const void *data, size_t n)
{
	group *g;
	uint64_t end;
	size_t lo, hi;

	if (!p->begun)
		return cr_error_set(CR_ERROR, "%s: bytes fed before the pass began", p->name);
	if (n == 0 || (g = find_group(p, member)) == NULL)
		return 0;
	if (__builtin_add_overflow(pos, (uint64_t)n, &end))
		return cr_error_set(CR_EINVAL, "%s: position out of range", p->name);
	if (end > g->hwm) {
		p->fed = sat_add(p->fed, end - (pos > g->hwm ? pos : g->hwm));
		g->hwm = end;
	}
	/* hi: first span of the group starting at or after end. */
	lo = g->first;
	hi = g->first + g->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (p->spans[mid].offset < end)
			lo = mid + 1;
		else
			hi = mid;
	}
	/* Walk back over the spans still waiting for bytes while one may reach into [pos, end). */
	for (size_t x = live_find(p->live, lo); x > g->first && p->maxend[x - 1] > pos;
	     x = live_find(p->live, x - 1)) {
		int rc = deliver(p, x - 1, pos, data, n);

		if (rc)
			return rc;
	}
	return 0;
}

int cr_tpass_stream_fd(cr_tpass *p, int fd)
{
	uint64_t pos = 0;
	int rc;

	if (!p->begun)
		return cr_error_set(CR_ERROR, "%s: stream before the pass began", p->name);
	if (p->file_pos != 0)
		return cr_error_set(CR_ERROR, "%s: stream after bytes were handed over", p->name);
	if ((rc = file_setup(p)) != 0)
		return rc;
	if (!p->threaded && !p->buf && (p->buf = aligned_alloc(4096, CR_TPASS_BUF)) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory for a read buffer");
	while (pos < p->size) {
		size_t want = p->size - pos < CR_TPASS_BUF ? (size_t)(p->size - pos) : CR_TPASS_BUF;
		uint8_t *buf = p->threaded ? fhash_acquire(&p->fh, p->slot) : p->buf;

		if ((rc = cr_tpass_pread(p, fd, buf, want, pos)) != 0) {
			if (rc == CR_EINVAL)
				cr_error_set(
				    CR_EIO,
				    "%s: the file shrank while it was read (%llu of %llu bytes)",
				    p->name, (unsigned long long)pos, (unsigned long long)p->size);
			return rc == CR_EINVAL ? CR_EIO : rc;
		}
		if (p->threaded) {
			/* The thread hashes buf while this one routes it to the tensors. */
			fhash_submit(&p->fh, p->slot, want);
			p->slot ^= 1;
			p->file_pos += want;
		} else if ((rc = cr_tpass_file(p, buf, want)) != 0) {
			return rc;
		}
		if ((rc = cr_tpass_feed(p, NULL, pos, buf, want)) != 0)
			return rc;
		pos += want;
	}
	return 0;
}

/* --------------------------------------------------------- finishing -- */

static int hex_field(json_t *o, const char *key, const uint8_t *h)
{
	char hex[2 * CR_SHA256_SIZE + 1];

	cr_hex_encode(hex, h, CR_SHA256_SIZE);
	return json_object_set_new(o, key, json_string(hex));
}

int cr_manifest_json(const cr_manifest *m, json_t **out)
{
	json_t *o = NULL, *arr = NULL;
	int rc = CR_ENOMEM;

	*out = NULL;
	if ((o = json_object()) == NULL || (arr = json_array()) == NULL)
		goto done;
	if (json_object_set_new(o, "type", json_string("tensor_manifest")) ||
	    json_object_set_new(o, "v", json_integer(1)) ||
	    json_object_set_new(o, "format", json_string(m->format)) ||
	    json_object_set_new(o, "size", json_integer((json_int_t)m->file_size)))
		goto done;
	if (m->note && json_object_set_new(o, "note", json_string(m->note)))
		goto done;
	for (size_t i = 0; i < m->n; i++) {
		const cr_tensor *t = &m->tensors[i];
		json_t *e = json_object(), *shape = json_array();

		if (!e || !shape || json_array_append_new(arr, e)) {
			json_decref(e);
			json_decref(shape);
			goto done;
		}
		if (json_object_set_new(e, "shape", shape))
			goto done;
		for (uint32_t k = 0; k < t->ndim; k++)
			if (json_array_append_new(shape, json_integer((json_int_t)t->shape[k])))
				goto done;
		if (json_object_set_new(e, "name", json_string(t->name)) ||
		    json_object_set_new(e, "dtype", json_string(t->dtype)) ||
		    json_object_set_new(e, "offset", json_integer((json_int_t)t->offset)) ||
		    json_object_set_new(e, "length", json_integer((json_int_t)t->length)) ||
		    hex_field(e, "sha256", t->sha256) ||
		    (t->member && json_object_set_new(e, "member", json_string(t->member))))
			goto done; /* json_string() also refuses invalid UTF-8 */
	}
	if (json_object_set(o, "tensors", arr))
		goto done;
	*out = o;
	o = NULL;
	rc = 0;
done:
	if (rc)
		cr_error_set(rc, "out of memory (or a name not UTF-8) building a tensor manifest");
	json_decref(arr);
	json_decref(o);
	return rc;
}

static int manifest_digest(cr_manifest *m)
{
	json_t *j = NULL;
	cr_buf b = CR_BUF_INIT;
	int rc;

	if ((rc = cr_manifest_json(m, &j)) == 0 && (rc = cr_event_encode(j, &b)) == 0)
		cr_sha256(m->digest, b.ptr, b.len);
	json_decref(j);
	cr_buf_free(&b);
	return rc;
}

static int delta_finish(cr_tpass *p)
{
	const cr_manifest *old = p->opts->prev->manifest, *m = p->m;
	cr_delta *d;
	char *seen = NULL;
	double sum_d2 = 0, sum_old2 = 0;
	int rc = CR_ENOMEM;

	if ((d = calloc(1, sizeof(*d))) == NULL || (seen = calloc(old->n + 1, 1)) == NULL ||
	    (d->added = calloc(m->n + 1, sizeof(char *))) == NULL ||
	    (d->removed = calloc(old->n + 1, sizeof(char *))) == NULL ||
	    (d->changed = calloc(m->n + 1, sizeof(cr_tensor_delta))) == NULL)
		goto done;
	for (size_t i = 0; i < m->n; i++) {
		const cr_tensor *t = &m->tensors[i], *o;
		const dstate *ds = &p->ds[i], *r = &p->ds[ds->lead];

		if (ds->prev == SIZE_MAX) {
			d->added[d->n_added++] = t->name;
			continue;
		}
		seen[ds->prev] = 1;
		o = &old->tensors[ds->prev];
		if (r->numeric) {
			sum_d2 += r->sum_d2;
			sum_old2 += r->sum_old2;
		}
		if (memcmp(o->sha256, t->sha256, CR_SHA256_SIZE) == 0 &&
		    strcmp(o->dtype, t->dtype) == 0 && o->ndim == t->ndim &&
		    memcmp(o->shape, t->shape, sizeof(t->shape[0]) * t->ndim) == 0) {
			d->n_unchanged++;
			continue;
		}
		{
			cr_tensor_delta *c = &d->changed[d->n_changed++];

			c->name = t->name;
			c->changed = 1;
			memcpy(c->old_sha256, o->sha256, CR_SHA256_SIZE);
			memcpy(c->new_sha256, t->sha256, CR_SHA256_SIZE);
			if (r->numeric) {
				c->numeric = 1;
				c->l2 = sqrt(r->sum_d2);
				c->max_abs = r->max_abs;
				c->old_l2 = sqrt(r->sum_old2);
				c->nonfinite = r->nonfinite;
			}
		}
	}
	for (size_t j = 0; j < old->n; j++)
		if (!seen[j])
			d->removed[d->n_removed++] = old->tensors[j].name;
	d->l2 = sqrt(sum_d2);
	d->old_l2 = sqrt(sum_old2);
	p->delta = d;
	d = NULL;
	rc = 0;
done:
	if (rc)
		cr_error_set(rc, "out of memory for the delta");
	free(seen);
	cr_delta_free(d);
	return rc;
}

/* Finish the pass: every tensor complete, hashes final, digest and delta computed. */
static int tpass_end(cr_tpass *p)
{
	cr_manifest *m = p->m;
	int rc;

	if (p->ended)
		return 0;
	if (!p->begun && (rc = cr_tpass_begin(p)) != 0)
		return rc;
	p->ended = 1;
	if ((rc = file_finish(p)) != 0)
		return rc;
	if (p->file_pos != p->size)
		return cr_error_set(CR_ERROR, "%s: the %s reader handed over %llu of %llu bytes",
		                    p->name, m->format, (unsigned long long)p->file_pos,
		                    (unsigned long long)p->size);
	for (size_t i = 0; i < m->n; i++) {
		const cr_tensor *t = &m->tensors[i];
		const span *s = &p->spans[p->span_of[i]];

		if (t->length == 0) {
			cr_sha256(m->tensors[i].sha256, "", 0);
			continue;
		}
		if (!s->done)
			return cr_error_set(
			    CR_EINVAL,
			    "%s: tensor '%s': %llu of its %llu bytes are missing"
			    "%s%s",
			    p->name, t->name, (unsigned long long)(s->length - s->got),
			    (unsigned long long)t->length, t->member ? " from member " : "",
			    t->member ? t->member : "");
	}
	if (p->file_is_tensor && p->opts->want_file_sha256 && m->n == 1) {
		memcpy(m->file_sha256, m->tensors[0].sha256, CR_SHA256_SIZE);
		m->have_file_sha256 = 1;
	} else if (p->hash_file) {
		m->have_file_sha256 = 1;
	}
	if ((rc = manifest_digest(m)) != 0)
		return rc;
	if (p->opts->prev && (rc = delta_finish(p)) != 0)
		return rc;
	return 0;
}

/* -------------------------------------------------- the file fallback -- */

static int file_probe(const uint8_t *head, size_t n, const char *name)
{
	(void)head;
	(void)n;
	(void)name;
	return 1;
}

static int file_read(cr_tpass *p, int fd)
{
	cr_tensor t;
	int rc;

	memset(&t, 0, sizeof(t));
	t.name = (char *)FILE_TENSOR_NAME;
	snprintf(t.dtype, sizeof(t.dtype), "U8");
	t.ndim = 1;
	t.shape[0] = p->size;
	t.length = p->size;
	if ((rc = cr_tpass_add(p, &t)) != 0 || (rc = cr_tpass_begin(p)) != 0)
		return rc;
	return cr_tpass_stream_fd(p, fd);
}

static const cr_tensor_reader reader_file = {"file", file_probe, file_read};

static const cr_tensor_reader *const readers[] = {
    &cr_reader_safetensors,
    &cr_reader_gguf,
    &cr_reader_pytorch,
    &cr_reader_onnx,
};

/* ---------------------------------------------------------- the API -- */

static void tpass_free(cr_tpass *p)
{
	if (!p)
		return;
	if (p->fh.running)
		fhash_stop(&p->fh);
	free(p->fh.buf[0]);
	free(p->fh.buf[1]);
	if (p->file_md)
		EVP_MD_CTX_free(p->file_md);
	for (size_t k = 0; p->spans && k < p->n_spans; k++)
		if (p->spans[k].md)
			EVP_MD_CTX_free(p->spans[k].md);
	free(p->spans);
	free(p->span_of);
	free(p->live);
	free(p->dlead);
	free(p->order);
	free(p->maxend);
	free(p->groups);
	free(p->buf);
	free(p->ds);
	free(p->scratch);
	free(p->base_offsets);
	cr_delta_free(p->delta);
	cr_manifest_free(p->m);
	free(p);
}

/* The reader whose probe accepts the head, or NULL. */
static const cr_tensor_reader *probe_readers(const uint8_t *head, size_t n, const char *name)
{
	for (size_t i = 0; i < sizeof(readers) / sizeof(readers[0]); i++)
		if (readers[i]->probe(head, n, name))
			return readers[i];
	return NULL;
}

static const cr_tensor_reader *reader_named(const char *format)
{
	if (strcmp(format, "file") == 0)
		return &reader_file;
	for (size_t i = 0; i < sizeof(readers) / sizeof(readers[0]); i++)
		if (strcmp(readers[i]->format, format) == 0)
			return readers[i];
	return NULL;
}

int cr_manifest_read(int fd, const cr_manifest_opts *opts, cr_manifest **out, cr_delta **delta_out,
                     uint64_t **base_offsets_out)
{
	return cr_manifest_read_with(fd, opts, NULL, out, delta_out, base_offsets_out);
}

int cr_manifest_read_with(int fd, const cr_manifest_opts *opts, const cr_tensor_reader *reader,
                          cr_manifest **out, cr_delta **delta_out, uint64_t **base_offsets_out)
{
	static const cr_manifest_opts defaults = CR_MANIFEST_OPTS_INIT;
	cr_tpass *p = NULL;
	struct stat before, after;
	uint8_t head[PROBE_SIZE];
	size_t nhead;
	int rc;

	*out = NULL;
	if (delta_out)
		*delta_out = NULL;
	if (base_offsets_out)
		*base_offsets_out = NULL;
	if (!opts)
		opts = &defaults;
	if ((p = calloc(1, sizeof(*p))) == NULL || (p->m = calloc(1, sizeof(*p->m))) == NULL) {
		free(p);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	p->fd = fd;
	p->opts = opts;
	snprintf(p->fdname, sizeof(p->fdname), "<fd %d>", fd);
	p->name = opts->name ? opts->name : p->fdname;
	if (fstat(fd, &before) < 0) {
		rc = cr_error_set_errno(CR_EIO, errno, "%s: fstat", p->name);
		goto done;
	}
	if (!S_ISREG(before.st_mode)) {
		rc = cr_error_set(CR_EINVAL, "%s: not a regular file", p->name);
		goto done;
	}
	p->size = (uint64_t)before.st_size;
	p->m->file_size = p->size;
	if (p->size > (uint64_t)CR_EVENT_INT_MAX) {
		rc = cr_error_set(CR_EINVAL, "%s: file too large", p->name);
		goto done;
	}
	nhead = p->size < PROBE_SIZE ? (size_t)p->size : PROBE_SIZE;
	if ((rc = cr_tpass_pread(p, fd, head, nhead, 0)) != 0)
		goto done;
	if (reader) {
		/* the caller's choice */
	} else if (opts->format) {
		if ((reader = reader_named(opts->format)) == NULL) {
			rc =
			    cr_error_set(CR_EINVAL, "unknown checkpoint format '%s'", opts->format);
			goto done;
		}
	} else {
		reader = probe_readers(head, nhead, opts->name);
	}
	if (!reader) {
		reader = &reader_file;
		if (nhead >= 4 && memcmp(head, "GGUF", 4) == 0)
			rc = cr_tpass_note(
			    p,
			    "GGUF version %u is not read (only 2 and 3): the whole file "
			    "stands in for its tensors",
			    (unsigned)(head[4] | head[5] << 8 | head[6] << 16 |
			               (unsigned)head[7] << 24));
		else
			rc = cr_tpass_note(
			    p, "not a checkpoint format cleanroom reads (safetensors, "
			       "PyTorch zip, GGUF v2/v3, ONNX): the whole file stands in "
			       "for its tensors");
		if (rc)
			goto done;
	}
	snprintf(p->m->format, sizeof(p->m->format), "%s", reader->format);
	p->file_is_tensor = reader == &reader_file;
	p->hash_file = opts->want_file_sha256 && !p->file_is_tensor;
	if ((rc = reader->read(p, fd)) != 0 || (rc = tpass_end(p)) != 0)
		goto done;
	if (fstat(fd, &after) < 0) {
		rc = cr_error_set_errno(CR_EIO, errno, "%s: fstat", p->name);
		goto done;
	}
	if (after.st_size != before.st_size || after.st_mtim.tv_sec != before.st_mtim.tv_sec ||
	    after.st_mtim.tv_nsec != before.st_mtim.tv_nsec) {
		rc = cr_error_set(CR_EIO, "%s: the file changed while it was read", p->name);
		goto done;
	}
	*out = p->m;
	p->m = NULL;
	if (delta_out) {
		*delta_out = p->delta;
		p->delta = NULL;
	}
	if (base_offsets_out && opts->base_out_fd >= 0) {
		*base_offsets_out = p->base_offsets;
		p->base_offsets = NULL;
	}
done:
	/* A delta borrows from the manifest: free it while the manifest lives. */
	if (p->m) {
		cr_delta_free(p->delta);
		p->delta = NULL;
	}
	tpass_free(p);
	return rc;
}

int cr_tpass_end(cr_tpass *p)
{
	return tpass_end(p);
}

void cr_manifest_free(cr_manifest *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++) {
		free(m->tensors[i].name);
		free(m->tensors[i].member);
	}
	free(m->tensors);
	free(m->note);
	free(m);
}

void cr_delta_free(cr_delta *d)
{
	if (!d)
		return;
	free(d->added);
	free(d->removed);
	free(d->changed);
	free(d);
}

/* ------------------------------------------------------ delta of files -- */

/* An unlinked temporary file for a delta base. */
static int temp_fd(void)
{
	const char *dir = getenv("TMPDIR");
	char path[4096];
	int fd;

	if (!dir || !*dir)
		dir = "/tmp";
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd >= 0)
		return fd;
	snprintf(path, sizeof(path), "%s/cleanroom-base-XXXXXX", dir);
	if ((fd = mkostemp(path, O_CLOEXEC)) < 0)
		return cr_error_set_errno(CR_EIO, errno, "temporary file in %s", dir);
	unlink(path);
	return fd;
}

int cr_delta_files(int old_fd, const char *old_name, int new_fd, const char *new_name,
                   cr_manifest **old_m, cr_manifest **new_m, cr_delta **out)
{
	cr_manifest_opts o = CR_MANIFEST_OPTS_INIT;
	cr_delta_base base;
	uint64_t *offsets = NULL;
	cr_manifest *a = NULL, *b = NULL;
	int base_fd = -1, in_place, rc;

	*old_m = NULL;
	*new_m = NULL;
	*out = NULL;
	/*
	 * Formats whose tensors lie at file offsets are compared in place; the
	 * others (members of a container) keep the old floats in a temporary base.
	 */
	{
		uint8_t head[PROBE_SIZE];
		ssize_t n = pread(old_fd, head, sizeof(head), 0);
		const cr_tensor_reader *r = n > 0 ? probe_readers(head, (size_t)n, old_name) : NULL;

		in_place = !r || r == &cr_reader_safetensors || r == &cr_reader_gguf;
	}
	o.name = old_name;
	if (!in_place) {
		if ((base_fd = temp_fd()) < 0)
			return base_fd;
		o.base_out_fd = base_fd;
	}
	if ((rc = cr_manifest_read(old_fd, &o, &a, NULL, &offsets)) != 0)
		goto done;
	for (size_t i = 0; i < a->n && in_place; i++)
		if (a->tensors[i].member)
			in_place =
			    0; /* cannot happen for those formats; numeric deltas then skip */
	memset(&base, 0, sizeof(base));
	base.manifest = a;
	base.fd = in_place ? old_fd : base_fd;
	base.base_is_file = in_place;
	base.offsets = in_place ? NULL : offsets;
	o = (cr_manifest_opts)CR_MANIFEST_OPTS_INIT;
	o.name = new_name;
	o.prev = &base;
	if ((rc = cr_manifest_read(new_fd, &o, &b, out, NULL)) != 0)
		goto done;
	*old_m = a;
	*new_m = b;
	a = b = NULL;
done:
	free(offsets);
	cr_manifest_free(a);
	cr_manifest_free(b);
	if (base_fd >= 0)
		close(base_fd);
	return rc;
}
