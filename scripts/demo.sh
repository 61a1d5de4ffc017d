#!/bin/sh
# The README's main job: set up, build, and run cleanroom on the built-in
# example. Everything it writes goes under out/demo/ (removed first).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/setup.sh"
"$top/scripts/build.sh" "$top/build"
cr="$top/build/cleanroom"
demo="$top/out/demo"
rm -rf "$demo"
mkdir -p "$demo"
cd "$demo"

step() { printf '\n== %s\n' "$*"; }

step "make the example data set (2,000 digit images)"
/usr/bin/python3 "$top/examples/digits/make_data.py" 2000 data

step "create a store"
"$cr" init --store store

step "record the data set by hand"
"$cr" add --store store data

step "status"
"$cr" status --store store

step "the first events"
"$cr" log --store store --limit 5

step "an inclusion proof for event 1234"
"$cr" prove --store store 1234

step "check the log is append-only and consistent"
"$cr" check --store store

printf '\nThe store is in %s/store (log.git is a plain git repository).\n' "$demo"
