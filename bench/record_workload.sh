#!/usr/bin/env bash
# The reference training workload (shared/workload: 20,000 .npy samples,
# 3 epochs, 2 forked DataLoader workers) bare and recorded, all in one run:
#
#   bare                 /usr/bin/python3 train.py ...
#   cleanroom cold       cleanroom record --store NEW --data DATA -- ...   (a new store each run)
#   cleanroom warm       cleanroom record --store KEPT --data DATA -- ...  (one store for the
#                        series, primed by an unmeasured run: its hash cache knows the data)
#   strace               strace -f -e trace=file,close -o FILE -- ...
#   reprozip             reprozip trace -d DIR record_noclone3 ...  (defaults: identifies packages)
#   in-toto              in-toto-run -n train -k KEY -m DATA -p CKPT -- ...  (ed25519 throwaway key,
#                        IN_TOTO_LINK_CMD_EXEC_TIMEOUT raised)
#
# Bare runs vary by ~10%, so every recorded run is paired with a bare run
# next to it (the order alternates between pairs); the figure is the median
# of the paired ratios. The page cache is dropped once (root only), then the
# data and Python are read again by an unmeasured bare run, so every
# measured run reads from the cache.
#
# usage: bench/record_workload.sh
# env:   PAIRS (cleanroom pairs per series, default 5), PEER_PAIRS (default 3),
#        SAMPLES (default 20000), EPOCHS (3), WORKERS (2), WORKLOAD (folder of
#        make_data.py/train.py; default ../shared/workload beside the repo, else
#        /work/shared/workload), PYTHON (default /usr/bin/python3, needs torch),
#        PEERS (default "strace reprozip in-toto"; "" for cleanroom only),
#        RECORD_ARGS (more options for cleanroom record, e.g. "--nice 0"),
#        CLEANROOM, BENCH_TMPDIR (see bench/record_lib.sh)
# Missing peers are installed with apt-get (root); a peer that cannot be
# installed or fails is reported as such, not fatal. Goal: cleanroom warm
# <= 1.05x bare. Takes ~11 minutes with the defaults on a quiet 2-CPU machine. "other" is
# the share of all CPUs that other processes used during a run (the script
# waits up to BENCH_PAIR_WAIT=60 s for a quiet machine before each pair, and
# redoes a pair once if other processes used more than BENCH_BUSY_RETRY=20%
# of the CPUs during either run of it; 0 turns that off).
set -u
. "$(dirname "$0")/record_lib.sh"

PAIRS=${PAIRS:-5}
PEER_PAIRS=${PEER_PAIRS:-3}
SAMPLES=${SAMPLES:-20000}
EPOCHS=${EPOCHS:-3}
WORKERS=${WORKERS:-2}
PY=${PYTHON:-/usr/bin/python3}
PEERS=${PEERS-strace reprozip in-toto}
GOAL=1.05
BUSY_RETRY=${BENCH_BUSY_RETRY:-20}
if [ -z "${WORKLOAD:-}" ]; then
	WORKLOAD=$RB_TOP/../shared/workload
	[ -f "$WORKLOAD/train.py" ] || WORKLOAD=/work/shared/workload
fi
[ -f "$WORKLOAD/train.py" ] && [ -f "$WORKLOAD/make_data.py" ] || rb_die "no train.py/make_data.py in $WORKLOAD (set WORKLOAD)"
WORKLOAD=$(cd "$WORKLOAD" && pwd)
"$PY" -c 'import torch, numpy, sklearn' 2>/dev/null || rb_die "$PY lacks torch/numpy/sklearn (set PYTHON)"

rb_init 2000
rb_machine
echo "workload:  $WORKLOAD/train.py, $SAMPLES samples, $EPOCHS epochs, $WORKERS workers; $PY ($("$PY" -c 'import torch; print("torch", torch.__version__)'))"
echo "pairs:     cleanroom $PAIRS per series (cold, warm), peers $PEER_PAIRS each"

DATA=$RB_TMP/data
CK=$RB_TMP/ckpt
LOGS=$RB_TMP/logs
mkdir -p "$LOGS"
TRAIN=("$PY" "$WORKLOAD/train.py" --data "$DATA" --out "$CK" --epochs "$EPOCHS" --workers "$WORKERS")

