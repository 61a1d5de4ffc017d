#!/bin/sh
# Build every libFuzzer target with clang and run each for a short while
# over its committed corpus. usage: tests/fuzz/run.sh [SECONDS] [BUILD_DIR]
# A crash fails the run; the crashing input is left in BUILD_DIR/crashes/.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-${FUZZ_SECONDS:-15}}
out=${2:-"$top/build-fuzz"}
mkdir -p "$out/crashes"
if ! command -v clang >/dev/null 2>&1; then
	echo "fuzz: clang is missing (scripts/setup.sh installs it)" >&2
	exit 1
fi
flags="-std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -g -O1 -fsanitize=fuzzer,address,undefined
-fno-sanitize-recover=undefined -I$top/include -I$top"
# target  sources...
build() {
	name=$1
	shift
	# shellcheck disable=SC2086
	clang $flags -o "$out/$name" "$@"
}
build fuzz_wire "$top/tests/fuzz/fuzz_wire.c" "$top/recorder/wire.c" "$top/util/error.c"
build fuzz_event "$top/tests/fuzz/fuzz_event.c" "$top/recorder/event.c" "$top/util/buf.c" \
	"$top/util/codec.c" "$top/util/error.c" $(pkg-config --cflags --libs jansson)
build fuzz_bundle "$top/tests/fuzz/fuzz_bundle.c" "$top/audit/verify.c" "$top/audit/verify_checks.c" \
	"$top/audit/seal.c" "$top/audit/dsse.c" "$top/audit/attest.c" "$top/audit/anchor.c" \
	"$top/recorder/merkle.c" "$top/recorder/hash.c" "$top/recorder/event.c" "$top/recorder/store.c" \
	"$top/recorder/log.c" "$top/recorder/index.c" "$top/util/buf.c" "$top/util/codec.c" \
	"$top/util/error.c" $(pkg-config --cflags --libs jansson libcrypto libarchive libgit2 sqlite3) -lpthread
build fuzz_note "$top/tests/fuzz/fuzz_note.c" "$top/audit/seal.c" "$top/recorder/store.c" \
	"$top/recorder/log.c" "$top/recorder/index.c" "$top/recorder/merkle.c" "$top/recorder/event.c" \
	"$top/recorder/hash.c" "$top/util/buf.c" "$top/util/codec.c" "$top/util/error.c" \
	$(pkg-config --cflags --libs libcrypto libgit2 sqlite3 jansson) -lpthread
build fuzz_dsse "$top/tests/fuzz/fuzz_dsse.c" "$top/audit/dsse.c" "$top/audit/attest.c" \
	"$top/audit/anchor.c" "$top/audit/seal.c" "$top/recorder/event.c" "$top/recorder/merkle.c" \
	"$top/recorder/hash.c" "$top/recorder/store.c" "$top/recorder/log.c" "$top/recorder/index.c" \
	"$top/util/buf.c" "$top/util/codec.c" "$top/util/error.c" \
	$(pkg-config --cflags --libs jansson libcrypto libgit2 sqlite3) -lpthread
for target in fuzz_wire fuzz_event fuzz_bundle fuzz_note fuzz_dsse; do
	corpus="$top/tests/fuzz/corpus/${target#fuzz_}"
	work="$out/corpus-${target#fuzz_}"
	mkdir -p "$work"
	echo "fuzz: $target for ${secs}s over $corpus"
	ASAN_OPTIONS=detect_leaks=1 "$out/$target" -max_total_time="$secs" -print_final_stats=1 \
		-artifact_prefix="$out/crashes/$target-" "$work" "$corpus" 2>"$out/$target.log" ||
		{ tail -40 "$out/$target.log" >&2; exit 1; }
	grep -E "stat::number_of_executed_units|Done" "$out/$target.log" | tail -2
done
