#!/usr/bin/env bash
# Hash one large file that is in the page cache: `cleanroom add` (into a
# fresh store each repetition, so the hash cache cannot answer) vs
# `openssl dgst -sha256` vs `sha256sum`. Median of REPS runs, peers
# interleaved within each repetition.
#
# usage: bench/hash_large.sh        env: CLEANROOM, BENCH_TMPDIR, REPS (5), SIZE_MIB (2048)
# Goal: cleanroom >= 0.9x the speed of openssl.
set -eu
. "$(dirname "$0")/lib.sh"

REPS=${REPS:-5}
SIZE_MIB=${SIZE_MIB:-2048}
bench_init $((SIZE_MIB + 64))

echo "== hash_large: one ${SIZE_MIB} MiB cached file, median of $REPS =="
bench_machine

file="$BENCH_TMP/large.bin"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$file"
bytes=$(stat -c %s "$file")
cat "$file" >/dev/null # in the page cache from here on
cat "$file" >/dev/null

cr_own=() cr_wall=() ossl=() sha=() cr_cpu=() ossl_cpu=() sha_cpu=()
ref=$(openssl dgst -sha256 -r "$file" | cut -d' ' -f1)
for rep in $(seq "$REPS"); do
	store="$BENCH_TMP/store-$rep"
	"$CLEANROOM" init --store "$store" >/dev/null
	timed "'$CLEANROOM' add --store '$store' --json --quiet '$file' >'$BENCH_TMP/add.json'"
	cr_wall+=("$T_WALL") cr_cpu+=("$T_CPU")
	cr_own+=("$(json_field "$BENCH_TMP/add.json" seconds)")
	[ "$(json_field "$BENCH_TMP/add.json" hashed_files)" = 1 ] || bench_die "cleanroom add did not hash the file"
	# The recorded hash must be the real one (guards against measuring a no-op).
	"$CLEANROOM" log --store "$store" --json | grep -q "$ref" || bench_die "cleanroom recorded another hash"
	rm -rf "$store"

	timed "openssl dgst -sha256 '$file'"
	ossl+=("$T_WALL") ossl_cpu+=("$T_CPU")
	timed "sha256sum '$file'"
	sha+=("$T_WALL") sha_cpu+=("$T_CPU")
done

m_own=$(median "${cr_own[@]}")
m_wall=$(median "${cr_wall[@]}")
m_ossl=$(median "${ossl[@]}")
m_sha=$(median "${sha[@]}")
mbs() { calc "sprintf(\"%.0f\", $bytes / $1 / 1e6)"; }

echo
echo "runs (s): cleanroom add (own) $(fmt3 "${cr_own[@]}")"
echo "          cleanroom add (process) $(fmt3 "${cr_wall[@]}")"
echo "          openssl $(fmt3 "${ossl[@]}")"
echo "          sha256sum $(fmt3 "${sha[@]}")"
echo
m_cr_cpu=$(median "${cr_cpu[@]}") m_ossl_cpu=$(median "${ossl_cpu[@]}") m_sha_cpu=$(median "${sha_cpu[@]}")
# user+sys of the whole process: less sensitive than wall time to other
# processes competing for the CPU (10 ms resolution).
printf '%-40s %9s %10s %12s\n' "peer (${SIZE_MIB} MiB, MB = 10^6 B)" "median s" "MB/s" "cpu s (u+s)"
printf '%-40s %9.3f %10s %12s\n' "cleanroom add (add's own time)" "$m_own" "$(mbs "$m_own")" ""
printf '%-40s %9.3f %10s %12.2f\n' "cleanroom add (whole process)" "$m_wall" "$(mbs "$m_wall")" "$m_cr_cpu"
printf '%-40s %9.3f %10s %12.2f\n' "openssl dgst -sha256" "$m_ossl" "$(mbs "$m_ossl")" "$m_ossl_cpu"
printf '%-40s %9.3f %10s %12.2f\n' "sha256sum" "$m_sha" "$(mbs "$m_sha")" "$m_sha_cpu"
ratio=$(calc "sprintf(\"%.2f\", $m_ossl / $m_own)")
ratio_wall=$(calc "sprintf(\"%.2f\", $m_ossl / $m_wall)")
ratio_sha=$(calc "sprintf(\"%.2f\", $m_sha / $m_own)")
verdict=$(calc "($ratio >= 0.9) ? \"MET\" : \"MISSED\"")
echo
ratio_cpu=$(calc "sprintf(\"%.2f\", $m_ossl_cpu / $m_cr_cpu)")
echo "RESULT hash_large: cleanroom $(mbs "$m_own") MB/s, openssl $(mbs "$m_ossl") MB/s, sha256sum $(mbs "$m_sha") MB/s; cleanroom/openssl speed ${ratio}x (whole process ${ratio_wall}x, by cpu time ${ratio_cpu}x), cleanroom/sha256sum ${ratio_sha}x; goal >= 0.9x: $verdict"
