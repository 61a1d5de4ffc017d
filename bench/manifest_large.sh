#!/usr/bin/env bash
# Tensor manifest of one large cached checkpoint vs a single SHA-256 of the
# same file: `cleanroom manifest` (tensor hashes only, and tensor hashes plus
# the whole file's SHA-256 on a second thread) against `openssl dgst
# -sha256`, with wall time, CPU time and peak RSS (/usr/bin/time -v).
# Checkpoints: a safetensors file of F32 tensors written in the reference
# workload's layout, and a torch.save() checkpoint of the same tensors when
# `cleanroom manifest` reads PyTorch zips (skipped, said so, otherwise).
# Median of REPS runs, peers interleaved within each repetition.
#
# usage: bench/manifest_large.sh   env: CLEANROOM, BENCH_TMPDIR, REPS (5), SIZE_MIB (1024)
# Goal: manifest <= 1.1x the time of openssl; RSS bounded (not the file size).
set -eu
. "$(dirname "$0")/lib.sh"

REPS=${REPS:-5}
SIZE_MIB=${SIZE_MIB:-1024}
PY=${PY:-/usr/bin/python3}
bench_init $((2 * SIZE_MIB + 64))

echo "== manifest_large: ${SIZE_MIB} MiB cached checkpoints, median of $REPS =="
bench_machine

