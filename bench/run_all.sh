#!/usr/bin/env bash
# Run every foundation benchmark and write what they print to
# bench/results/foundation.txt (git-ignored), then print the summary.
#
# usage: bench/run_all.sh   env: CLEANROOM (default build/cleanroom), BENCH_TMPDIR,
#        and each script's own knobs (REPS, EVENTS, COUNT, ...); see their headers.
# Needs ~2.5 GiB free under BENCH_TMPDIR (default /var/tmp) at the peak and
# takes ~10-15 minutes. Exit status 1 when a script failed (goals missed do
# not count as failures; they are reported as MISSED).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
export CLEANROOM=${CLEANROOM:-"$top/build/cleanroom"}
[ -x "$CLEANROOM" ] || { echo "run_all: no $CLEANROOM; run scripts/build.sh first" >&2; exit 2; }

mkdir -p "$here/results"
out="$here/results/foundation.txt"
tmp="$out.tmp"
: >"$tmp"
status=0
for s in hash_large hash_many append_events rehash_unchanged; do
	echo "######## bench/$s.sh" | tee -a "$tmp"
	set +e
	"$here/$s.sh" 2>&1 | tee -a "$tmp"
	rc=${PIPESTATUS[0]}
	set -e
	if [ "$rc" != 0 ]; then
		echo "######## bench/$s.sh FAILED (exit $rc)" | tee -a "$tmp"
		status=1
	fi
	echo | tee -a "$tmp"
done
{
	echo "######## summary ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo))"
	grep -E '^(RESULT|load |######## .* FAILED)' "$tmp" || true
} >"$tmp.sum"
cat "$tmp.sum" >>"$tmp"
rm -f "$tmp.sum"
mv "$tmp" "$out"
echo
echo "written to $out; summary:"
sed -n '/^######## summary/,$p' "$out"
exit "$status"
