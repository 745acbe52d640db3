#!/usr/bin/env bash
# Issue 3's GPU measurements in one call on the GPU machine (after `bash bench/gpu/setup.sh`):
# the CubeCL kernel test under CUDA, `bench fasth` with the PyTorch peer, and `bench fid`.
# Needs .gpu/xtask-cuda.xz and .gpu/cube_kernels-cuda.xz, built here with
#   cargo build --release -p xtask --no-default-features --features cuda --target-dir target/cuda
#   cargo test --release -p cfx-linalg --features cuda --test cube_kernels --no-run --target-dir target/cuda
# (strip, then `xz -T2 -6`; the test binary's path is printed by the second command).
# Results land in $OUT; each part's output is cut to its tail here, whole in $OUT.
set -uo pipefail
run() {
  local name="$1"; shift
  echo "== $name: $*"
  timeout "${PART_S:-600}" "$@" >"$OUT/$name.txt" 2>&1
  echo "exit status $?"
  tail -c 3000 "$OUT/$name.txt"
}
run cube-kernels .gpu/cube_kernels-cuda --test-threads 1
run fasth .gpu/xtask-cuda bench fasth --backend cuda --repeats 20 --warmup 3 --json "$OUT/fasth-cuda.json"
run fasth-torch python3 bench/gpu/fasth_torch.py --repeats 20 --warmup 3 --json "$OUT/fasth-torch.json"
run fid .gpu/xtask-cuda bench fid --backend cuda --repeats 20 --warmup 3 --json "$OUT/fid-cuda.json"