# ---- peers ---------------------------------------------------------------
declare -A PEER_OK PEER_WHY PEER_VER
for p in $PEERS; do
	PEER_OK[$p]=0
	case $p in
	strace)
		if why=$(rb_need strace strace); then
			PEER_OK[$p]=1
			PEER_VER[$p]=$(strace -V | head -n 1)
		else
			PEER_WHY[$p]=$why
		fi
		;;
	reprozip)
		if ! why=$(rb_need reprozip reprozip); then
			PEER_WHY[$p]=$why
		elif ! command -v gcc >/dev/null 2>&1; then
			PEER_WHY[$p]="no gcc to build bench/record_noclone3.c"
		elif ! gcc -O2 -Wall -o "$RB_TMP/bin/record_noclone3" "$RB_TOP/bench/record_noclone3.c" 2>"$LOGS/noclone3.log"; then
			PEER_WHY[$p]="bench/record_noclone3.c does not build: $(head -n 1 "$LOGS/noclone3.log")"
		else
			PEER_OK[$p]=1
			PEER_VER[$p]=$(reprozip --version 2>&1 | head -n 1)
		fi
		;;
	in-toto)
		if ! why=$(rb_need in-toto-run in-toto); then
			PEER_WHY[$p]=$why
		elif ! in-toto-keygen -t ed25519 "$RB_TMP/intoto-key" >"$LOGS/intoto-keygen.log" 2>&1; then
			PEER_WHY[$p]="in-toto-keygen failed: $(tail -n 1 "$LOGS/intoto-keygen.log")"
		else
			PEER_OK[$p]=1
			PEER_VER[$p]="in-toto $(dpkg-query -W -f '${Version}' in-toto 2>/dev/null || in-toto-run --version 2>&1 | head -n 1)"
		fi
		;;
	*) PEER_WHY[$p]="unknown peer" ;;
	esac
	if [ "${PEER_OK[$p]}" = 1 ]; then
		echo "peer:      $p: ${PEER_VER[$p]}"
	else
		echo "peer:      $p: UNAVAILABLE: ${PEER_WHY[$p]}"
	fi
done
export REPROZIP_USAGE_STATS=off
export IN_TOTO_LINK_CMD_EXEC_TIMEOUT=86400

# ---- data and caches -----------------------------------------------------
t0=$EPOCHREALTIME
"$PY" "$WORKLOAD/make_data.py" "$SAMPLES" "$DATA" >"$LOGS/make_data.log" 2>&1 ||
	rb_die "make_data.py failed: $(tail -n 3 "$LOGS/make_data.log")"
echo "data:      $(tail -n 1 "$LOGS/make_data.log"), $(rb_mib "$DATA") MiB, made in $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
sync
if [ -w /proc/sys/vm/drop_caches ] && echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then
	echo "caches:    page cache dropped once; an unmeasured bare run then reads data + Python back in"
else
	echo "caches:    could not drop the page cache (not root); an unmeasured bare run warms it"
fi

# ---- runs ----------------------------------------------------------------
# Each run function sets T_WALL, T_CPU and X (what it recorded, a short text)
# and returns non-zero on failure (leaving LAST_LOG for the message).
ok_train() { grep -q '^final ' "$1"; }

run_bare() {
	rm -rf "$CK"
	LAST_LOG=$LOGS/bare.log
	rb_timed "$LAST_LOG" "${TRAIN[@]}" && ok_train "$LAST_LOG" || return 1
	X="-"
}

# usage: run_cleanroom STORE
run_cleanroom() {
	rm -rf "$CK"
	LAST_LOG=$LOGS/cleanroom.log
	rb_timed "$LAST_LOG" "$CR" record --store "$1" --data "$DATA" --json --quiet ${RECORD_ARGS:-} -- "${TRAIN[@]}" &&
		ok_train "$LAST_LOG" || return 1
	local inputs reads
	inputs=$(rb_json_field "$LAST_LOG" inputs)
	reads=$(rb_json_field "$LAST_LOG" reads)
	X="inputs $inputs reads $reads store $(rb_mib "$1/log.git" "$1/index.sqlite") MiB"
}

run_cold() {
	local st=$RB_TMP/store-cold
	rm -rf "$st"
	run_cleanroom "$st" || return 1
	rm -rf "$st"
}

run_warm() {
	run_cleanroom "$RB_TMP/store-warm"
}

