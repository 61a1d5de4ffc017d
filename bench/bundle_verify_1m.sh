#!/usr/bin/env bash
# Bundle and verify a store of EVENTS (1,000,000) events: wall time, CPU time
# and peak memory (/usr/bin/time -v "Maximum resident set size") of
# `cleanroom bundle` and `cleanroom verify --key`, each the median of REPS runs.
#
# The store is made fast through the library (bench/append_events.c: input
# events as `cleanroom add` records them, byte-identical every run), then
# keygen, one `cleanroom seal` (an earlier seal: the bundle carries it with a
# consistency proof) and three files added with `cleanroom add`. The same is
# done for SMALL (100,000) events, to show that verify's memory does not grow
# with the number of events, and the small store is bundled once more with
# --prove-inputs (an inclusion proof per event, read alongside the events).
# Every bundle of a store must be byte-identical across the repetitions.
#
# Prints the figures, then the Markdown table of docs/performance.md
# ("Bundle and verify (issue 4)").
#
# usage: bench/bundle_verify_1m.sh   env: CLEANROOM (a Release build),
#        EVENTS (1000000), SMALL (100000), REPS (3), BENCH_TMPDIR (/var/tmp),
#        BUILD_DIR (the folder of libcleanroom.a; default: that of $CLEANROOM)
# Needs ~600 MiB of scratch for 1M events; takes ~3-5 minutes (bundling with
# --prove-inputs computes one proof per event through the store).
# Goal (issue 4): verify 1,000,000 events in under 10 s, memory bounded.
set -eu
. "$(dirname "$0")/lib.sh"

EVENTS=${EVENTS:-1000000}
SMALL=${SMALL:-100000}
REPS=${REPS:-3}
bench_init $(((EVENTS + SMALL) * 450 / 1048576 + 128))
command -v zstd >/dev/null || bench_die "needs zstd"

echo "== bundle_verify_1m: bundle and verify $EVENTS and $SMALL events, median of $REPS =="
bench_machine
BUILD_DIR=${BUILD_DIR:-$(dirname "$CLEANROOM")}
[ -f "$BUILD_DIR/libcleanroom.a" ] || bench_die "no $BUILD_DIR/libcleanroom.a (set BUILD_DIR)"
tool=$("$BENCH_TOP/bench/build.sh" "$BUILD_DIR") || bench_die "cannot build append_events"
echo "tool:      $tool (against $BUILD_DIR/libcleanroom.a)"
echo

