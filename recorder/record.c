/*
 * `cleanroom record`: run a command under the preload hook and turn what
 * its processes report into events.
 *
 * One thread runs an epoll loop over the hook socket, every connection,
 * a signalfd, a 5 ms timer and the hash pool's eventfd. Reports from all
 * processes are staged, then taken in time order once they are older than
 * a short grace period (so a checkpoint closed in one process is ordered
 * correctly against reads in another). Each report becomes an item in one
 * ordered pipeline; items that need a hash wait for the pool, and events
 * are appended strictly in pipeline order, so a checkpoint's lineage
 * interval holds exactly the inputs read before it.
 *
 * Ownership: staged reports own copies of their strings and any passed
 * descriptor; versions (one per distinct file content seen) and env
 * entries live until the run ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "cleanroom/error.h"
#include "cleanroom/event.h"
#include "cleanroom/hash.h"
#include "cleanroom/record.h"
#include "cleanroom/version.h"
#include "recorder/ckpt_worker.h"
#include "recorder/classify.h"
#include "recorder/wire.h"
#include "util/buf.h"
#include "util/codec.h"
#include "util/thread.h"

#define GRACE_NS 100000000LL    /* reports younger than this wait for stragglers */
#define FLUSH_NS 1000000000LL   /* commit a segment at least this often */
#define MAIN_IDLE_NICE 10       /* this thread's nice step under --nice idle */
#define LINGER_NS 3000000000LL  /* wait for descendants after the command exits */
#define RECENT_WRITES 64        /* closed-after-write files kept for a rename */
#define NO_LEAF UINT64_MAX

extern char **environ;

/* ---- small containers ---------------------------------------------------- */

/* An open-addressing map from byte strings to a uint64 value. */
typedef struct kmap_slot {
	char *key;
	size_t len;
	uint64_t hash;
	uint64_t value;
} kmap_slot;

typedef struct kmap {
	kmap_slot *slots;
	size_t cap, n;
} kmap;

static uint64_t fnv1a(const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ull;
	}
	return h;
}

static kmap_slot *kmap_find(kmap *m, const void *key, size_t len, uint64_t h)
{
	size_t i;

	if (!m->cap)
		return NULL;
	for (i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
		kmap_slot *s = &m->slots[i];

		if (!s->key)
			return s;
		if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0)
			return s;
	}
}

static int kmap_get(kmap *m, const void *key, size_t len, uint64_t *value)
{
	kmap_slot *s = kmap_find(m, key, len, fnv1a(key, len));

	if (!s || !s->key)
		return 0;
	*value = s->value;
	return 1;
}

static int kmap_put(kmap *m, const void *key, size_t len, uint64_t value)
{
	uint64_t h = fnv1a(key, len);
	kmap_slot *s;

	if ((m->n + 1) * 2 > m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 1024;
		kmap_slot *old = m->slots, *ns = calloc(cap, sizeof(*ns));
		size_t oldcap = m->cap;

		if (!ns)
			return cr_error_set(CR_ENOMEM, "out of memory");
		m->slots = ns;
		m->cap = cap;
		for (size_t i = 0; i < oldcap; i++) {
			if (old[i].key) {
				kmap_slot *t = kmap_find(m, old[i].key, old[i].len, old[i].hash);

				*t = old[i];
			}
		}
		free(old);
	}
	s = kmap_find(m, key, len, h);
	if (!s->key) {
		if ((s->key = malloc(len ? len : 1)) == NULL)
			return cr_error_set(CR_ENOMEM, "out of memory");
		memcpy(s->key, key, len);
		s->len = len;
		s->hash = h;
		m->n++;
	}
	s->value = value;
	return 0;
}

static void kmap_free(kmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->slots[i].key);
	free(m->slots);
	memset(m, 0, sizeof(*m));
}

/* A growable array of leaf indexes. */
typedef struct u64vec {
	uint64_t *v;
	size_t n, cap;
} u64vec;

