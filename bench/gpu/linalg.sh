#!/usr/bin/env bash
# Issue 3's GPU measurements in one call on the GPU machine (after `bash bench/gpu/setup.sh`):
# the CubeCL kernel test under CUDA, `bench fasth` with the PyTorch peer, and `bench fid`.
# Needs .gpu/xtask-cuda.xz and .gpu/cube_kernels-cuda.xz, built here with
#   cargo build --release -p xtask --no-default-features --features cuda --target-dir target/cuda
#   cargo test --release -p cfx-linalg --features cuda --test cube_kernels --no-run --target-dir target/cuda
# (strip, then `xz -T2 -6`; the test binary's path is printed by the second command).
# Results land in $OUT (linalg.txt and the JSON files); each part's output is cut to its tail here.
set -uo pipefail
run() {
  local name="$1"; shift
  echo "== $name: $*"
  # One log for all parts ($OUT brings back at most 8 files).
  timeout "${PART_S:-600}" "$@" >"/tmp/$name.txt" 2>&1
  local rc=$?
  echo "exit status $rc"
  { echo "== $name: $* (exit status $rc)"; cat "/tmp/$name.txt"; } >>"$OUT/linalg.txt"
  tail -c 3000 "/tmp/$name.txt"
}
run cube-kernels .gpu/cube_kernels-cuda --test-threads 1
# The same test built with `--features wgpu` (Vulkan on the GPU): carry .gl/ with the Vulkan
# loader (DEVELOPERS.md) and unpack it before this script.
[ -e .gpu/cube_kernels-wgpu ] && run cube-kernels-wgpu .gpu/cube_kernels-wgpu --test-threads 1
[ -n "${PROFILE_STEP:-}" ] && bash bench/gpu/profile-step.sh
which nsys ncu 2>/dev/null
R="${R:-5}"
# The dense reference is nalgebra on the host CPU, ~19 s per call at d = 2048: one run per m.
run fid .gpu/xtask-cuda bench fid --backend cuda --repeats "$R" --warmup 1 --dense-repeats 1 \
  --batches "${FID_BATCHES:-8,16,32,64,128,256}" --json "$OUT/fid-cuda.json"
[ -n "${SKIP_FASTH:-}" ] || run fasth .gpu/xtask-cuda bench fasth --backend cuda --repeats "$R" --warmup 1 --json "$OUT/fasth-cuda.json"
[ -n "${SKIP_FASTH:-}" ] || run fasth-torch python3 bench/pytorch/fasth.py --repeats "$R" --warmup 1 --json "$OUT/fasth-torch.json"
