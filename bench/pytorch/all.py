"""The PyTorch side of `cargo xtask bench all`: step, ecinn, fasth and fid with the same sizes
(`--quick`: the same small sizes), one JSON file each in `--out`.

Usage: python3 bench/pytorch/all.py [--device cpu|cuda] [--quick] [--benches step,ecinn,fasth,fid] --out DIR
"""
import argparse
import os
import sys

import torch

import fasth
import fid
import ibinn


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--benches", default="step,ecinn,fasth,fid", help="which to run, comma-separated")
    a = p.parse_args(argv)
    wants = set(a.benches.split(","))
    if a.threads:
        torch.set_num_threads(a.threads)
    os.makedirs(a.out, exist_ok=True)
    j = lambda name: ["--json", os.path.join(a.out, f"{name}.json"), "--device", a.device]
    if a.quick:
        step = ["--small", "--batch-size", "16", "--steps", "1", "--warmup", "0"]
        ecinn = ["--small", "--batch-size", "8", "--repeats", "1", "--warmup", "0"]
        fh = ["--dims", "16,64", "--batch", "4", "--repeats", "1", "--warmup", "0"]
        fd = ["--dim", "64", "--real", "256", "--batches", "8,32"]
    else:
        step, ecinn, fh, fd = [], [], [], []
    if "step" in wants:
        print("== step", flush=True)
        ibinn.main(["step"] + step + j("step"))
    if "ecinn" in wants:
        print("== ecinn", flush=True)
        ibinn.main(["ecinn"] + ecinn + j("ecinn"))
    if "fasth" in wants:
        print("== fasth", flush=True)
        fasth.main(fh + j("fasth"))
    if "fid" in wants:
        print("== fid", flush=True)
        fid.main(fd + j("fid"))

if __name__ == "__main__":
    main(sys.argv[1:])
