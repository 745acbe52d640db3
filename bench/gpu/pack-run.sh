#!/usr/bin/env bash
# Packs runs/<name> into 15 MB parts under $OUT so a long run can continue in a later session
# (each file that comes back from the GPU machine must stay under 16 MiB).
set -euo pipefail
name="$1"
tar -c "runs/$name" | split -b 15m - "$OUT/runs-$name.tar.part-"
ls -la "$OUT"
