/*
 * Member manifests of data shards (tar, tar.gz/zst/bz2, zip) through
 * libarchive, in one streaming pass over the file.
 *
 * The read callback preads the file in order from offset 0 and hashes every
 * raw byte as it hands it to libarchive, so the file's SHA-256 costs no
 * second read; once libarchive reports the end of the archive, whatever it
 * did not ask for (tar padding, a zip's central directory) is read and
 * hashed too. Members' bytes are hashed as libarchive decompresses them;
 * sparse tar members are hashed as an extractor would write them (holes as
 * zeros).
 *
 * Limits (cr_shard_opts): entries, name length, stored name bytes, total
 * uncompressed bytes, and the ratio of uncompressed bytes to raw bytes read
 * so far, checked as bytes arrive so a compression bomb stops early.
 *
 * What is listed: regular files (name, size, SHA-256) and links (name and
 * target, no bytes); directories are skipped (they carry no bytes) and other
 * entries (devices, fifos) are counted in n_skipped. Names are kept as the
 * archive stores them; a name met twice is listed twice and the later one
 * flagged. A zip is read from its local headers in order, as a streaming
 * consumer of the shard sees it (the central directory is hashed, not
 * parsed).
 *
 * libarchive's errors are translated in one place, fail().
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <openssl/evp.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/shards.h"
#include "util/buf.h"
#include "util/codec.h"

/* Raw bytes handed to libarchive at a time. */
#define READ_BLOCK (1u << 20)
/* Member names and link targets kept in memory, all members together. */
#define MAX_NAME_BYTES (256ull << 20)

typedef struct reader {
	int fd;
	const char *name;
	cr_shard_opts lim;
	uint64_t raw; /* raw bytes read and hashed so far */
	uint8_t *buf;
	EVP_MD_CTX *file_md;
	int read_errno; /* a read error met in the callback */
	int hash_failed;
	uint64_t total; /* uncompressed member bytes so far */
	uint64_t name_bytes;
	size_t cap;
	cr_shard *s;
} reader;

static int fail(reader *r, struct archive *a, const char *what)
{
	const char *msg = a ? archive_error_string(a) : NULL;

	if (r->read_errno)
		return cr_error_set_errno(CR_EIO, r->read_errno, "%s: reading", r->name);
	if (r->hash_failed)
		return cr_error_set(CR_ECRYPTO, "%s: SHA-256 failed", r->name);
	return cr_error_set(CR_EINVAL, "%s: not a readable shard: %s%s%s", r->name, what,
	                    msg ? ": " : "", msg ? msg : "");
}

static la_ssize_t read_cb(struct archive *a, void *ctx, const void **out)
{
	reader *r = ctx;
	ssize_t n;

	do
		n = pread(r->fd, r->buf, READ_BLOCK, (off_t)r->raw);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		r->read_errno = errno;
		archive_set_error(a, errno, "read error");
		return -1;
	}
	if (n > 0 && EVP_DigestUpdate(r->file_md, r->buf, (size_t)n) != 1) {
		r->hash_failed = 1;
		archive_set_error(a, EINVAL, "SHA-256 failed");
		return -1;
	}
	r->raw += (uint64_t)n;
	*out = r->buf;
	return n;
}

/* Count n more uncompressed bytes against the limits. */
static int account(reader *r, uint64_t n, size_t member)
{
	uint64_t ratio_cap;

	if (__builtin_add_overflow(r->total, n, &r->total) || r->total > r->lim.max_total)
		return cr_error_set(CR_EINVAL,
		                    "%s: member %zu takes the archive past %llu "
		                    "uncompressed bytes (the limit)",
		                    r->name, member, (unsigned long long)r->lim.max_total);
	if (__builtin_mul_overflow(r->raw ? r->raw : 1, r->lim.max_ratio, &ratio_cap))
		ratio_cap = UINT64_MAX;
	if (r->total > r->lim.ratio_floor && r->total > ratio_cap)
		return cr_error_set(CR_EINVAL,
		                    "%s: member %zu: %llu uncompressed bytes from %llu "
		                    "bytes read, beyond %llu:1 (a compression bomb?)",
		                    r->name, member, (unsigned long long)r->total,
		                    (unsigned long long)r->raw,
		                    (unsigned long long)r->lim.max_ratio);
	return 0;
}

