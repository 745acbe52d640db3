#!/usr/bin/env bash
# The CUDA training step before and after the launch-count work, in one device call (after
# `bash bench/gpu/setup.sh`): owed item 12 of docs/results.md.
#   .gpu/xtask-cuda         this commit: flat optimiser gathered by the pack kernel with the
#                           convolution weights stored channels-last, batch norm, the affine
#                           half-step, the subnet input and the fixed act-norm as CubeCL
#                           kernels, the 2-channel convolutions' weight gradient through the
#                           implicit GEMM on an input padded to 8 channels. Same binary:
#                           `narrow` takes the direct kernel for those weight gradients
#                           (CFX_CONV_NARROW=direct), `actnorm` also runs the act-norm with tensor ops
#                           (CFX_ACT_NORM=ops), `input` also builds the subnet input with
#                           tensor ops (CFX_SUBNET_INPUT=ops), `standard` also stores the
#                           weights in burn's layout (CFX_WEIGHTS=standard), `affine` also runs
#                           the half-step with tensor ops (CFX_AFFINE=ops), `cat` also gathers
#                           with `cat` (CFX_PACK=cat), `fused` / `ops` also run batch norm with
#                           tensor ops (CFX_BATCH_NORM=fused / ops)
#   .gpu/xtask-cuda-before  optional, a build of 1d89075 (per-tensor optimiser, op-by-op batch norm)
# In this order, each part only while BUDGET seconds [540] since the start leave room for its
# time box BOX [90 s], so that the results come back from one 600 s call whatever is skipped:
#   1. the kernels' tests, when carried (the timings mean little if one fails);
#   2. round 1: `bench step --backends cuda --breakdown` with CFX_CONV=gemm for `kernels`,
#      `narrow` and `before` first, then the other variants;
#   3. `bench conv` with each CFX_CONV_NARROW (the 2→32 and 2→64 rows);
#   4. the launches per step (bench/count-launches.sh);
#   5. round 2 of the variants in reverse order, so that order effects show (ROUNDS [2]).
# Comes back as $OUT/step-ab.tar (a JSON and log per run, summaries, the tests' logs); each
# skipped part is named in summary.txt. STEPS [20], WARMUP [3]. BIN, BEFORE, BACKEND [cuda]
# and EXTRA (more `bench step` flags) let it run elsewhere, e.g. `OUT=/tmp/o
# BIN=target/wgpu/release/xtask BACKEND=wgpu EXTRA=--small`.
set -uo pipefail
: "${OUT:?set OUT}"
start=$SECONDS
W=/tmp/step-ab
mkdir -p "$W"
BIN=${BIN:-.gpu/xtask-cuda}
BEFORE=${BEFORE:-.gpu/xtask-cuda-before}
BOX=${BOX:-90}
variants=(kernels narrow actnorm input standard affine cat fused ops)
# What each variant after `kernels` drops, in order: a variant drops its own and all earlier
# ones (`ops` overrides `fused`); `before`, the old build, runs with all of them dropped.
drops=(CFX_CONV_NARROW=direct CFX_ACT_NORM=ops CFX_SUBNET_INPUT=ops CFX_WEIGHTS=standard
  CFX_AFFINE=ops CFX_PACK=cat CFX_BATCH_NORM=fused CFX_BATCH_NORM=ops)
