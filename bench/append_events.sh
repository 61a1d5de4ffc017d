#!/usr/bin/env bash
# Append N synthetic input events through the library (bench/append_events.c)
# into a fresh store; print events/s and the store's bytes on disk per event
# (log.git and index.sqlite apart and in total), again after `git gc` of
# log.git, with the SQLite per-table sizes and the git object sizes, and how
# long the index takes to find a file by path and by SHA-256.
#
# Two ways of segmenting are measured:
#   store   no explicit flushes: the store commits a segment whenever the
#           pending one reaches CR_STORE_SEGMENT_EVENTS / _BYTES (+ a last flush)
#   4096    cr_store_flush() every 4096 events, as `cleanroom add` does
#
# usage: bench/append_events.sh   env: CLEANROOM, BENCH_TMPDIR, EVENTS (1000000),
#        REPS (3, for events/s; sizes are from the first run), BATCHES ("0 4096"),
#        BUILD_DIR (the folder of libcleanroom.a; default: that of $CLEANROOM),
#        LOOKUP_REPS (5)
# Goal: >= 100,000 events/s and < 200 bytes/event.
set -eu
. "$(dirname "$0")/lib.sh"

EVENTS=${EVENTS:-1000000}
REPS=${REPS:-3}
BATCHES=${BATCHES:-"0 4096"}
bench_init $((EVENTS * 800 / 1048576 + 256))
command -v sqlite3 >/dev/null || bench_die "needs the sqlite3 CLI"
command -v git >/dev/null || bench_die "needs git"

echo "== append_events: $EVENTS input events through cr_store_append, events/s median of $REPS =="
bench_machine
BUILD_DIR=${BUILD_DIR:-$(dirname "$CLEANROOM")}
[ -f "$BUILD_DIR/libcleanroom.a" ] || BUILD_DIR="$BENCH_TOP/build"
tool=$("$BENCH_TOP/bench/build.sh" "$BUILD_DIR") || bench_die "cannot build append_events"
echo "tool:      $tool (against $BUILD_DIR/libcleanroom.a)"
echo

# Allocated bytes (du) and apparent bytes of the arguments, summed.
disk() { du -scB1 "$@" | awk 'END { print $1 }'; }
apparent() { du -scb "$@" | awk 'END { print $1 }'; }
per_event() { calc "sprintf(\"%.1f\", $1 / $EVENTS)"; }

# The lookups cr_store_find_files makes (recorder/index.c), timed with the
# sqlite3 shell on the store just written (its pages in the page cache): by
# path (a key prefix of files) and by SHA-256 (a scan of files: there is no
# index on it, see docs/formats/index.md). Median of LOOKUP_REPS, each a new
# process; the time of the same shell running no query is subtracted.
LOOKUP_REPS=${LOOKUP_REPS:-5}
lookups() {
	db="$1/index.sqlite"
	row=$(sqlite3 "$db" "SELECT quote(path), hex(sha256) FROM files WHERE idx = $((EVENTS * 7 / 9))")
	path=${row%|*} sha=${row#*|}
	by_sha="SELECT f.idx FROM files f JOIN events e ON e.idx = f.idx WHERE f.sha256 = x'$sha' AND ('input' IS NULL OR e.type = (SELECT code FROM types WHERE name = 'input')) ORDER BY f.idx;"
	by_path="SELECT f.idx FROM files f JOIN events e ON e.idx = f.idx WHERE f.path = $path AND ('input' IS NULL OR e.type = (SELECT code FROM types WHERE name = 'input')) ORDER BY f.idx;"
	cat "$db" >/dev/null
	for what in none by_path by_sha; do
		case $what in none) q="SELECT 1;" ;; by_path) q=$by_path ;; by_sha) q=$by_sha ;; esac
		ts=()
		for _ in $(seq "$LOOKUP_REPS"); do
			t0=$EPOCHREALTIME
			out=$(sqlite3 "$db" "PRAGMA cache_size=-65536; $q")
			t1=$EPOCHREALTIME
			ts+=("$(calc "$t1 - $t0")")
		done
		[ "$what" = none ] || [ "$out" = "$((EVENTS * 7 / 9))" ] || bench_die "lookup $what found '$out'"
		eval "lk_$what=$(median "${ts[@]}")"
	done
	printf 'lookups:   files by path %.1f ms, files by SHA-256 (a scan of %d rows) %.1f ms; sqlite3 shell start %.1f ms subtracted\n' \
		"$(calc "($lk_by_path > $lk_none) ? 1000 * ($lk_by_path - $lk_none) : 0")" "$EVENTS" \
		"$(calc "($lk_by_sha > $lk_none) ? 1000 * ($lk_by_sha - $lk_none) : 0")" "$(calc "1000 * $lk_none")"
}