static int hash_zeros(reader *r, EVP_MD_CTX *md, uint64_t n, size_t member)
{
	static const uint8_t zeros[65536];
	int rc;

	if ((rc = account(r, n, member)) != 0)
		return rc;
	while (n) {
		size_t k = n < sizeof(zeros) ? (size_t)n : sizeof(zeros);

		if (EVP_DigestUpdate(md, zeros, k) != 1)
			return cr_error_set(CR_ECRYPTO, "SHA-256 failed");
		n -= k;
	}
	return 0;
}

/* Hash the current entry's bytes into m. */
static int hash_member(reader *r, struct archive *a, struct archive_entry *e, cr_shard_member *m,
                       size_t idx)
{
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	uint64_t pos = 0;
	unsigned int hlen;
	int rc = 0;

	if (!md || EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1) {
		rc = cr_error_set(CR_ECRYPTO, "SHA-256 context");
		goto done;
	}
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int ar = archive_read_data_block(a, &buf, &len, &off);

		if (ar == ARCHIVE_EOF)
			break;
		/* RETRY too: a damaged block libarchive would skip is not a member's bytes. */
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
			char what[64];

			snprintf(what, sizeof(what), "member %zu", idx);
			rc = fail(r, a, what);
			goto done;
		}
		if (off < 0 || (uint64_t)off < pos) {
			rc = cr_error_set(CR_EINVAL, "%s: member %zu: data blocks out of order",
			                  r->name, idx);
			goto done;
		}
		/* A hole of a sparse member reads as zeros. */
		if ((uint64_t)off > pos && (rc = hash_zeros(r, md, (uint64_t)off - pos, idx)) != 0)
			goto done;
		pos = (uint64_t)off;
		if ((rc = account(r, len, idx)) != 0)
			goto done;
		if (len && EVP_DigestUpdate(md, buf, len) != 1) {
			rc = cr_error_set(CR_ECRYPTO, "SHA-256 failed");
			goto done;
		}
		pos += len;
	}
	/* A sparse member may end in a hole. */
	if (archive_entry_sparse_count(e) > 0 && archive_entry_size_is_set(e) &&
	    archive_entry_size(e) > 0 && (uint64_t)archive_entry_size(e) > pos) {
		if ((rc = hash_zeros(r, md, (uint64_t)archive_entry_size(e) - pos, idx)) != 0)
			goto done;
		pos = (uint64_t)archive_entry_size(e);
	}
	if (EVP_DigestFinal_ex(md, m->sha256, &hlen) != 1) {
		rc = cr_error_set(CR_ECRYPTO, "SHA-256 failed");
		goto done;
	}
	m->size = pos;
done:
	EVP_MD_CTX_free(md);
	return rc;
}

static int copy_name(reader *r, const char *src, size_t idx, const char *what, char **out,
                     size_t *out_len)
{
	size_t n = strnlen(src, r->lim.max_name + 1);

	if (n > r->lim.max_name)
		return cr_error_set(CR_EINVAL, "%s: member %zu: %s longer than %llu bytes", r->name,
		                    idx, what, (unsigned long long)r->lim.max_name);
	r->name_bytes += n;
	if (r->name_bytes > MAX_NAME_BYTES)
		return cr_error_set(CR_EINVAL, "%s: member names take more than %llu bytes",
		                    r->name, (unsigned long long)MAX_NAME_BYTES);
	if (!(*out = strndup(src, n)))
		return cr_error_set(CR_ENOMEM, "out of memory");
	*out_len = n;
	return 0;
}

static cr_shard_member *new_member(reader *r)
{
	cr_shard *s = r->s;

	if (s->n == r->cap) {
		size_t cap = r->cap ? r->cap * 2 : 64;
		cr_shard_member *m = realloc(s->members, cap * sizeof(*m));

		if (!m)
			return NULL;
		s->members = m;
		r->cap = cap;
	}
	memset(&s->members[s->n], 0, sizeof(s->members[0]));
	return &s->members[s->n++];
}

