#!/usr/bin/env bash
# The GPU ratio tables beside one PyTorch run, in one short device call (after
# `bash bench/gpu/setup.sh`): PyTorch's step and ECINN once, then ours under CUDA with
# CFX_CONV=gemm and under wgpu with burn's and with the GEMM convolution, each against that
# PyTorch run. Comes back as $OUT/ratios-gemm-wgpu.tar. Carry .gpu/ (xtask-cuda.xz,
# xtask-wgpu.xz) and .gl/. BOX: time box of each of the four runs [60 s].
set -uo pipefail
: "${OUT:?set OUT}"
W=/tmp/ratios
B=step,ecinn
mkdir -p "$W"
timeout "${BOX:-60}" python3 bench/pytorch/all.py --device cuda --benches $B --out "$W/torch" >"$W/torch.log" 2>&1
CFX_CONV=gemm timeout "${BOX:-60}" .gpu/xtask-cuda bench all --backend cuda --benches $B --out "$W/cuda-gemm" >"$W/cuda-gemm.log" 2>&1
for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
timeout "${BOX:-60}" .gpu/xtask-wgpu bench all --backend wgpu --benches $B --out "$W/wgpu-burn" >"$W/wgpu-burn.log" 2>&1
# The log keeps the GEMM path's once-per-pass fallback notes, if burn-cubecl refused it here.
CFX_CONV=gemm timeout "${BOX:-60}" .gpu/xtask-wgpu bench all --backend wgpu --benches $B --out "$W/wgpu-gemm" >"$W/wgpu-gemm.log" 2>&1
for o in cuda-gemm wgpu-burn wgpu-gemm; do
  echo "== $o"
  python3 bench/pytorch/ratios.py "$W/$o" "$W/torch" | tee "$W/$o-ratios.md"
done
grep -h 'cfx:' "$W"/*.log | sort | uniq -c
tar -cf "$OUT/ratios-gemm-wgpu.tar" -C "$W" . && echo "packed ratios-gemm-wgpu"