static int u64vec_push(u64vec *a, uint64_t x)
{
	if (a->n == a->cap) {
		size_t cap = a->cap ? a->cap * 2 : 1024;
		uint64_t *p = realloc(a->v, cap * sizeof(*p));

		if (!p)
			return cr_error_set(CR_ENOMEM, "out of memory");
		a->v = p;
		a->cap = cap;
	}
	a->v[a->n++] = x;
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* ---- the state of a recording ---------------------------------------------- */

/* One distinct content of one data file seen by this run. */
typedef struct version {
	char *path;
	size_t path_len;
	crw_file_id id;         /* as the reader saw it */
	int32_t pid;            /* first reader */
	uint64_t time_ns;       /* first read */
	int hashed;             /* sha known (or the file known to have changed) */
	int changed;            /* changed between the read and the hash */
	uint8_t sha[32];
	uint64_t leaf;          /* its input event, once appended */
	json_t *labels;         /* from cleanroom.input(), or NULL */
	json_t *shard;          /* an archive's member manifest, until its event is out */
	uint8_t shard_sha[32];
	char *shard_error;      /* why an archive-named file has no member manifest */
	int shard_dropped;      /* too large for the event: only its digest */
} version;

/* A file of the run's environment (code, libraries, executables). */
typedef struct env_file {
	char *path;
	crw_file_id id;
	int hashed;
	int rc;                 /* 0, CR_HASH_CHANGED or an error */
	uint8_t sha[32];
	uint64_t size;
} env_file;

typedef enum item_kind {
	IT_INPUT,       /* first read of a version: an input event */
	IT_READ,        /* a later read of a known version: lineage only */
	IT_CHECKPOINT,
	IT_PROCESS,
	IT_MARK,        /* cleanroom.checkpoint() of a checkpoint already recorded */
	IT_EVENT        /* a ready event (unobserved, note) */
} item_kind;

/* A checkpoint of this run, for marks that refer to it. */
typedef struct ckpt {
	char *path;
	crw_file_id id;         /* at close */
	uint64_t leaf;          /* its event, once appended */
} ckpt;

/* What only a checkpoint's item carries: kept apart so that the many input
 * and read items waiting for their hashes stay small. */
typedef struct item_ckpt {
	int hashed;
	int rc;
	uint8_t sha[32];
	json_t *manifest;       /* tensor manifest, or NULL */
	uint8_t manifest_sha[32];
	json_t *delta;          /* delta from the checkpoint item base */
	size_t base;            /* ckpt index the delta is from, or SIZE_MAX */
	char manifest_error[256];
	int manifest_dropped;   /* too large for the event: only its digest */
	crw_file_id id;         /* at close */
	crw_file_id read_id;    /* as hashed */
} item_ckpt;

typedef struct item {
	struct item *next;
	item_kind kind;
	int32_t pid;
	size_t version;         /* IT_INPUT, IT_READ */
	size_t env;             /* IT_PROCESS: its executable */
	size_t ckpt;            /* IT_CHECKPOINT, IT_MARK */
	json_t *ev;             /* IT_CHECKPOINT, IT_PROCESS, IT_EVENT: the event so far */
	item_ckpt *ck;          /* IT_CHECKPOINT */
} item;

/* Hash jobs in flight: tag -> what waits for it. */
typedef enum job_kind { JOB_VERSION, JOB_ENV, JOB_CHECKPOINT, JOB_SHARD } job_kind;
typedef struct job {
	job_kind kind;
	size_t index;           /* version or env index */
	item *it;               /* JOB_CHECKPOINT */
} job;

/* A report from the hook, copied out of the ring or socket. */
typedef struct staged {
	uint64_t seq;
	cr_wire_event ev;       /* its strings point into buf */
	char *buf;
} staged;

/* A file closed after writing that matched no checkpoint pattern (yet). */
typedef struct recent_write {
	char *path;
	int fd;                 /* readable descriptor, -1 when the slot is empty */
	crw_file_id id;
	int32_t pid;
	uint64_t time_ns;
	uint32_t flags;
} recent_write;

/* What the recorder knows of a process. */
typedef struct proc {
	int32_t pid, ppid;
	int hello;              /* its image said hello */
	int exec_pending;       /* an exec was reported and no image has said hello since */
	char *exec_path;
	uint64_t exec_time;
} proc;

typedef struct conn_slot {
	cr_wire_conn *c;
	uint64_t dropped_reported;
} conn_slot;

typedef struct rec {
	cr_store *store;
	const cr_record_options *opts;
	cr_record_result *res;
	cr_classifier *cls;
	cr_hash_pool *pool;
	cr_ckpt_worker *ckw;    /* checkpoints: hash, tensor manifest, delta, in order */
	cr_ckpt_worker *shw;    /* data shards: hash and member manifest */
	char run[37];
	int epfd, listen_fd, sig_fd, timer_fd;
	char sockdir[64], sockpath[96];
	pid_t child;
	int child_done;
	uint64_t child_done_ns;
	uint64_t start_ns;

	conn_slot *conns;
	size_t n_conns, cap_conns;

	staged **stage;
	size_t n_stage, cap_stage;
	int stage_sorted;       /* nothing staged since the last sort */
	uint64_t seq;

	version *versions;
	size_t n_versions, cap_versions;
	kmap by_id;             /* crw_file_id -> version index */
	kmap by_path;           /* path -> latest version index */

	env_file *envs;
	size_t n_envs, cap_envs;
	kmap env_by_path;       /* path -> env index */

	job *jobs;
	size_t n_jobs, cap_jobs;

	item *head, **tail;

	u64vec interval;        /* input leaves read since the previous checkpoint */
	uint64_t interval_reads;
	kmap interval_readers;  /* pid text -> reads */
	uint64_t prev_checkpoint;

	recent_write recent[RECENT_WRITES];
	size_t recent_next;

	proc *procs;
	size_t n_procs, cap_procs;

	ckpt *ckpts;
	size_t n_ckpts, cap_ckpts;
	kmap ckpt_by_path;      /* path -> latest ckpt index */

	uint64_t last_flush_ns;
	int failed;             /* a store error: stop appending, report it */
	char error[512];
} rec;

static uint64_t now_ns(clockid_t clk)
{
	struct timespec ts;

	clock_gettime(clk, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct timespec ns_to_ts(uint64_t ns)
{
	struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};

	return ts;
}

int cr_uuid7(char out[37])
{
	uint8_t b[16];
	uint64_t ms = now_ns(CLOCK_REALTIME) / 1000000ull;
	char hex[33];

	if (RAND_bytes(b, sizeof(b)) != 1)
		return cr_error_set(CR_ECRYPTO, "no random bytes for a run id");
	for (int i = 0; i < 6; i++)
		b[i] = (uint8_t)(ms >> (40 - 8 * i));
	b[6] = (uint8_t)(0x70 | (b[6] & 0x0f));
	b[8] = (uint8_t)(0x80 | (b[8] & 0x3f));
	cr_hex_encode(hex, b, 16);
	snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12, hex + 16, hex + 20);
	return 0;
}

/* ---- processes ------------------------------------------------------------- */

static proc *proc_get(rec *r, int32_t pid)
{
	for (size_t i = 0; i < r->n_procs; i++)
		if (r->procs[i].pid == pid)
			return &r->procs[i];
	if (r->n_procs == r->cap_procs) {
		size_t cap = r->cap_procs ? 2 * r->cap_procs : 64;
		proc *p = realloc(r->procs, cap * sizeof(*p));

		if (!p)
			return NULL;
		r->procs = p;
		r->cap_procs = cap;
	}
	memset(&r->procs[r->n_procs], 0, sizeof(proc));
	r->procs[r->n_procs].pid = pid;
	return &r->procs[r->n_procs++];
}

/* ---- the pipeline ------------------------------------------------------------ */

static item *item_new(rec *r, item_kind kind)
{
	item *it = calloc(1, sizeof(*it));

	if (!it)
		return NULL;
	if (kind == IT_CHECKPOINT && (it->ck = calloc(1, sizeof(*it->ck))) == NULL) {
		free(it);
		return NULL;
	}
	it->kind = kind;
	*r->tail = it;
	r->tail = &it->next;
	return it;
}

static json_t *event_base(rec *r, const char *type, uint64_t time_ns)
{
	json_t *ev = NULL;
	struct timespec ts = ns_to_ts(time_ns);

	if (cr_event_new(&ev, type) != 0)
		return NULL;
	json_object_set_new(ev, "run", json_string(r->run));
	cr_event_set_time(ev, "time", &ts);
	return ev;
}

static void set_fail(rec *r, int rc)
{
	if (!r->failed) {
		r->failed = rc;
		snprintf(r->error, sizeof(r->error), "%s", cr_error_last());
	}
}

static int append(rec *r, json_t *ev, uint64_t *leaf)
{
	int rc;

	if (r->failed)
		return r->failed;
	rc = cr_store_append(r->store, ev, leaf);
	if (rc)
		set_fail(r, rc);
	return rc;
}

static int job_add(rec *r, job_kind kind, size_t index, item *it, uint64_t *tag)
{
	if (r->n_jobs == r->cap_jobs) {
		size_t cap = r->cap_jobs ? 2 * r->cap_jobs : 256;
		job *j = realloc(r->jobs, cap * sizeof(*j));

		if (!j)
			return cr_error_set(CR_ENOMEM, "out of memory");
		r->jobs = j;
		r->cap_jobs = cap;
	}
	r->jobs[r->n_jobs].kind = kind;
	r->jobs[r->n_jobs].index = index;
	r->jobs[r->n_jobs].it = it;
	*tag = r->n_jobs++;
	return 0;
}

static void id_to_cr(cr_file_id *out, const crw_file_id *in)
{
	out->dev = in->dev;
	out->ino = in->ino;
	out->size = in->size;
	out->mtime_ns = in->mtime_ns;
	out->ctime_ns = in->ctime_ns;
}

static int same_id(const crw_file_id *a, const cr_file_id *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}

/* Look the content up in the store's hash cache; 1 on a hit. */
static int cache_hit(rec *r, const crw_file_id *id, uint8_t sha[32])
{
	cr_file_id cid;
	int rc;

	id_to_cr(&cid, id);
	rc = cr_store_cache_get(r->store, &cid, sha);
	if (rc == 0)
		return 1;
	cr_error_clear();
	return 0;
}

static size_t env_entry(rec *r, const char *path, const crw_file_id *id)
{
	uint64_t idx, tag;
	env_file *e;

	if (kmap_get(&r->env_by_path, path, strlen(path), &idx))
		return (size_t)idx;
	if (r->n_envs == r->cap_envs) {
		size_t cap = r->cap_envs ? 2 * r->cap_envs : 256;
		env_file *p = realloc(r->envs, cap * sizeof(*p));

		if (!p)
			return SIZE_MAX;
		r->envs = p;
		r->cap_envs = cap;
	}
	e = &r->envs[r->n_envs];
	memset(e, 0, sizeof(*e));
	if ((e->path = strdup(path)) == NULL)
		return SIZE_MAX;
	if (id)
		e->id = *id;
	idx = r->n_envs++;
	if (kmap_put(&r->env_by_path, path, strlen(path), idx) != 0)
		return SIZE_MAX;
	if (id && cache_hit(r, id, e->sha)) {
		e->hashed = 1;
		e->size = id->size;
	} else if (job_add(r, JOB_ENV, idx, NULL, &tag) != 0 ||
	           cr_hash_pool_submit(r->pool, tag, path, -1) != 0) {
		e->hashed = 1;
		e->rc = CR_ENOMEM;
	}
	return idx;
}

/* A data file read: a new version (input event) or a read of a known one. */
static int on_read(rec *r, const cr_wire_event *ev, json_t *labels)
{
	uint64_t idx, tag;
	version *v;
	item *it;

	r->res->reads++;
	if (!kmap_get(&r->by_id, &ev->id, sizeof(ev->id), &idx)) {
		uint64_t prev;

		if (r->n_versions == r->cap_versions) {
			size_t cap = r->cap_versions ? 2 * r->cap_versions : 1024;
			version *p = realloc(r->versions, cap * sizeof(*p));

			if (!p)
				return cr_error_set(CR_ENOMEM, "out of memory");
			r->versions = p;
			r->cap_versions = cap;
		}
		v = &r->versions[r->n_versions];
		memset(v, 0, sizeof(*v));
		if ((v->path = malloc(ev->path_len + 1)) == NULL)
			return cr_error_set(CR_ENOMEM, "out of memory");
		memcpy(v->path, ev->path, ev->path_len);
		v->path[ev->path_len] = '\0';
		v->path_len = ev->path_len;
		v->id = ev->id;
		v->pid = ev->pid;
		v->time_ns = ev->time_ns;
		v->leaf = NO_LEAF;
		v->labels = labels ? json_incref(labels) : NULL;
		idx = r->n_versions++;
		if (kmap_put(&r->by_id, &ev->id, sizeof(ev->id), idx) != 0)
			return CR_ENOMEM;
		/* The same path with other content earlier in this run: it changed under the run. */
		if (kmap_get(&r->by_path, ev->path, ev->path_len, &prev))
			r->res->changed++;
		if (kmap_put(&r->by_path, ev->path, ev->path_len, idx) != 0)
			return CR_ENOMEM;
		if (cr_shard_name(v->path, v->path_len)) {
			/* An archive: its members are listed, so it is read even when its hash is cached. */
			int rc;

			if ((rc = job_add(r, JOB_SHARD, idx, NULL, &tag)) != 0)
				return rc;
			if (cr_ckpt_worker_submit_shard(r->shw, tag, v->path, -1) != 0) {
				cr_error_clear();
				v->hashed = 1;
				v->changed = 1; /* gone or unreadable by the time we looked */
				r->res->changed++;
			}
		} else if (cache_hit(r, &ev->id, v->sha)) {
			v->hashed = 1;
		} else {
			int rc;

			if ((rc = job_add(r, JOB_VERSION, idx, NULL, &tag)) != 0 ||
			    (rc = cr_hash_pool_submit(r->pool, tag, v->path, -1)) != 0)
				return rc;
		}
		it = item_new(r, IT_INPUT);
	} else {
		it = item_new(r, IT_READ);
	}
	if (!it)
		return cr_error_set(CR_ENOMEM, "out of memory");
	it->version = (size_t)idx;
	it->pid = ev->pid;
	return 0;
}

/* Queue a checkpoint for hashing through a readable descriptor (consumed). */
static int queue_checkpoint(rec *r, const char *path, int fd, const crw_file_id *id, int32_t pid,
                            uint64_t time_ns, uint32_t flags, json_t *extra)
{
	item *it = item_new(r, IT_CHECKPOINT);
	uint64_t tag;
	int rc;

	if (!it) {
		if (fd >= 0)
			close(fd);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	it->pid = pid;
	it->ev = event_base(r, "checkpoint", time_ns);
	if (!it->ev) {
		if (fd >= 0)
			close(fd);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	cr_event_set_path(it->ev, "path", path, strlen(path));
	cr_event_set_int(it->ev, "pid", pid);
	if (flags & CRW_WRITTEN_MMAP)
		cr_event_set_str(it->ev, "written_via", "mmap");
	if (extra)
		json_object_update(it->ev, extra);
	if (id)
		it->ck->id = *id;
	if (r->n_ckpts == r->cap_ckpts) {
		size_t cap = r->cap_ckpts ? 2 * r->cap_ckpts : 16;
		ckpt *c = realloc(r->ckpts, cap * sizeof(*c));

		if (!c) {
			if (fd >= 0)
				close(fd);
			return cr_error_set(CR_ENOMEM, "out of memory");
		}
		r->ckpts = c;
		r->cap_ckpts = cap;
	}
	it->ckpt = r->n_ckpts;
	r->ckpts[r->n_ckpts].path = strdup(path);
	r->ckpts[r->n_ckpts].id = it->ck->id;
	r->ckpts[r->n_ckpts].leaf = NO_LEAF;
	if (kmap_put(&r->ckpt_by_path, path, strlen(path), r->n_ckpts) != 0) {
		if (fd >= 0)
			close(fd);
		return CR_ENOMEM;
	}
	r->n_ckpts++;
	if ((rc = job_add(r, JOB_CHECKPOINT, r->n_ckpts - 1, it, &tag)) != 0) {
		if (fd >= 0)
			close(fd);
		return rc;
	}
	if (fd < 0 && (fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)) < 0) {
		it->ck->hashed = 1;
		it->ck->rc = cr_error_set_errno(CR_EIO, errno, "open %s", path);
		return 0;
	}
	return cr_ckpt_worker_submit(r->ckw, tag, path, fd);
}

/* A readable descriptor for the inode behind a passed descriptor. */
static int reopen_readable(int fd)
{
	char p[64];
	int rfd;

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	rfd = open(p, O_RDONLY | O_CLOEXEC);
	close(fd);
	return rfd;
}

static void recent_put(rec *r, const cr_wire_event *ev, int fd)
{
	recent_write *w = &r->recent[r->recent_next];

	r->recent_next = (r->recent_next + 1) % RECENT_WRITES;
	if (w->fd >= 0)
		close(w->fd);
	free(w->path);
	memset(w, 0, sizeof(*w));
	w->fd = fd;
	w->path = strndup(ev->path, ev->path_len);
	w->id = ev->id;
	w->pid = ev->pid;
	w->time_ns = ev->time_ns;
	w->flags = ev->flags;
	if (!w->path) {
		close(fd);
		w->fd = -1;
	}
}

static int on_written(rec *r, const cr_wire_event *ev, int fd)
{
	char path[CRW_PATH_MAX + 1];

	memcpy(path, ev->path, ev->path_len);
	path[ev->path_len] = '\0';
	fd = reopen_readable(fd);
	if (fd < 0)
		return 0; /* vanished or unreadable: nothing to vouch for */
	if (cr_classify_written(r->cls, path) == CR_CLASS_CHECKPOINT)
		return queue_checkpoint(r, path, fd, &ev->id, ev->pid, ev->time_ns, ev->flags, NULL);
	recent_put(r, ev, fd);
	return 0;
}

static int on_rename(rec *r, const cr_wire_event *ev)
{
	for (size_t i = 0; i < RECENT_WRITES; i++) {
		recent_write *w = &r->recent[i];
		char newpath[CRW_PATH_MAX + 1];
		int rc;

		if (w->fd < 0 || !w->path || strlen(w->path) != ev->path_len ||
		    memcmp(w->path, ev->path, ev->path_len) != 0)
			continue;
		memcpy(newpath, ev->path2, ev->path2_len);
		newpath[ev->path2_len] = '\0';
		if (cr_classify_written(r->cls, newpath) != CR_CLASS_CHECKPOINT) {
			free(w->path);
			w->path = strdup(newpath);
			return 0;
		}
		rc = queue_checkpoint(r, newpath, w->fd, &w->id, w->pid, w->time_ns, w->flags, NULL);
		w->fd = -1;
		free(w->path);
		w->path = NULL;
		return rc;
	}
	return 0;
}

static json_t *argv_json(const char *argv, size_t len)
{
	json_t *a = json_array();
	size_t pos = 0;

	while (pos < len) {
		size_t n = strnlen(argv + pos, len - pos);
		json_t *s = json_stringn(argv + pos, n);

		/* Arguments that are not UTF-8 are kept as base64. */
		if (!s) {
			char *b = malloc(cr_base64_len(n) + 8);

			if (b) {
				memcpy(b, "base64:", 7);
				cr_base64_encode(b + 7, (const uint8_t *)argv + pos, n);
				s = json_string(b);
				free(b);
			}
		}
		if (s)
			json_array_append_new(a, s);
		pos += n + 1;
	}
	return a;
}

static int unobserved(rec *r, int32_t pid, uint64_t time_ns, const char *reason, const char *path,
                      size_t path_len, json_t *argv)
{
	item *it = item_new(r, IT_EVENT);

	if (!it) {
		json_decref(argv);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	it->ev = event_base(r, "unobserved", time_ns);
	cr_event_set_int(it->ev, "pid", pid);
	cr_event_set_str(it->ev, "reason", reason);
	if (path)
		cr_event_set_path(it->ev, "path", path, path_len);
	if (argv)
		json_object_set_new(it->ev, "argv", argv);
	r->res->unobserved++;
	return 0;
}

static const char *unobs_reason(uint32_t flags)
{
	if (flags & CRW_UNOBS_STATIC)
		return "static_binary";
	if (flags & CRW_UNOBS_SETUID)
		return "setuid_binary";
	if (flags & CRW_UNOBS_DROPPED)
		return "hook_dropped";
	return "unknown";
}

static int on_hello(rec *r, const cr_wire_event *ev)
{
	proc *p = proc_get(r, ev->pid);
	item *it;
	char exe[CRW_PATH_MAX + 1];

	if (!p)
		return cr_error_set(CR_ENOMEM, "out of memory");
	/* A second connection of a known image (cleanroom.py marks): nothing new. */
	if (p->hello && !(ev->flags & CRW_HELLO_AFTER_EXEC))
		return 0;
	p->ppid = ev->ppid;
	p->hello = 1;
	p->exec_pending = 0;
	r->res->processes++;
	memcpy(exe, ev->path, ev->path_len);
	exe[ev->path_len] = '\0';
	if ((it = item_new(r, IT_PROCESS)) == NULL)
		return cr_error_set(CR_ENOMEM, "out of memory");
	it->pid = ev->pid;
	it->ev = event_base(r, "process", ev->time_ns);
	cr_event_set_int(it->ev, "pid", ev->pid);
	cr_event_set_int(it->ev, "ppid", ev->ppid);
	cr_event_set_str(it->ev, "via", (ev->flags & CRW_HELLO_AFTER_EXEC) ? "exec" : "fork");
	cr_event_set_path(it->ev, "exe", exe, ev->path_len);
	json_object_set_new(it->ev, "argv", argv_json(ev->argv, ev->argv_len));
	it->env = ev->path_len ? env_entry(r, exe, NULL) : SIZE_MAX;
	return 0;
}

/*
 * Notes come from the traced program: make their fields fit an event
 * (reals and out-of-range integers become strings) so that no note can
 * stop the recording.
 */
static json_t *clean_fields(json_t *v, int depth)
{
	const char *k;
	json_t *x, *out;
	size_t i;
	char num[64];

	if (!v)
		return NULL;
	if (depth > 16)
		return json_string("(nested too deep)");
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		out = json_object();
		json_object_foreach(v, k, x)
			json_object_set_new(out, k, clean_fields(x, depth + 1));
		return out;
	case JSON_ARRAY:
		out = json_array();
		json_array_foreach(v, i, x)
			json_array_append_new(out, clean_fields(x, depth + 1));
		return out;
	case JSON_REAL:
		snprintf(num, sizeof(num), "%.17g", json_real_value(v));
		return json_string(num);
	case JSON_INTEGER:
		if (json_integer_value(v) > CR_EVENT_INT_MAX || json_integer_value(v) < -CR_EVENT_INT_MAX) {
			snprintf(num, sizeof(num), "%lld", (long long)json_integer_value(v));
			return json_string(num);
		}
		return json_incref(v);
	default:
		return json_incref(v);
	}
}

static int on_note(rec *r, const cr_wire_event *ev)
{
	json_t *note = json_loadb(ev->payload, ev->payload_len, JSON_REJECT_DUPLICATES, NULL);
	const char *kind = json_string_value(json_object_get(note, "kind"));
	const char *path = json_string_value(json_object_get(note, "path"));
	json_t *fields = clean_fields(json_object_get(note, "fields"), 0);
	int rc = 0;

	if (!note || !kind) {
		json_decref(fields);
		json_decref(note);
		return unobserved(r, ev->pid, ev->time_ns, "malformed_note", NULL, 0, NULL);
	}
	if (strcmp(kind, "checkpoint") == 0 && path) {
		struct stat st;
		uint64_t ci;
		int fd;
		json_t *extra;

		/* The hook recorded this very file already: mark that checkpoint. */
		if (stat(path, &st) == 0 && kmap_get(&r->ckpt_by_path, path, strlen(path), &ci) &&
		    r->ckpts[ci].id.ino == (uint64_t)st.st_ino && r->ckpts[ci].id.dev == (uint64_t)st.st_dev &&
		    r->ckpts[ci].id.size == (uint64_t)st.st_size &&
		    r->ckpts[ci].id.mtime_ns == (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec) {
			item *it = item_new(r, IT_MARK);

			if (!it) {
				rc = cr_error_set(CR_ENOMEM, "out of memory");
			} else {
				it->ckpt = (size_t)ci;
				it->ev = event_base(r, "checkpoint_mark", ev->time_ns);
				cr_event_set_int(it->ev, "pid", ev->pid);
				cr_event_set_path(it->ev, "path", path, strlen(path));
				if (json_is_object(fields))
					json_object_set(it->ev, "marks", fields);
			}
			json_decref(fields);
			json_decref(note);
			return rc;
		}
		fd = open(path, O_RDONLY | O_CLOEXEC);
		extra = json_object();

		if (json_is_object(fields))
			json_object_set(extra, "marks", fields);
		json_object_set_new(extra, "via", json_string("cleanroom.checkpoint"));
		if (fd < 0)
			rc = unobserved(r, ev->pid, ev->time_ns, "checkpoint_unreadable", path, strlen(path), NULL);
		else
			rc = queue_checkpoint(r, path, fd, NULL, ev->pid, ev->time_ns, 0, extra);
		json_decref(extra);
	} else if (strcmp(kind, "input") == 0 && path) {
		struct stat st;
		cr_wire_event rd = *ev;

		if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
			rc = unobserved(r, ev->pid, ev->time_ns, "input_unreadable", path, strlen(path), NULL);
		} else {
			rd.path = path;
			rd.path_len = strlen(path);
			rd.id.dev = (uint64_t)st.st_dev;
			rd.id.ino = (uint64_t)st.st_ino;
			rd.id.size = (uint64_t)st.st_size;
			rd.id.mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
			rd.id.ctime_ns = (int64_t)st.st_ctim.tv_sec * 1000000000 + st.st_ctim.tv_nsec;
			rc = on_read(r, &rd, json_is_object(fields) ? fields : NULL);
		}
	} else {
		item *it = item_new(r, IT_EVENT);

		if (!it) {
			rc = cr_error_set(CR_ENOMEM, "out of memory");
		} else {
			it->ev = event_base(r, "note", ev->time_ns);
			cr_event_set_int(it->ev, "pid", ev->pid);
			if (json_is_object(fields))
				json_object_set(it->ev, "fields", fields);
		}
	}
	json_decref(fields);
	json_decref(note);
	return rc;
}

/* Take one staged report into the pipeline. Consumes a passed descriptor. */
static int process_report(rec *r, cr_wire_event *ev)
{
	char path[CRW_PATH_MAX + 1];
	proc *p;

	switch (ev->type) {
	case CRW_REC_OPEN:
		if (!(ev->flags & CRW_OPEN_READ) || (ev->flags & (CRW_OPEN_WRITE | CRW_OPEN_TRUNC)))
			return 0; /* writes are judged when the file is closed */
		memcpy(path, ev->path, ev->path_len);
		path[ev->path_len] = '\0';
		switch (cr_classify_read(r->cls, path)) {
		case CR_CLASS_DATA:
			return on_read(r, ev, NULL);
		case CR_CLASS_ENV:
			return env_entry(r, path, &ev->id) == SIZE_MAX ? CR_ENOMEM : 0;
		default:
			return 0;
		}
	case CR_WIRE_WRITTEN: {
		int fd = ev->passed_fd;

		ev->passed_fd = -1;
		return on_written(r, ev, fd);
	}
	case CRW_REC_RENAME:
		return on_rename(r, ev);
	case CR_WIRE_HELLO:
		return on_hello(r, ev);
	case CRW_REC_EXEC:
		if ((p = proc_get(r, ev->pid)) == NULL)
			return CR_ENOMEM;
		p->exec_pending = 1;
		free(p->exec_path);
		p->exec_path = strndup(ev->path, ev->path_len);
		p->exec_time = ev->time_ns;
		p->hello = 0;
		return 0;
	case CRW_REC_UNOBSERVED:
		if ((p = proc_get(r, ev->pid)) != NULL)
			p->exec_pending = 0; /* explained here; not "silent" later */
		return unobserved(r, ev->arg > 0 ? (int32_t)ev->arg : ev->pid, ev->time_ns,
		                  unobs_reason(ev->flags), ev->path, ev->path_len,
		                  argv_json(ev->argv, ev->argv_len));
	case CR_WIRE_NOTE:
		return on_note(r, ev);
	default:
		return 0; /* FORK, SPAWN, LINK, UNLINK, TRUNCATE, EXIT: context only */
	}
}

/* ---- appending, in pipeline order ------------------------------------------- */

static int version_event(rec *r, version *v, uint64_t *leaf)
{
	struct timespec ts = ns_to_ts(v->time_ns);
	json_t *ev = NULL;
	int rc;

	if ((rc = cr_event_new(&ev, "input")) != 0)
		return rc;
	json_object_set_new(ev, "run", json_string(r->run));
	cr_event_set_path(ev, "path", v->path, v->path_len);
	cr_event_set_int(ev, "size", (int64_t)v->id.size);
	cr_event_set_int(ev, "pid", v->pid);
	cr_event_set_time(ev, "time", &ts);
	cr_event_set_str(ev, "via", "record");
	if (v->changed)
		json_object_set_new(ev, "changed", json_true());
	else
		cr_event_set_hex(ev, "sha256", v->sha, 32);
	if (v->labels)
		json_object_set(ev, "labels", v->labels);
	if (v->shard && !v->changed)
		json_object_set(ev, "shard", v->shard);
	if (!v->changed && (v->shard || v->shard_dropped))
		cr_event_set_hex(ev, "shard_sha256", v->shard_sha, 32);
	if (v->shard_error && !v->changed)
		cr_event_set_str(ev, "shard_error", v->shard_error);
	rc = append(r, ev, leaf);
	json_decref(ev);
	json_decref(v->shard); /* kept in the log now */
	v->shard = NULL;
	free(v->shard_error);
	v->shard_error = NULL;
	if (!rc) {
		r->res->inputs++;
		r->res->input_bytes += v->id.size;
	}
	return rc;
}

static int note_read(rec *r, uint64_t leaf, int32_t pid)
{
	char key[16];
	uint64_t n = 0;
	int len = snprintf(key, sizeof(key), "%d", pid);

	r->interval_reads++;
	kmap_get(&r->interval_readers, key, (size_t)len, &n);
	if (kmap_put(&r->interval_readers, key, (size_t)len, n + 1) != 0)
		return CR_ENOMEM;
	return u64vec_push(&r->interval, leaf);
}

/* The lineage interval: inputs read since the previous checkpoint, as ranges. */
static json_t *lineage_json(rec *r)
{
	json_t *l = json_object(), *ranges = json_array(), *readers = json_object();
	size_t i, distinct = 0;

	if (r->interval.n)
		qsort(r->interval.v, r->interval.n, sizeof(uint64_t), cmp_u64);
	for (i = 0; i < r->interval.n;) {
		uint64_t a = r->interval.v[i], b = a;

		distinct++;
		while (++i < r->interval.n && r->interval.v[i] <= b + 1) {
			if (r->interval.v[i] == b + 1) {
				b++;
				distinct++;
			}
		}
		json_array_append_new(ranges, json_pack("[I,I]", (json_int_t)a, (json_int_t)b));
	}
	for (i = 0; i < r->interval_readers.cap; i++) {
		kmap_slot *s = &r->interval_readers.slots[i];
		char key[16];

		if (!s->key || s->len >= sizeof(key))
			continue;
		memcpy(key, s->key, s->len);
		key[s->len] = '\0';
		json_object_set_new(readers, key, json_integer((json_int_t)s->value));
	}
	json_object_set_new(l, "inputs", ranges);
	json_object_set_new(l, "input_count", json_integer((json_int_t)distinct));
	json_object_set_new(l, "reads", json_integer((json_int_t)r->interval_reads));
	json_object_set_new(l, "readers", readers);
	json_object_set_new(l, "previous", r->prev_checkpoint == NO_LEAF
	                                       ? json_null()
	                                       : json_integer((json_int_t)r->prev_checkpoint));
	return l;
}

static int item_ready(rec *r, item *it)
{
	switch (it->kind) {
	case IT_INPUT:
	case IT_READ:
		return r->versions[it->version].hashed;
	case IT_CHECKPOINT:
		return it->ck->hashed;
	case IT_PROCESS:
		return it->env == SIZE_MAX || r->envs[it->env].hashed;
	default:
		return 1;
	}
}

static int append_item(rec *r, item *it)
{
	item_ckpt *ck;
	version *v;
	uint64_t leaf;
	int rc = 0;

	switch (it->kind) {
	case IT_INPUT:
		v = &r->versions[it->version];
		if ((rc = version_event(r, v, &v->leaf)) != 0)
			return rc;
		return note_read(r, v->leaf, it->pid);
	case IT_READ:
		v = &r->versions[it->version];
		return v->leaf == NO_LEAF ? 0 : note_read(r, v->leaf, it->pid);
	case IT_PROCESS:
		if (it->env != SIZE_MAX && r->envs[it->env].rc == 0)
			cr_event_set_hex(it->ev, "exe_sha256", r->envs[it->env].sha, 32);
		return append(r, it->ev, NULL);
	case IT_CHECKPOINT:
		ck = it->ck;
		if (ck->rc == 0) {
			cr_event_set_hex(it->ev, "sha256", ck->sha, 32);
			if (ck->manifest)
				json_object_set(it->ev, "tensors", ck->manifest);
			if (ck->manifest || ck->manifest_dropped)
				cr_event_set_hex(it->ev, "tensors_sha256", ck->manifest_sha, 32);
			if (ck->manifest_error[0])
				cr_event_set_str(it->ev, "tensors_error", ck->manifest_error);
			if (ck->delta && ck->base != SIZE_MAX && r->ckpts[ck->base].leaf != NO_LEAF) {
				json_object_set_new(ck->delta, "previous",
				                    json_integer((json_int_t)r->ckpts[ck->base].leaf));
				json_object_set(it->ev, "delta", ck->delta);
			}
			cr_event_set_int(it->ev, "size", (int64_t)ck->read_id.size);
			/* Written again after it was closed: what we hashed is not what was closed. */
			if (ck->id.ino &&
			    !same_id(&ck->id, &(cr_file_id){ck->read_id.dev, ck->read_id.ino, ck->read_id.size,
			                                    ck->read_id.mtime_ns, ck->read_id.ctime_ns}))
				json_object_set_new(it->ev, "changed", json_true());
		} else {
			json_object_set_new(it->ev, "changed", json_true());
			r->res->changed++;
		}
		json_object_set_new(it->ev, "lineage", lineage_json(r));
		if ((rc = append(r, it->ev, &leaf)) != 0)
			return rc;
		r->ckpts[it->ckpt].leaf = leaf;
		r->res->checkpoints++;
		r->prev_checkpoint = leaf;
		r->interval.n = 0;
		r->interval_reads = 0;
		kmap_free(&r->interval_readers);
		return 0;
	case IT_MARK:
		if (r->ckpts[it->ckpt].leaf != NO_LEAF)
			cr_event_set_int(it->ev, "checkpoint", (int64_t)r->ckpts[it->ckpt].leaf);
		return append(r, it->ev, NULL);
	case IT_EVENT:
		return append(r, it->ev, NULL);
	}
	return 0;
}

static void item_free(item *it)
{
	json_decref(it->ev);
	if (it->ck) {
		json_decref(it->ck->manifest);
		json_decref(it->ck->delta);
		free(it->ck);
	}
	free(it);
}

static int drain_pipeline(rec *r)
{
	int rc;

	while (r->head && item_ready(r, r->head)) {
		item *it = r->head;

		r->head = it->next;
		if (!r->head)
			r->tail = &r->head;
		rc = append_item(r, it);
		item_free(it);
		if (rc)
			return rc;
	}
	return 0;
}

static void collect_checkpoints(rec *r)
{
	cr_ckpt_result res[8];
	size_t n;

	while ((n = cr_ckpt_worker_collect(r->shw, res, 8)) > 0) {
		for (size_t i = 0; i < n; i++) {
			version *v = &r->versions[r->jobs[res[i].tag].index];

			v->hashed = 1;
			if (res[i].rc == 0 && same_id(&v->id, &res[i].id)) {
				memcpy(v->sha, res[i].sha256, 32);
				v->shard = res[i].shard;
				res[i].shard = NULL;
				memcpy(v->shard_sha, res[i].shard_sha256, 32);
				if (res[i].manifest_error[0])
					v->shard_error = strdup(res[i].manifest_error);
				v->shard_dropped = res[i].manifest_dropped;
			} else {
				v->changed = 1;
				r->res->changed++;
			}
			cr_ckpt_result_clear(&res[i]);
		}
	}
	while ((n = cr_ckpt_worker_collect(r->ckw, res, 8)) > 0) {
		for (size_t i = 0; i < n; i++) {
			item_ckpt *ck = r->jobs[res[i].tag].it->ck;

			ck->hashed = 1;
			ck->rc = res[i].rc;
			memcpy(ck->sha, res[i].sha256, 32);
			ck->read_id.dev = res[i].id.dev;
			ck->read_id.ino = res[i].id.ino;
			ck->read_id.size = res[i].id.size;
			ck->read_id.mtime_ns = res[i].id.mtime_ns;
			ck->read_id.ctime_ns = res[i].id.ctime_ns;
			ck->manifest = res[i].manifest;
			memcpy(ck->manifest_sha, res[i].manifest_sha256, 32);
			ck->delta = res[i].delta;
			ck->base = res[i].delta ? r->jobs[res[i].base_tag].index : SIZE_MAX;
			snprintf(ck->manifest_error, sizeof(ck->manifest_error), "%s",
			         res[i].manifest_error);
			ck->manifest_dropped = res[i].manifest_dropped;
		}
	}
}

static void collect_hashes(rec *r)
{
	cr_hash_result res[64];
	size_t n;

	while ((n = cr_hash_pool_collect(r->pool, res, 64)) > 0) {
		for (size_t i = 0; i < n; i++) {
			job *j = &r->jobs[res[i].tag];
			int ok = res[i].rc == 0;

			if (j->kind == JOB_VERSION) {
				version *v = &r->versions[j->index];

				v->hashed = 1;
				if (ok && same_id(&v->id, &res[i].id)) {
					memcpy(v->sha, res[i].sha256, 32);
					if (!cr_file_id_racy(&res[i].id))
						cr_store_cache_put(r->store, &res[i].id, res[i].sha256);
				} else {
					v->changed = 1;
					r->res->changed++;
				}
			} else if (j->kind == JOB_ENV) { /* checkpoints go to the checkpoint worker */
				env_file *e = &r->envs[j->index];

				e->hashed = 1;
				e->rc = res[i].rc;
				e->size = res[i].id.size;
				memcpy(e->sha, res[i].sha256, 32);
				if (ok && !cr_file_id_racy(&res[i].id))
					cr_store_cache_put(r->store, &res[i].id, res[i].sha256);
			}
		}
	}
}

/* ---- staging ------------------------------------------------------------------ */

static int stage_cb(void *ctx, const cr_wire_event *ev)
{
	rec *r = ctx;
	staged *s;
	size_t need = ev->path_len + ev->path2_len + ev->argv_len + ev->payload_len + 4;
	char *p;

	if (r->n_stage == r->cap_stage) {
		size_t cap = r->cap_stage ? 2 * r->cap_stage : 1024;
		staged **a = realloc(r->stage, cap * sizeof(*a));

		if (!a)
			goto oom;
		r->stage = a;
		r->cap_stage = cap;
	}
	if ((s = malloc(sizeof(*s))) == NULL)
		goto oom;
	if ((s->buf = malloc(need)) == NULL) {
		free(s);
		goto oom;
	}
	s->seq = r->seq++;
	s->ev = *ev;
	p = s->buf;
#define COPY(field, len)                             \
	do {                                         \
		if (ev->field) {                     \
			memcpy(p, ev->field, ev->len); \
			s->ev.field = p;             \
			p += ev->len;                \
		}                                    \
		*p++ = '\0';                         \
	} while (0)
	COPY(path, path_len);
	COPY(path2, path2_len);
	COPY(argv, argv_len);
	COPY(payload, payload_len);
#undef COPY
	r->stage[r->n_stage++] = s;
	r->stage_sorted = 0;
	return 0;
oom:
	if (ev->passed_fd >= 0)
		close(ev->passed_fd);
	return cr_error_set(CR_ENOMEM, "out of memory staging a report");
}

static int cmp_staged(const void *a, const void *b)
{
	const staged *x = *(staged *const *)a, *y = *(staged *const *)b;

	if (x->ev.time_ns != y->ev.time_ns)
		return x->ev.time_ns < y->ev.time_ns ? -1 : 1;
	return x->seq < y->seq ? -1 : (x->seq > y->seq);
}

/* Take staged reports older than the grace period (all of them when final). */
static int process_staged(rec *r, int final)
{
	uint64_t limit = final ? UINT64_MAX : now_ns(CLOCK_REALTIME) - GRACE_NS;
	size_t i, n = 0;
	int rc = 0;

	if (!r->n_stage)
		return 0;
	if (!r->stage_sorted) {
		qsort(r->stage, r->n_stage, sizeof(*r->stage), cmp_staged);
		r->stage_sorted = 1;
	}
	for (i = 0; i < r->n_stage && r->stage[i]->ev.time_ns <= limit; i++) {
		staged *s = r->stage[i];

		if (!rc && (rc = process_report(r, &s->ev)) != 0)
			set_fail(r, rc);
		if (s->ev.passed_fd >= 0)
			close(s->ev.passed_fd);
		free(s->buf);
		free(s);
		n++;
	}
	memmove(r->stage, r->stage + n, (r->n_stage - n) * sizeof(*r->stage));
	r->n_stage -= n;
	return rc;
}

/* ---- connections -------------------------------------------------------------- */

static int conn_add(rec *r, cr_wire_conn *c)
{
	struct epoll_event ee = {.events = EPOLLIN};

	if (r->n_conns == r->cap_conns) {
		size_t cap = r->cap_conns ? 2 * r->cap_conns : 64;
		conn_slot *p = realloc(r->conns, cap * sizeof(*p));

		if (!p)
			return cr_error_set(CR_ENOMEM, "out of memory");
		r->conns = p;
		r->cap_conns = cap;
	}
	ee.data.ptr = c;
	if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, cr_wire_conn_fd(c), &ee) != 0)
		return cr_error_set_errno(CR_EIO, errno, "epoll");
	r->conns[r->n_conns].c = c;
	r->conns[r->n_conns].dropped_reported = 0;
	r->n_conns++;
	return 0;
}