/* The format name from libarchive's format and filters, or an error. */
static int set_format(reader *r, struct archive *a)
{
	const char *base, *suffix = NULL;
	int nfilters = archive_filter_count(a);

	switch (archive_format(a) & ARCHIVE_FORMAT_BASE_MASK) {
	case ARCHIVE_FORMAT_TAR: base = "tar"; break;
	case ARCHIVE_FORMAT_ZIP: base = "zip"; break;
	default: return cr_error_set(CR_EINVAL, "%s: not a tar or zip archive", r->name);
	}
	for (int i = 0; i < nfilters; i++) {
		const char *sfx;

		switch (archive_filter_code(a, i)) {
		case ARCHIVE_FILTER_NONE: continue;
		case ARCHIVE_FILTER_GZIP: sfx = "gz"; break;
		case ARCHIVE_FILTER_ZSTD: sfx = "zst"; break;
		case ARCHIVE_FILTER_BZIP2: sfx = "bz2"; break;
		default:
			return cr_error_set(CR_EINVAL, "%s: compressed with %s, not a shard format",
			                    r->name, archive_filter_name(a, i));
		}
		if (suffix)
			return cr_error_set(CR_EINVAL, "%s: compressed twice (%s inside %s)",
			                    r->name, suffix, sfx);
		suffix = sfx;
	}
	if (suffix && strcmp(base, "zip") == 0)
		return cr_error_set(CR_EINVAL, "%s: a zip inside %s is not a shard format", r->name,
		                    suffix);
	snprintf(r->s->format, sizeof(r->s->format), "%s%s%s", base, suffix ? "." : "",
	         suffix ? suffix : "");
	return 0;
}

/* Flag every member whose name an earlier member already has. */
static int flag_duplicates(cr_shard *s);

static int read_entries(reader *r, struct archive *a)
{
	struct archive_entry *e;
	uint64_t entries = 0;
	int rc;

	for (;;) {
		int ar = archive_read_next_header(a, &e);
		size_t idx = r->s->n;
		const char *path, *link;
		cr_shard_member *m;
		int type;

		if (ar == ARCHIVE_EOF)
			break;
		if (ar != ARCHIVE_OK && ar != ARCHIVE_WARN) {
			char what[64];

			snprintf(what, sizeof(what), "entry %llu", (unsigned long long)entries);
			return fail(r, a, what);
		}
		if (entries == 0 && (rc = set_format(r, a)) != 0)
			return rc;
		if (++entries > r->lim.max_members)
			return cr_error_set(CR_EINVAL, "%s: more than %llu entries", r->name,
			                    (unsigned long long)r->lim.max_members);
		type = (int)archive_entry_filetype(e);
		if (type == AE_IFDIR)
			continue;
		link = archive_entry_hardlink(e);
		if (!link && type == AE_IFLNK && !(link = archive_entry_symlink(e)))
			link = archive_entry_symlink_utf8(e);
		if (!link && type != AE_IFREG) {
			r->s->n_skipped++;
			continue;
		}
		/* The name as stored; the UTF-8 form only when the locale cannot hold it. */
		if (!(path = archive_entry_pathname(e)) && !(path = archive_entry_pathname_utf8(e)))
			return cr_error_set(CR_EINVAL, "%s: entry %llu has no readable name",
			                    r->name, (unsigned long long)entries - 1);
		if (archive_entry_is_encrypted(e))
			return cr_error_set(CR_EINVAL, "%s: member %zu is encrypted", r->name, idx);
		if (!(m = new_member(r)))
			return cr_error_set(CR_ENOMEM, "out of memory for %zu members", idx + 1);
		if ((rc = copy_name(r, path, idx, "name", &m->name, &m->name_len)) != 0)
			return rc;
		if (link) {
			m->kind = archive_entry_hardlink(e) ? CR_SHARD_HARDLINK : CR_SHARD_SYMLINK;
			if ((rc = copy_name(r, link, idx, "link target", &m->target,
			                    &m->target_len)) != 0)
				return rc;
			continue;
		}
		m->kind = CR_SHARD_FILE;
		if ((rc = hash_member(r, a, e, m, idx)) != 0)
			return rc;
		r->s->total_size += m->size;
	}
	return flag_duplicates(r->s);
}

static const cr_shard *dup_s;

