#!/usr/bin/env bash
# Run the recording benchmarks (issue 3) and write what they print to
# bench/results/recording.txt (git-ignored), then print the summary.
#
# usage: bench/record_run_all.sh
# env:   CLEANROOM (default build/cleanroom), BENCH_TMPDIR (default /var/tmp),
#        and each script's knobs (PAIRS, PEER_PAIRS, FILES, ...; see their
#        headers; PAIRS is passed to every script, so set it per script
#        rather than here if you change it).
# Takes ~12-15 minutes on a quiet 2-CPU machine (the workload with its
# peers is ~11 of them; longer when other processes keep it busy); needs
# ~2 GiB free under BENCH_TMPDIR at the peak. Exit status 1
# when a script failed (goals missed do not count: they print MISSED).
set -u
here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
export CLEANROOM=${CLEANROOM:-"$top/build/cleanroom"}
[ -x "$CLEANROOM" ] || { echo "record_run_all: no $CLEANROOM; run scripts/build.sh first" >&2; exit 2; }

mkdir -p "$here/results"
out="$here/results/recording.txt"
tmp="$out.tmp"
: >"$tmp"
status=0
for s in record_micro record_scale record_workload; do
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
