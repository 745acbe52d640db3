#!/usr/bin/env bash
# Kernel launches per IB-INN training step, counted without a GPU: a `--features wgpu` build of
# xtask on any Vulkan driver (Mesa's llvmpipe on a machine without GPU) with cubecl's profiling
# logger at "minimal", which logs one line per kernel executed. wgpu runs the same burn-cubecl
# kernels as CUDA and a count does not depend on the device's speed, so the counts stand in for
# the GPU's (docs/results.md, "The optimiser as one flat vector").
#
# Usage: bash bench/count-launches.sh XTASK_WGPU_BINARY [more `bench step` flags]
#   e.g. bash bench/count-launches.sh target/wgpu/release/xtask --small --steps 6 --breakdown
# BACKEND=cuda counts a `--features cuda` build's launches on the GPU machine instead (there
# `CFX_CONV=gemm` takes the implicit-GEMM convolutions, which llvmpipe cannot run).
# Prints the launches of each step (with --breakdown, of its forward, backward and optimiser
# phases too); the steady state is from the third step on.
set -euo pipefail
bin=$(realpath "$1")
shift
backend=${BACKEND:-wgpu}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/cubecl.toml" <<'TOML'
[profiling.logger]
level = "minimal"
stderr = true
TOML
# cubecl reads cubecl.toml from the working directory.
if ! (cd "$dir" && "$bin" bench step --backends "$backend" --warmup 0 "$@" 2>"$dir/log" >/dev/null); then
  grep -v '^Executing ' "$dir/log" | tail -20 >&2
  exit 1
fi
# With --breakdown, `bench step` marks the end of each step's forward and backward pass too
# (one marker per replica: split phases with the default --replicas 1).
awk -v be="$backend" '$0 ~ "^" be " step [0-9]+: forward done" { f = n; n = 0; next }
     $0 ~ "^" be " step [0-9]+: backward done" { b = n; n = 0; next }
     $0 ~ "^" be " step [0-9]+: " {
       sub(/:.*/, "")
       if (f + b > 0) printf "%s: %d launches (forward %d, backward %d, optimiser %d)\n", $0, f + b + n, f, b, n
       else printf "%s: %d launches\n", $0, n
       f = b = n = 0; next
     }
     /^Executing / { n++ }' "$dir/log"
