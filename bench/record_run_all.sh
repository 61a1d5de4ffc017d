#!/usr/bin/env bash
# Run the recording benchmarks (issue 3) and write what they print to
# bench/results/recording.txt (git-ignored), then print the summary.
#
# usage: bench/record_run_all.sh
# env:   CLEANROOM (default build/cleanroom), BENCH_TMPDIR (default /var/tmp),
#        and each script's knobs (PAIRS, PEER_PAIRS, FILES, ...; see their
#        headers; PAIRS is passed to every script, so set it per script
#        rather than here if you change it).
# Takes ~12-15 minutes on a quiet 2-CPU machine (the workload with its
# peers is ~11 of them; longer when other processes keep it busy); needs
# ~2 GiB free under BENCH_TMPDIR at the peak. Exit status 1
# when a script failed (goals missed do not count: they print MISSED).
exec "$(dirname "$0")/run_set.sh" recording record_micro record_scale record_workload
