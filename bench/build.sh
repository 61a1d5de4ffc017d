#!/bin/sh
# Build the C benchmark tools against the static library.
# usage: bench/build.sh [BUILD_DIR]   (default build; the library must be built:
#        scripts/build.sh). Writes BUILD_DIR/bench-tools/append_events.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-"$top/build"}
lib="$build/libcleanroom.a"
[ -f "$lib" ] || { echo "bench/build.sh: no $lib; run scripts/build.sh first" >&2; exit 2; }
out="$build/bench-tools"
mkdir -p "$out"
pkgs="sqlite3 libgit2 libcrypto jansson libarchive"
# shellcheck disable=SC2046
${CC:-cc} -std=c11 -O2 -g -Wall -Wextra -D_GNU_SOURCE -I"$top/include" $(pkg-config --cflags $pkgs) \
	-o "$out/append_events" "$top/bench/append_events.c" "$lib" $(pkg-config --libs $pkgs) -lpthread
echo "$out/append_events"
