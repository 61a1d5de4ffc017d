#!/usr/bin/env bash
# Profile bench/append_events.c with perf (DWARF call graphs, since the
# system libraries have no frame pointers) and print where the time goes:
# by library, by library function (inclusive), and the hottest leaves; plus
# the syscalls the run made (strace -c) and the store's size breakdown.
#
# usage: bench/profile_append.sh   env: CLEANROOM, BENCH_TMPDIR, EVENTS (1000000),
#        BATCH (0: store segments), FREQ (perf samples/s, 250)
# Not part of run_all.sh: it is for finding out why append_events.sh misses a goal.
set -eu
. "$(dirname "$0")/lib.sh"

EVENTS=${EVENTS:-1000000}
BATCH=${BATCH:-0}
FREQ=${FREQ:-250}
BENCH_WAIT_QUIET=${BENCH_WAIT_QUIET:-0}
bench_init $((EVENTS * 2000 / 1048576 + 512))
command -v perf >/dev/null || bench_die "needs perf"

echo "== profile_append: $EVENTS events, batch $BATCH, perf at ${FREQ} Hz =="
bench_machine
BUILD_DIR=${BUILD_DIR:-$(dirname "$CLEANROOM")}
[ -f "$BUILD_DIR/libcleanroom.a" ] || BUILD_DIR="$BENCH_TOP/build"
tool=$("$BENCH_TOP/bench/build.sh" "$BUILD_DIR")
echo

data="$BENCH_TMP/perf.data"
/usr/bin/time -f 'time: %e s wall, %U s user, %S s sys' \
	perf record -q --call-graph dwarf,16384 -F "$FREQ" -o "$data" \
	"$tool" -b "$BATCH" "$BENCH_TMP/store" "$EVENTS" 2>&1 | grep -E 'events_per_second|^time:'

report() {
	perf report -i "$data" --stdio --no-demangle "$@" 2>/dev/null | grep -E '^ +[0-9]' | sed 's/ *- *- *$//'
}
echo
echo "-- by library (self time) --"
report --no-children --sort dso -g none | head -n 12
echo
echo "-- inclusive time of the store's steps (children, >= 2%; cr_store_append includes"
echo "   the flushes it triggers when a segment is full) --"
report --children --sort symbol -g none --percent-limit 2 | grep -v '(inlined)' |
	grep -E ' (main|cr_[a-z_]+|json_[a-z_]+|git_[a-z_]+|sqlite3_(step|exec)|sqlite3WalFrames|sqlite3PcacheFetchStress|sqlite3WalCheckpoint|sqlite3BtreeInsert|sqlite3BtreeIndexMoveto|deflate|__libc_p(read|write)64|encode_[a-z]+|SHA256_[A-Za-z]+)( |$)' |
	awk '{ printf "  %8s  %s\n", $1, $4 }' | head -n 45
echo
echo "-- hottest functions (self time, >= 1%) --"
report --no-children --sort dso,symbol -g none --percent-limit 1 | head -n 25
rm -f "$data"
rm -rf "$BENCH_TMP/store"

echo
echo "-- syscalls (strace -c, a separate run) --"
if command -v strace >/dev/null; then
	strace -f -c -o "$BENCH_TMP/strace" "$tool" -b "$BATCH" "$BENCH_TMP/store" "$EVENTS" >/dev/null
	head -n 12 "$BENCH_TMP/strace"
else
	echo "(strace not installed)"
fi
echo
echo "-- store: $(git --git-dir "$BENCH_TMP/store/log.git" rev-list --count main) commits --"
git --git-dir "$BENCH_TMP/store/log.git" count-objects -v | grep -E '^(count|size):' | sed 's/^/  /'
echo "  git objects by type (count, bytes as stored, uncompressed bytes):"
for t in blob tree commit; do
	find "$BENCH_TMP/store/log.git/objects" -type f -path '*/??/*' | awk -F/ '{ print $(NF-1) $NF }' |
		git --git-dir "$BENCH_TMP/store/log.git" cat-file --batch-check='%(objecttype) %(objectsize:disk) %(objectsize)' |
		awk -v t="$t" '$1 == t { n++; d += $2; u += $3 } END { printf "    %-6s %6d %12d %12d\n", t, n, d, u }'
done
sqlite3 "$BENCH_TMP/store/index.sqlite" "SELECT name, SUM(pgsize), SUM(payload), SUM(ncell) FROM dbstat GROUP BY name ORDER BY 2 DESC;" |
	awk -F'|' -v n="$EVENTS" 'BEGIN { print "  index.sqlite (dbstat):" }
		$2 > 8192 { printf "    %-18s %11d bytes %6.1f B/event, payload %5.1f B/event, %d cells\n", $1, $2, $2 / n, $3 / n, $4 }'
sqlite3 "$BENCH_TMP/store/index.sqlite" "PRAGMA page_size; PRAGMA cache_size; PRAGMA freelist_count;" |
	paste -sd' ' | awk '{ printf "  page_size %s, cache_size %s (negative: KiB), free pages %s\n", $1, $2, $3 }'
