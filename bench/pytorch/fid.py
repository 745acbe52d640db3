"""PyTorch peer of `cargo xtask bench fid`: the dense FID of pytorch-fid / torch-fidelity, its
O(d³) trace of the matrix square root done in torch (`tr √(Σ₁Σ₂)` as the sum of the square roots
of the eigenvalues of Σ₁Σ₂, in float64 as scipy's sqrtm would), on the same sizes: precomputed
real statistics of `--real` correlated Gaussian samples in d = `--dim`, fake batches of m samples.

Usage: python3 bench/pytorch/fid.py [--device cpu|cuda] --dim 2048 --batches 8,...,256 --json OUT
"""
import argparse
import sys

import torch

import common


def features(rows, mix, gen):
    return torch.randn(rows, mix.shape[0], generator=gen, dtype=torch.float64).to(mix.device) @ mix


def stats(f):
    mu = f.mean(0)
    c = f - mu
    return mu, c.t() @ c / (f.shape[0] - 1)


def fid_dense(mu1, s1, fake):
    mu2, s2 = stats(fake)
    tr_sqrt = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    return ((mu1 - mu2) ** 2).sum() + s1.trace() + s2.trace() - 2.0 * tr_sqrt


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--batches", default="8,16,32,64,128,256")
    p.add_argument("--real", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = common.device(a.device)
    gen = torch.Generator().manual_seed(0)
    d = a.dim
    mix = (torch.randn(d, d, generator=gen, dtype=torch.float64) / d**0.5).to(dev)
    mu1, s1 = stats(features(a.real, mix, gen))
    name = common.backend_name(dev)
    rows = []
    for m in [int(v) for v in a.batches.split(",")]:
        fake = features(m, mix, gen)
        out = {}

        def run():
            out["fid"] = fid_dense(mu1, s1, fake).item()

        ms = common.timed(run, dev, a.warmup, a.repeats)
        rows.append(dict(backend=name, d=d, m=m, dense_ms=ms, dense_fid=out["fid"]))
        print(f"{name:<6} d={d} m={m:<4} dense {ms:>10.1f} ms  FID {out['fid']:.4f}", flush=True)
    common.write_json(a.json, rows)


if __name__ == "__main__":
    main(sys.argv[1:])
