#!/usr/bin/env bash
# Issue 8's GPU tables in one device call (after `bash bench/gpu/setup.sh`): our benches and the
# PyTorch peers side by side under CUDA, ECINN at 1 024 inputs, and the same side by side under
# wgpu/Vulkan when its binary is carried. Each backend's folder comes back as one tar in $OUT
# ($OUT brings back at most 8 files).
# Needs .gpu/xtask-cuda.xz (and .gpu/xtask-wgpu.xz), built here with
#   cargo build --release -p xtask --no-default-features --features cuda --target-dir target/cuda
#   cargo build --release -p xtask --no-default-features --features wgpu --target-dir target/wgpu
# and, to check the implicit-GEMM convolution against the CPU before its bench is trusted,
#   cargo test --release -p cfx-linalg --features cuda --test conv_gemm --no-run --target-dir target/cuda
# (stripped and xz-compressed as .gpu/conv_gemm-cuda.xz; it runs first when present).
# For wgpu, carry .gl/ with the Vulkan loader's packages (DEVELOPERS.md, "GPU runs").
# WGPU_BENCHES: what wgpu runs [step,ecinn,fasth] (fid's dense reference is host code either way).
# GEMM_TEST_S, CUDA_S, ECINN_S, CONV_S, WGPU_S: time boxes [90, 300, 50, 130, 180 s]; a part
# cut short still packs what it wrote. All five boxes run out would pass one call's 600 s: give the call
# timeout_s 600 and SKIP_WGPU=1, and wgpu a second call with SKIP_CUDA=1.
set -uo pipefail
: "${OUT:?set OUT}"
pack() { tar -cf "$OUT/$1.tar" -C "$2" . && echo "packed $1"; }
W=/tmp/side
mkdir -p "$W"
if [ -z "${SKIP_CUDA:-}" ]; then
  # On llvmpipe this test only reaches the direct fallback (no tensor cores): here the GEMM
  # kernels themselves are held to burn's CPU convolution, output and all three gradients.
  if [ -x .gpu/conv_gemm-cuda ]; then
    mkdir -p "$W/cuda"
    timeout "${GEMM_TEST_S:-90}" .gpu/conv_gemm-cuda --test-threads 1 --nocapture >"$W/cuda/conv-gemm-test.txt" 2>&1
    echo "conv_gemm test exit status $?"; tail -c 1500 "$W/cuda/conv-gemm-test.txt"
  fi
  XTASK=.gpu/xtask-cuda timeout "${CUDA_S:-300}" bash bench/side-by-side.sh cuda "$W/cuda"
  echo "cuda side-by-side exit status $?"
  timeout "${ECINN_S:-50}" .gpu/xtask-cuda bench ecinn --backends cuda --batch-size 1024 --repeats 3 \
    --json "$W/cuda/ecinn-1024.json" 2>&1 | tail -2
  # Whether the unfold + matmul or the implicit-GEMM convolution removes the direct
  # weight-gradient kernel's cost: the convolutions alone (with each way's weight gradient
  # against burn's), then the whole step with each (the burn-conv step is in step.json).
  timeout "${CONV_S:-130}" bash -c ".gpu/xtask-cuda bench conv --backends cuda --json $W/cuda/conv.json 2>&1 | tail -12
    CFX_CONV=gemm .gpu/xtask-cuda bench step --backends cuda --steps 5 --warmup 2 --json $W/cuda/step-gemm.json 2>&1 | tail -3
    CFX_CONV=unfold .gpu/xtask-cuda bench step --backends cuda --steps 5 --warmup 2 --json $W/cuda/step-unfold.json 2>&1 | tail -2"
  pack side-cuda "$W/cuda"
fi
if [ -x .gpu/xtask-wgpu ] && [ -z "${SKIP_WGPU:-}" ]; then
  # The Vulkan loader carried in .gl/ (DEVELOPERS.md): the machine has NVIDIA's ICD, not the loader.
  for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
  ldconfig
  export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
  BENCHES="${WGPU_BENCHES:-step,ecinn,fasth}" XTASK=.gpu/xtask-wgpu timeout "${WGPU_S:-180}" \
    bash bench/side-by-side.sh wgpu "$W/wgpu"
  echo "wgpu side-by-side exit status $?"
  pack side-wgpu "$W/wgpu"
fi
