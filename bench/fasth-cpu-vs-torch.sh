#!/usr/bin/env bash
# FastH on the CPU (flex) against PyTorch's CPU Householder products, one after the other on an
# otherwise idle machine, same sizes (docs/results.md, "FastH: Householder products (CPU)").
# Needs a release xtask (cargo build --release -p xtask) and PyTorch for the CPU
# (`pip install torch`; it runs on the CPU when no GPU is present).
set -euo pipefail
X=${XTASK:-./target/release/xtask}
DIMS=${DIMS:-64,128,256,512,768,1024}
OUT=${OUT:-runs/fasth-cpu-vs-torch}
mkdir -p "$OUT"
$X bench fasth --dims "$DIMS" --repeats 3 --warmup 1 --json "$OUT/fasth.json"
python3 bench/pytorch/fasth.py --device cpu --dims "$DIMS" --repeats 3 --warmup 1 --json "$OUT/torch.json"
