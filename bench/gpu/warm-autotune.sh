#!/usr/bin/env bash
# Fills burn-cubecl's autotune cache on the GPU machine and packs it into $OUT/autotune.tar.
# Carried back as .gpu/autotune.tar, setup.sh restores it, so later runs of the same autotune
# binary skip the tuning (the first IB-INN steps otherwise compile ~20 candidates per shape).
# Usage: bash bench/gpu/warm-autotune.sh [SECONDS]   (default 480)
set -uo pipefail
limit="${1:-480}"
export CUBECL_AUTOTUNE_LEVEL="${CUBECL_AUTOTUNE_LEVEL:-minimal}"
timeout "$limit" .gpu/xtask-cuda-autotune bench step --backends cuda --steps 20 --warmup 3 \
  --breakdown >"$OUT/autotune-bench.txt" 2>&1
echo "bench exit status $? (124: stopped at ${limit} s)"
tail -c 4000 "$OUT/autotune-bench.txt"
tar -cf "$OUT/autotune.tar" target/autotune && ls -la "$OUT/autotune.tar"
