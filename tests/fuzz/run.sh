#!/bin/sh
# Build every libFuzzer target (tests/fuzz/fuzz_*.c) with clang and run each
# for a short while over its committed corpus (tests/fuzz/corpus/<name>/).
# usage: tests/fuzz/run.sh [SECONDS] [BUILD_DIR] [TARGET...]
# The library's sources are compiled once with the fuzzing flags into an
# archive every target links against. A crash fails the run; the crashing
# input is left in BUILD_DIR/crashes/.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-${FUZZ_SECONDS:-15}}
out=${2:-"$top/build-fuzz"}
[ $# -ge 2 ] && shift 2 || shift $#
mkdir -p "$out/crashes" "$out/obj"
if ! command -v clang >/dev/null 2>&1; then
	echo "fuzz: clang is missing (scripts/setup.sh installs it)" >&2
	exit 1
fi
pkgs="jansson libcrypto libarchive libgit2 sqlite3"
cflags="-std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -g -O1 -fsanitize=fuzzer-no-link,address,undefined
-fno-sanitize-recover=undefined -I$top/include -I$top $(pkg-config --cflags $pkgs)"
libs="$(pkg-config --libs $pkgs) -lpthread -lm"

# The library, compiled once (only sources newer than their object are rebuilt).
objs=""
for src in "$top"/util/*.c "$top"/recorder/*.c "$top"/recorder/tensors/*.c "$top"/audit/*.c; do
	[ -f "$src" ] || continue
	rel=${src#"$top"/}
	obj="$out/obj/$(echo "$rel" | tr / _).o"
	if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find "$top/include" "$top/recorder" \
		"$top/util" "$top/audit" -name '*.h' -newer "$obj" 2>/dev/null | head -1)" ]; then
		# shellcheck disable=SC2086
		clang $cflags -c -o "$obj" "$src"
	fi
	objs="$objs $obj"
done
rm -f "$out/libcleanroom-fuzz.a"
# shellcheck disable=SC2086
ar rcs "$out/libcleanroom-fuzz.a" $objs

if [ $# -gt 0 ]; then
	targets="$*"
else
	targets=$(cd "$top/tests/fuzz" && ls fuzz_*.c | sed 's/\.c$//')
fi
for target in $targets; do
	# shellcheck disable=SC2086
	clang $cflags -fsanitize=fuzzer -o "$out/$target" "$top/tests/fuzz/$target.c" \
		"$out/libcleanroom-fuzz.a" $libs
done
for target in $targets; do
	corpus="$top/tests/fuzz/corpus/${target#fuzz_}"
	work="$out/corpus-${target#fuzz_}"
	mkdir -p "$work" "$corpus"
	echo "fuzz: $target for ${secs}s over $corpus"
	ASAN_OPTIONS=detect_leaks=1 "$out/$target" -max_total_time="$secs" -print_final_stats=1 \
		-artifact_prefix="$out/crashes/$target-" "$work" "$corpus" 2>"$out/$target.log" ||
		{ tail -40 "$out/$target.log" >&2; exit 1; }
	grep -E "stat::number_of_executed_units|Done" "$out/$target.log" | tail -2
done
