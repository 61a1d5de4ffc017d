#!/bin/sh
# The README's main job: set up, build, and record a real PyTorch training
# run on the built-in example, then show and check what was recorded.
# Everything it writes goes under out/demo/ (removed first).
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

step "record a training run: 2 epochs, 2 DataLoader workers, a checkpoint per epoch"
"$cr" record --store store --data data -- \
	/usr/bin/python3 "$top/examples/digits/train.py" --data data --out checkpoints --epochs 2 --workers 2

step "status"
"$cr" status --store store

step "the lineage of the second checkpoint"
"$cr" lineage --store store checkpoints/epoch-2.pt

step "the second checkpoint's tensor manifest and its delta from the first"
"$cr" show --store store checkpoints/epoch-2.pt

step "which checkpoints one training image fed"
sample=$(find data -name '*.npy' | sort | head -1)
"$cr" find --store store "$sample"

step "an inclusion proof for the final weights"
final=$("$cr" lineage --store store --json checkpoints/model.safetensors |
	/usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["index"])')
"$cr" prove --store store "$final"

step "check the log is append-only and consistent"
"$cr" check --store store

step "make a signing key, seal the log and write the audit bundle"
"$cr" keygen --out keys
"$cr" bundle --store store --key keys/cleanroom.key -o bundle.tar.zst

step "verify the bundle offline, with the data and checkpoints on disk"
"$cr" verify --key keys/cleanroom.pub --data data --checkpoints checkpoints bundle.tar.zst

step "replay the checkpoint history from the bundle against the files"
"$cr" replay --key keys/cleanroom.pub --checkpoints checkpoints bundle.tar.zst

printf '\nThe store is in %s/store (log.git is a plain git repository); the bundle is\n%s/bundle.tar.zst and its public key %s/keys/cleanroom.pub.\n' "$demo" "$demo" "$demo"