static int dup_cmp(const void *x, const void *y)
{
	const cr_shard_member *a = &dup_s->members[*(const size_t *)x];
	const cr_shard_member *b = &dup_s->members[*(const size_t *)y];
	size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
	int c = memcmp(a->name, b->name, n);

	if (c)
		return c;
	if (a->name_len != b->name_len)
		return a->name_len < b->name_len ? -1 : 1;
	return *(const size_t *)x < *(const size_t *)y ? -1 : 1;
}

static int flag_duplicates(cr_shard *s)
{
	/* qsort takes no context in C11: the static is only used under this lock. */
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	size_t *idx;

	if (s->n < 2)
		return 0;
	if (!(idx = malloc(s->n * sizeof(*idx))))
		return cr_error_set(CR_ENOMEM, "out of memory");
	for (size_t i = 0; i < s->n; i++)
		idx[i] = i;
	pthread_mutex_lock(&lock);
	dup_s = s;
	qsort(idx, s->n, sizeof(*idx), dup_cmp);
	dup_s = NULL;
	pthread_mutex_unlock(&lock);
	for (size_t i = 1; i < s->n; i++) {
		const cr_shard_member *a = &s->members[idx[i - 1]];
		cr_shard_member *b = &s->members[idx[i]];

		if (a->name_len == b->name_len && memcmp(a->name, b->name, a->name_len) == 0) {
			b->duplicate = 1;
			s->n_duplicates++;
		}
	}
	free(idx);
	return 0;
}

static int digest(cr_shard *s)
{
	json_t *j = NULL;
	cr_buf b = CR_BUF_INIT;
	int rc;

	if ((rc = cr_shard_json(s, &j)) == 0 && (rc = cr_event_encode(j, &b)) == 0)
		cr_sha256(s->digest, b.ptr, b.len);
	json_decref(j);
	cr_buf_free(&b);
	return rc;
}

int cr_shard_read_ext(int fd, const char *name, const cr_shard_opts *opts, cr_shard **out)
{
	struct archive *a = NULL;
	struct stat before, after;
	reader r;
	unsigned int hlen;
	int rc = 0;

	*out = NULL;
	memset(&r, 0, sizeof(r));
	r.fd = fd;
	r.name = name ? name : "shard";
	if (opts)
		r.lim = *opts;
	if (!r.lim.max_members)
		r.lim.max_members = CR_SHARD_MAX_MEMBERS;
	if (!r.lim.max_name)
		r.lim.max_name = CR_SHARD_MAX_NAME;
	if (!r.lim.max_total)
		r.lim.max_total = CR_SHARD_MAX_TOTAL;
	if (!r.lim.max_ratio)
		r.lim.max_ratio = CR_SHARD_MAX_RATIO;
	if (!r.lim.ratio_floor)
		r.lim.ratio_floor = CR_SHARD_RATIO_FLOOR;
	if (fstat(fd, &before) != 0)
		return cr_error_set_errno(CR_EIO, errno, "%s: fstat", r.name);
	if (!S_ISREG(before.st_mode))
		return cr_error_set(CR_EINVAL, "%s: not a regular file", r.name);
	if (before.st_size == 0)
		return cr_error_set(CR_EINVAL, "%s: not a readable shard: empty file", r.name);
	if (!(r.s = calloc(1, sizeof(*r.s))) || !(r.buf = malloc(READ_BLOCK)) ||
	    !(r.file_md = EVP_MD_CTX_new())) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto done;
	}
	if (EVP_DigestInit_ex(r.file_md, EVP_sha256(), NULL) != 1) {
		rc = cr_error_set(CR_ECRYPTO, "SHA-256 context");
		goto done;
	}
	if (!(a = archive_read_new()) || archive_read_support_filter_gzip(a) != ARCHIVE_OK ||
	    archive_read_support_filter_zstd(a) != ARCHIVE_OK ||
	    archive_read_support_filter_bzip2(a) != ARCHIVE_OK ||
	    archive_read_support_format_tar(a) != ARCHIVE_OK ||
	    archive_read_support_format_zip_streamable(a) != ARCHIVE_OK) {
		rc = cr_error_set(CR_EARCHIVE, "libarchive: cannot set up a reader%s%s",
		                  a ? ": " : "",
		                  a && archive_error_string(a) ? archive_error_string(a) : "");
		goto done;
	}
	if (archive_read_set_read_callback(a, read_cb) != ARCHIVE_OK ||
	    archive_read_set_callback_data(a, &r) != ARCHIVE_OK ||
	    archive_read_open1(a) != ARCHIVE_OK) {
		rc = fail(&r, a, "not a tar or zip archive");
		goto done;
	}
	if ((rc = read_entries(&r, a)) != 0)
		goto done;
	/* What libarchive did not ask for still belongs to the file's hash. */
	for (;;) {
		const void *unused;
		la_ssize_t n = read_cb(a, &r, &unused);

		if (n < 0) {
			rc = fail(&r, a, "reading the end");
			goto done;
		}
		if (n == 0)
			break;
	}
	if (EVP_DigestFinal_ex(r.file_md, r.s->file_sha256, &hlen) != 1) {
		rc = cr_error_set(CR_ECRYPTO, "SHA-256 failed");
		goto done;
	}
	if (fstat(fd, &after) != 0) {
		rc = cr_error_set_errno(CR_EIO, errno, "%s: fstat", r.name);
		goto done;
	}
	if (after.st_size != before.st_size || r.raw != (uint64_t)before.st_size ||
	    after.st_mtim.tv_sec != before.st_mtim.tv_sec ||
	    after.st_mtim.tv_nsec != before.st_mtim.tv_nsec) {
		rc = cr_error_set(CR_EIO, "%s: the file changed while it was read", r.name);
		goto done;
	}
	r.s->file_size = r.raw;
	if ((rc = digest(r.s)) != 0)
		goto done;
	*out = r.s;
	r.s = NULL;