[ -x "$BEFORE" ] && variants+=(before)
# Whether a part boxed in $BOX seconds still fits; says so when it does not.
fits() { # what
  if [ $((SECONDS - start + BOX)) -gt "${BUDGET:-540}" ]; then
    echo "skipped (budget): $1"
    return 1
  fi
}
run() { # variant round
  local bin=$BIN i
  local settings=(CFX_BATCH_NORM=kernels CFX_PACK=kernel CFX_AFFINE=kernel
    CFX_WEIGHTS=channels-last CFX_SUBNET_INPUT=kernel CFX_ACT_NORM=kernel CFX_CONV_NARROW=padded)
  fits "round $2 $1" || return 0
  for i in "${!variants[@]}"; do
    [ "${variants[$i]}" = "$1" ] && break
    [ -n "${drops[$i]:-}" ] && settings+=("${drops[$i]}")
  done
  [ "$1" = before ] && bin=$BEFORE
  # shellcheck disable=SC2086 # EXTRA is a list of flags
  env CFX_CONV=gemm "${settings[@]}" timeout "$BOX" "$bin" bench step \
    --backends "${BACKEND:-cuda}" --steps "${STEPS:-20}" --warmup "${WARMUP:-3}" --breakdown \
    --json "$W/$1-$2.json" ${EXTRA:-} >"$W/$1-$2.log" 2>&1
  echo "round $2 $1 (rc $?, at $((SECONDS - start)) s): $(grep -E 'ms/step|forward [0-9.]+ ms' "$W/$1-$2.log" | tr -s ' ' | tr '\n' ' ')"
}
# 1. The kernels' tests (`cargo test --release -p cfx-linalg --features cuda --test batch_norm
# --test pack --test affine --test subnet_input --test channel_affine --test conv_gemm --no-run
# --target-dir target/cuda`, stripped and xz'd into .gpu/<name>-test.xz like the others).
# conv_gemm's decides whether the padded narrow weight gradient is right under CUDA (if not,
# the `narrow` variant is the one to read).
for t in batch_norm pack affine subnet_input channel_affine conv_gemm; do
  if [ -x ".gpu/$t-test" ] && fits "$t kernel test"; then
    timeout "$BOX" ".gpu/$t-test" --test-threads 1 >"$W/$t-test.log" 2>&1
    echo "$t kernel test (rc $?): $(grep -E 'test result' "$W/$t-test.log")"
    grep -E 'differs|panicked' "$W/$t-test.log" | head -5
  fi
done | tee "$W/test-summary.txt"
# 2. Round 1, the comparisons that matter most first.
first=(kernels narrow)
[ -x "$BEFORE" ] && first+=(before)
rest=()
for v in "${variants[@]}"; do
  case " ${first[*]} " in *" $v "*) ;; *) rest+=("$v") ;; esac
done
for v in "${first[@]}" "${rest[@]}"; do run "$v" 1; done | tee "$W/summary.txt"
# 3. The convolutions alone, each narrow weight gradient.
for n in padded direct; do
  fits "bench conv, narrow $n" || continue
  CFX_CONV_NARROW=$n timeout "$BOX" "$BIN" bench conv --backends "${BACKEND:-cuda}" \
    --json "$W/conv-$n.json" >"$W/conv-$n.log" 2>&1
  echo "bench conv, narrow $n (rc $?):"
  grep -E 'conv|per training step' "$W/conv-$n.log" | tail -8
done | tee "$W/conv-summary.txt"
# 4. Launches per step of this commit's binary under the implicit-GEMM convolution, the count
# llvmpipe cannot make (docs/results.md, "The subnet input and the fixed act-norm as kernels").
if fits "launch count" >>"$W/summary.txt"; then
  # shellcheck disable=SC2086
  CFX_CONV=gemm BACKEND="${BACKEND:-cuda}" timeout "$BOX" bash bench/count-launches.sh "$BIN" \
    --steps 3 --breakdown ${EXTRA:-} 2>&1 | tee "$W/launches.txt"
fi
# 5. Later rounds, in alternating order.
for r in $(seq 2 "${ROUNDS:-2}"); do
  if [ $((r % 2)) = 1 ]; then order=("${first[@]}" "${rest[@]}"); else order=($(printf '%s\n' "${first[@]}" "${rest[@]}" | tac)); fi
  for v in "${order[@]}"; do run "$v" "$r"; done
done | tee -a "$W/summary.txt"
tar -cf "$OUT/step-ab.tar" -C "$W" . && echo "packed step-ab"
