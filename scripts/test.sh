#!/bin/sh
# Set up, build with warnings as errors under ASan+UBSan, and run every test.
# This is the README's test command; .ci/run calls it.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/setup.sh"
"$top/scripts/build.sh" "$top/build-test" -DCR_WERROR=ON -DCR_SANITIZE=ON -DBUILD_TESTING=ON
cd "$top/build-test"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --output-on-failure -j "$(nproc)" "$@"
