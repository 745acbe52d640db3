"""PyTorch peer of `cargo xtask bench fasth` (same sizes, same run): on the GPU machine, or on
the CPU with `--device cpu` (bench/fasth-cpu-vs-torch.sh).

Times one orthogonal d×d matrix applied to X (d×m), forward and forward+backward, as
* `sequential`: one reflection at a time, H_1(H_2(...(H_d X))) with autograd;
* `householder_product`: torch.linalg.householder_product (LAPACK-style reflectors) building the
  explicit d×d Q, then Q @ X: PyTorch's own "parallel" route.
Usage: python3 bench/pytorch/fasth.py --dims 64,128,... --batch 32 --repeats 10 --json OUT.json
"""
import argparse
import json
import time

import torch

import common


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return times[len(times) // 2]


def sequential(v, x):
    a = x
    for i in range(v.shape[0] - 1, -1, -1):
        vi = v[i : i + 1]  # [1, d]
        a = a - (2.0 / (vi * vi).sum()) * vi.t() @ (vi @ a)
    return a


def lapack(a, x):
    """`a`: strictly lower part of the LAPACK reflectors (column i is (0,…,0,1,a[i+1:,i]))."""
    d = a.shape[0]
    low = a.tril(-1)
    tau = 2.0 / (1.0 + (low * low).sum(0))
    refl = low + torch.eye(d, device=a.device)
    return torch.linalg.householder_product(refl, tau) @ x


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--dims", default="64,128,256,512,768,1024,2048")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--seq-max-dim", type=int, default=2048)
    p.add_argument("--json")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = common.device(args.device)
    device_name = (
        torch.cuda.get_device_name() if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    )
    torch.manual_seed(0)
    rows = []
    for d in [int(s) for s in args.dims.split(",")]:
        v = torch.randn(d, d, device=dev)
        x = torch.randn(d, args.batch, device=dev)
        c = torch.randn(d, args.batch, device=dev)
        row = {"backend": common.backend_name(dev), "d": d, "m": args.batch, "device": device_name}
        cases = {"householder_product": lapack}
        if d <= args.seq_max_dim:
            cases["sequential"] = sequential
        for name, f in cases.items():
            row[name + "_forward_ms"] = timed(lambda: f(v, x), args.warmup, args.repeats)

            def fb():
                vv = v.clone().requires_grad_()
                xx = x.clone().requires_grad_()
                (f(vv, xx) * c).sum().backward()

            row[name + "_fwd_bwd_ms"] = timed(fb, args.warmup, args.repeats)
        for kind, key in (("forward", "forward_ms"), ("fwd+bwd", "fwd_bwd_ms")):
            t = lambda n: row.get(f"{n}_{key}")
            fmt = lambda v: "skipped" if v is None else f"{v:.3f}"
            print(
                f"{row['backend']:<9} d={d:<5} m={args.batch:<3} {kind:<8} ms: "
                f"householder_product {fmt(t('householder_product')):>10} sequential {fmt(t('sequential')):>10}",
                flush=True,
            )
        rows.append(row)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