RESULTS=()
for batch in $BATCHES; do
	if [ "$batch" = 0 ]; then mode="store segments"; else mode="flush every $batch"; fi
	rates=()
	for rep in $(seq "$REPS"); do
		store="$BENCH_TMP/store-$rep"
		"$tool" -b "$batch" "$store" "$EVENTS" >"$BENCH_TMP/out"
		rates+=("$(awk '$1 == "events_per_second" { print $2 }' "$BENCH_TMP/out")")
		if [ "$rep" = 1 ]; then
			cp "$BENCH_TMP/out" "$BENCH_TMP/out1"
		else
			rm -rf "$store"
		fi
	done
	store="$BENCH_TMP/store-1"
	rate=$(printf %.0f "$(median "${rates[@]}")")
	field() { awk -v k="$1" '$1 == k { print $2 }' "$BENCH_TMP/out1"; }

	git_dir="$store/log.git"
	idx=("$store"/index.sqlite*)
	commits=$(git --git-dir "$git_dir" rev-list --count main)
	leaves=$("$CLEANROOM" log --store "$store" --export-leaves - | wc -c)
	leaves=$((leaves - EVENTS)) # without the newlines
	log_b=$(disk "$git_dir") idx_b=$(disk "${idx[@]}")
	log_a=$(apparent "$git_dir") idx_a=$(apparent "${idx[@]}")
	objs=$(git --git-dir "$git_dir" count-objects -v | awk '$1 == "count:" { c = $2 } $1 == "size:" { s = $2 } END { printf "%d loose objects, %d KiB", c, s }')

	echo "-- $mode: $EVENTS events, $commits commits --"
	echo "events/s:  median $rate (runs: ${rates[*]})"
	echo "run 1:     open $(field seconds_open) s, append loop $(field seconds_append) s, last flush $(field seconds_flush) s, close $(field seconds_close) s"
	echo "events:    canonical JSON leaves average $(per_event "$leaves") bytes (the raw data, uncompressed)"
	printf '%-34s %14s %10s %14s\n' "store after the run" "bytes on disk" "per event" "apparent B/ev"
	printf '%-34s %14s %10s %14s\n' "log.git ($objs)" "$log_b" "$(per_event "$log_b")" "$(per_event "$log_a")"
	printf '%-34s %14s %10s %14s\n' "index.sqlite" "$idx_b" "$(per_event "$idx_b")" "$(per_event "$idx_a")"
	printf '%-34s %14s %10s %14s\n' "total" "$((log_b + idx_b))" "$(per_event $((log_b + idx_b)))" "$(per_event $((log_a + idx_a)))"

	t0=$EPOCHREALTIME
	git --git-dir "$git_dir" gc --quiet
	t1=$EPOCHREALTIME
	glog_b=$(disk "$git_dir") glog_a=$(apparent "$git_dir")
	pack=$(git --git-dir "$git_dir" count-objects -v | awk '$1 == "size-pack:" { print $2 }')
	printf '%-34s %14s %10s %14s\n' "log.git after git gc ($(calc "sprintf(\"%.1f\", $t1 - $t0)") s)" "$glog_b" "$(per_event "$glog_b")" "$(per_event "$glog_a")"
	printf '%-34s %14s %10s %14s\n' "total after git gc" "$((glog_b + idx_b))" "$(per_event $((glog_b + idx_b)))" "$(per_event $((glog_a + idx_a)))"
	echo "git gc:    pack $pack KiB"
	if "$CLEANROOM" check --store "$store" >/dev/null 2>"$BENCH_TMP/check.err"; then
		echo "check:     cleanroom check after git gc: clean"
	else
		echo "check:     cleanroom check after git gc FAILED: $(head -n 3 "$BENCH_TMP/check.err")"
	fi
	echo "index.sqlite by table/index (dbstat: bytes in pages, per event; payload = bytes of row data):"
	sqlite3 "$store/index.sqlite" "SELECT name, SUM(pgsize), SUM(payload) FROM dbstat GROUP BY name ORDER BY 2 DESC;" |
		awk -F'|' -v n="$EVENTS" '$2 > 8192 { printf "  %-20s %12d  %7.1f B/event  (payload %.1f)\n", $1, $2, $2 / n, $3 / n }'
	lookups "$store"
	echo

	total=$(per_event $((log_b + idx_b)))
	gtotal=$(per_event $((glog_b + idx_b)))
	v_rate=$(calc "($rate >= 100000) ? \"MET\" : \"MISSED\"")
	v_size=$(calc "($total < 200) ? \"MET\" : \"MISSED\"")
	v_gsize=$(calc "($gtotal < 200) ? \"MET\" : \"MISSED\"")
	RESULTS+=("RESULT append_events ($mode): $rate events/s (goal >= 100000: $v_rate); $total bytes/event on disk (goal < 200: $v_size), $gtotal after git gc ($v_gsize)")
	rm -rf "$store"
done

printf '%s\n' "${RESULTS[@]}"