static void conn_check_dropped(rec *r, conn_slot *s)
{
	uint64_t d = cr_wire_conn_dropped(s->c);

	if (d > s->dropped_reported) {
		char why[64];

		snprintf(why, sizeof(why), "ring_overflow");
		unobserved(r, cr_wire_conn_pid(s->c), now_ns(CLOCK_REALTIME), why, NULL, 0,
		           json_pack("[s]", "records lost: the recorder fell behind"));
		s->dropped_reported = d;
	}
}

static void conn_close(rec *r, size_t i)
{
	conn_check_dropped(r, &r->conns[i]);
	epoll_ctl(r->epfd, EPOLL_CTL_DEL, cr_wire_conn_fd(r->conns[i].c), NULL);
	cr_wire_conn_free(r->conns[i].c);
	r->conns[i] = r->conns[--r->n_conns];
}

static void conn_readable(rec *r, cr_wire_conn *c)
{
	size_t i;
	int rc;

	for (i = 0; i < r->n_conns && r->conns[i].c != c; i++)
		;
	if (i == r->n_conns)
		return;
	rc = cr_wire_conn_read(c, stage_cb, r);
	if (rc == 0)
		return;
	if (rc < 0) {
		/* The process broke the protocol: say so, and stop listening to it. */
		char msg[300];

		snprintf(msg, sizeof(msg), "%s", cr_error_last());
		unobserved(r, cr_wire_conn_pid(c), now_ns(CLOCK_REALTIME), "protocol_error", NULL, 0,
		           json_pack("[s]", msg));
	}
	conn_close(r, i);
}

