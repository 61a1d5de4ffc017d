#!/usr/bin/env bash
# Add a folder of COUNT small files, then add it again unchanged: the second
# run must take every hash from the cache (hashed_files 0, cached_files
# COUNT) and record nothing new (unchanged COUNT). Prints both runs'
# counters and timings (median of REPS, a fresh store for each first add).
#
# usage: bench/rehash_unchanged.sh   env: CLEANROOM, BENCH_TMPDIR, COUNT (20000), REPS (3)
# Exit status 1 when the second run's counters are not as expected.
set -eu
. "$(dirname "$0")/lib.sh"

COUNT=${COUNT:-20000}
REPS=${REPS:-3}
bench_init $((COUNT * 8 / 1024 * 2 + 256))

echo "== rehash_unchanged: add $COUNT files of 1-8 KiB, then again unchanged; median of $REPS =="
bench_machine
echo

dir="$BENCH_TMP/data"
make_small_files "$dir" "$COUNT"
# The cache refuses files modified within the last 100 ms ("racy" stamps):
# the data set is older than that by the time it is added, as in real use.
sleep 1
warm_cache "$dir"

first=() second=() first_own=() second_own=()
for _ in $(seq "$REPS"); do
	store="$BENCH_TMP/store"
	"$CLEANROOM" init --store "$store" >/dev/null
	timed "'$CLEANROOM' add --store '$store' --json --quiet '$dir' >'$BENCH_TMP/first.json'"
	first+=("$T_WALL")
	first_own+=("$(json_field "$BENCH_TMP/first.json" seconds)")
	timed "'$CLEANROOM' add --store '$store' --json --quiet '$dir' >'$BENCH_TMP/second.json'"
	second+=("$T_WALL")
	second_own+=("$(json_field "$BENCH_TMP/second.json" seconds)")
	rm -rf "$store"
done

counters() {
	for k in files recorded unchanged hashed_files cached_files failed; do
		printf '%s=%s ' "$k" "$(json_field "$1" "$k")"
	done
}
echo "first add:  $(counters "$BENCH_TMP/first.json")"
echo "second add: $(counters "$BENCH_TMP/second.json")"
echo "second add --json (last run):"
sed 's/^/  /' "$BENCH_TMP/second.json"
echo
m1=$(median "${first[@]}") m2=$(median "${second[@]}")
printf '%-34s %10s %12s  %s\n' "" "median s" "add's own s" "runs (whole process)"
printf '%-34s %10.3f %12.3f  %s\n' "first add (hash + record)" "$m1" "$(median "${first_own[@]}")" "$(fmt3 "${first[@]}")"
printf '%-34s %10.3f %12.3f  %s\n' "second add (unchanged)" "$m2" "$(median "${second_own[@]}")" "$(fmt3 "${second[@]}")"
echo

h=$(json_field "$BENCH_TMP/second.json" hashed_files)
c=$(json_field "$BENCH_TMP/second.json" cached_files)
u=$(json_field "$BENCH_TMP/second.json" unchanged)
r=$(json_field "$BENCH_TMP/second.json" recorded)
if [ "$h" = 0 ] && [ "$c" = "$COUNT" ] && [ "$u" = "$COUNT" ] && [ "$r" = 0 ]; then
	verdict=MET
else
	verdict=MISSED
fi
echo "RESULT rehash_unchanged: second add hashed_files $h, cached_files $c, unchanged $u, recorded $r (goal 0/$COUNT/$COUNT/0: $verdict); first $(printf %.3f "$m1") s, second $(printf %.3f "$m2") s ($(calc "sprintf(\"%.1f\", $m1 / $m2)")x faster)"
[ "$verdict" = MET ]
