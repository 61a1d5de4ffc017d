# Shared helpers for bench/record_*.sh (sourced by bash, not run).
#
# Environment:
#   CLEANROOM      the cleanroom binary (default: build/cleanroom in the repo);
#                  the preload library is taken from beside it
#   BENCH_TMPDIR   where the scratch folder goes (default: /var/tmp)
#
# The binary and libcleanroom-preload.so are copied into the scratch folder
# first, so a rebuild while a benchmark runs does not change what is measured.
# Every figure printed is measured in the run; nothing is hard-coded.

RB_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLEANROOM=${CLEANROOM:-"$RB_TOP/build/cleanroom"}
case $CLEANROOM in /*) ;; *) CLEANROOM="$(pwd)/$CLEANROOM" ;; esac
RB_TMP=
RB_NAME=$(basename "$0" .sh)

rb_die() {
	echo "$RB_NAME: $*" >&2
	exit 2
}

rb_end() {
	rc=$?
	[ "$rc" = 0 ] && rb_load_report
	if [ -n "$RB_TMP" ] && [ -d "$RB_TMP" ] && [ -z "${RB_KEEP:-}" ]; then
		rm -rf -- "$RB_TMP"
	fi
	exit "$rc"
}

# usage: rb_init NEEDED_MIB
# Checks the free space, makes $RB_TMP (removed on exit unless RB_KEEP=1),
# snapshots cleanroom + hook into $RB_TMP/bin and sets CR to the copy.
rb_init() {
	local need=$1 base avail
	[ -x "$CLEANROOM" ] || rb_die "no cleanroom binary at $CLEANROOM (run scripts/build.sh or set CLEANROOM)"
	[ -f "$(dirname "$CLEANROOM")/libcleanroom-preload.so" ] ||
		rb_die "no libcleanroom-preload.so beside $CLEANROOM"
	[ -x /usr/bin/time ] || rb_die "needs /usr/bin/time (Debian package time)"
	base=${BENCH_TMPDIR:-/var/tmp}
	avail=$(df -Pm "$base" | awk 'NR == 2 { print $4 }')
	[ "$avail" -ge $((need + 512)) ] ||
		rb_die "$base has ${avail} MiB free, this benchmark needs ~${need} MiB"
	RB_TMP=$(mktemp -d "$base/cleanroom-$RB_NAME.XXXXXX")
	trap rb_end EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	mkdir "$RB_TMP/bin"
	cp "$CLEANROOM" "$RB_TMP/bin/cleanroom"
	cp "$(dirname "$CLEANROOM")/libcleanroom-preload.so" "$RB_TMP/bin/"
	CR=$RB_TMP/bin/cleanroom
	rb_wait_quiet
	RB_LOAD0_MACHINE=$(rb_machine_jiffies)
	RB_LOAD0_SELF=$(rb_self_jiffies)
}

rb_machine_jiffies() {
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat
}

rb_self_jiffies() {
	awk '{ print $14 + $15 + $16 + $17 }' "/proc/$$/stat"
}

# How much CPU other processes (not this script and its children) used
# while the benchmark ran: they skew every figure on a 2-CPU machine.
rb_load_report() {
	set -- ${RB_LOAD0_MACHINE:-0 0} $(rb_machine_jiffies) "${RB_LOAD0_SELF:-0}" "$(rb_self_jiffies)"
	awk -v b0="$1" -v i0="$2" -v b1="$3" -v i1="$4" -v s0="$5" -v s1="$6" -v n="$(nproc)" \
		-v name="$RB_NAME" 'BEGIN {
		t = (b1 - b0) + (i1 - i0); o = (b1 - b0) - (s1 - s0); if (o < 0) o = 0
		printf "load %s: other processes used %.0f%% of the %d CPUs while this ran (this script %.0f%%)\n",
			name, t ? 100 * o / t : 0, n, t ? 100 * (s1 - s0) / t : 0 }'
}

rb_machine() {
	local cpu mem rev
	cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo)
	mem=$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)
	rev=$(git -C "$RB_TOP" rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [ -n "$(git -C "$RB_TOP" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
		rev="$rev (+ uncommitted changes)"
	fi
	echo "date:      $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
	echo "machine:   $(uname -srm), nproc $(nproc), $mem RAM"
	echo "cpu:       $cpu"
	echo "cleanroom: $CLEANROOM (built $(date -u -r "$CLEANROOM" '+%Y-%m-%d %H:%M UTC'), sha256 $(sha256sum "$CLEANROOM" | cut -c1-12), hook sha256 $(sha256sum "$(dirname "$CLEANROOM")/libcleanroom-preload.so" | cut -c1-12))"
	echo "tree:      $RB_TOP at commit $rev"
	echo "loadavg:   $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min, at start)"
	echo "scratch:   $RB_TMP ($(df -P "$RB_TMP" | awk 'NR == 2 { print $1 }'))"
}

# Share (percent) of the machine's CPU that was busy over one second.
rb_busy_now() {
	set -- $(rb_machine_jiffies)
	sleep 1
	set -- $1 $2 $(rb_machine_jiffies)
	awk -v b0="$1" -v i0="$2" -v b1="$3" -v i1="$4" \
		'BEGIN { t = (b1 - b0) + (i1 - i0); printf "%.0f", t ? 100 * (b1 - b0) / t : 0 }'
}

# Other processes (tests, other benchmarks) skew every figure on a small
# machine: wait up to LIMIT seconds (default BENCH_WAIT_QUIET, else 300) for
# the machine to be under 15% busy, then go on regardless. The per-run
# "other" column says how busy it was.
# usage: rb_wait_quiet [LIMIT]
rb_wait_quiet() {
	local waited=0 limit=${1:-${BENCH_WAIT_QUIET:-300}} b
	while b=$(rb_busy_now) && [ "$b" -gt 15 ] && [ "$waited" -lt "$limit" ]; do
		[ "$waited" = 0 ] && echo "(machine ${b}% busy; waiting up to ${limit}s for it to quieten)" >&2
		sleep 4
		waited=$((waited + 5))
	done
}

# Around a measured run: rb_other_begin; ...; rb_other_end sets T_OTHER,
# the percentage of all CPUs used by processes other than this script and
# its waited-for children during the run.
rb_other_begin() {
	RB_O0=$(rb_machine_jiffies)
	RB_S0=$(rb_self_jiffies)
}

rb_other_end() {
	set -- $RB_O0 $(rb_machine_jiffies) "$RB_S0" "$(rb_self_jiffies)"
	T_OTHER=$(awk -v b0="$1" -v i0="$2" -v b1="$3" -v i1="$4" -v s0="$5" -v s1="$6" 'BEGIN {
		t = (b1 - b0) + (i1 - i0); o = (b1 - b0) - (s1 - s0); if (o < 0) o = 0
		printf "%.0f", t ? 100 * o / t : 0 }')
}

# Run a command (argv, not a string) with stdout+stderr to LOG; set T_WALL
# (seconds, EPOCHREALTIME around the command), T_CPU (user+sys of the
# command and its children, /usr/bin/time) and T_OTHER (see rb_other_end).
# Returns the command's status.
# usage: rb_timed LOG CMD [ARGS...]
rb_timed() {
	local log=$1 t0 t1 rc
	shift
	rb_other_begin
	t0=$EPOCHREALTIME
	/usr/bin/time -f '%U %S' -o "$log.time" "$@" >"$log" 2>&1
	rc=$?
	t1=$EPOCHREALTIME
	rb_other_end
	T_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	T_CPU=$(awk 'END { printf "%.2f", $1 + $2 }' "$log.time")
	return $rc
}

# The median of the arguments (numbers); "-" if there are none.
rb_median() {
	[ $# -gt 0 ] || { echo -; return; }
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# usage: rb_ratio A B -> A / B with 3 decimals
rb_ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b ? a / b : 0 }'
}

# Sizes in MiB of the arguments (du -sb).
rb_mib() {
	du -scb "$@" 2>/dev/null | awk 'END { printf "%.1f", $1 / 1048576 }'
}

# A numeric field of a flat JSON object on one line of FILE.
rb_json_field() {
	grep -h '^{"' "$1" | tail -n 1 | sed -n "s/.*\"$2\":\([-0-9.eE+]*\).*/\1/p"
}

# Install Debian packages if a command is missing (root only). Prints
# nothing on success; a reason on failure (and returns 1).
# usage: rb_need COMMAND PACKAGE
rb_need() {
	command -v "$1" >/dev/null 2>&1 && return 0
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		echo "$1 missing and cannot install $2 (not root or no apt-get)"
		return 1
	fi
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >"$RB_TMP/apt-$2.log" 2>&1; then
		DEBIAN_FRONTEND=noninteractive apt-get update -qq >>"$RB_TMP/apt-$2.log" 2>&1
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >>"$RB_TMP/apt-$2.log" 2>&1
	fi
	command -v "$1" >/dev/null 2>&1 && return 0
	echo "apt-get install $2 failed: $(grep -E '^E:' "$RB_TMP/apt-$2.log" | head -n 1)"
	return 1
}