static void drain_rings(rec *r)
{
	for (size_t i = 0; i < r->n_conns; i++) {
		if (cr_wire_conn_drain(r->conns[i].c, stage_cb, r) < 0) {
			char msg[300];

			snprintf(msg, sizeof(msg), "%s", cr_error_last());
			unobserved(r, cr_wire_conn_pid(r->conns[i].c), now_ns(CLOCK_REALTIME),
			           "protocol_error", NULL, 0, json_pack("[s]", msg));
			conn_close(r, i);
			i--;
			continue;
		}
		conn_check_dropped(r, &r->conns[i]);
	}
}

/* ---- the run -------------------------------------------------------------------- */

static int resolve_exe(const char *name, char out[PATH_MAX])
{
	const char *path = getenv("PATH");
	char cand[PATH_MAX];

	if (strchr(name, '/'))
		return realpath(name, out) ? 0 : -1;
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	while (*path) {
		size_t n = strcspn(path, ":");

		if (snprintf(cand, sizeof(cand), "%.*s/%s", (int)n, path, name) < (int)sizeof(cand) &&
		    access(cand, X_OK) == 0 && realpath(cand, out))
			return 0;
		path += n;
		if (*path == ':')
			path++;
	}
	return -1;
}

static int run_start_event(rec *r, uint64_t *leaf)
{
	json_t *ev = event_base(r, "run_start", r->start_ns), *argv = json_array(), *red = NULL;
	char cwd[PATH_MAX], exe[PATH_MAX], host[256] = "";
	struct passwd *pw = getpwuid(getuid());
	uint8_t sha[32];
	cr_file_id id;
	int rc;

	if (!ev || !argv) {
		json_decref(ev);
		json_decref(argv);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	for (size_t i = 0; r->opts->argv[i]; i++) {
		json_t *one = argv_json(r->opts->argv[i], strlen(r->opts->argv[i]) + 1);

		json_array_extend(argv, one);
		json_decref(one);
	}
	json_object_set_new(ev, "argv", argv);
	if (getcwd(cwd, sizeof(cwd)))
		cr_event_set_path(ev, "cwd", cwd, strlen(cwd));
	gethostname(host, sizeof(host) - 1);
	cr_event_set_str(ev, "host", host);
	cr_event_set_int(ev, "uid", (int64_t)getuid());
	if (pw && pw->pw_name)
		cr_event_set_str(ev, "user", pw->pw_name);
	json_object_set_new(ev, "env", cr_env_selection(environ, &red));
	json_object_set_new(ev, "env_redacted", red);
	json_object_set_new(ev, "data_roots", cr_classifier_roots_json(r->cls));
	json_object_set_new(ev, "checkpoint_patterns", cr_classifier_globs_json(r->cls));
	cr_event_set_str(ev, "recorder", "cleanroom " CLEANROOM_VERSION_STRING);
	if (resolve_exe(r->opts->argv[0], exe) == 0) {
		cr_event_set_path(ev, "executable", exe, strlen(exe));
		if (cr_hash_file(exe, sha, &id) == 0)
			cr_event_set_hex(ev, "executable_sha256", sha, 32);
		else
			cr_error_clear();
	}
	rc = append(r, ev, leaf);
	json_decref(ev);
	return rc;
}

static int env_cmp(const void *a, const void *b)
{
	return strcmp(((const env_file *)a)->path, ((const env_file *)b)->path);
}

/* One event listing the run's environment files (sorted), with a digest over them. */
static int environment_event(rec *r)
{
	json_t *ev = event_base(r, "environment", now_ns(CLOCK_REALTIME)), *files = json_array();
	uint8_t digest[32];
	int rc;

	if (!ev || !files) {
		json_decref(ev);
		json_decref(files);
		return cr_error_set(CR_ENOMEM, "out of memory");
	}
	if (r->n_envs)
		qsort(r->envs, r->n_envs, sizeof(*r->envs), env_cmp);
	{
		cr_buf all = CR_BUF_INIT;

		for (size_t i = 0; i < r->n_envs; i++) {
			env_file *e = &r->envs[i];
			json_t *f = json_object();
			char hex[65];

			cr_event_set_path(f, "path", e->path, strlen(e->path));
			if (e->rc == 0) {
				cr_hex_encode(hex, e->sha, 32);
				json_object_set_new(f, "sha256", json_string(hex));
				json_object_set_new(f, "size", json_integer((json_int_t)e->size));
				cr_buf_printf(&all, "%s  %s\n", hex, e->path);
			} else {
				json_object_set_new(f, "changed", json_true());
			}
			json_array_append_new(files, f);
		}
		cr_sha256(digest, all.ptr ? all.ptr : "", all.len);
		cr_buf_free(&all);
	}
	json_object_set_new(ev, "files", files);
	cr_event_set_int(ev, "count", (int64_t)r->n_envs);
	/* sha256 over "<sha256>  <path>\n" lines, as sha256sum prints them */
	cr_event_set_hex(ev, "digest", digest, 32);
	r->res->env_files = r->n_envs;
	rc = append(r, ev, NULL);
	json_decref(ev);
	return rc;
}

static int run_end_event(rec *r, uint64_t *leaf)
{
	uint64_t end = now_ns(CLOCK_REALTIME);
	json_t *ev = event_base(r, "run_end", end);
	cr_record_result *s = r->res;
	int rc;

	if (!ev)
		return cr_error_set(CR_ENOMEM, "out of memory");
	cr_event_set_int(ev, "exit_status", s->exit_status);
	if (s->signal)
		cr_event_set_int(ev, "signal", s->signal);
	cr_event_set_int(ev, "duration_ms", (int64_t)((end - r->start_ns) / 1000000));
	json_object_set_new(ev, "counts",
	                    json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I}", "processes",
	                              (json_int_t)s->processes, "inputs", (json_int_t)s->inputs,
	                              "input_bytes", (json_int_t)s->input_bytes, "reads",
	                              (json_int_t)s->reads, "checkpoints", (json_int_t)s->checkpoints,
	                              "environment_files", (json_int_t)s->env_files, "unobserved",
	                              (json_int_t)s->unobserved, "changed", (json_int_t)s->changed));
	rc = append(r, ev, leaf);
	json_decref(ev);
	return rc;
}

