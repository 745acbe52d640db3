#!/usr/bin/env bash
# Our benches and their PyTorch peers in one run on one machine, then the ratio table
# (ours / PyTorch) that docs/results.md records.
#   bench/side-by-side.sh BACKEND OUT [--quick]
# BENCHES: which benches [step,ecinn,fasth,fid].
# BACKEND: cpu, flex, ndarray (PyTorch on the CPU) or cuda, wgpu (PyTorch on CUDA).
# XTASK: the xtask binary [./target/release/xtask]; TORCH_THREADS: torch.set_num_threads.
set -euo pipefail
BACKEND=${1:?backend}
OUT=${2:?output folder}
QUICK=${3:-}
X=${XTASK:-./target/release/xtask}
case "$BACKEND" in
  cuda|wgpu) DEV=cuda ;;
  *) DEV=cpu ;;
esac
THREADS=()
[ -n "${TORCH_THREADS:-}" ] && THREADS=(--threads "$TORCH_THREADS")
mkdir -p "$OUT"
BENCHES=${BENCHES:-step,ecinn,fasth,fid}
"$X" bench all --backend "$BACKEND" --benches "$BENCHES" --out "$OUT/ours" $QUICK 2>"$OUT/ours.log"
python3 bench/pytorch/all.py --device "$DEV" --benches "$BENCHES" --out "$OUT/torch" "${THREADS[@]}" $QUICK 2>"$OUT/torch.log"
python3 bench/pytorch/ratios.py "$OUT/ours" "$OUT/torch" | tee "$OUT/ratios.md"