run_strace() {
	rm -rf "$CK" "$RB_TMP/strace.out"
	LAST_LOG=$LOGS/strace.log
	rb_timed "$LAST_LOG" strace -f -e trace=file,close -o "$RB_TMP/strace.out" -- "${TRAIN[@]}" &&
		ok_train "$LAST_LOG" || return 1
	X="trace $(rb_mib "$RB_TMP/strace.out") MiB, $(wc -l <"$RB_TMP/strace.out") lines"
	rm -f "$RB_TMP/strace.out"
}

run_reprozip() {
	rm -rf "$CK" "$RB_TMP/reprozip"
	LAST_LOG=$LOGS/reprozip.log
	rb_timed "$LAST_LOG" reprozip trace -d "$RB_TMP/reprozip" \
		"$RB_TMP/bin/record_noclone3" "${TRAIN[@]}" && ok_train "$LAST_LOG" &&
		[ -f "$RB_TMP/reprozip/config.yml" ] || return 1
	X="trace dir $(rb_mib "$RB_TMP/reprozip") MiB"
	rm -rf "$RB_TMP/reprozip"
}

run_in-toto() {
	rm -rf "$CK" "$RB_TMP/intoto"
	mkdir -p "$RB_TMP/intoto"
	LAST_LOG=$LOGS/intoto.log
	# in-toto-run writes the link into the current folder and captures the
	# command's output; success = a signed link and the final weights.
	local here=$PWD rc
	cd "$RB_TMP/intoto" || return 1
	rb_timed "$LAST_LOG" in-toto-run -n train -t ed25519 \
		-k "$RB_TMP/intoto-key" -m "$DATA" -p "$CK" -- "${TRAIN[@]}"
	rc=$?
	cd "$here" || return 1
	[ "$rc" = 0 ] || return 1
	local link
	link=$(ls "$RB_TMP"/intoto/train.*.link 2>/dev/null | head -n 1)
	[ -n "$link" ] && [ -f "$CK/model.safetensors" ] || return 1
	X="link $(rb_mib "$link") MiB, $(grep -o '"sha256"' "$link" | wc -l) hashes"
	rm -rf "$RB_TMP/intoto"
}

declare -A WALLS CPUS BWALLS RATIOS NOTE FAILED
ALL_BARE=()

# usage: pair SERIES RUNFN INDEX -> runs bare and RUNFN, alternating order
pair() {
	local s=$1 fn=$2 i=$3 bw bc bo tw tc to tx try retried=
	for try in 1 2; do
	rb_wait_quiet "${BENCH_PAIR_WAIT:-60}"
	for step in 1 2; do
		if [ $(((i + step) % 2)) = 0 ]; then
			run_bare || rb_die "bare run failed: $(tail -n 5 "$LAST_LOG")"
			bw=$T_WALL bc=$T_CPU bo=$T_OTHER
		else
			if ! $fn; then
				FAILED[$s]="run $i failed (exit or no checkpoint): $(tail -n 3 "$LAST_LOG" | tr '\n' ' ' | cut -c1-300)"
				echo "  $s pair $i: FAILED: ${FAILED[$s]}"
				return 1
			fi
			tw=$T_WALL tc=$T_CPU to=$T_OTHER tx=$X
		fi
	done
	# Other processes took a real share of the CPUs during the pair: do it
	# once more (the second try counts, busy or not).
	if [ "$try" = 1 ] && [ "$BUSY_RETRY" -gt 0 ] && { [ "$bo" -gt "$BUSY_RETRY" ] || [ "$to" -gt "$BUSY_RETRY" ]; }; then
		printf '  %-15s pair %d: other processes used %s%%/%s%% of the CPUs (bare/recorded %.2f/%.2f s): redone\n' \
			"$s" "$i" "$bo" "$to" "$bw" "$tw"
		retried=" (redone)"
		continue
	fi
	break
	done
	ALL_BARE+=("$bw")
	WALLS[$s]+=" $tw"
	CPUS[$s]+=" $tc"
	BWALLS[$s]+=" $bw"
	CPUS[bare]+=" $bc"
	local r
	r=$(rb_ratio "$tw" "$bw")
	RATIOS[$s]+=" $r"
	NOTE[$s]=$tx
	printf '  %-15s pair %d: bare %7.2f s (cpu %6.2f, other %2d%%)  recorded %7.2f s (cpu %6.2f, other %2d%%)  ratio %s  %s%s\n' \
		"$s" "$i" "$bw" "$bc" "$bo" "$tw" "$tc" "$to" "$r" "$tx" "$retried"
}

