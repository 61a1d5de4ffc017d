#!/bin/sh
# The hook's overhead on 20,000 open/read/close of 4 KiB files, bare against
# LD_PRELOAD with hookdump --quiet draining the rings. Runs are interleaved
# (this machine's noise is ~10% between runs); prints every pair and the
# median of the per-run best times.
#   tests/hooks/bench.sh [BUILD_DIR] [PAIRS]
set -eu
B=$(cd "${1:-build-hooks}" && pwd)
PAIRS=${2:-7}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/files" "$T/sock"
chmod 700 "$T/sock"
"$B/bench_open" prep "$T/files" 20000
bare=""
hooked=""
i=0
while [ $i -lt "$PAIRS" ]; do
	a=$("$B/bench_open" run "$T/files" 20000 5 | awk '{print $2}')
	# hookdump hands CMD's stdout to its own stderr.
	h=$("$B/hookdump" --quiet --preload "$B/libcleanroom-preload.so" "$T/sock" -- \
		"$B/bench_open" run "$T/files" 20000 5 2>&1 >/dev/null | grep -v '^hookdump:' |
		awk '{print $2}')
	echo "pair $i: bare $a ns/file, hooked $h ns/file"
	bare="$bare $a"
	hooked="$hooked $h"
	i=$((i + 1))
done
med() { echo "$@" | tr ' ' '\n' | grep . | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }
mb=$(med $bare)
mh=$(med $hooked)
echo "median of best: bare $mb ns/file, hooked $mh ns/file, ratio $(echo "$mh $mb" | awk '{printf "%.3f", $1/$2}')"

# A training-shaped Python run (import torch, DataLoader with 2 forked
# workers over 4000 sample files, 8 epochs, torch.save per epoch).
if [ "${CR_BENCH_PYTHON:-1}" = 1 ] && /usr/bin/python3 -c 'import torch' 2>/dev/null; then
	S=$(dirname "$0")/bench_train.py
	/usr/bin/python3 "$S" "$T/train" prep
	pb=""
	ph=""
	i=0
	while [ $i -lt "${PY_PAIRS:-5}" ]; do
		a=$(/usr/bin/python3 "$S" "$T/train")
		h=$("$B/hookdump" --quiet --preload "$B/libcleanroom-preload.so" "$T/sock" -- \
			/usr/bin/python3 "$S" "$T/train" 2>&1 >/dev/null | grep -v '^hookdump:')
		echo "python pair $i: bare $a s, hooked $h s"
		pb="$pb $a"
		ph="$ph $h"
		i=$((i + 1))
	done
	mb=$(med $pb)
	mh=$(med $ph)
	echo "python median: bare $mb s, hooked $mh s, ratio $(echo "$mh $mb" | awk '{printf "%.3f", $1/$2}')"
fi
