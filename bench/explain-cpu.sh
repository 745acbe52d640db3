#!/usr/bin/env bash
# Time per counterfactual of ECINN (batched and unbatched), GB and GL on the same first test
# images with one random target each (seed 0), one after another on an otherwise idle machine.
# The same script times the CUDA build on the GPU machine (XTASK=.gpu/xtask-cuda): the
# binary's default backend is the one it was built for.
# IBINN, CNN, AE: the trained runs [runs/ibinn-mnist-cpu, runs/cnn-mnist-cpu, runs/ae-mnist-cpu]
# (docs/results.md); OUT_DIR: where each run's explanations.json goes [runs/timing].
# N: GB/GL inputs [5]; GB_BATCHES: GB/GL batch sizes ["$N 1"]; ECINN_LIMIT: batched ECINN
# inputs [10000]; BASELINE_S: time box of each GB/GL run [900 s].
set -u
X=${XTASK:-./target/release/xtask}
N=${N:-5}
IBINN=${IBINN:-runs/ibinn-mnist-cpu}
CNN=${CNN:-runs/cnn-mnist-cpu}
AE=${AE:-runs/ae-mnist-cpu}
O=${OUT_DIR:-runs/timing}
for b in 500 1; do
  $X explain --method ecinn --model "$IBINN" --all-test --limit $((b == 1 ? 100 : ${ECINN_LIMIT:-10000})) \
    --target random --alpha alpha1 --batch-size $b --out "$O/ecinn-b$b" | tail -1
done
for m in gb gl; do
  for b in ${GB_BATCHES:-$N 1}; do
    timeout "${BASELINE_S:-900}" $X explain --method $m --model "$CNN" --autoencoder "$AE" \
      --all-test --limit $N --target random --batch-size $b --out "$O/$m-b$b" | tail -1
  done
done
