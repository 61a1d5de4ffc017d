#!/usr/bin/env bash
# A run that reads many small files once: FILES (default 200,000) distinct
# 1 KiB files read once each by a C reader (bench/record_micro.c, one pass)
# under `cleanroom record --data DIR`, against the same reader bare.
#
# Reports, per recorded run (a new store each), then medians:
#   wall          whole `cleanroom record` run (start-up to final commit) vs
#                 the bare reader's wall time (paired, order alternating)
#   events/s      inputs recorded / recorded wall time
#   recorder RSS  peak resident set of the cleanroom process alone:
#                 /proc/PID/status VmHWM, polled every 0.1 s (the last
#                 reading; VmHWM only grows), and /usr/bin/time -v's
#                 "Maximum resident set size" of the whole (the max of
#                 cleanroom and its reaped child)
#   reader RSS    the reader's own VmHWM (it prints it), bare and recorded
#   store         du of log.git and index.sqlite after the run
# then one more run into the last store (its hash cache knows every file).
#
# usage: bench/record_scale.sh   env: FILES (200000), SIZE (1024), PAIRS (3),
#        CLEANROOM, BENCH_TMPDIR (see bench/record_lib.sh)
# Needs ~1.2 GiB under BENCH_TMPDIR (1 KiB files take a 4 KiB block each);
# removed afterwards. Takes ~3-6 minutes.
set -u
. "$(dirname "$0")/record_lib.sh"

FILES=${FILES:-200000}
SIZE=${SIZE:-1024}
PAIRS=${PAIRS:-3}
command -v gcc >/dev/null 2>&1 || rb_die "needs gcc"
echo "df -h ${BENCH_TMPDIR:-/var/tmp}: $(df -h "${BENCH_TMPDIR:-/var/tmp}" | awk 'NR == 2 { print $4 " free of " $2 }')"
rb_init $((FILES * 5 / 1024 + 300))
rb_machine
gcc -O2 -Wall -Wextra -o "$RB_TMP/bin/record_micro" "$RB_TOP/bench/record_micro.c" || rb_die "record_micro.c does not build"
M=$RB_TMP/bin/record_micro
F=$RB_TMP/files
t0=$EPOCHREALTIME
"$M" prep "$F" "$FILES" "$SIZE" || rb_die "prep failed"
find "$F" -type f -print0 | xargs -0 cat >/dev/null
echo "files:     $FILES x $SIZE B under $F ($(du -sm "$F" | cut -f1) MiB on disk), made and cached in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
echo

run_bare() {
	local log=$RB_TMP/bare.log
	rb_timed "$log" "$M" run "$F" "$FILES" 1 || rb_die "bare run failed: $(tail -n 3 "$log")"
	B_WALL=$T_WALL B_OTHER=$T_OTHER
	B_LOOP=$(awk '$2 == "round" { print $7 }' "$log")
	B_RSS=$(awk '$2 == "vmhwm_kib" { print $3 }' "$log")
}