# Run a command under /usr/bin/time -v, output to $BENCH_TMP/.out; set
# V_WALL (s, EPOCHREALTIME), V_CPU (user+sys s) and V_RSS (peak RSS, MiB).
# usage: vtime EXPECTED_STATUS COMMAND...
vtime() {
	want=$1
	shift
	t0=$EPOCHREALTIME
	set +e
	/usr/bin/time -v -o "$BENCH_TMP/.tv" "$@" >"$BENCH_TMP/.out" 2>"$BENCH_TMP/.err"
	rc=$?
	set -e
	t1=$EPOCHREALTIME
	[ "$rc" = "$want" ] || bench_die "exit $rc (wanted $want): $*: $(tail -n 3 "$BENCH_TMP/.err")"
	V_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	V_CPU=$(awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.2f", u + s }' "$BENCH_TMP/.tv")
	V_RSS=$(awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$BENCH_TMP/.tv")
}

max() { printf '%s\n' "$@" | sort -g | tail -n 1; }

# usage: make_store DIR N -> a store of N + 3 events, sealed at N
make_store() {
	t0=$EPOCHREALTIME
	"$tool" "$1" "$2" >/dev/null || bench_die "append_events failed"
	"$CLEANROOM" keygen --out "$1" >/dev/null
	"$CLEANROOM" seal --store "$1" --key "$1/cleanroom.key" >/dev/null
	mkdir -p "$1.files"
	for f in a b c; do echo "$f" >"$1.files/$f.txt"; done
	"$CLEANROOM" add --store "$1" "$1.files" >/dev/null
	size=$("$CLEANROOM" status --store "$1" --json | tr -d ' \n' | sed -n 's/.*"tree_size":\([0-9]*\).*/\1/p')
	echo "store:     $1: $size events (sealed at $2 first), made in $(calc "sprintf(\"%.1f\", $EPOCHREALTIME - $t0)") s, $(du -sm "$1" | cut -f1) MiB"
}

ROWS=()
# usage: measure LABEL STORE [BUNDLE OPTIONS...]   (LABEL: [a-z_] only)
measure() {
	label=$1 store=$2
	shift 2
	bundle="$BENCH_TMP/$label.tar.zst"
	bw=() bc=() br=() vw=() vc=() vr=() sums=()
	for rep in $(seq "$REPS"); do
		rm -f "$bundle"
		vtime 0 "$CLEANROOM" bundle --store "$store" -o "$bundle" --json "$@"
		bw+=("$V_WALL") bc+=("$V_CPU") br+=("$V_RSS")
		sums+=("$(sha256sum "$bundle" | cut -c1-16)")
		vtime 0 "$CLEANROOM" verify --key "$store/cleanroom.pub" "$bundle"
		vw+=("$V_WALL") vc+=("$V_CPU") vr+=("$V_RSS")
	done
	[ "$(printf '%s\n' "${sums[@]}" | sort -u | wc -l)" = 1 ] || bench_die "$label: bundles differ: ${sums[*]}"
	events=$(tail -n 1 "$BENCH_TMP/.out" | sed -n 's/.* \([0-9]*\) events, root.*/\1/p')
	proofs=$(unzstd -c "$bundle" | tar -xOf - proofs/inputs.jsonl 2>/dev/null | wc -l || true)
	bytes=$(stat -c %s "$bundle")
	B_WALL=$(median "${bw[@]}") B_CPU=$(printf %.2f "$(median "${bc[@]}")") B_RSS=$(max "${br[@]}")
	X_WALL=$(median "${vw[@]}") X_CPU=$(printf %.2f "$(median "${vc[@]}")") X_RSS=$(max "${vr[@]}")
	echo "-- $label: $events events, $proofs input proofs, bundle $bytes bytes (zstd), identical in every run --"
	echo "bundle:    median $(printf %.2f "$B_WALL") s wall, $B_CPU s CPU, peak RSS $B_RSS MiB (runs: $(fmt3 "${bw[@]}") s)"
	echo "verify:    median $(printf %.2f "$X_WALL") s wall, $X_CPU s CPU, peak RSS $X_RSS MiB (runs: $(fmt3 "${vw[@]}") s)"
	echo "           $(grep -c '^ok' "$BENCH_TMP/.out") checks ok: $(tail -n 1 "$BENCH_TMP/.out" | cut -d: -f2- | cut -c1-60)"
	ROWS+=("| $label | $events | $proofs | $(calc "sprintf(\"%.1f\", $bytes / 1048576)") | $(printf %.2f "$B_WALL") ($B_CPU) | $B_RSS | $(printf %.2f "$X_WALL") ($X_CPU) | $X_RSS |")
	eval "R_${label}_VERIFY=$X_WALL R_${label}_RSS=$X_RSS R_${label}_EVENTS=$events"
}

make_store "$BENCH_TMP/small" "$SMALL"
make_store "$BENCH_TMP/large" "$EVENTS"
echo
measure small "$BENCH_TMP/small"
measure small_inputs "$BENCH_TMP/small" --prove-inputs
measure large "$BENCH_TMP/large"
echo

goal=$(awk -v t="$R_large_VERIFY" 'BEGIN { print (t < 10 ? "met" : "MISSED") }')
echo "RESULT bundle_verify: verify of $R_large_EVENTS events in $(printf %.2f "$R_large_VERIFY") s (goal < 10 s: $goal);" \
	"peak RSS $R_large_RSS MiB at $R_large_EVENTS events, $R_small_RSS MiB at $R_small_EVENTS," \
	"$R_small_inputs_RSS MiB with $R_small_EVENTS input proofs"
echo
echo "| store | events | input proofs | bundle MiB | bundle s (CPU s) | bundle peak RSS MiB | verify s (CPU s) | verify peak RSS MiB |"
echo "|-------|-------:|-------------:|-----------:|-----------------:|--------------------:|-----------------:|--------------------:|"
printf '%s\n' "${ROWS[@]}"
