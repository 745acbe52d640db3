#!/usr/bin/env bash
# The CUDA training step before and after the launch-count work, in one short device call
# (after `bash bench/gpu/setup.sh`): owed item 12 of docs/results.md.
#   .gpu/xtask-cuda         this commit: flat optimiser gathered by the pack kernel with the
#                           convolution weights stored channels-last, batch norm, the affine
#                           half-step, the subnet input and the fixed act-norm as CubeCL
#                           kernels. Same binary: `actnorm` runs the act-norm with tensor ops
#                           (CFX_ACT_NORM=ops), `input` also builds the subnet input with
#                           tensor ops (CFX_SUBNET_INPUT=ops), `standard` also stores the
#                           weights in burn's layout (CFX_WEIGHTS=standard), `affine` also runs
#                           the half-step with tensor ops (CFX_AFFINE=ops), `cat` also gathers
#                           with `cat` (CFX_PACK=cat), `fused` / `ops` also run batch norm with
#                           tensor ops (CFX_BATCH_NORM=fused / ops)
#   .gpu/xtask-cuda-before  optional, a build of 1d89075 (per-tensor optimiser, op-by-op batch norm)
# Each variant runs `bench step --backends cuda --breakdown` with CFX_CONV=gemm, in alternating
# order over ROUNDS rounds [2], so that order effects show; then the launches per step are
# counted (bench/count-launches.sh). Comes back as $OUT/step-ab.tar
# (one JSON and log per run, summary.txt, and the kernel test's log when carried).
# BOX: time box of each run [90 s]; STEPS [20], WARMUP [3]. BIN, BEFORE, BACKEND [cuda] and
# EXTRA (more `bench step` flags) let it run elsewhere, e.g. `OUT=/tmp/o BIN=target/release/xtask BACKEND=cpu EXTRA=--small`.
set -uo pipefail
: "${OUT:?set OUT}"
W=/tmp/step-ab
mkdir -p "$W"
BIN=${BIN:-.gpu/xtask-cuda}
BEFORE=${BEFORE:-.gpu/xtask-cuda-before}
variants=(kernels actnorm input standard affine cat fused ops)
# What each variant after `kernels` drops, in order: a variant drops its own and all earlier
# ones (`ops` overrides `fused`); `before`, the old build, runs with all of them dropped.
drops=(CFX_ACT_NORM=ops CFX_SUBNET_INPUT=ops CFX_WEIGHTS=standard CFX_AFFINE=ops CFX_PACK=cat
  CFX_BATCH_NORM=fused CFX_BATCH_NORM=ops)
[ -x "$BEFORE" ] && variants+=(before)
run() { # variant round
  local bin=$BIN i
  local settings=(CFX_BATCH_NORM=kernels CFX_PACK=kernel CFX_AFFINE=kernel
    CFX_WEIGHTS=channels-last CFX_SUBNET_INPUT=kernel CFX_ACT_NORM=kernel)
  for i in "${!variants[@]}"; do
    [ "${variants[$i]}" = "$1" ] && break
    [ -n "${drops[$i]:-}" ] && settings+=("${drops[$i]}")
  done
  [ "$1" = before ] && bin=$BEFORE
  # shellcheck disable=SC2086 # EXTRA is a list of flags
  env CFX_CONV=gemm "${settings[@]}" timeout "${BOX:-90}" "$bin" bench step \
    --backends "${BACKEND:-cuda}" --steps "${STEPS:-20}" --warmup "${WARMUP:-3}" --breakdown \
    --json "$W/$1-$2.json" ${EXTRA:-} >"$W/$1-$2.log" 2>&1
  echo "round $2 $1 (rc $?): $(grep -E 'ms/step|forward [0-9.]+ ms' "$W/$1-$2.log" | tr -s ' ' | tr '\n' ' ')"
}
# The kernels' tests first, when their binaries are carried (`cargo test --release -p
# cfx-linalg --features cuda --test batch_norm --test pack --test affine --test subnet_input
# --test channel_affine --no-run --target-dir target/cuda`, stripped and xz'd into .gpu/<name>-test.xz like the
# others): the timings mean little if one fails.
for t in batch_norm pack affine subnet_input channel_affine; do
  if [ -x ".gpu/$t-test" ]; then
    timeout "${BOX:-90}" ".gpu/$t-test" >"$W/$t-test.log" 2>&1
    echo "$t kernel test (rc $?): $(grep -E 'test result' "$W/$t-test.log")"
  fi
done | tee "$W/test-summary.txt"
for r in $(seq 1 "${ROUNDS:-2}"); do
  if [ $((r % 2)) = 1 ]; then order=("${variants[@]}"); else order=($(printf '%s\n' "${variants[@]}" | tac)); fi
  for v in "${order[@]}"; do run "$v" "$r"; done
done | tee "$W/summary.txt"
# Launches per step of this commit's binary under the implicit-GEMM convolution, the count
# llvmpipe cannot make (docs/results.md, "The subnet input and the fixed act-norm as kernels").
CFX_CONV=gemm BACKEND="${BACKEND:-cuda}" timeout "${BOX:-90}" bash bench/count-launches.sh "$BIN" \
  --steps 3 --breakdown ${EXTRA:-} 2>&1 | tee "$W/launches.txt"
tar -cf "$OUT/step-ab.tar" -C "$W" . && echo "packed step-ab"