done:
	if (a)
		archive_read_free(a);
	EVP_MD_CTX_free(r.file_md);
	free(r.buf);
	cr_shard_free(r.s);
	return rc;
}

int cr_shard_read(int fd, const char *name, cr_shard **out)
{
	return cr_shard_read_ext(fd, name, NULL, out);
}

void cr_shard_free(cr_shard *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->n; i++) {
		free(s->members[i].name);
		free(s->members[i].target);
	}
	free(s->members);
	free(s);
}

/* ------------------------------------------------------------------ JSON -- */

static int member_json(const cr_shard_member *m, json_t **out)
{
	json_t *o = json_object();
	int rc;

	*out = NULL;
	if (!o)
		return CR_ENOMEM;
	if ((rc = cr_event_set_path(o, "name", m->name, m->name_len)) != 0)
		goto fail;
	if (m->kind == CR_SHARD_FILE) {
		if ((rc = cr_event_set_hex(o, "sha256", m->sha256, CR_SHA256_SIZE)) != 0 ||
		    (rc = cr_event_set_int(o, "size", (int64_t)m->size)) != 0)
			goto fail;
	} else if ((rc = cr_event_set_str(
	                o, "kind", m->kind == CR_SHARD_SYMLINK ? "symlink" : "hardlink")) != 0 ||
	           (rc = cr_event_set_path(o, "target", m->target, m->target_len)) != 0) {
		goto fail;
	}
	if (m->duplicate && json_object_set_new(o, "duplicate", json_true()) != 0) {
		rc = CR_ENOMEM;
		goto fail;
	}
	*out = o;
	return 0;
fail:
	json_decref(o);
	return rc;
}

int cr_shard_json(const cr_shard *s, json_t **out)
{
	json_t *o = NULL, *arr = NULL;
	int rc;

	*out = NULL;
	if ((rc = cr_event_new(&o, "shard_manifest")) != 0)
		return rc;
	if (!(arr = json_array()) || json_object_set_new(o, "members", arr) != 0) {
		rc = cr_error_set(CR_ENOMEM, "out of memory");
		goto fail;
	}
	if ((rc = cr_event_set_str(o, "format", s->format)) != 0 ||
	    (rc = cr_event_set_hex(o, "sha256", s->file_sha256, CR_SHA256_SIZE)) != 0 ||
	    (rc = cr_event_set_int(o, "size", (int64_t)s->file_size)) != 0 ||
	    (s->n_skipped && (rc = cr_event_set_int(o, "skipped", (int64_t)s->n_skipped)) != 0))
		goto fail;
	for (size_t i = 0; i < s->n; i++) {
		json_t *m;

		if ((rc = member_json(&s->members[i], &m)) != 0 ||
		    json_array_append_new(arr, m) != 0) {
			if (rc == 0 || rc == CR_ENOMEM)
				rc = cr_error_set(CR_ENOMEM, "out of memory");
			goto fail;
		}
	}
	*out = o;
	return 0;
fail:
	json_decref(o);
	return rc;
}

