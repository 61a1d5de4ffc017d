/*
 * record_micro: the hottest path of a recorded run, timed from inside the
 * program so that the recorder's start-up and shutdown are not counted.
 *
 *   record_micro prep DIR N [SIZE]   write N files of SIZE bytes (default 4096)
 *                                    as DIR/dNNNN/fNNNNNNN, 1000 per folder
 *   record_micro run DIR N [ROUNDS]  ROUNDS passes (default 5) of
 *                                    open/read/close over the N files
 *
 * `run` prints one line per pass, "record_micro: round R ns_per_file X
 * loop_s Y", then "record_micro: vmhwm_kib K" (this process's own peak RSS).
 * The contents are distinct per file (the index is written into each), so a
 * recorder hashes N different contents.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PER_DIR 1000

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void file_path(char *buf, size_t len, const char *dir, long i)
{
	snprintf(buf, len, "%s/d%04ld/f%07ld", dir, i / PER_DIR, i);
}

static long vmhwm_kib(void)
{
	char line[256];
	long kib = -1;
	FILE *f = fopen("/proc/self/status", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "VmHWM:", 6) == 0)
			kib = strtol(line + 6, NULL, 10);
	fclose(f);
	return kib;
}

static int prep(const char *dir, long n, long size)
{
	char path[4096], *buf;
	long i;
	int fd;

	buf = malloc((size_t)size);
	if (!buf)
		return 1;
	memset(buf, 'x', (size_t)size);
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		perror(dir);
		return 1;
	}
	for (i = 0; i < n; i++) {
		if (i % PER_DIR == 0) {
			snprintf(path, sizeof(path), "%s/d%04ld", dir, i / PER_DIR);
			if (mkdir(path, 0755) != 0 && errno != EEXIST) {
				perror(path);
				return 1;
			}
		}
		snprintf(buf, (size_t)size, "%ld\n", i); /* distinct content */
		buf[strlen(buf)] = 'x';
		file_path(path, sizeof(path), dir, i);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || write(fd, buf, (size_t)size) != (ssize_t)size) {
			perror(path);
			return 1;
		}
		close(fd);
	}
	free(buf);
	return 0;
}

static int run(const char *dir, long n, int rounds)
{
	char path[4096], buf[65536];
	double t0, dt;
	long i;
	int r, fd;

	for (r = 1; r <= rounds; r++) {
		t0 = now();
		for (i = 0; i < n; i++) {
			file_path(path, sizeof(path), dir, i);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0) {
				perror(path);
				return 1;
			}
			if (read(fd, buf, sizeof(buf)) <= 0) {
				perror(path);
				return 1;
			}
			close(fd);
		}
		dt = now() - t0;
		printf("record_micro: round %d ns_per_file %.0f loop_s %.6f\n", r, dt * 1e9 / (double)n, dt);
	}
	printf("record_micro: vmhwm_kib %ld\n", vmhwm_kib());
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	long n;

	if (argc < 4) {
		fprintf(stderr, "usage: record_micro prep DIR N [SIZE] | run DIR N [ROUNDS]\n");
		return 2;
	}
	n = atol(argv[3]);
	if (n < 1)
		return 2;
	if (strcmp(argv[1], "prep") == 0) {
		long size = argc > 4 ? atol(argv[4]) : 4096;

		if (size < 16 || size > 65536)
			return 2;
		return prep(argv[2], n, size);
	}
	if (strcmp(argv[1], "run") == 0) {
		int rounds = argc > 4 ? atoi(argv[4]) : 5;

		if (rounds < 1 || rounds > 1000)
			return 2;
		return run(argv[2], n, rounds);
	}
	return 2;
}