echo
echo "warming up (unmeasured): one bare run, one cleanroom run priming the warm store"
run_bare || rb_die "bare run failed: $(tail -n 5 "$LAST_LOG")"
echo "  bare (after drop_caches) ${T_WALL} s"
run_warm || rb_die "cleanroom record failed: $(tail -n 5 "$LAST_LOG")"
echo "  cleanroom priming run (new store, cold cache) ${T_WALL} s: $X"

echo
echo "cleanroom: $PAIRS pairs per series (bare and recorded next to each other, order alternating)"
for i in $(seq 1 "$PAIRS"); do
	pair cleanroom-cold run_cold "$i" || break
	pair cleanroom-warm run_warm "$i" || break
done

echo
echo "peers: $PEER_PAIRS pairs each"
for i in $(seq 1 "$PEER_PAIRS"); do
	for p in $PEERS; do
		[ "${PEER_OK[$p]}" = 1 ] && [ -z "${FAILED[$p]:-}" ] || continue
		pair "$p" "run_$p" "$i" || true
	done
done

# ---- table ---------------------------------------------------------------
echo
echo "Reference workload, $SAMPLES samples x $EPOCHS epochs, $WORKERS workers ($(nproc) CPUs). Wall seconds."
printf '%-15s %5s %11s %11s %11s %12s %-19s %s\n' series pairs "bare med" "run med" "run cpu med" "paired ratio" "ratio min..max" "recorded (last run)"
printf '%-15s %5s %11s %11s %11s %12s %-19s %s\n' "" "" "" "" "" "(median)" "" ""
# shellcheck disable=SC2086
printf '%-15s %5s %11s %11s %11s %12s %-19s %s\n' bare "${#ALL_BARE[@]}" "$(rb_median "${ALL_BARE[@]}")" "-" \
	"$(rb_median ${CPUS[bare]:-})" "1.000" "-" "(all bare runs)"
for s in cleanroom-cold cleanroom-warm $PEERS; do
	if [ -z "${RATIOS[$s]:-}" ]; then
		why=${FAILED[$s]:-${PEER_WHY[$s]:-not run}}
		printf '%-15s %5s %s\n' "$s" 0 "UNAVAILABLE: $why"
		continue
	fi
	# shellcheck disable=SC2086
	set -- ${RATIOS[$s]}
	n=$#
	mm=$(printf '%s\n' "$@" | sort -g | awk 'NR == 1 { a = $1 } { b = $1 } END { print a ".." b }')
	# shellcheck disable=SC2086
	printf '%-15s %5s %11s %11s %11s %12s %-19s %s\n' "$s" "$n" "$(rb_median ${BWALLS[$s]})" \
		"$(rb_median ${WALLS[$s]})" "$(rb_median ${CPUS[$s]})" "$(rb_median "$@")" "$mm" "${NOTE[$s]}"
	[ -n "${FAILED[$s]:-}" ] && printf '%-15s       (then %s)\n' "" "${FAILED[$s]}"
done
echo

for s in cleanroom-cold cleanroom-warm; do
	[ -n "${RATIOS[$s]:-}" ] || { echo "RESULT workload $s: FAILED"; continue; }
	# shellcheck disable=SC2086
	r=$(rb_median ${RATIOS[$s]})
	v=$(awk -v r="$r" -v g="$GOAL" 'BEGIN { print (r <= g) ? "met" : "MISSED" }')
	echo "RESULT workload $s: median paired ratio ${r}x bare (goal <= ${GOAL}x: $v)"
done
for p in $PEERS; do
	if [ -n "${RATIOS[$p]:-}" ]; then
		# shellcheck disable=SC2086
		echo "RESULT workload $p: median paired ratio $(rb_median ${RATIOS[$p]})x bare"
	else
		echo "RESULT workload $p: unavailable (${FAILED[$p]:-${PEER_WHY[$p]:-}})"
	fi
done
[ -z "${FAILED[cleanroom-cold]:-}${FAILED[cleanroom-warm]:-}" ]
