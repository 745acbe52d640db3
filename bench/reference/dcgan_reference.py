"""C3LT's DCGAN trained as its authors trained it, in PyTorch, written out as a `train dcgan`
run folder that `cargo xtask train gan-encoder|c3lt` accept.

The recipe is the PyTorch DCGAN example that `khorrams/c3lt` `models/gans/dcgan.py` comes from
(its header names the command: MNIST, 28×28, 100 epochs): images normalised to [-1, 1],
batches of 64 reshuffled every epoch, the last one partial; convolution weights N(0, 0.02),
batch-norm scales N(1, 0.02) and shifts 0; Adam 2e-4, betas (0.5, 0.999), PyTorch's ε;
per step the discriminator takes `BCE(D(x), 1)` on the real batch and `BCE(D(G(z)), 0)` on a
fake one, each through its own batch statistics, then the generator takes `BCE(D(G(z)), 1)`
on the same fakes through the updated discriminator. Written from reading that code; none of
it is copied or imported.

The weights go into a copy of a `train dcgan` run of the same architecture (`--template`),
whose record files give the layout; only the tensors are replaced.

    python3 bench/reference/dcgan_reference.py --template runs/dcgan-all-28ep --epochs 3 \
        --out runs/dcgan-torch-3ep
"""

import argparse
import json
import math
import os
import re
import shutil
import sys
import time

import msgpack
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from c3lt_side_by_side import Generator as GeneratorFn, load_record, mnist, param_nodes, read_record  # noqa: E402


class Generator(nn.Module):
    def __init__(self, nz=100, ngf=64):
        super().__init__()
        widths = [nz, 8 * ngf, 4 * ngf, 2 * ngf, ngf]
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(i, o, 4, 1 if k == 0 else 2, 0 if k == 0 else 1, bias=False)
            for k, (i, o) in enumerate(zip(widths, widths[1:])))
        self.norms = nn.ModuleList(nn.BatchNorm2d(o) for o in widths[1:])
        # ConvTranspose(ngf → 1, kernel 1, stride 1, padding 2): crop 2 pixels a side, then 1×1.
        self.out = nn.ConvTranspose2d(ngf, 1, 1, 1, 2, bias=False)

    def forward(self, z):
        h = z.view(z.shape[0], -1, 1, 1)
        for up, bn in zip(self.up, self.norms):
            h = F.relu(bn(up(h)))
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    def __init__(self, ndf=64):
        super().__init__()
        widths = [1, ndf, 2 * ndf, 4 * ndf, 1]
        self.convs = nn.ModuleList(nn.Conv2d(i, o, 4, 2, 1, bias=False)
                                   for i, o in zip(widths, widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) for c in widths[2:4])

    def forward(self, x):
        h = F.leaky_relu(self.convs[0](x), 0.2)
        for conv, bn in zip(self.convs[1:3], self.norms):
            h = F.leaky_relu(bn(conv(h)), 0.2)
        return self.convs[3](h).flatten()


