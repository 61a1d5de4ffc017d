/*
 * bench_open: the hook's cost on the hottest path. `bench_open prep DIR N`
 * writes N files of 4 KiB; `bench_open run DIR N [ROUNDS]` times ROUNDS
 * loops of open/read/close over them and prints the best and median
 * nanoseconds per file. Run it bare and under hookdump --quiet to compare.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	char path[4096], buf[4096];
	double t[64], t0;
	int n, i, r, rounds, fd;

	if (argc < 4)
		return 2;
	n = atoi(argv[3]);
	if (strcmp(argv[1], "prep") == 0) {
		memset(buf, 'x', sizeof(buf));
		for (i = 0; i < n; i++) {
			snprintf(path, sizeof(path), "%s/f%05d", argv[2], i);
			fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
			if (fd < 0 || write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
				return 1;
			close(fd);
		}
		return 0;
	}
	rounds = argc > 4 ? atoi(argv[4]) : 5;
	if (rounds < 1 || rounds > 64)
		return 2;
	for (r = 0; r < rounds; r++) {
		t0 = now();
		for (i = 0; i < n; i++) {
			snprintf(path, sizeof(path), "%s/f%05d", argv[2], i);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0 || read(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf))
				return 1;
			close(fd);
		}
		t[r] = (now() - t0) / n;
	}
	qsort(t, (size_t)rounds, sizeof(t[0]), cmp);
	printf("best %.0f ns/file, median %.0f ns/file\n", t[0], t[rounds / 2]);
	return 0;
}
