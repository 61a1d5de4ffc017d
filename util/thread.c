/* Scheduling of the calling thread (Linux). */
#include <errno.h>
#include <sched.h>
#include <sys/resource.h>

#include "util/thread.h"

int cr_thread_nice(void)
{
	int n;

	errno = 0;
	n = getpriority(PRIO_PROCESS, 0);
	return n == -1 && errno != 0 ? 0 : n;
}

int cr_thread_lower(int nice)
{
	if (nice == CR_NICE_UNSET)
		return 0;
	if (nice >= CR_NICE_IDLE) {
		struct sched_param sp = {0};

		/* PID 0 is the calling thread. */
		return sched_setscheduler(0, SCHED_IDLE, &sp) == 0 ? 0 : -1;
	}
	if (nice <= cr_thread_nice())
		return 0;
	/* PRIO_PROCESS 0 is the calling thread alone on Linux. */
	return setpriority(PRIO_PROCESS, 0, nice) == 0 ? 0 : -1;
}

void cr_thread_follow(int *taken, int want)
{
	if (want != *taken) {
		*taken = want;
		(void)cr_thread_lower(want);
	}
}
