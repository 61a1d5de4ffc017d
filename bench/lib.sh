# shellcheck shell=bash disable=SC2034,SC2046
# Shared helpers for the bench/*.sh scripts (sourced, not run).
#
# Environment:
#   CLEANROOM      the cleanroom binary (default: build/cleanroom in the repo)
#   BENCH_TMPDIR   where the scratch folder goes (default: /var/tmp)
#   REPS           repetitions per measurement (each script has its default)
#
# Every figure printed is measured in this run; nothing is hard-coded.

BENCH_TOP=$(cd "$(dirname "$0")/.." && pwd)
CLEANROOM=${CLEANROOM:-"$BENCH_TOP/build/cleanroom"}
case $CLEANROOM in /*) ;; *) CLEANROOM="$(pwd)/$CLEANROOM" ;; esac
NPROC=$(nproc)
BENCH_TMP=

bench_die() {
	echo "$(basename "$0"): $*" >&2
	exit 2
}

bench_cleanup() {
	if [ -n "$BENCH_TMP" ] && [ -d "$BENCH_TMP" ]; then
		rm -rf -- "$BENCH_TMP"
	fi
}

# Check the tools, make the scratch folder and remove it on any exit.
# usage: bench_init NEEDED_MIB
bench_init() {
	need_mib=$1
	[ -x "$CLEANROOM" ] || bench_die "no cleanroom binary at $CLEANROOM (run scripts/build.sh or set CLEANROOM)"
	for tool in openssl sha256sum /usr/bin/time awk find xargs perl; do
		command -v "$tool" >/dev/null 2>&1 || bench_die "needs $tool"
	done
	base=${BENCH_TMPDIR:-/var/tmp}
	avail_mib=$(df -Pm "$base" | awk 'NR == 2 { print $4 }')
	[ "$avail_mib" -ge $((need_mib + 512)) ] ||
		bench_die "$base has ${avail_mib} MiB free, this benchmark needs ~${need_mib} MiB"
	BENCH_TMP=$(mktemp -d "$base/cleanroom-bench.XXXXXX")
	trap bench_end EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	wait_quiet
	load_begin
}

bench_end() {
	rc=$?
	[ "$rc" = 0 ] && load_report
	bench_cleanup
	exit "$rc"
}

# CPU jiffies of the whole machine: "busy idle".
machine_jiffies() {
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat
}

# CPU ticks used by this script and every child it has waited for.
self_jiffies() {
	awk '{ print $14 + $15 + $16 + $17 }' "/proc/$$/stat"
}

# Share (percent) of the machine's CPU that was busy over one second.
busy_now() {
	set -- $(machine_jiffies)
	sleep 1
	set -- $1 $2 $(machine_jiffies)
	awk -v b0="$1" -v i0="$2" -v b1="$3" -v i1="$4" \
		'BEGIN { t = (b1 - b0) + (i1 - i0); printf "%.0f", t ? 100 * (b1 - b0) / t : 0 }'
}

# Other processes skew every figure here (and all the more the parallel
# ones): wait up to BENCH_WAIT_QUIET seconds (default 300) for the machine
# to be under 15% busy, then go on regardless; load_report says how busy
# it was.
wait_quiet() {
	waited=0 limit=${BENCH_WAIT_QUIET:-300}
	while b=$(busy_now) && [ "$b" -gt 15 ] && [ "$waited" -lt "$limit" ]; do
		[ "$waited" = 0 ] && echo "(machine ${b}% busy; waiting up to ${limit}s for it to quieten)" >&2
		sleep 4
		waited=$((waited + 5))
	done
}

load_begin() {
	LOAD0_MACHINE=$(machine_jiffies)
	LOAD0_SELF=$(self_jiffies)
}

# How much of the machine other processes used while this script ran.
load_report() {
	set -- $LOAD0_MACHINE $(machine_jiffies) "$LOAD0_SELF" "$(self_jiffies)"
	awk -v b0="$1" -v i0="$2" -v b1="$3" -v i1="$4" -v s0="$5" -v s1="$6" -v n="$NPROC" \
		-v name="$(basename "$0" .sh)" 'BEGIN {
		t = (b1 - b0) + (i1 - i0); o = (b1 - b0) - (s1 - s0); if (o < 0) o = 0
		printf "load %s: other processes used %.0f%% of the %d CPUs while this ran (this script %.0f%%)\n",
			name, t ? 100 * o / t : 0, n, t ? 100 * (s1 - s0) / t : 0 }'
}

bench_machine() {
	cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
	rev=$(git -C "$BENCH_TOP" rev-parse --short HEAD 2>/dev/null || echo unknown)
	echo "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "machine:   $(uname -srm), nproc $NPROC, $mem RAM"
	echo "cpu:       $cpu"
	echo "openssl:   $(openssl version)"
	echo "coreutils: $(sha256sum --version | head -n 1)"
	echo "cleanroom: $CLEANROOM (built $(date -u -r "$CLEANROOM" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$CLEANROOM" | cut -c1-12))"
	echo "bench:     $BENCH_TOP at commit $rev"
	echo "loadavg:   $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, at start)"
	echo "scratch:   $BENCH_TMP ($(df -P "$BENCH_TMP" | awk 'NR == 2 { print $1 }'))"
}

# Run a command with its output thrown away; set T_WALL (seconds, from
# EPOCHREALTIME), T_CPU (user+sys seconds, from /usr/bin/time, including
# children) and T_UTIL (T_CPU / T_WALL: 2.0 means two cores busy throughout).
# The command is run through sh -c so that it may be a pipeline.
# usage: timed 'SHELL COMMAND'
timed() {
	tf="$BENCH_TMP/.time"
	t0=$EPOCHREALTIME
	/usr/bin/time -f '%U %S' -o "$tf" sh -c "$1" >/dev/null ||
		bench_die "failed: $1"
	t1=$EPOCHREALTIME
	T_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
	T_CPU=$(awk '{ printf "%.2f", $1 + $2 }' "$tf")
	T_UTIL=$(awk -v c="$T_CPU" -v w="$T_WALL" 'BEGIN { printf "%.2f", c / w }')
}

# The median of the arguments (numbers).
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# A numeric field of cleanroom's --json output (flat keys only).
# usage: json_field FILE KEY
json_field() {
	tr -d ' \n' <"$1" | sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p"
}

# calc 'AWK EXPRESSION' -> its value
calc() {
	awk "BEGIN { print $1 }"
}

# Read every file under the arguments once so that it is in the page cache.
warm_cache() {
	find "$@" -type f -print0 | xargs -0 cat >/dev/null
}

# Make COUNT files of 1..8 KiB (uniform, fixed seed) under DIR/samples/NN/,
# 200 per folder, like an ML data set of small .npy samples.
# usage: make_small_files DIR COUNT
make_small_files() {
	perl -e '
		use strict; use warnings;
		my ($dir, $count) = @ARGV;
		open(my $r, "<:raw", "/dev/urandom") or die "urandom: $!";
		my $pool = ""; read($r, $pool, 16 << 20) == 16 << 20 or die "urandom short";
		close $r;
		srand(20260101);
		mkdir "$dir"; mkdir "$dir/samples";
		for my $i (0 .. $count - 1) {
			my $sub = sprintf("%s/samples/%03d", $dir, int($i / 200));
			mkdir $sub if $i % 200 == 0;
			my $size = 1024 + int(rand(7169));
			my $off = int(rand(length($pool) - $size));
			open(my $f, ">:raw", sprintf("%s/%07d.npy", $sub, $i)) or die "$sub: $!";
			print $f substr($pool, $off, $size);
			close $f or die "close: $!";
		}' "$1" "$2"
}

# Make COUNT files of MIB MiB of random data: DIR/shard-NN.bin.
# usage: make_big_files DIR COUNT MIB
make_big_files() {
	mkdir -p "$1"
	i=0
	while [ "$i" -lt "$2" ]; do
		head -c $(($3 << 20)) /dev/urandom >"$1/$(printf 'shard-%02d.bin' "$i")"
		i=$((i + 1))
	done
}

# The arguments (numbers) with 3 decimals, space-separated.
fmt3() {
	printf '%.3f ' "$@" | sed 's/ $//'
}

# SHA-256 throughput (MB/s) of `openssl speed` on 1 MiB blocks in memory,
# with one process, or with N processes (-multi N) in total.
# usage: openssl_speed [N]
openssl_speed() {
	if [ "${1:-1}" -gt 1 ]; then
		set -- -multi "$1"
	else
		set --
	fi
	openssl speed -seconds 3 -bytes 1048576 "$@" -evp sha256 2>/dev/null |
		awk '$1 == "sha256" { v = $NF } END { sub(/k$/, "", v); printf "%.0f", v / 1000 }'
}