static void child_exec(rec *r, int errpipe, const sigset_t *oldmask)
{
	const char *old = getenv("LD_PRELOAD");
	char *preload;
	size_t n;
	int e;

	n = strlen(r->opts->preload) + (old ? strlen(old) + 1 : 0) + 1;
	preload = malloc(n);
	if (preload) {
		snprintf(preload, n, "%s%s%s", r->opts->preload, old && *old ? ":" : "",
		         old && *old ? old : "");
		setenv("LD_PRELOAD", preload, 1);
	}
	setenv(CRW_ENV_SOCKET, r->sockpath, 1);
	setenv(CRW_ENV_RUN, r->run, 1);
	setenv(CRW_ENV_PRELOAD, r->opts->preload, 1);
	sigprocmask(SIG_SETMASK, oldmask, NULL);
	execvp(r->opts->argv[0], r->opts->argv);
	e = errno;
	if (write(errpipe, &e, sizeof(e)) < 0) {
	}
	_exit(127);
}

static void forward_signal(rec *r, const struct signalfd_siginfo *si)
{
	/* Terminal signals reach the whole foreground group, the command included;
	 * forward only what was sent to us alone. */
	if (si->ssi_code == SI_USER || si->ssi_code == SI_QUEUE)
		kill(r->child, (int)si->ssi_signo);
}