# 16 F32 tensors (plus a few small ones), random bytes, written in chunks.
"$PY" - "$BENCH_TMP" "$SIZE_MIB" <<'EOF'
import json, os, struct, sys
import numpy as np
out, mib = sys.argv[1], int(sys.argv[2])
n_big = 16
per = (mib << 20) // n_big // 4                 # elements per big tensor
rng = np.random.default_rng(0)
shapes = {"layers.%02d.weight" % i: [per // 1024, 1024] for i in range(n_big)}
shapes.update({"layers.%02d.bias" % i: [1024] for i in range(n_big)})
header, off = {}, 0
for name in sorted(shapes):
    n = int(np.prod(shapes[name])) * 4
    header[name] = {"dtype": "F32", "shape": shapes[name], "data_offsets": [off, off + n]}
    off += n
header["__metadata__"] = {"format": "pt"}
h = json.dumps(header, separators=(",", ":")).encode()
h += b" " * (-len(h) % 8)
with open(os.path.join(out, "large.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for name in sorted(shapes):
        n = int(np.prod(shapes[name]))
        for start in range(0, n, 1 << 22):
            f.write(rng.standard_normal(min(1 << 22, n - start), dtype=np.float32).tobytes())
try:
    import torch
    sd = {}
    with open(os.path.join(out, "large.safetensors"), "rb") as f:
        f.seek(8 + len(h))
        for name in sorted(shapes):
            n = int(np.prod(shapes[name]))
            sd[name] = torch.from_numpy(np.frombuffer(f.read(n * 4), dtype=np.float32).copy()).reshape(shapes[name])
    torch.save({"model": sd, "epoch": 1}, os.path.join(out, "large.pt"))
except ImportError:
    pass
EOF

# One measurement: wall (EPOCHREALTIME), CPU and peak RSS (KiB) from time -v.
# usage: measure 'COMMAND' -> T_WALL T_CPU T_RSS
measure() {
	tf="$BENCH_TMP/.timev"
	t0=$EPOCHREALTIME
	/usr/bin/time -v -o "$tf" sh -c "$1" >/dev/null || bench_die "failed: $1"
	t1=$EPOCHREALTIME
	T_WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
	T_CPU=$(awk -F': ' '/User time/ { u = $2 } /System time/ { s = $2 } END { printf "%.2f", u + s }' "$tf")
	T_RSS=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$tf")
}

bench_file() {
	file=$1 label=$2
	bytes=$(stat -c %s "$file")
	cat "$file" >/dev/null
	cat "$file" >/dev/null
	fmt=$("$CLEANROOM" manifest --json --no-file-sha256 "$file" | tr -d ' ' |
		sed -n 's/.*"format":"\([a-z]*\)".*/\1/p')
	if [ "$fmt" = file ] || [ -z "$fmt" ]; then
		echo
		echo "RESULT manifest_large $label: skipped, cleanroom manifest does not read this format yet"
		return
	fi
	ref=$(openssl dgst -sha256 -r "$file" | cut -d' ' -f1)
	"$CLEANROOM" manifest --json "$file" | grep -q "\"sha256\":\"$ref\"" ||
		bench_die "cleanroom manifest printed another file hash for $file"
	n_t=$("$CLEANROOM" manifest --json --no-file-sha256 "$file" | grep -o '"sha256"' | wc -l)
	w1=() c1=() r1=() w2=() c2=() r2=() wo=() co=() ro=()
	for rep in $(seq "$REPS"); do
		measure "'$CLEANROOM' manifest --no-file-sha256 '$file'"
		w1+=("$T_WALL") c1+=("$T_CPU") r1+=("$T_RSS")
		measure "'$CLEANROOM' manifest '$file'"
		w2+=("$T_WALL") c2+=("$T_CPU") r2+=("$T_RSS")
		measure "openssl dgst -sha256 '$file'"
		wo+=("$T_WALL") co+=("$T_CPU") ro+=("$T_RSS")
		: "$rep"
	done
	m1=$(median "${w1[@]}") m2=$(median "${w2[@]}") mo=$(median "${wo[@]}")
	mbs() { calc "sprintf(\"%.0f\", $bytes / $1 / 1e6)"; }
	echo
	echo "$label: $file, $bytes bytes, $n_t tensors ($fmt)"
	echo "runs (s): manifest, tensor hashes  $(fmt3 "${w1[@]}")"
	echo "          manifest + file SHA-256  $(fmt3 "${w2[@]}")"
	echo "          openssl dgst -sha256     $(fmt3 "${wo[@]}")"
	printf '%-34s %9s %8s %12s %14s\n' "peer" "median s" "MB/s" "cpu s (u+s)" "peak RSS MiB"
	printf '%-34s %9.3f %8s %12.2f %14.1f\n' "manifest (tensor hashes)" "$m1" "$(mbs "$m1")" \
		"$(median "${c1[@]}")" "$(calc "$(median "${r1[@]}") / 1024")"
	printf '%-34s %9.3f %8s %12.2f %14.1f\n' "manifest + file SHA-256 (2 threads)" "$m2" "$(mbs "$m2")" \
		"$(median "${c2[@]}")" "$(calc "$(median "${r2[@]}") / 1024")"
	printf '%-34s %9.3f %8s %12.2f %14.1f\n' "openssl dgst -sha256" "$mo" "$(mbs "$mo")" \
		"$(median "${co[@]}")" "$(calc "$(median "${ro[@]}") / 1024")"
	x1=$(calc "sprintf(\"%.2f\", $m1 / $mo)")
	x2=$(calc "sprintf(\"%.2f\", $m2 / $mo)")
	verdict=$(calc "($x1 <= 1.1 && $x2 <= 1.1) ? \"MET\" : \"MISSED\"")
	echo "RESULT manifest_large $label: manifest ${x1}x openssl's time (tensor hashes), ${x2}x (with the file's SHA-256 on a second thread); peak RSS $(calc "sprintf(\"%.0f\", $(median "${r2[@]}") / 1024)") MiB for a $((bytes >> 20)) MiB file; goal <= 1.1x: $verdict"
}

bench_file "$BENCH_TMP/large.safetensors" safetensors
rm -f "$BENCH_TMP/large.safetensors"
if [ -f "$BENCH_TMP/large.pt" ]; then
	bench_file "$BENCH_TMP/large.pt" pytorch
else
	echo "RESULT manifest_large pytorch: skipped, no torch in $PY"
fi
