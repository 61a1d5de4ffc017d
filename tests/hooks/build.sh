#!/bin/sh
# Build the hook pieces by hand (until CMake has them) into build-hooks/:
# the preload library, hookdump (+ an ASan/UBSan hookdump), test_wire (ASan), entrypoints
# (fortified), a static helper, the bench and the wire fuzzer.
#   tests/hooks/build.sh [OUTDIR]
set -eu
cd "$(dirname "$0")/../.."
OUT=${1:-build-hooks}
mkdir -p "$OUT"
W="-Wall -Wextra -Wshadow -Wformat=2 -Wmissing-prototypes -Wstrict-prototypes -Wvla -Wpointer-arith -Werror"
DEFS="-std=c11 -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64"
CC=${CC:-gcc}

$CC $DEFS $W -O2 -g -fPIC -shared -fvisibility=hidden -fno-delete-null-pointer-checks \
	-I. -Wl,-z,now -Wl,-z,defs -o "$OUT/libcleanroom-preload.so" \
	hooks/preload/preload.c hooks/preload/path.c hooks/preload/exec.c hooks/preload/hooks.c
$CC $DEFS $W -O2 -g -Iinclude -I. -o "$OUT/hookdump" \
	tests/hooks/hookdump.c recorder/wire.c util/error.c -lcrypto
$CC $DEFS $W -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined -Iinclude -I. -o "$OUT/hookdump-asan" \
	tests/hooks/hookdump.c recorder/wire.c util/error.c -lcrypto
$CC $DEFS $W -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=undefined -Iinclude -I. -Itests/unit -o "$OUT/test_wire" \
	tests/hooks/test_wire.c recorder/wire.c util/error.c
# -O2 -D_FORTIFY_SOURCE=2 so open/openat with constant flags become __open_2 & co.
$CC $DEFS $W -O2 -D_FORTIFY_SOURCE=2 -g -pthread -o "$OUT/entrypoints" tests/hooks/entrypoints.c
if [ -e /usr/lib/x86_64-linux-gnu/libc.a ]; then
	$CC $DEFS $W -O2 -static -o "$OUT/static-hello" tests/hooks/static_hello.c
fi
$CC $DEFS $W -O2 -o "$OUT/bench_open" tests/hooks/bench_open.c
if command -v clang >/dev/null 2>&1; then
	clang $DEFS -Wall -Wextra -Werror -g -O1 -fsanitize=fuzzer,address,undefined \
		-Iinclude -I. -o "$OUT/fuzz_wire" tests/fuzz/fuzz_wire.c recorder/wire.c util/error.c
fi
echo "built into $OUT"
