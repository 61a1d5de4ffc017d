/*
 * The checkpoint worker (see ckpt_worker.h).
 *
 * Checkpoints are few (one per epoch or per N steps) and each delta needs
 * the one before it, so one thread takes them strictly in submission order.
 * Results go back through a mutex-guarded list and an eventfd the
 * recorder's loop polls, like the hash pool's.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/shards.h"
#include "cleanroom/tensors.h"
#include "recorder/ckpt_worker.h"
#include "util/buf.h"
#include "util/thread.h"

typedef struct cjob {
	struct cjob *next;
	int shard;
	uint64_t tag;
	char *path;
	int fd;
} cjob;

typedef struct cdone {
	struct cdone *next;
	cr_ckpt_result r;
} cdone;

/* The previous checkpoint's manifest and its float tensors' bytes. */
typedef struct base {
	cr_manifest *m;
	int fd;
	uint64_t *offsets;
	uint64_t tag;
} base;

struct cr_ckpt_worker {
	pthread_t *threads;
	unsigned n_threads;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	cjob *head, **tail;
	cdone *done, **done_tail;
	size_t busy;
	int stop;
	int nice;
	int efd;
	char *tmpdir;
	int want_delta;
	base prev;
};

static void base_clear(base *b)
{
	cr_manifest_free(b->m);
	free(b->offsets);
	if (b->fd >= 0)
		close(b->fd);
	memset(b, 0, sizeof(*b));
	b->fd = -1;
}

/* An unlinked, private file in tmpdir for a base. */
static int base_file(const char *dir)
{
	char tmpl[4096];
	int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL))
		return fd;
	if ((size_t)snprintf(tmpl, sizeof(tmpl), "%s/.ckpt-base-XXXXXX", dir) >= sizeof(tmpl))
		return -1;
	if ((fd = mkostemp(tmpl, O_CLOEXEC)) >= 0)
		unlink(tmpl);
	return fd;
}

