#!/usr/bin/env bash
# Run (bash bench/gpu/setup.sh) at the start of every command on the GPU machine: unpacks the carried binaries
# (built here with `cargo build --release -p xtask --no-default-features --features cuda[,fusion]`,
# stripped and xz-compressed into .gpu/) and prints what machine this is.
set -euo pipefail
for f in .gpu/*.xz; do
  [ -e "$f" ] || continue
  out="${f%.xz}"
  [ -x "$out" ] || { python3 -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$f" "$out"; chmod +x "$out"; }
done
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader || true
# Restore a run carried back from an earlier session (runs-<name>.tar.part-*).
for first in .gpu/runs-*.tar.part-aa; do
  [ -e "$first" ] || continue
  cat "${first%aa}"* | tar -x -C .
done
# Restore a tuned autotune cache carried back from warm-autotune.sh.
if [ -e .gpu/autotune.tar ]; then tar -xf .gpu/autotune.tar; fi
