#!/usr/bin/env bash
# Run every foundation benchmark and write what they print to
# bench/results/foundation.txt (git-ignored), then print the summary.
#
# usage: bench/run_all.sh   env: CLEANROOM (default build/cleanroom), BENCH_TMPDIR,
#        and each script's own knobs (REPS, EVENTS, COUNT, ...); see their headers.
# Needs ~2.5 GiB free under BENCH_TMPDIR (default /var/tmp) at the peak and
# takes ~10-15 minutes. Exit status 1 when a script failed (goals missed do
# not count as failures; they are reported as MISSED).
exec "$(dirname "$0")/run_set.sh" foundation hash_large hash_many append_events rehash_unchanged