static int same_stat(const struct stat *a, const struct stat *b)
{
	return a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/* Whole-file hash when no manifest could be made. */
static int hash_only(cjob *j, cr_ckpt_result *r)
{
	uint64_t len = 0;
	int rc;

	if (lseek(j->fd, 0, SEEK_SET) < 0)
		return cr_error_set_errno(CR_EIO, errno, "seek %s", j->path);
	rc = cr_hash_fd(j->fd, r->sha256, &len);
	if (!rc && len != r->id.size)
		rc = cr_error_set(CR_HASH_CHANGED, "%s changed while it was read", j->path);
	return rc;
}

/*
 * Events are at most CR_EVENT_MAX_SIZE bytes; a manifest that would not fit
 * beside the rest of its event is left out, and the event says so (its
 * digest still names it).
 */
#define MANIFEST_MAX (CR_EVENT_MAX_SIZE / 2)

int cr_manifest_too_large(json_t **j, const char *what, size_t count, char *why, size_t why_len)
{
	cr_buf enc = CR_BUF_INIT;
	int big;

	if (cr_event_encode(*j, &enc) != 0) {
		cr_error_clear();
		cr_buf_free(&enc);
		return 0;
	}
	big = enc.len > MANIFEST_MAX;
	if (big) {
		snprintf(why, why_len,
		         "the %s (%zu entries, %zu bytes) is over the %u-byte limit of an event's"
		         " manifest; its digest is kept",
		         what, count, enc.len, (unsigned)MANIFEST_MAX);
		json_decref(*j);
		*j = NULL;
	}
	cr_buf_free(&enc);
	return big;
}

static int too_large(json_t **j, cr_ckpt_result *r, const char *what, size_t count)
{
	int big = cr_manifest_too_large(j, what, count, r->manifest_error, sizeof(r->manifest_error));

	if (big)
		r->manifest_dropped = 1;
	return big;
}

static void run_job(cr_ckpt_worker *w, cjob *j, cr_ckpt_result *r)
{
	cr_manifest_opts o;
	cr_manifest *m = NULL;
	cr_delta *d = NULL;
	uint64_t *offsets = NULL;
	cr_delta_base pb;
	struct stat before, after;
	int bfd = -1, rc;

	memset(r, 0, sizeof(*r));
	r->tag = j->tag;
	r->base_tag = UINT64_MAX;
	if (fstat(j->fd, &before) < 0) {
		r->rc = cr_error_set_errno(CR_EIO, errno, "fstat %s", j->path);
		goto fail;
	}
	if (!S_ISREG(before.st_mode)) {
		r->rc = cr_error_set(CR_EINVAL, "%s: not a regular file", j->path);
		goto fail;
	}
	cr_file_id_from_stat(&r->id, &before);

	memset(&o, 0, sizeof(o));
	o.name = j->path;
	o.want_file_sha256 = 1;
	o.base_out_fd = -1;
	if (w->want_delta) {
		bfd = base_file(w->tmpdir);
		o.base_out_fd = bfd; /* no base file: no delta next time, said in the event */
		if (w->prev.m) {
			memset(&pb, 0, sizeof(pb));
			pb.manifest = w->prev.m;
			pb.fd = w->prev.fd;
			pb.offsets = w->prev.offsets;
			o.prev = &pb;
		}
	}
	rc = cr_manifest_read(j->fd, &o, &m, o.prev ? &d : NULL, bfd >= 0 ? &offsets : NULL);
	if (rc == 0 && m->have_file_sha256) {
		memcpy(r->sha256, m->file_sha256, CR_SHA256_SIZE);
		if (m->file_size != r->id.size)
			rc = cr_error_set(CR_HASH_CHANGED, "%s changed while it was read", j->path);
	}
	if (rc == CR_HASH_CHANGED) {
		r->rc = rc;
		goto fail;
	}
	if (rc != 0 || !m->have_file_sha256) {
		snprintf(r->manifest_error, sizeof(r->manifest_error), "%s",
		         rc ? cr_error_last() : "no whole-file hash from the reader");
		cr_manifest_free(m);
		m = NULL;
		cr_delta_free(d);
		d = NULL;
		if ((r->rc = hash_only(j, r)) != 0)
			goto fail;
	}
	if (fstat(j->fd, &after) < 0 || !same_stat(&before, &after)) {
		r->rc = cr_error_set(CR_HASH_CHANGED, "%s changed while it was read", j->path);
		goto fail;
	}
	if (m) {
		if (cr_manifest_json(m, &r->manifest) != 0) {
			snprintf(r->manifest_error, sizeof(r->manifest_error), "%s", cr_error_last());
		} else {
			memcpy(r->manifest_sha256, m->digest, CR_SHA256_SIZE);
			too_large(&r->manifest, r, "tensor manifest", m->n);
			if (d && cr_delta_json(d, &r->delta) == 0) {
				r->base_tag = w->prev.tag;
				if (too_large(&r->delta, r, "delta", d->n_changed))
					r->base_tag = UINT64_MAX;
			}
		}
		/* This checkpoint becomes the base of the next delta (none without a base file). */
		base_clear(&w->prev);
		if (bfd >= 0 && offsets) {
			w->prev.m = m;
			w->prev.fd = bfd;
			w->prev.offsets = offsets;
			w->prev.tag = j->tag;
			m = NULL;
			bfd = -1;
			offsets = NULL;
		}
	}
	goto done;
fail:
	snprintf(r->error, sizeof(r->error), "%s", cr_error_last());
	memset(r->sha256, 0, sizeof(r->sha256));
	json_decref(r->manifest);
	json_decref(r->delta);
	r->manifest = r->delta = NULL;
done:
	cr_manifest_free(m);
	cr_delta_free(d);
	free(offsets);
	if (bfd >= 0)
		close(bfd);
}

/* A data shard: the archive's hash and member manifest in one read. */
static void run_shard(cjob *j, cr_ckpt_result *r)
{
	struct stat before, after;
	cr_shard *sh = NULL;
	int rc;

	memset(r, 0, sizeof(*r));
	r->tag = j->tag;
	r->base_tag = UINT64_MAX;
	if (fstat(j->fd, &before) < 0) {
		r->rc = cr_error_set_errno(CR_EIO, errno, "fstat %s", j->path);
		goto fail;
	}
	cr_file_id_from_stat(&r->id, &before);
	rc = cr_shard_read(j->fd, j->path, &sh);
	if (rc == 0 && sh->file_size != r->id.size)
		rc = cr_error_set(CR_HASH_CHANGED, "%s changed while it was read", j->path);
	if (rc == CR_HASH_CHANGED) {
		r->rc = rc;
		goto fail;
	}
	if (rc != 0) {
		/* Not an archive after all, or a damaged one: the file's hash still counts. */
		snprintf(r->manifest_error, sizeof(r->manifest_error), "%s", cr_error_last());
		if ((r->rc = hash_only(j, r)) != 0)
			goto fail;
	} else {
		memcpy(r->sha256, sh->file_sha256, CR_SHA256_SIZE);
		if (cr_shard_json(sh, &r->shard) == 0) {
			memcpy(r->shard_sha256, sh->digest, CR_SHA256_SIZE);
			too_large(&r->shard, r, "member manifest", sh->n);
		} else
			snprintf(r->manifest_error, sizeof(r->manifest_error), "%s", cr_error_last());
	}
	if (fstat(j->fd, &after) < 0 || !same_stat(&before, &after)) {
		r->rc = cr_error_set(CR_HASH_CHANGED, "%s changed while it was read", j->path);
		goto fail;
	}
	cr_shard_free(sh);
	return;
fail:
	snprintf(r->error, sizeof(r->error), "%s", cr_error_last());
	memset(r->sha256, 0, sizeof(r->sha256));
	json_decref(r->shard);
	r->shard = NULL;
	cr_shard_free(sh);
}

int cr_shard_name(const char *path, size_t len)
{
	static const char *const ext[] = {".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.zstd", ".tzst",
	                                  ".tar.bz2", ".tbz2", ".tbz", ".zip", NULL};

	for (int i = 0; ext[i]; i++) {
		size_t n = strlen(ext[i]);

		if (len > n && strncasecmp(path + len - n, ext[i], n) == 0)
			return 1;
	}
	return 0;
}

static void *worker_main(void *arg)
{
	cr_ckpt_worker *w = arg;
	uint64_t one = 1;
	int nice = CR_NICE_UNSET, want, named = 0;

	pthread_mutex_lock(&w->lock);
	for (;;) {
		cjob *j;
		cdone *dn;

		while (!w->head && !w->stop)
			pthread_cond_wait(&w->cond, &w->lock);
		if (!w->head)
			break;
		j = w->head;
		w->head = j->next;
		if (!w->head)
			w->tail = &w->head;
		want = w->nice;
		pthread_mutex_unlock(&w->lock);
		cr_thread_follow(&nice, want); /* outside the lock */
		if (!named) {
			/* A name for top and perf; failing to set it changes nothing. */
			(void)pthread_setname_np(pthread_self(), j->shard ? "cr-shard" : "cr-ckpt");
			named = 1;
		}

		dn = calloc(1, sizeof(*dn));
		if (dn && j->shard)
			run_shard(j, &dn->r);
		else if (dn)
			run_job(w, j, &dn->r);
		close(j->fd);
		free(j->path);
		free(j);

		pthread_mutex_lock(&w->lock);
		if (dn) {
			*w->done_tail = dn;
			w->done_tail = &dn->next;
		} else {
			w->busy--; /* out of memory: the job is lost; the recorder waits no more */
		}
		if (write(w->efd, &one, sizeof(one)) < 0) {
			/* the counter cannot overflow in practice; the next write wakes the loop */
		}
	}
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

int cr_ckpt_worker_new(cr_ckpt_worker **out, const char *tmpdir, int want_delta, unsigned threads)
{
	cr_ckpt_worker *w = calloc(1, sizeof(*w));

	*out = NULL;
	if (threads == 0)
		threads = 1;
	if (!w || !(w->tmpdir = strdup(tmpdir)) || !(w->threads = calloc(threads, sizeof(pthread_t)))) {
		if (w)
			free(w->tmpdir);
		free(w);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	w->tail = &w->head;
	w->done_tail = &w->done;
	w->want_delta = want_delta;
	w->prev.fd = -1;
	if ((w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		int e = errno;

		free(w->threads);
		free(w->tmpdir);
		free(w);
		return cr_error_set_errno(CR_EIO, e, "eventfd");
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->nice = CR_NICE_UNSET;
	for (unsigned i = 0; i < threads; i++) {
		if (pthread_create(&w->threads[i], NULL, worker_main, w) != 0) {
			cr_ckpt_worker_free(w);
			return cr_error_set(CR_ERROR, "cannot start a reader thread");
		}
		w->n_threads++;
	}
	*out = w;
	return 0;
}

void cr_ckpt_worker_set_nice(cr_ckpt_worker *w, int nice)
{
	pthread_mutex_lock(&w->lock);
	w->nice = cr_nice_clamp(nice);
	pthread_mutex_unlock(&w->lock);
}

static int submit(cr_ckpt_worker *w, int shard, uint64_t tag, const char *path, int fd)
{
	cjob *j = calloc(1, sizeof(*j));

	if (fd < 0 && (fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
		free(j);
		return cr_error_set_errno(CR_EIO, errno, "open %s", path);
	}
	if (!j || !(j->path = strdup(path))) {
		free(j);
		close(fd);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	j->shard = shard;
	j->tag = tag;
	j->fd = fd;
	pthread_mutex_lock(&w->lock);
	*w->tail = j;
	w->tail = &j->next;
	w->busy++;
	pthread_cond_signal(&w->cond);
	pthread_mutex_unlock(&w->lock);
	return 0;
}

int cr_ckpt_worker_submit(cr_ckpt_worker *w, uint64_t tag, const char *path, int fd)
{
	return submit(w, 0, tag, path, fd);
}

int cr_ckpt_worker_submit_shard(cr_ckpt_worker *w, uint64_t tag, const char *path, int fd)
{
	return submit(w, 1, tag, path, fd);
}

size_t cr_ckpt_worker_collect(cr_ckpt_worker *w, cr_ckpt_result *out, size_t max)
{
	uint64_t counter;
	size_t n = 0;

	if (read(w->efd, &counter, sizeof(counter)) < 0) {
		/* EAGAIN: nothing signalled; results may still be waiting */
	}
	pthread_mutex_lock(&w->lock);
	while (w->done && n < max) {
		cdone *dn = w->done;

		w->done = dn->next;
		if (!w->done)
			w->done_tail = &w->done;
		out[n++] = dn->r;
		free(dn);
		w->busy--;
	}
	if (w->done) {
		uint64_t one = 1;

		if (write(w->efd, &one, sizeof(one)) < 0) {
			/* see worker_main */
		}
	}
	pthread_mutex_unlock(&w->lock);
	return n;
}

size_t cr_ckpt_worker_busy(cr_ckpt_worker *w)
{
	size_t n;

	pthread_mutex_lock(&w->lock);
	n = w->busy;
	pthread_mutex_unlock(&w->lock);
	return n;
}

int cr_ckpt_worker_eventfd(const cr_ckpt_worker *w)
{
	return w->efd;
}

void cr_ckpt_result_clear(cr_ckpt_result *r)
{
	json_decref(r->manifest);
	json_decref(r->delta);
	json_decref(r->shard);
	r->manifest = r->delta = r->shard = NULL;
}

void cr_ckpt_worker_free(cr_ckpt_worker *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = 1;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
	for (unsigned i = 0; i < w->n_threads; i++)
		pthread_join(w->threads[i], NULL);
	free(w->threads);
	while (w->done) {
		cdone *dn = w->done;

		w->done = dn->next;
		cr_ckpt_result_clear(&dn->r);
		free(dn);
	}
	base_clear(&w->prev);
	close(w->efd);
	pthread_mutex_destroy(&w->lock);
	pthread_cond_destroy(&w->cond);
	free(w->tmpdir);
	free(w);
}