static void reap(rec *r)
{
	int status;
	pid_t p;

	while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
		if (p != r->child)
			continue;
		r->child_done = 1;
		r->child_done_ns = now_ns(CLOCK_MONOTONIC);
		if (WIFEXITED(status)) {
			r->res->exit_status = WEXITSTATUS(status);
		} else if (WIFSIGNALED(status)) {
			r->res->signal = WTERMSIG(status);
			r->res->exit_status = 128 + WTERMSIG(status);
		}
	}
}

static void progress(rec *r)
{
	static uint64_t last;
	uint64_t t = now_ns(CLOCK_MONOTONIC);

	if (r->opts->quiet || t - last < 1000000000ull || !isatty(2))
		return;
	last = t;
	fprintf(stderr, "\rcleanroom: %llu inputs, %llu reads, %llu checkpoints, %llu processes   ",
	        (unsigned long long)r->res->inputs, (unsigned long long)r->res->reads,
	        (unsigned long long)r->res->checkpoints, (unsigned long long)r->res->processes);
}

static int setup(rec *r)
{
	struct epoll_event ee = {.events = EPOLLIN};
	struct itimerspec its = {{0, 5000000}, {0, 5000000}};
	sigset_t mask;
	int rc;

	snprintf(r->sockdir, sizeof(r->sockdir), "/tmp/cleanroom-XXXXXX");
	if (!mkdtemp(r->sockdir))
		return cr_error_set_errno(CR_EIO, errno, "cannot make a private folder in /tmp");
	snprintf(r->sockpath, sizeof(r->sockpath), "%s/hook.sock", r->sockdir);
	if ((rc = cr_wire_listen(r->sockpath, &r->listen_fd)) != 0)
		return rc;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGQUIT);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGUSR2);
	if ((r->sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK)) < 0 ||
	    (r->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK)) < 0 ||
	    timerfd_settime(r->timer_fd, 0, &its, NULL) != 0 ||
	    (r->epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
		return cr_error_set_errno(CR_EIO, errno, "setting up the event loop");
	ee.data.ptr = &r->listen_fd;
	epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->listen_fd, &ee);
	ee.data.ptr = &r->sig_fd;
	epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->sig_fd, &ee);
	ee.data.ptr = &r->timer_fd;
	epoll_ctl(r->epfd, EPOLL_CTL_ADD, r->timer_fd, &ee);
	ee.data.ptr = r->pool;
	epoll_ctl(r->epfd, EPOLL_CTL_ADD, cr_hash_pool_eventfd(r->pool), &ee);
	ee.data.ptr = r->ckw;
	epoll_ctl(r->epfd, EPOLL_CTL_ADD, cr_ckpt_worker_eventfd(r->ckw), &ee);
	ee.data.ptr = r->shw;
	epoll_ctl(r->epfd, EPOLL_CTL_ADD, cr_ckpt_worker_eventfd(r->shw), &ee);
	return 0;
}

