#!/usr/bin/env bash
# The hook + recorder cost on the hottest path: 20,000 open/read/close of
# distinct 4 KiB files in C (bench/record_micro.c), bare against
# `cleanroom record --data DIR`, timed inside the program (the recorder's
# start-up and final commit are not counted; they are in the workload
# figures). Each run makes ROUNDS passes over the files:
#   pass 1      the 20,000 first reads: the recorder receives 20,000 new
#               inputs and hashes them (cold: a new store each run) or finds
#               them in the store's hash cache (warm: one store kept)
#   passes 2..  the same files again: the recorder only counts reads
# The recorder takes reports in after a 100 ms grace period, so the hashing
# of pass 1's inputs lands on the next passes: "slowest later pass" shows it.
# Runs come in triples (bare, cold, warm, the order rotating); figures are
# medians of the ratios to the bare run of the same triple.
#
# usage: bench/record_micro.sh   env: PAIRS (default 9), FILES (20000),
#        ROUNDS (5), CLEANROOM, BENCH_TMPDIR (see bench/record_lib.sh)
# Goal: recorded pass 1 <= 1.2x bare. Takes ~1-2 minutes. "other" is the
# share of all CPUs other processes used during each run.
set -u
. "$(dirname "$0")/record_lib.sh"

PAIRS=${PAIRS:-9}
FILES=${FILES:-20000}
ROUNDS=${ROUNDS:-5}
GOAL=1.2
command -v gcc >/dev/null 2>&1 || rb_die "needs gcc"
rb_init $((FILES * 5 / 1024 + 100))
rb_machine
gcc -O2 -Wall -Wextra -o "$RB_TMP/bin/record_micro" "$RB_TOP/bench/record_micro.c" || rb_die "record_micro.c does not build"
M=$RB_TMP/bin/record_micro
F=$RB_TMP/files
"$M" prep "$F" "$FILES" 4096 || rb_die "prep failed"
cat "$F"/*/* >/dev/null
echo "files:     $FILES x 4 KiB under $F; $ROUNDS passes per run; $PAIRS triples"
echo

# usage: one KIND -> sets P1 (pass 1 ns/file), PR (median of passes 2.. ns/file), X
one() {
	local kind=$1 log=$RB_TMP/$1.log st
	rb_other_begin
	case $kind in
	bare) "$M" run "$F" "$FILES" "$ROUNDS" >"$log" 2>&1 ;;
	cold)
		st=$RB_TMP/store-cold
		rm -rf "$st"
		"$CR" record --store "$st" --data "$F" --json --quiet -- "$M" run "$F" "$FILES" "$ROUNDS" >"$log" 2>&1
		;;
	warm)
		st=$RB_TMP/store-warm
		"$CR" record --store "$st" --data "$F" --json --quiet -- "$M" run "$F" "$FILES" "$ROUNDS" >"$log" 2>&1
		;;
	esac || rb_die "$kind run failed: $(tail -n 3 "$log")"
	rb_other_end
	P1=$(awk '$2 == "round" && $3 == 1 { print $5 }' "$log")
	# shellcheck disable=SC2046
	PR=$(rb_median $(awk '$2 == "round" && $3 > 1 { print $5 }' "$log"))
	PW=$(awk '$2 == "round" && $3 > 1 && $5 > w { w = $5 } END { print w + 0 }' "$log")
	[ -n "$P1" ] || rb_die "$kind: no timing in $log"
	X=
	[ "$kind" = bare ] || X="inputs $(rb_json_field "$log" inputs) reads $(rb_json_field "$log" reads)"
}

# Prime the warm store (unmeasured).
one warm
echo "warm store primed: $X"

declare -A P1S PRS PWS R1 RR RW
for i in $(seq 1 "$PAIRS"); do
	case $((i % 3)) in
	1) order="bare cold warm" ;;
	2) order="cold warm bare" ;;
	0) order="warm bare cold" ;;
	esac
	rb_wait_quiet "${BENCH_PAIR_WAIT:-30}"
	others=
	for k in $order; do
		one "$k"
		eval "p1_$k=\$P1 pr_$k=\$PR pw_$k=\$PW"
		others="$others $T_OTHER%"
	done
	line="triple $i ($order; other$others):"
	for k in bare cold warm; do
		eval "a=\$p1_$k b=\$pr_$k c=\$pw_$k"
		P1S[$k]+=" $a"
		PRS[$k]+=" $b"
		PWS[$k]+=" $c"
		if [ "$k" != bare ]; then
			R1[$k]+=" $(rb_ratio "$a" "$p1_bare")"
			RR[$k]+=" $(rb_ratio "$b" "$pr_bare")"
			RW[$k]+=" $(rb_ratio "$c" "$pw_bare")"
		fi
		line="$line  $k $(printf '%.0f/%.0f/%.0f' "$a" "$b" "$c")"
	done
	echo "$line  ns/file (pass 1/median of later passes/slowest later pass)"
done

echo
echo "$FILES open/read/close of 4 KiB files, in-loop ns per file (medians of $PAIRS triples)"
printf '%-24s %8s %8s %12s %8s %14s %8s\n' "" "pass 1" "ratio" "passes 2..$ROUNDS" "ratio" "slowest later" "ratio"
# shellcheck disable=SC2086
printf '%-24s %8.0f %8s %12.0f %8s %14.0f %8s\n' bare "$(rb_median ${P1S[bare]})" 1.000 "$(rb_median ${PRS[bare]})" 1.000 \
	"$(rb_median ${PWS[bare]})" 1.000
for k in cold warm; do
	case $k in
	cold) label="cleanroom (new store)" ;;
	warm) label="cleanroom (hash cache)" ;;
	esac
	# shellcheck disable=SC2086
	printf '%-24s %8.0f %8s %12.0f %8s %14.0f %8s\n' "$label" "$(rb_median ${P1S[$k]})" "$(rb_median ${R1[$k]})" \
		"$(rb_median ${PRS[$k]})" "$(rb_median ${RR[$k]})" "$(rb_median ${PWS[$k]})" "$(rb_median ${RW[$k]})"
done
echo
for k in cold warm; do
	# shellcheck disable=SC2086
	r1=$(rb_median ${R1[$k]}) rr=$(rb_median ${RR[$k]})
	v1=$(awk -v r="$r1" -v g="$GOAL" 'BEGIN { print (r <= g) ? "met" : "MISSED" }')
	vr=$(awk -v r="$rr" -v g="$GOAL" 'BEGIN { print (r <= g) ? "met" : "MISSED" }')
	# shellcheck disable=SC2086
	rw=$(rb_median ${RW[$k]})
	echo "RESULT micro $k: pass 1 ${r1}x bare (goal <= ${GOAL}x: $v1); passes 2..$ROUNDS ${rr}x bare ($vr); slowest later pass ${rw}x"
done
