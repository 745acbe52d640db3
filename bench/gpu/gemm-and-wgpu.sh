#!/usr/bin/env bash
# One device call (after `bash bench/gpu/setup.sh`) that rechecks the implicit-GEMM convolution
# under CUDA after a fix (its test, `bench conv`, and the training step and ECINN with
# CFX_CONV=gemm), then measures the wgpu build on the same GPU through Vulkan: the training
# step with burn's and with the GEMM convolution, and ECINN. Everything comes back as
# $OUT/gemm-wgpu.tar. Carry .gpu/ (xtask-cuda.xz, conv_gemm-cuda.xz, xtask-wgpu.xz) and .gl/.
# GEMM_S, CUDA_S, WGPU_S: time boxes [60, 130, 180 s].
set -uo pipefail
: "${OUT:?set OUT}"
W=/tmp/gemm-wgpu
mkdir -p "$W"
X=.gpu/xtask-cuda
if [ -x .gpu/conv_gemm-cuda ]; then
  timeout "${GEMM_S:-60}" .gpu/conv_gemm-cuda --test-threads 1 --nocapture >"$W/conv-gemm-test.txt" 2>&1
  echo "conv_gemm test exit status $?"; tail -c 1200 "$W/conv-gemm-test.txt"
fi
timeout "${CUDA_S:-130}" bash -c "$X bench conv --backends cuda --json $W/conv.json 2>&1 | tail -8
  CFX_CONV=gemm $X bench step --backends cuda --steps 5 --warmup 2 --json $W/step-gemm.json 2>&1 | tail -1
  CFX_CONV=gemm $X bench ecinn --backends cuda --batch-size 1024 --repeats 3 --json $W/ecinn-gemm-1024.json 2>&1 | tail -1
  CFX_CONV=gemm $X bench ecinn --backends cuda --json $W/ecinn-gemm-128.json 2>&1 | tail -1"
if [ -x .gpu/xtask-wgpu ]; then
  # The Vulkan loader carried in .gl/ (DEVELOPERS.md): the machine has NVIDIA's ICD, not the loader.
  for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
  ldconfig
  export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
  Y=.gpu/xtask-wgpu
  timeout "${WGPU_S:-180}" bash -c "$Y bench step --backends wgpu --steps 5 --warmup 2 --json $W/wgpu-step.json 2>&1 | tail -2
    $Y bench ecinn --backends wgpu --json $W/wgpu-ecinn-128.json 2>&1 | tail -1
    CFX_CONV=gemm $Y bench step --backends wgpu --steps 5 --warmup 2 --json $W/wgpu-step-gemm.json 2>&1 | tail -2
    $Y bench ecinn --backends wgpu --batch-size 1024 --repeats 3 --json $W/wgpu-ecinn-1024.json 2>&1 | tail -1"
fi
tar -cf "$OUT/gemm-wgpu.tar" -C "$W" . && echo "packed gemm-wgpu"
