/*
 * record_noclone3: run a command with clone3(2) failing with ENOSYS, so that
 * glibc (2.34+) falls back to clone(2) for new threads and posix_spawn.
 *
 * Debian 12's reprozip 1.1 aborts on clone3 ("we didn't see syscall entry");
 * bench/record_workload.sh runs the traced command through this wrapper.
 * A raw seccomp BPF filter (prctl(PR_SET_SECCOMP)), so no libseccomp needed.
 * The filter is inherited by every child and survives exec.
 *
 *   record_noclone3 CMD [ARGS...]
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#ifndef __NR_clone3
#define __NR_clone3 435
#endif

#if defined(__x86_64__)
#define ARCH_NR AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH_NR AUDIT_ARCH_AARCH64
#else
#error "record_noclone3: unknown architecture"
#endif

int main(int argc, char **argv)
{
	struct sock_filter filter[] = {
		/* Another ABI (e.g. x32 / ia32 on x86_64): leave it alone. */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH_NR, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {
		.len = (unsigned short)(sizeof(filter) / sizeof(filter[0])),
		.filter = filter,
	};

	if (argc < 2) {
		fprintf(stderr, "usage: record_noclone3 CMD [ARGS...]\n");
		return 2;
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		fprintf(stderr, "record_noclone3: PR_SET_NO_NEW_PRIVS: %s\n", strerror(errno));
		return 126;
	}
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0) {
		fprintf(stderr, "record_noclone3: PR_SET_SECCOMP: %s\n", strerror(errno));
		return 126;
	}
	execvp(argv[1], argv + 1);
	fprintf(stderr, "record_noclone3: %s: %s\n", argv[1], strerror(errno));
	return errno == ENOENT ? 127 : 126;
}
