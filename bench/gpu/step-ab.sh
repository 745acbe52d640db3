#!/usr/bin/env bash
# The CUDA training step before and after the launch-count work, in one short device call
# (after `bash bench/gpu/setup.sh`): owed item 12 of docs/results.md.
#   .gpu/xtask-cuda         this commit: flat optimiser, batch norm as CubeCL kernels
#                           (CFX_BATCH_NORM=fused / ops: the tensor-op versions, same binary)
#   .gpu/xtask-cuda-before  optional, a build of 1d89075 (per-tensor optimiser, op-by-op batch norm)
# Each variant runs `bench step --backends cuda --breakdown` with CFX_CONV=gemm, in alternating
# order over ROUNDS rounds [2], so that order effects show. Comes back as $OUT/step-ab.tar
# (one JSON and log per run, summary.txt, and the kernel test's log when carried).
# BOX: time box of each run [90 s]; STEPS [20], WARMUP [3]. BIN, BEFORE, BACKEND [cuda] and
# EXTRA (more `bench step` flags) let it run elsewhere, e.g. `OUT=/tmp/o BIN=target/release/xtask BACKEND=cpu EXTRA=--small`.
set -uo pipefail
: "${OUT:?set OUT}"
W=/tmp/step-ab
mkdir -p "$W"
BIN=${BIN:-.gpu/xtask-cuda}
BEFORE=${BEFORE:-.gpu/xtask-cuda-before}
variants=(kernels fused ops)
[ -x "$BEFORE" ] && variants+=(before)
run() { # variant round
  local bin=$BIN bn=$1
  [ "$1" = before ] && bin=$BEFORE && bn=ops
  # shellcheck disable=SC2086 # EXTRA is a list of flags
  CFX_CONV=gemm CFX_BATCH_NORM=$bn timeout "${BOX:-90}" "$bin" bench step \
    --backends "${BACKEND:-cuda}" --steps "${STEPS:-20}" --warmup "${WARMUP:-3}" --breakdown \
    --json "$W/$1-$2.json" ${EXTRA:-} >"$W/$1-$2.log" 2>&1
  echo "round $2 $1 (rc $?): $(grep -E 'ms/step|forward [0-9.]+ ms' "$W/$1-$2.log" | tr -s ' ' | tr '\n' ' ')"
}
# The batch-norm kernels' test first, when its binary is carried (`cargo test --release -p
# cfx-linalg --features cuda --test batch_norm --no-run --target-dir target/cuda`, stripped and
# xz'd into .gpu/batch_norm-test.xz like the others): the timings mean little if it fails.
if [ -x .gpu/batch_norm-test ]; then
  timeout "${BOX:-90}" .gpu/batch_norm-test >"$W/batch_norm-test.log" 2>&1
  echo "batch_norm kernel test (rc $?): $(grep -E 'test result' "$W/batch_norm-test.log")"
fi | tee "$W/test-summary.txt"
for r in $(seq 1 "${ROUNDS:-2}"); do
  if [ $((r % 2)) = 1 ]; then order=("${variants[@]}"); else order=($(printf '%s\n' "${variants[@]}" | tac)); fi
  for v in "${order[@]}"; do run "$v" "$r"; done
done | tee "$W/summary.txt"
tar -cf "$OUT/step-ab.tar" -C "$W" . && echo "packed step-ab"
