#!/usr/bin/env bash
# Hash many cached files: (a) SMALL_COUNT files of 1-8 KiB, (b) BIG_COUNT
# files of BIG_MIB MiB. Peers, interleaved within each repetition:
#   cleanroom add --jobs 1        fresh store every run (nothing cached)
#   cleanroom add                 all cores (the default)
#   find | xargs sha256sum        one sha256sum process at a time
#   find | xargs -P NPROC -n K openssl dgst -sha256   (one process per core)
#   find | xargs -n K openssl dgst -sha256            (one process at a time:
#                                 the single-threaded baseline of the ratios)
# K is 500, or fewer when there are fewer than 500 files per core (so that
# the -P run has a batch for every core).
# Times are whole-process wall times (cleanroom: open the store, hash,
# append every event, commit, close); "cpu" is (user+sys)/wall, 2.0 = two
# cores busy throughout. Median of REPS runs.
#
# usage: bench/hash_many.sh   env: CLEANROOM, BENCH_TMPDIR, REPS (5),
#        SMALL_COUNT (20000), BIG_COUNT (20), BIG_MIB (100)
# Goal: cleanroom all-cores >= 1.7x the single-threaded openssl loop.
set -eu
. "$(dirname "$0")/lib.sh"

REPS=${REPS:-5}
SMALL_COUNT=${SMALL_COUNT:-20000}
BIG_COUNT=${BIG_COUNT:-20}
BIG_MIB=${BIG_MIB:-100}
bench_init $((BIG_COUNT * BIG_MIB + SMALL_COUNT * 8 / 1024 * 2 + 256))

echo "== hash_many: $SMALL_COUNT files of 1-8 KiB, $BIG_COUNT files of $BIG_MIB MiB; median of $REPS =="
bench_machine
echo

RESULTS=()

# usage: bench_set LABEL DIR
bench_set() {
	label=$1 dir=$2
	count=$(find "$dir" -type f | wc -l)
	bytes=$(find "$dir" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%.0f", s }')
	warm_cache "$dir"
	warm_cache "$dir"
	# What NPROC cores can give at most on this machine, and under its load
	# of the moment: openssl speed with NPROC processes vs one, in memory.
	one=$(openssl_speed 1)
	all=$(openssl_speed "$NPROC")
	CEILING=$(calc "sprintf(\"%.2f\", $all / $one)")
	# -n 500 as asked, but never so many that xargs -P has a single batch
	# to run (20 big files would all go to one openssl process).
	per=$(((count + NPROC - 1) / NPROC))
	if [ "$per" -gt 500 ]; then per=500; fi
	names=(cr1 crN sha256sum osslP ossl1)
	declare -A desc=(
		[cr1]="cleanroom add --jobs 1"
		[crN]="cleanroom add (all $NPROC cores)"
		[sha256sum]="find | xargs sha256sum"
		[osslP]="find | xargs -P$NPROC -n $per openssl dgst"
		[ossl1]="find | xargs -n $per openssl dgst (1 proc)"
	)
	declare -A wall=() util=() own=()
	for _ in $(seq "$REPS"); do
		for jobs in 1 N; do
			store="$BENCH_TMP/store"
			"$CLEANROOM" init --store "$store" >/dev/null
			opt=
			if [ "$jobs" = 1 ]; then opt="--jobs 1"; fi
			timed "'$CLEANROOM' add --store '$store' $opt --json --quiet '$dir' >'$BENCH_TMP/add.json'"
			n=$(json_field "$BENCH_TMP/add.json" hashed_files)
			[ "$n" = "$count" ] || bench_die "cleanroom add hashed $n of $count files"
			wall[cr$jobs]+=" $T_WALL" util[cr$jobs]+=" $T_UTIL"
			own[cr$jobs]+=" $(json_field "$BENCH_TMP/add.json" seconds)"
			rm -rf "$store"
		done
		timed "find '$dir' -type f | xargs sha256sum"
		wall[sha256sum]+=" $T_WALL" util[sha256sum]+=" $T_UTIL"
		timed "find '$dir' -type f | xargs -P$NPROC -n $per openssl dgst -sha256"
		wall[osslP]+=" $T_WALL" util[osslP]+=" $T_UTIL"
		timed "find '$dir' -type f | xargs -n $per openssl dgst -sha256"
		wall[ossl1]+=" $T_WALL" util[ossl1]+=" $T_UTIL"
	done

	# shellcheck disable=SC2086
	base=$(median ${wall[ossl1]})
	echo "-- $label: $count files, $(calc "sprintf(\"%.1f\", $bytes / 1048576)") MiB --"
	echo "ceiling: openssl speed sha256 (1 MiB blocks, in memory) just before: 1 process $one MB/s, $NPROC processes $all MB/s = ${CEILING}x"
	printf '%-42s %9s %8s %7s %6s\n' "peer" "median s" "MB/s" "speed" "cpu"
	for p in "${names[@]}"; do
		# shellcheck disable=SC2086
		m=$(median ${wall[$p]})
		# shellcheck disable=SC2086
		u=$(median ${util[$p]})
		printf '%-42s %9.3f %8.0f %6.2fx %6.2f\n' "${desc[$p]}" "$m" \
			"$(calc "$bytes / $m / 1e6")" "$(calc "$base / $m")" "$u"
	done
	for p in cr1 crN; do
		# shellcheck disable=SC2086
		echo "  ${desc[$p]}: add's own time (median) $(printf %.3f "$(median ${own[$p]})") s; runs$(printf ' %.3f' ${wall[$p]})"
	done
	# shellcheck disable=SC2086
	echo "  openssl 1-proc runs$(printf ' %.3f' ${wall[ossl1]})"
	# shellcheck disable=SC2086
	crn=$(median ${wall[crN]})
	ratio=$(calc "sprintf(\"%.2f\", $base / $crn)")
	verdict=$(calc "($ratio >= 1.7) ? \"MET\" : \"MISSED\"")
	# shellcheck disable=SC2086
	RESULTS+=("RESULT hash_many $label: cleanroom all-cores/openssl 1-proc ${ratio}x (cpu $(printf %.2f "$(median ${util[crN]})")), --jobs 1 $(calc "sprintf(\"%.2f\", $base / $(median ${wall[cr1]}))")x; goal >= 1.7x: $verdict (machine ceiling ${CEILING}x)")
	echo
}

small="$BENCH_TMP/small"
make_small_files "$small" "$SMALL_COUNT"
bench_set "(a) small files" "$small"
rm -rf "$small"

big="$BENCH_TMP/big"
make_big_files "$big" "$BIG_COUNT" "$BIG_MIB"
bench_set "(b) large files" "$big"
rm -rf "$big"

printf '%s\n' "${RESULTS[@]}"