/* ----------------------------------------------------------------- probe -- */

/* A tar header block: its checksum (unsigned, or signed as old tars wrote it) matches. */
static int tar_header(const uint8_t *h)
{
	unsigned long want = 0, usum = 0;
	long ssum = 0;
	int digits = 0, i;

	for (i = 148; i < 156 && (h[i] == ' ' || h[i] == 0); i++)
		;
	for (; i < 156 && h[i] >= '0' && h[i] <= '7'; i++, digits++)
		want = want * 8 + (unsigned long)(h[i] - '0');
	if (!digits)
		return 0;
	for (; i < 156; i++)
		if (h[i] != ' ' && h[i] != 0)
			return 0;
	for (i = 0; i < 512; i++) {
		uint8_t c = i >= 148 && i < 156 ? ' ' : h[i];

		usum += c;
		ssum += (signed char)c;
	}
	return want == usum || (long)want == ssum;
}

static int all_zero(const uint8_t *h, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (h[i])
			return 0;
	return 1;
}

static int has_suffix(const char *name, const char *const *suffixes)
{
	size_t n = name ? strlen(name) : 0;

	for (; *suffixes; suffixes++) {
		size_t k = strlen(*suffixes);

		if (n >= k && strcasecmp(name + n - k, *suffixes) == 0)
			return 1;
	}
	return 0;
}

/* The first 512 bytes of a compressed head, inflated in memory: -1 when unavailable. */
static int inflate_head(const uint8_t *head, size_t n, uint8_t out[512])
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	size_t got = 0;
	int ok = -1;

	if (!a)
		return -1;
	archive_read_support_filter_gzip(a);
	archive_read_support_filter_zstd(a);
	archive_read_support_filter_bzip2(a);
	archive_read_support_format_raw(a);
	if (archive_read_open_memory(a, head, n) == ARCHIVE_OK &&
	    archive_read_next_header(a, &e) == ARCHIVE_OK && archive_filter_count(a) > 1) {
		while (got < 512) {
			la_ssize_t k = archive_read_data(a, out + got, 512 - got);

			if (k <= 0)
				break;
			got += (size_t)k;
		}
		if (got == 512)
			ok = 0;
	}
	archive_read_free(a);
	return ok;
}

int cr_shard_probe(const uint8_t *head, size_t n, const char *name)
{
	static const char *const tar_names[] = {".tar", NULL};
	static const char *const ctar_names[] = {".tar.gz",  ".tgz",  ".tar.zst", ".tzst",
	                                         ".tar.bz2", ".tbz2", ".tbz",     NULL};
	uint8_t block[512];
	int compressed;

	if (n >= 4 && head[0] == 'P' && head[1] == 'K' &&
	    ((head[2] == 3 && head[3] == 4) || (head[2] == 5 && head[3] == 6)))
		return 1;
	if (n >= 512 && tar_header(head))
		return 1;
	/* An empty tar is zero blocks: only its name tells it from any file of zeros. */
	if (n >= 512 && all_zero(head, 512))
		return has_suffix(name, tar_names);
	compressed = (n >= 2 && head[0] == 0x1f && head[1] == 0x8b) ||
	             (n >= 4 && memcmp(head, "\x28\xb5\x2f\xfd", 4) == 0) ||
	             (n >= 3 && memcmp(head, "BZh", 3) == 0);
	if (!compressed)
		return 0;
	if (inflate_head(head, n, block) == 0)
		return tar_header(block) || (all_zero(block, 512) && has_suffix(name, ctar_names));
	/* Too little of the stream to inflate a block (bzip2 works in large blocks). */
	return has_suffix(name, ctar_names);
}