static void teardown(rec *r)
{
	while (r->n_conns)
		conn_close(r, r->n_conns - 1);
	free(r->conns);
	for (size_t i = 0; i < r->n_stage; i++) {
		if (r->stage[i]->ev.passed_fd >= 0)
			close(r->stage[i]->ev.passed_fd);
		free(r->stage[i]->buf);
		free(r->stage[i]);
	}
	free(r->stage);
	cr_hash_pool_free(r->pool);
	cr_ckpt_worker_free(r->ckw);
	cr_ckpt_worker_free(r->shw);
	while (r->head) {
		item *it = r->head;

		r->head = it->next;
		item_free(it);
	}
	for (size_t i = 0; i < r->n_versions; i++) {
		free(r->versions[i].path);
		json_decref(r->versions[i].labels);
		json_decref(r->versions[i].shard);
		free(r->versions[i].shard_error);
	}
	free(r->versions);
	for (size_t i = 0; i < r->n_envs; i++)
		free(r->envs[i].path);
	free(r->envs);
	free(r->jobs);
	for (size_t i = 0; i < RECENT_WRITES; i++) {
		if (r->recent[i].fd >= 0)
			close(r->recent[i].fd);
		free(r->recent[i].path);
	}
	for (size_t i = 0; i < r->n_procs; i++)
		free(r->procs[i].exec_path);
	free(r->procs);
	for (size_t i = 0; i < r->n_ckpts; i++)
		free(r->ckpts[i].path);
	free(r->ckpts);
	kmap_free(&r->ckpt_by_path);
	kmap_free(&r->by_id);
	kmap_free(&r->by_path);
	kmap_free(&r->env_by_path);
	kmap_free(&r->interval_readers);
	free(r->interval.v);
	cr_classifier_free(r->cls);
	if (r->listen_fd >= 0)
		close(r->listen_fd);
	if (r->sig_fd >= 0)
		close(r->sig_fd);
	if (r->timer_fd >= 0)
		close(r->timer_fd);
	if (r->epfd >= 0)
		close(r->epfd);
	if (r->sockpath[0])
		unlink(r->sockpath);
	if (r->sockdir[0])
		rmdir(r->sockdir);
}

