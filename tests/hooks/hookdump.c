/*
 * hookdump: run a command under the preload hook and print every event the
 * hook reports as one JSON line on stdout. A test tool for hooks/ and
 * recorder/wire.c (it is the smallest complete recorder loop).
 *
 *   hookdump [--preload LIB] [--quiet] [--linger MS] SOCKET_DIR -- CMD ARGS...
 *
 * It listens on SOCKET_DIR/hook.sock, runs CMD with LD_PRELOAD, CLEANROOM_SOCKET,
 * CLEANROOM_RUN and CLEANROOM_PRELOAD set, and epoll-loops over the listener,
 * the connections and a 5 ms timer that drains every ring. hookdump is a
 * child subreaper, so it knows when every descendant has gone; it exits
 * with CMD's status once CMD and all descendants exited and every
 * connection closed, or --linger ms (default 10000) after CMD exited.
 * For WRITTEN it prints the SHA-256 of the passed descriptor's content.
 * CMD's stdout is hookdump's stderr, so stdout holds nothing but events.
 *
 * Lines: {"ev":"hello"|"open"|"rename"|"link"|"unlink"|"truncate"|"fork"|
 * "exec"|"spawn"|"unobserved"|"exit"|"written"|"note"|"closed"|"error"|
 * "done", ...}. Strings are JSON-escaped; bytes >= 0x80 pass through raw.
 * Exit status: CMD's (128+signal if killed), 2 on bad usage, 3 when the
 * tool itself fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cleanroom/error.h"
#include "recorder/wire.h"

#define TICK_NS  5000000L
#define QUIET_MS 100

struct dump {
	bool quiet;
	unsigned long events;
	int errors;
};

static void json_str(FILE *f, const char *s, size_t n)
{
	size_t i;

	fputc('"', f);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c == '\n')
			fputs("\\n", f);
		else if (c == '\t')
			fputs("\\t", f);
		else if (c < 0x20 || c == 0x7f)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_argv(FILE *f, const char *a, size_t n)
{
	size_t i = 0, l;
	bool first = true;

	fputc('[', f);
	while (i < n) {
		l = strnlen(a + i, n - i);
		if (!first)
			fputc(',', f);
		json_str(f, a + i, l);
		first = false;
		i += l + 1;
	}
	fputc(']', f);
}

static const char *ev_name(int type)
{
	switch (type) {
	case CRW_REC_OPEN: return "open";
	case CRW_REC_RENAME: return "rename";
	case CRW_REC_LINK: return "link";
	case CRW_REC_UNLINK: return "unlink";
	case CRW_REC_TRUNCATE: return "truncate";
	case CRW_REC_FORK: return "fork";
	case CRW_REC_EXEC: return "exec";
	case CRW_REC_SPAWN: return "spawn";
	case CRW_REC_UNOBSERVED: return "unobserved";
	case CRW_REC_EXIT: return "exit";
	case CR_WIRE_HELLO: return "hello";
	case CR_WIRE_WRITTEN: return "written";
	case CR_WIRE_NOTE: return "note";
	default: return "?";
	}
}

/* SHA-256 of everything behind fd, read through a fresh O_RDONLY open. */
static int hash_fd(int fd, char hex[65], uint64_t *bytes)
{
	static const char digits[] = "0123456789abcdef";
	unsigned char buf[65536], md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0, i;
	char link[64];
	EVP_MD_CTX *ctx = NULL;
	ssize_t r;
	int rfd, rc = -1;

	*bytes = 0;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	rfd = open(link, O_RDONLY | O_CLOEXEC);
	if (rfd < 0)
		return -1;
	ctx = EVP_MD_CTX_new();
	if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto done;
	for (;;) {
		r = read(rfd, buf, sizeof(buf));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto done;
		if (r == 0)
			break;
		if (EVP_DigestUpdate(ctx, buf, (size_t)r) != 1)
			goto done;
		*bytes += (uint64_t)r;
	}
	if (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1)
		goto done;
	for (i = 0; i < mdlen && i < 32; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[64] = '\0';
	rc = 0;
done:
	EVP_MD_CTX_free(ctx);
	close(rfd);
	return rc;
}

static int on_event(void *arg, const cr_wire_event *ev)
{
	struct dump *d = arg;
	FILE *f = stdout;
	char hex[65];
	uint64_t bytes;

	d->events++;
	if (d->quiet) {
		if (ev->passed_fd >= 0)
			close(ev->passed_fd);
		return 0;
	}
	fprintf(f, "{\"ev\":\"%s\",\"pid\":%" PRId32, ev_name(ev->type), ev->pid);
	if (ev->tid)
		fprintf(f, ",\"tid\":%" PRId32, ev->tid);
	fprintf(f, ",\"time_ns\":%" PRIu64 ",\"flags\":%" PRIu32, ev->time_ns, ev->flags);
	switch (ev->type) {
	case CR_WIRE_HELLO:
		fprintf(f, ",\"ppid\":%" PRId32 ",\"exe\":", ev->ppid);
		json_str(f, ev->path, ev->path_len);
		fputs(",\"argv\":", f);
		json_argv(f, ev->argv, ev->argv_len);
		break;
	case CRW_REC_OPEN:
		fprintf(f,
		        ",\"fd\":%" PRId32 ",\"dev\":%" PRIu64 ",\"ino\":%" PRIu64
		        ",\"size\":%" PRIu64,
		        ev->fd, ev->id.dev, ev->id.ino, ev->id.size);
		fputs(",\"path\":", f);
		json_str(f, ev->path, ev->path_len);
		break;
	case CRW_REC_RENAME:
	case CRW_REC_LINK:
		fputs(",\"path\":", f);
		json_str(f, ev->path, ev->path_len);
		fputs(",\"path2\":", f);
		json_str(f, ev->path2, ev->path2_len);
		break;
	case CRW_REC_UNLINK:
	case CRW_REC_TRUNCATE:
		fputs(",\"path\":", f);
		json_str(f, ev->path, ev->path_len);
		break;
	case CRW_REC_FORK: fprintf(f, ",\"child\":%" PRId64, ev->arg); break;
	case CRW_REC_EXIT: fprintf(f, ",\"status\":%" PRId64, ev->arg); break;
	case CRW_REC_EXEC:
	case CRW_REC_SPAWN:
	case CRW_REC_UNOBSERVED:
		fprintf(f, ",\"child\":%" PRId64 ",\"path\":", ev->arg);
		json_str(f, ev->path, ev->path_len);
		fputs(",\"argv\":", f);
		json_argv(f, ev->argv, ev->argv_len);
		break;
	case CR_WIRE_WRITTEN:
		fprintf(f,
		        ",\"ppid\":%" PRId32 ",\"dev\":%" PRIu64 ",\"ino\":%" PRIu64
		        ",\"size\":%" PRIu64 ",\"ring_pos\":%" PRIu64 ",\"path\":",
		        ev->ppid, ev->id.dev, ev->id.ino, ev->id.size, ev->ring_pos);
		json_str(f, ev->path, ev->path_len);
		if (hash_fd(ev->passed_fd, hex, &bytes) == 0)
			fprintf(f, ",\"sha256\":\"%s\",\"hashed\":%" PRIu64, hex, bytes);
		close(ev->passed_fd);
		break;
	case CR_WIRE_NOTE:
		fputs(",\"payload\":", f);
		json_str(f, ev->payload, ev->payload_len);
		break;
	default: break;
	}
	fputs("}\n", f);
	return 0;
}

struct conns {
	cr_wire_conn **v;
	size_t n, cap;
};

static void conn_done(struct dump *d, struct conns *cs, size_t i, int epfd, const char *why)
{
	cr_wire_conn *c = cs->v[i];

	if (why) {
		d->errors++;
		fprintf(stderr, "hookdump: %s\n", why);
		if (!d->quiet) {
			fprintf(stdout, "{\"ev\":\"error\",\"pid\":%" PRId32 ",\"message\":",
			        cr_wire_conn_pid(c));
			json_str(stdout, why, strlen(why));
			fputs("}\n", stdout);
		}
	}
	if (!d->quiet)
		fprintf(stdout, "{\"ev\":\"closed\",\"pid\":%" PRId32 ",\"dropped\":%" PRIu64 "}\n",
		        cr_wire_conn_pid(c), cr_wire_conn_dropped(c));
	epoll_ctl(epfd, EPOLL_CTL_DEL, cr_wire_conn_fd(c), NULL);
	cr_wire_conn_free(c);
	cs->v[i] = cs->v[--cs->n];
}

static int accept_all(struct conns *cs, int lfd, int epfd)
{
	struct epoll_event ee;
	cr_wire_conn *c;
	int rc, got = 0;

	for (;;) {
		rc = cr_wire_accept(lfd, &c);
		if (rc == CR_ENOTFOUND)
			return got;
		if (rc < 0) {
			fprintf(stderr, "hookdump: %s\n", cr_error_last());
			return got;
		}
		if (cs->n == cs->cap) {
			size_t cap = cs->cap ? cs->cap * 2 : 64;
			cr_wire_conn **v = realloc(cs->v, cap * sizeof(*v));

			if (!v) {
				cr_wire_conn_free(c);
				return got;
			}
			cs->v = v;
			cs->cap = cap;
		}
		memset(&ee, 0, sizeof(ee));
		ee.events = EPOLLIN;
		ee.data.ptr = c;
		epoll_ctl(epfd, EPOLL_CTL_ADD, cr_wire_conn_fd(c), &ee);
		cs->v[cs->n++] = c;
		got++;
	}
}

static void read_conn(struct dump *d, struct conns *cs, size_t i, int epfd)
{
	int rc = cr_wire_conn_read(cs->v[i], on_event, d);

	if (rc == 1)
		conn_done(d, cs, i, epfd, NULL);
	else if (rc < 0)
		conn_done(d, cs, i, epfd, cr_error_last());
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int usage(void)
{
	fprintf(stderr, "usage: hookdump [--preload LIB] [--quiet] [--linger MS] SOCKET_DIR -- CMD "
	                "ARGS...\n");
	return 2;
}

int main(int argc, char **argv)
{
	const char *lib = getenv(CRW_ENV_PRELOAD), *dir = NULL, *run = getenv(CRW_ENV_RUN);
	struct dump d = {0};
	struct conns cs = {0};
	struct epoll_event ee, evs[64];
	struct itimerspec its;
	char sock[256], runbuf[64];
	uint64_t linger_ms = 10000, exited_at = 0, quiet_since = 0;
	int i, lfd = -1, epfd, tfd, status = 0, rc, n, cmd_status = -1;
	bool cmd_done = false, descendants = true;
	pid_t child, w;
	size_t k;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--preload") == 0 && i + 1 < argc)
			lib = argv[++i];
		else if (strcmp(argv[i], "--quiet") == 0)
			d.quiet = true;
		else if (strcmp(argv[i], "--linger") == 0 && i + 1 < argc)
			linger_ms = strtoull(argv[++i], NULL, 10);
		else if (strcmp(argv[i], "--") == 0)
			break;
		else if (!dir)
			dir = argv[i];
		else
			return usage();
	}
	if (!dir || i + 1 >= argc || !lib || !*lib)
		return usage();
	if (snprintf(sock, sizeof(sock), "%s/hook.sock", dir) >= (int)sizeof(sock))
		return usage();
	if (!run || !*run) {
		snprintf(runbuf, sizeof(runbuf), "hookdump-%d", (int)getpid());
		run = runbuf;
	}
	unlink(sock);
	if (cr_wire_listen(sock, &lfd) < 0) {
		fprintf(stderr, "hookdump: %s\n", cr_error_last());
		return 3;
	}
	/* Orphans come to us: we can tell when the whole tree is gone. */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	signal(SIGPIPE, SIG_IGN);
	fflush(stdout);
	child = fork();
	if (child < 0) {
		perror("hookdump: fork");
		return 3;
	}
	if (child == 0) {
		close(lfd);
		/* stdout carries the JSON lines: CMD writes to our stderr. */
		dup2(2, 1);
		setenv("LD_PRELOAD", lib, 1);
		setenv(CRW_ENV_SOCKET, sock, 1);
		setenv(CRW_ENV_RUN, run, 1);
		setenv(CRW_ENV_PRELOAD, lib, 1);
		execvp(argv[i + 1], argv + i + 1);
		fprintf(stderr, "hookdump: exec %s: %s\n", argv[i + 1], strerror(errno));
		_exit(127);
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (epfd < 0 || tfd < 0) {
		perror("hookdump: epoll/timerfd");
		return 3;
	}
	memset(&its, 0, sizeof(its));
	its.it_interval.tv_nsec = TICK_NS;
	its.it_value.tv_nsec = TICK_NS;
	timerfd_settime(tfd, 0, &its, NULL);
	memset(&ee, 0, sizeof(ee));
	ee.events = EPOLLIN;
	ee.data.ptr = &lfd;
	epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ee);
	ee.data.ptr = &tfd;
	epoll_ctl(epfd, EPOLL_CTL_ADD, tfd, &ee);

	for (;;) {
		n = epoll_wait(epfd, evs, 64, 50);
		if (n < 0 && errno != EINTR) {
			perror("hookdump: epoll_wait");
			return 3;
		}
		for (i = 0; i < n; i++) {
			if (evs[i].data.ptr == &lfd) {
				accept_all(&cs, lfd, epfd);
			} else if (evs[i].data.ptr == &tfd) {
				uint64_t ticks;

				if (read(tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
					perror("hookdump: timerfd");
				for (k = cs.n; k-- > 0;) {
					rc = cr_wire_conn_drain(cs.v[k], on_event, &d);
					if (rc < 0)
						conn_done(&d, &cs, k, epfd, cr_error_last());
				}
			} else {
				for (k = 0; k < cs.n && cs.v[k] != evs[i].data.ptr; k++)
					;
				if (k < cs.n)
					read_conn(&d, &cs, k, epfd);
			}
		}
		fflush(stdout);
		/* Reap everything: CMD for its status, orphans to know when all are gone. */
		while ((w = waitpid(-1, &status, WNOHANG)) > 0) {
			if (w == child) {
				cmd_done = true;
				exited_at = mono_ms();
				cmd_status = WIFEXITED(status) ? WEXITSTATUS(status)
				                               : 128 + WTERMSIG(status);
			}
		}
		if (w < 0 && errno == ECHILD)
			descendants = false;
		if (!cmd_done)
			continue;
		if (!descendants && cs.n == 0 && accept_all(&cs, lfd, epfd) == 0) {
			/* Nothing left; wait a little for connections still in flight. */
			if (!quiet_since)
				quiet_since = mono_ms();
			else if (mono_ms() - quiet_since >= QUIET_MS)
				break;
		} else {
			quiet_since = 0;
		}
		if (mono_ms() - exited_at >= linger_ms) {
			for (k = cs.n; k-- > 0;) {
				cr_wire_conn_drain(cs.v[k], on_event, &d);
				conn_done(&d, &cs, k, epfd,
				          "straggler: still connected at the linger limit");
			}
			break;
		}
	}
	if (!d.quiet)
		fprintf(stdout, "{\"ev\":\"done\",\"status\":%d,\"events\":%lu,\"errors\":%d}\n",
		        cmd_status, d.events, d.errors);
	else
		fprintf(stderr, "hookdump: %lu events, %d errors\n", d.events, d.errors);
	fflush(stdout);
	free(cs.v);
	close(lfd);
	unlink(sock);
	return cmd_status;
}
