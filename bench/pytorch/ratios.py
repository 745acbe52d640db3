"""Side-by-side table of `cargo xtask bench all --out OURS` and `bench/pytorch/all.py --out TORCH`
(same machine, same run): times and the ratio ours / PyTorch (below 1: we are faster), as the
Markdown table docs/results.md records.

Usage: python3 bench/pytorch/ratios.py OURS TORCH
"""
import json
import os
import sys


def load(folder, name):
    path = os.path.join(folder, f"{name}.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)


def ratio(a, b):
    return f"{a / b:.3g}" if a and b else "-"


def ms(v):
    return "-" if v is None else (f"{v:.3f}" if v < 10 else f"{v:.1f}")


def rows(ours, torch):
    out = []
    for o, t in zip(load(ours, "step"), load(torch, "step")):
        out.append((f"IB-INN training step, batch {o['batch_size']}", o["backend"], o["median_ms"],
                    "same step", t["median_ms"]))
    for o, t in zip(load(ours, "ecinn"), load(torch, "ecinn")):
        out.append((f"ECINN, {o['inputs']} inputs → {o['counterfactuals']} CFs "
                    f"({o['counterfactuals_per_second']:.0f} vs {t['counterfactuals_per_second']:.0f} CF/s)",
                    o["backend"], o["median_ms"], "same computation", t["median_ms"]))
    theirs = {r["d"]: r for r in load(torch, "fasth")}
    for o in load(ours, "fasth"):
        t = theirs.get(o["d"])
        if not t:
            continue
        for kind, ok, tk in (("fwd", "forward_ms", "forward_ms"), ("fwd+bwd", "forward_backward_ms", "fwd_bwd_ms")):
            cands = {n: t.get(f"{n}_{tk}") for n in ("householder_product", "sequential")}
            cands = {n: v for n, v in cands.items() if v is not None}
            if not cands:
                continue
            best = min(cands, key=cands.get)
            out.append((f"Householder product d={o['d']} m={o['m']} {kind}", f"{o['backend']} FastH",
                        o[ok][0], f"best of torch: {best}", cands[best]))
    theirs = {r["m"]: r for r in load(torch, "fid")}
    for o in load(ours, "fid"):
        t = theirs.get(o["m"])
        if t:
            out.append((f"FID d={o['d']} m={o['m']}", f"{o['backend']} FastFID", o["fast_ms"],
                        "dense trace-sqrt (eigvals, f64)", t["dense_ms"]))
    return out


def main(argv):
    ours, torch = argv
    print("| bench | ours | ms | PyTorch | ms | ours / PyTorch |")
    print("|---|---|---:|---|---:|---:|")
    for name, ob, o, tb, t in rows(ours, torch):
        print(f"| {name} | {ob} | {ms(o)} | {tb} | {ms(t)} | {ratio(o, t)} |")


if __name__ == "__main__":
    main(sys.argv[1:])