# usage: run_rec STORE
run_rec() {
	local st=$1 log=$RB_TMP/rec.log tpid cpid="" hwm="" v t0 t1
	rb_other_begin
	t0=$EPOCHREALTIME
	/usr/bin/time -v -o "$log.tv" "$CR" record --store "$st" --data "$F" --json --quiet -- \
		"$M" run "$F" "$FILES" 1 >"$log" 2>&1 &
	tpid=$!
	while kill -0 "$tpid" 2>/dev/null; do
		if [ -z "$cpid" ]; then
			cpid=$(cat "/proc/$tpid/task/$tpid/children" 2>/dev/null | awk '{ print $1 }')
		fi
		if [ -n "$cpid" ]; then
			v=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$cpid/status" 2>/dev/null)
			[ -n "$v" ] && hwm=$v
		fi
		sleep 0.1
	done
	wait "$tpid" || rb_die "recorded run failed: $(tail -n 3 "$log")"
	t1=$EPOCHREALTIME
	rb_other_end
	R_OTHER=$T_OTHER
	R_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	R_LOOP=$(awk '$2 == "round" { print $7 }' "$log")
	R_RSS=$(awk '$2 == "vmhwm_kib" { print $3 }' "$log")
	R_HWM=${hwm:-0}
	R_TV=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$log.tv")
	R_CPU=$(awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.2f", u + s }' "$log.tv")
	R_INPUTS=$(rb_json_field "$log" inputs)
	R_EVS=$(awk -v n="$R_INPUTS" -v w="$R_WALL" 'BEGIN { printf "%.0f", n / w }')
	R_GIT=$(rb_mib "$st/log.git")
	R_SQL=$(rb_mib "$st/index.sqlite")
	[ "$R_INPUTS" = "$FILES" ] || echo "  (warning: $R_INPUTS inputs recorded, expected $FILES)"
}

declare -a BW RW RAT EVS HWM TV RRSS BRSS BLOOP RLOOP GIT SQL RCPU
for i in $(seq 1 "$PAIRS"); do
	rb_wait_quiet "${BENCH_PAIR_WAIT:-60}"
	st=$RB_TMP/store-$i
	rm -rf "$st"
	if [ $((i % 2)) = 1 ]; then
		run_bare
		run_rec "$st"
	else
		run_rec "$st"
		run_bare
	fi
	r=$(rb_ratio "$R_WALL" "$B_WALL")
	BW+=("$B_WALL") RW+=("$R_WALL") RAT+=("$r") EVS+=("$R_EVS") HWM+=("$R_HWM") TV+=("$R_TV")
	RRSS+=("$R_RSS") BRSS+=("$B_RSS") BLOOP+=("$B_LOOP") RLOOP+=("$R_LOOP") GIT+=("$R_GIT") SQL+=("$R_SQL") RCPU+=("$R_CPU")
	printf '  pair %d: bare %.2f s (loop %.2f s, other %s%%)  recorded %.2f s (loop %.2f s, cpu %s s, other %s%%)  ratio %s  %s inputs  %s events/s  recorder VmHWM %s KiB  time -v max RSS %s KiB  reader VmHWM %s/%s KiB (bare/recorded)  log.git %s MiB  index.sqlite %s MiB\n' \
		"$i" "$B_WALL" "$B_LOOP" "$B_OTHER" "$R_WALL" "$R_LOOP" "$R_CPU" "$R_OTHER" "$r" "$R_INPUTS" "$R_EVS" \
		"$R_HWM" "$R_TV" "$B_RSS" "$R_RSS" "$R_GIT" "$R_SQL"
	[ "$i" = "$PAIRS" ] || rm -rf "$st"
done

# Once more into the last store: every file is in its hash cache.
run_rec "$RB_TMP/store-$PAIRS"
printf '  again into the same store (hash cache warm): recorded %.2f s (loop %.2f s, other %s%%)  %s inputs  %s events/s  recorder VmHWM %s KiB  log.git %s MiB  index.sqlite %s MiB (2 runs)\n' \
	"$R_WALL" "$R_LOOP" "$R_OTHER" "$R_INPUTS" "$R_EVS" "$R_HWM" "$R_GIT" "$R_SQL"
W_WALL=$R_WALL W_EVS=$R_EVS W_HWM=$R_HWM
rm -rf "$RB_TMP/store-$PAIRS"

kib2mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
echo
echo "$FILES files of $SIZE B read once, medians of $PAIRS pairs (new store each run)"
printf '  %-44s %s\n' "bare wall / in-loop" "$(rb_median "${BW[@]}") s / $(rb_median "${BLOOP[@]}") s"
printf '  %-44s %s\n' "recorded wall / in-loop / cpu" "$(rb_median "${RW[@]}") s / $(rb_median "${RLOOP[@]}") s / $(rb_median "${RCPU[@]}") s"
printf '  %-44s %s\n' "wall ratio (paired)" "$(rb_median "${RAT[@]}")x"
printf '  %-44s %s\n' "inputs recorded per second" "$(rb_median "${EVS[@]}" | awk '{ printf "%.0f", $1 }')"
printf '  %-44s %s\n' "recorder peak RSS (VmHWM of cleanroom)" "$(kib2mib "$(rb_median "${HWM[@]}")") MiB"
printf '  %-44s %s\n' "time -v max RSS (cleanroom + reader)" "$(kib2mib "$(rb_median "${TV[@]}")") MiB"
printf '  %-44s %s\n' "reader peak RSS bare / recorded" "$(kib2mib "$(rb_median "${BRSS[@]}")") / $(kib2mib "$(rb_median "${RRSS[@]}")") MiB"
printf '  %-44s %s\n' "store: log.git / index.sqlite" "$(rb_median "${GIT[@]}") / $(rb_median "${SQL[@]}") MiB"
printf '  %-44s %s\n' "hash-cache-warm rerun wall / events/s / RSS" "$W_WALL s / $W_EVS / $(kib2mib "$W_HWM") MiB"
echo
echo "RESULT scale: $FILES inputs in $(rb_median "${RW[@]}") s ($(rb_median "${RAT[@]}")x bare), $(rb_median "${EVS[@]}" | awk '{ printf "%.0f", $1 }') inputs/s, recorder peak RSS $(kib2mib "$(rb_median "${HWM[@]}")") MiB, store $(rb_median "${GIT[@]}") MiB git + $(rb_median "${SQL[@]}") MiB sqlite"
