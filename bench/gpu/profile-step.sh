#!/usr/bin/env bash
# Where the IB-INN training step spends its GPU time: `bench step` under cubecl's kernel profiler
# (a cubecl.toml in the working directory turns it on; each device sync logs a table of kernels
# with their count and total time). Needs .gpu/xtask-cuda (see linalg.sh); writes
# $OUT/step-profile.log and $OUT/step.txt. Profiling syncs after every kernel, so the step times
# it prints are slower than `bench step` alone: read the ratios, not the totals.
set -uo pipefail
cat > cubecl.toml <<TOML
[profiling.logger]
level = "basic"
file = "$OUT/step-profile.log"
append = false
TOML
timeout "${PART_S:-600}" .gpu/xtask-cuda bench step --backends cuda --steps "${STEPS:-3}" --warmup 1 --breakdown \
  >/tmp/step.txt 2>&1
echo "exit status $?"
rm -f cubecl.toml
cp /tmp/step.txt "$OUT/step.txt"; tail -c 2000 /tmp/step.txt
