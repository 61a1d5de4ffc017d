#!/usr/bin/env bash
# Run a set of benchmark scripts one after another, write everything they
# print to bench/results/NAME.txt (git-ignored), then print the summary:
# their RESULT and load lines. Used by run_all.sh and record_run_all.sh.
#
# usage: bench/run_set.sh NAME SCRIPT...   (SCRIPT: a name in bench/, without .sh)
# env:   CLEANROOM (default build/cleanroom), and what the scripts read.
# Exit status 1 when a script failed (goals missed do not count: they print
# MISSED), 2 when the binary is missing.
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
[ $# -ge 2 ] || { echo "usage: bench/run_set.sh NAME SCRIPT..." >&2; exit 2; }
name=$1
shift
export CLEANROOM=${CLEANROOM:-"$top/build/cleanroom"}
[ -x "$CLEANROOM" ] || { echo "bench: no $CLEANROOM; run scripts/build.sh first" >&2; exit 2; }

mkdir -p "$here/results"
out="$here/results/$name.txt"
tmp="$out.tmp"
: >"$tmp"
status=0
for s in "$@"; do
	echo "######## bench/$s.sh ($(date -u '+%H:%M:%S UTC'))" | tee -a "$tmp"
	"$here/$s.sh" 2>&1 | tee -a "$tmp"
	rc=${PIPESTATUS[0]}
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
