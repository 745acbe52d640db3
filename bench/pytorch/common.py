"""What the PyTorch peers share: device choice, timing that waits for the device, JSON rows,
and the bundled MNIST read without numpy (gzip IDX, as datasets/src/idx.rs reads it)."""
import gzip
import json
import os
import struct
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def device(name):
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def upper_median(times):
    """The middle value (the upper of the two middles for an even count), as the Rust benches."""
    times = sorted(times)
    return times[len(times) // 2]


def timed(fn, dev, warmup, repeats, label=None):
    """Median ms of `repeats` runs after `warmup` discarded ones; each run ends with a sync."""
    times = []
    for i in range(warmup + max(repeats, 1)):
        t = time.perf_counter()
        fn()
        sync(dev)
        ms = (time.perf_counter() - t) * 1e3
        if label:
            print(f"{label} {i}: {ms:.1f} ms", flush=True, file=__import__("sys").stderr)
        if i >= warmup:
            times.append(ms)
    return upper_median(times)


def write_json(path, rows):
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(rows, f, indent=2)
    os.replace(tmp, path)


def backend_name(dev):
    return "torch-" + dev.type


def mnist_images(split, n):
    """The first `n` images of the bundled MNIST split ("train" or "t10k"), [n, 1, 28, 28] in
    [0, 1], and their labels."""
    base = os.path.join(ROOT, "datasets", "data", "mnist")
    with gzip.open(os.path.join(base, f"{split}-images-idx3-ubyte.gz"), "rb") as f:
        magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
        assert magic == 2051, f"{split} images: magic {magic}"
        n = min(n, count)
        pixels = f.read(n * rows * cols)
    with gzip.open(os.path.join(base, f"{split}-labels-idx1-ubyte.gz"), "rb") as f:
        magic, _ = struct.unpack(">II", f.read(8))
        assert magic == 2049, f"{split} labels: magic {magic}"
        labels = f.read(n)
    x = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).float().div(255.0)
    y = torch.frombuffer(bytearray(labels), dtype=torch.uint8).long()
    return x.reshape(n, 1, rows, cols), y