def init_weights(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def burn_tensors(g, d):
    """Our records' names for both networks' tensors."""
    out = {"generator": {}, "discriminator": {}}
    for k, up in enumerate(g.up):
        out["generator"][f"up.{k}.weight"] = up.weight
    out["generator"]["out.weight"] = g.out.weight.transpose(0, 1)  # ConvT [in, out] → Conv [out, in]
    for k, conv in enumerate(d.convs):
        out["discriminator"][f"convs.{k}.weight"] = conv.weight
    for net, mod in (("generator", g), ("discriminator", d)):
        for k, bn in enumerate(mod.norms):
            for ours, theirs in (("gamma", bn.weight), ("beta", bn.bias),
                                 ("running_mean", bn.running_mean), ("running_var", bn.running_var)):
                out[net][f"norms.{k}.{ours}"] = theirs
    return {n: {k: v.detach().float().contiguous().numpy() for k, v in t.items()} for n, t in out.items()}


def write_record(template, path, tensors):
    """The template record with each named tensor replaced (same shape), written atomically."""
    doc = load_record(template)
    left = dict(tensors)
    for name, node in param_nodes(doc):
        arr = left.pop(name, None)
        if arr is None:
            sys.exit(f"{template}: no tensor for {name}")
        if list(arr.shape) != list(node["param"]["shape"]):
            sys.exit(f"{name}: shape {list(arr.shape)}, the template has {node['param']['shape']}")
        node["param"]["bytes"] = arr.astype("<f4").tobytes()
    if left:
        sys.exit(f"{template}: no place for {sorted(left)}")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(msgpack.packb(doc, use_bin_type=True))
    os.replace(tmp, path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--template", required=True, help="a finished `train dcgan` run, ngf = ndf = 64")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=13, help="the seed in dcgan.py's command line")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True, help="the run folder to write")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if os.path.exists(a.out):
        sys.exit(f"{a.out} exists; pick a new folder")
    x, _ = mnist("train")
    x = x * 2 - 1
    g, d = Generator(), Discriminator()
    g.apply(init_weights)
    d.apply(init_weights)
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = F.binary_cross_entropy_with_logits
    log = []
    for epoch in range(a.epochs):
        t0 = time.time()
        perm = torch.randperm(x.shape[0])
        sums, n = np.zeros(4), 0
        for i in range(math.ceil(x.shape[0] / 64)):
            real = x[perm[i * 64:(i + 1) * 64]]
            b = real.shape[0]
            opt_d.zero_grad()
            out_real = d(real)
            loss_real = bce(out_real, torch.ones(b))
            loss_real.backward()
            fake = g(torch.randn(b, 100))
            out_fake = d(fake.detach())
            loss_fake = bce(out_fake, torch.zeros(b))
            loss_fake.backward()
            opt_d.step()
            opt_g.zero_grad()
            loss_g = bce(d(fake), torch.ones(b))
            loss_g.backward()
            opt_g.step()
            sums += b * np.array([(loss_real + loss_fake).item(), loss_g.item(),
                                  torch.sigmoid(out_real).mean().item(), torch.sigmoid(out_fake).mean().item()])
            n += b
        row = dict(epoch=epoch + 1, seconds=round(time.time() - t0, 1),
                   **dict(zip(["loss_d", "loss_g", "d_real", "d_fake"], (sums / n).tolist())))
        log.append(row)
        print(json.dumps(row), flush=True)
    g.eval()
    d.eval()
    os.makedirs(a.out)
    shutil.copy(os.path.join(a.template, "model.toml"), os.path.join(a.out, "model.toml"))
    cfg = open(os.path.join(a.template, "config.toml")).read()
    cfg = re.sub(r"(?m)^epochs = \d+$", f"epochs = {a.epochs}", cfg)
    cfg = re.sub(r"(?m)^seed = \d+$", f"seed = {a.seed}", cfg)
    open(os.path.join(a.out, "config.toml"), "w").write(cfg)
    tensors = burn_tensors(g, d)
    for net in ("generator", "discriminator"):
        write_record(os.path.join(a.template, f"{net}.mpk"), os.path.join(a.out, f"{net}.mpk"), tensors[net])
    # The written generator, read back through the loader of c3lt_side_by_side.py, must draw
    # what this one draws in eval mode.
    z = torch.randn(16, 100)
    with torch.no_grad():
        diff = (GeneratorFn(read_record(os.path.join(a.out, "generator.mpk")))(z) - g(z)).abs().max().item()
    if diff > 1e-5:
        sys.exit(f"the written generator differs from the trained one by {diff}")
    json.dump(dict(recipe="PyTorch DCGAN example, C3LT's 28x28 architecture", seed=a.seed,
                   epochs=log, readback_max_diff=diff),
              open(os.path.join(a.out, "torch_training.json"), "w"), indent=1)
    print(f"wrote {a.out} (read-back difference {diff:.1e})")


if __name__ == "__main__":
    main()