/*
 * The run being recorded needs the CPUs more than the recorder does: by
 * default hash on all CPUs but one (at least one thread).
 */
static unsigned record_threads(void)
{
	unsigned n = cr_hash_default_threads();

	return n > 1 ? n - 1 : 1;
}

int cr_record_run(cr_store *store, const cr_record_options *opts, cr_record_result *out)
{
	rec r;
	sigset_t mask, oldmask;
	int errpipe[2] = {-1, -1}, rc, e = 0;
	ssize_t got;

	memset(&r, 0, sizeof(r));
	memset(out, 0, sizeof(*out));
	r.store = store;
	r.opts = opts;
	r.res = out;
	r.tail = &r.head;
	r.prev_checkpoint = NO_LEAF;
	r.listen_fd = r.sig_fd = r.timer_fd = r.epfd = -1;
	for (size_t i = 0; i < RECENT_WRITES; i++)
		r.recent[i].fd = -1;
	if (!opts->argv || !opts->argv[0])
		return cr_error_set(CR_EINVAL, "no command to record");
	if (!opts->preload || access(opts->preload, R_OK) != 0)
		return cr_error_set(CR_ENOTFOUND, "the preload library %s is missing",
		                    opts->preload ? opts->preload : "(none)");
	/* Block the signals we take through the signalfd before any thread
	 * starts: a hashing thread must never be the one they are delivered to. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGQUIT);
	sigaddset(&mask, SIGUSR1);
	sigaddset(&mask, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &mask, &oldmask);
	if ((rc = cr_uuid7(r.run)) != 0 ||
	    (rc = cr_classifier_new(&r.cls, opts->data_roots, opts->n_data_roots,
	                            opts->checkpoint_globs, opts->n_checkpoint_globs)) != 0 ||
	    (rc = cr_hash_pool_new(&r.pool, opts->hash_threads ? opts->hash_threads : record_threads())) != 0 ||
	    (rc = cr_ckpt_worker_new(&r.ckw, cr_store_path(store), !opts->no_delta, 1)) != 0 ||
	    (rc = cr_ckpt_worker_new(&r.shw, cr_store_path(store), 0, record_threads())) != 0)
		goto done;
	snprintf(out->run_id, sizeof(out->run_id), "%s", r.run);
	if ((rc = setup(&r)) != 0)
		goto done;
	r.start_ns = now_ns(CLOCK_REALTIME);
	if ((rc = run_start_event(&r, &out->first_event)) != 0 || (rc = cr_store_flush(store)) != 0)
		goto done;
	if (pipe2(errpipe, O_CLOEXEC) != 0) {
		rc = cr_error_set_errno(CR_EIO, errno, "pipe");
		goto done;
	}
	r.child = fork();
	if (r.child < 0) {
		rc = cr_error_set_errno(CR_EIO, errno, "fork");
		goto done;
	}
	if (r.child == 0) {
		close(errpipe[0]);
		child_exec(&r, errpipe[1], &oldmask);
	}
	close(errpipe[1]);
	errpipe[1] = -1;
	got = read(errpipe[0], &e, sizeof(e));
	close(errpipe[0]);
	errpipe[0] = -1;
	if (got == (ssize_t)sizeof(e)) {
		/* The command never ran; record that and say why. */
		waitpid(r.child, NULL, 0);
		out->exit_status = 127;
		cr_error_set_errno(CR_ENOTFOUND, e, "cannot run %s", opts->argv[0]);
		snprintf(r.error, sizeof(r.error), "%s", cr_error_last());
		run_end_event(&r, &out->last_event);
		cr_store_flush(store);
		cr_error_set_errno(CR_ENOTFOUND, e, "cannot run %s", opts->argv[0]);
		rc = CR_ENOTFOUND;
		goto done;
	}
	if (opts->nice > 0) {
		/*
		 * The command runs at the priority it was given; the recorder
		 * takes a lower one, so that its hashing and bookkeeping fill the
		 * CPU time the training leaves idle rather than taking turns with
		 * it. By default the hashing and archive threads run at SCHED_IDLE
		 * and this thread (reports, events, the log) 10 levels lower: it
		 * must still pass each checkpoint on at once, because the next
		 * save may rewrite it in place. The checkpoint thread keeps the
		 * command's priority. If the recorder falls behind, the hook's
		 * ring fills and the command waits for it.
		 */
		int base = cr_thread_nice();
		int main_nice = base + (opts->nice >= CR_RECORD_IDLE ? MAIN_IDLE_NICE : opts->nice);
		int workers;

		if (main_nice > 19)
			main_nice = 19;
		workers = opts->nice >= CR_RECORD_IDLE ? CR_NICE_IDLE : main_nice;
		(void)cr_thread_lower(main_nice);
		cr_hash_pool_set_nice(r.pool, workers);
		cr_ckpt_worker_set_nice(r.shw, workers);
	}
	r.last_flush_ns = now_ns(CLOCK_MONOTONIC);
	for (;;) {
		struct epoll_event evs[64];
		int n = epoll_wait(r.epfd, evs, 64, 50);
		uint64_t t;

		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;

			if (p == &r.listen_fd) {
				cr_wire_conn *c;

				while (cr_wire_accept(r.listen_fd, &c) == 0) {
					if (conn_add(&r, c) != 0)
						cr_wire_conn_free(c);
				}
				cr_error_clear();
			} else if (p == &r.sig_fd) {
				struct signalfd_siginfo si;

				while (read(r.sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
					if (si.ssi_signo == SIGCHLD)
						reap(&r);
					else
						forward_signal(&r, &si);
				}
			} else if (p == &r.timer_fd) {
				uint64_t ticks;

				if (read(r.timer_fd, &ticks, sizeof(ticks)) < 0) {
				}
				drain_rings(&r);
				if (!r.child_done)
					reap(&r); /* in case a SIGCHLD was merged with another */
			} else if (p == r.pool) {
				collect_hashes(&r);
			} else if (p == r.ckw || p == r.shw) {
				collect_checkpoints(&r);
			} else {
				conn_readable(&r, p);
			}
		}
		process_staged(&r, 0);
		collect_hashes(&r);
		collect_checkpoints(&r);
		drain_pipeline(&r);
		t = now_ns(CLOCK_MONOTONIC);
		if (!r.failed && t - r.last_flush_ns >= FLUSH_NS && cr_store_pending(store)) {
			if ((rc = cr_store_flush(store)) != 0)
				set_fail(&r, rc);
			r.last_flush_ns = t;
		}
		progress(&r);
		if (r.child_done && (r.n_conns == 0 || t - r.child_done_ns > LINGER_NS))
			break;
	}
	/* Processes still connected outlived the command: say so, keep what they sent. */
	for (size_t i = 0; i < r.n_conns; i++)
		unobserved(&r, cr_wire_conn_pid(r.conns[i].c), now_ns(CLOCK_REALTIME),
		           "outlived_the_command", NULL, 0, NULL);
	drain_rings(&r);
	process_staged(&r, 1);
	/* An exec'd image that never said hello could not be followed. */
	for (size_t i = 0; i < r.n_procs; i++) {
		proc *p = &r.procs[i];

		if (p->exec_pending)
			unobserved(&r, p->pid, p->exec_time, "silent_after_exec", p->exec_path,
			           p->exec_path ? strlen(p->exec_path) : 0, NULL);
	}
	while (r.head && !r.failed) {
		collect_hashes(&r);
		collect_checkpoints(&r);
		drain_pipeline(&r);
		if (r.head && !item_ready(&r, r.head)) {
			if (!cr_hash_pool_busy(r.pool) && !cr_ckpt_worker_busy(r.ckw) &&
			    !cr_ckpt_worker_busy(r.shw)) {
				cr_error_set(CR_ERROR, "internal: an event waits for a hash nobody computes");
				set_fail(&r, CR_ERROR);
				break;
			}
			usleep(1000);
		}
	}
	while (cr_hash_pool_busy(r.pool) || cr_ckpt_worker_busy(r.ckw) || cr_ckpt_worker_busy(r.shw)) {
		collect_hashes(&r);
		collect_checkpoints(&r);
		usleep(1000);
	}
	collect_hashes(&r);
	collect_checkpoints(&r);
	if (!r.failed)
		environment_event(&r);
	if (!r.failed)
		run_end_event(&r, &out->last_event);
	if (!r.failed && (rc = cr_store_flush(store)) != 0)
		set_fail(&r, rc);
	if (!opts->quiet && isatty(2))
		fputc('\n', stderr);
	rc = r.failed;
	if (rc)
		cr_error_set(rc, "%s", r.error);
done:
	teardown(&r); /* joins the hashing threads before the mask is lifted */
	pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
	if (errpipe[0] >= 0)
		close(errpipe[0]);
	if (errpipe[1] >= 0)
		close(errpipe[1]);
	return rc;
}
