#!/usr/bin/env bash
# Time per counterfactual of ECINN (batched and unbatched), GB and GL on the same first test
# images with one random target each (seed 0), one after another on an otherwise idle machine.
# Needs runs/ibinn-mnist-cpu, runs/cnn-mnist-cpu, runs/ae-mnist-cpu (docs/results.md).
set -u
X=${XTASK:-./target/release/xtask}
N=${N:-5}
for b in 500 1; do
  $X explain --method ecinn --model runs/ibinn-mnist-cpu --all-test --limit $((b == 1 ? 100 : 10000)) \
    --target random --alpha alpha1 --batch-size $b --out runs/timing/ecinn-b$b | tail -1
done
for m in gb gl; do
  for b in $N 1; do
    timeout 900 $X explain --method $m --model runs/cnn-mnist-cpu --autoencoder runs/ae-mnist-cpu \
      --all-test --limit $N --target random --batch-size $b --out runs/timing/$m-b$b | tail -1
  done
done
