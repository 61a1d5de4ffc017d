/* Scheduling of the calling thread. */
#ifndef CLEANROOM_UTIL_THREAD_H
#define CLEANROOM_UTIL_THREAD_H

/* The nice value that stands for SCHED_IDLE in cr_thread_lower. */
#define CR_NICE_IDLE 20
/* No priority asked for (workers keep theirs). */
#define CR_NICE_UNSET (-1000)

/* A nice value for cr_thread_lower: -20..19, or CR_NICE_IDLE. */
static inline int cr_nice_clamp(int nice)
{
	return nice < -20 ? -20 : nice > CR_NICE_IDLE ? CR_NICE_IDLE : nice;
}

/*
 * Lower the calling thread's priority, and only its own (Linux keeps a nice
 * value per thread): to nice (-20..19), or with CR_NICE_IDLE to SCHED_IDLE,
 * where it runs only on a CPU nothing else wants. Never raises it (that
 * needs privilege). 0 on success; failing leaves the thread as it was.
 */
int cr_thread_lower(int nice);

/*
 * For a worker thread: take the priority want (a cr_thread_lower value, or
 * CR_NICE_UNSET) when it differs from *taken, what the thread took last.
 * Call it without holding a lock another thread waits on.
 */
void cr_thread_follow(int *taken, int want);

/* This thread's nice value (0 when it cannot be read). */
int cr_thread_nice(void);

#endif
