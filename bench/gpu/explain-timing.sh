#!/usr/bin/env bash
# Issue 4's time per counterfactual under CUDA, in one device call (after `bash bench/gpu/setup.sh`):
# bench/explain-cpu.sh with the CUDA binary on trained runs carried in .gpu/runs/{ibinn,cnn,ae}
# (each run's top-level files only; the checkpoints are not needed). The explanations.json files
# come back as $OUT/timing.tar. Run the same script here with XTASK=./target/release/xtask for the
# CPU row of the same models.
# N, GB_BATCHES, BASELINE_S, ECINN_LIMIT: as bench/explain-cpu.sh [3, "3 1", 60 s, 10000].
set -uo pipefail
: "${OUT:?set OUT}"
T=/tmp/timing
XTASK=${XTASK:-.gpu/xtask-cuda} IBINN=${IBINN:-.gpu/runs/ibinn} CNN=${CNN:-.gpu/runs/cnn} \
  AE=${AE:-.gpu/runs/ae} OUT_DIR=$T N=${N:-3} GB_BATCHES=${GB_BATCHES:-3 1} \
  BASELINE_S=${BASELINE_S:-60} bash bench/explain-cpu.sh
tar -cf "$OUT/timing.tar" -C "$T" . && echo "packed timing"
