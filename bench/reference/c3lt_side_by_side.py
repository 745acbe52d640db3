"""C3LT's map training as the authors' loop runs it (khorrams/c3lt `c3lt/train.py`,
`c3lt/helper.py`, `c3lt/eval.py`), in PyTorch, on the networks `cargo xtask train` made.

It reads our runs' burn records (`*.mpk`, MessagePack) into PyTorch functions of the same
architectures, checks that they compute what our runs reported (the classifier's test accuracy,
the encoder's reconstruction), then trains the two latent maps with the reference's loop and
scores them after every epoch with the reference's metrics, in the columns `train c3lt` writes
to its metrics.csv. Whether our maps' Prox is our training loop's or the networks' is then a
matter of comparing the two files.

Written from reading the reference; none of its code is copied or imported. Needs torch, numpy
and msgpack.

    python3 bench/reference/c3lt_side_by_side.py --classifier runs/mnistnet-mnist \
        --gan runs/dcgan-all-28ep --encoder runs/enc49-all28 --pair 4,9 --epochs 6 --out /tmp/sbs
"""

import argparse
import csv
import json
import math
import os
import sys
import time
import tomllib

import msgpack
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_ibinn  # noqa: E402  (its MNIST reader)


def load_record(path):
    """A burn `NamedMpkFileRecorder` file's document, checked to hold full-precision f32."""
    with open(path, "rb") as f:
        doc = msgpack.unpackb(f.read(), raw=False, strict_map_key=False)
    meta = doc.get("metadata", {})
    if meta.get("settings") != "FullPrecisionSettings" or meta.get("float") != "f32":
        sys.exit(f"{path}: expected a full-precision f32 record, found {meta}")
    return doc


def param_nodes(doc):
    """(dotted.name, node) for every tensor of a record document; `node["param"]` holds its
    `bytes`, `shape` and `dtype`."""
    stack = [("", doc["item"])]
    while stack:
        name, node = stack.pop()
        if isinstance(node, dict):
            if isinstance(node.get("param"), dict):
                yield name, node
                continue
            stack.extend((f"{name}.{k}" if name else str(k), v) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((f"{name}.{i}", v) for i, v in enumerate(node))


def read_record(path):
    """A burn record file as {dotted.name: tensor}."""
    out = {}
    for name, node in param_nodes(load_record(path)):
        p = node["param"]
        if p.get("dtype") != "F32":
            sys.exit(f"{path}: {name} is {p.get('dtype')}, expected F32")
        arr = np.frombuffer(p["bytes"], dtype="<f4").reshape(p["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out


def mnist(split):
    """MNIST as torch tensors: images `[N, 1, 28, 28]` in [0, 1] and labels."""
    x, y = export_ibinn.mnist(split)
    return torch.from_numpy(x), torch.from_numpy(y)


def bn(h, w, key):
    return F.batch_norm(h, w[f"{key}.running_mean"], w[f"{key}.running_var"],
                        w[f"{key}.gamma"], w[f"{key}.beta"], training=False, eps=1e-5)


class Generator:
    """Latents [N, D] → images in [-1, 1] (crates/generative/src/dcgan.rs)."""

    def __init__(self, w):
        self.w = w

    def __call__(self, z):
        w = self.w
        h = z.reshape(z.shape[0], -1, 1, 1)
        for i in range(4):
            h = F.conv_transpose2d(h, w[f"up.{i}.weight"], stride=1 if i == 0 else 2,
                                   padding=0 if i == 0 else 1)
            h = F.relu(bn(h, w, f"norms.{i}"))
        h = h[:, :, 2:30, 2:30]
        return torch.tanh(F.conv2d(h, w["out.weight"]))


def down(w, x):
    h = F.leaky_relu(F.conv2d(x, w["convs.0.weight"], stride=2, padding=1), 0.2)
    for i in (1, 2):
        h = F.conv2d(h, w[f"convs.{i}.weight"], stride=2, padding=1)
        h = F.leaky_relu(bn(h, w, f"norms.{i - 1}"), 0.2)
    return F.conv2d(h, w["convs.3.weight"], stride=2, padding=1)


class Encoder:
    """Images in [-1, 1] → latents [N, D] (crates/generative/src/encoder.rs)."""

    def __init__(self, w):
        self.w = w

    def __call__(self, x):
        return bn(down(self.w, x), self.w, "out_norm").flatten(1)


class Discriminator:
    """Images in [-1, 1] → the logit of "real", [N]."""

    def __init__(self, w):
        self.w = w

    def __call__(self, x):
        return down(self.w, x).flatten()


class Classifier:
    """Our `CnnClassifier` (valid padding, MnistNet's shape) on images in [-1, 1]: it was
    trained on `x_unit − offset`, which is `x_gan / 2` for offset 0.5, scale 1."""

    def __init__(self, w, offset, scale):
        self.w, self.offset, self.scale = w, offset, scale
        self.logit_scale = 1.0

    def features(self, x):
        w = self.w
        x = ((x + 1) / 2 - self.offset) * self.scale
        a = F.relu(F.conv2d(x, w["conv1.weight"], w["conv1.bias"]))
        b = F.relu(F.conv2d(F.max_pool2d(a, 2), w["conv2.weight"], w["conv2.bias"]))
        return a, b

    def __call__(self, x):
        w = self.w
        _, b = self.features(x)
        h = F.max_pool2d(b, 2).flatten(1)
        h = F.relu(h @ w["dense.weight"] + w["dense.bias"])
        return (h @ w["out.weight"] + w["out.bias"]) * self.logit_scale


class LatentMap(torch.nn.Module):
    """Linear-ReLU-Linear, PyTorch's default initialisation (the reference's 1×1 convolutions
    on [N, D, 1, 1] are the same map)."""

    def __init__(self, d):
        super().__init__()
        self.first = torch.nn.Linear(d, d)
        self.second = torch.nn.Linear(d, d)

    def forward(self, z):
        return self.second(F.relu(self.first(z)))

    def load_burn(self, w, prefix):
        with torch.no_grad():
            for layer in ("first", "second"):
                lin = getattr(self, layer)
                lin.weight.copy_(w[f"{prefix}.{layer}.weight"].t())
                lin.bias.copy_(w[f"{prefix}.{layer}.bias"])


def step(z, m, n_steps=1):
    """The norm-preserving walk: z ← (z + m(z))·‖z₀‖/‖z + m(z)‖, n times."""
    norm = z.norm(dim=1, keepdim=True)
    for _ in range(n_steps):
        nxt = z + m(z)
        z = nxt * norm / nxt.norm(dim=1, keepdim=True)
    return z


def change_mask(x, x_cf):
    m = ((x_cf - x) ** 2).flatten(1)
    m = m - m.min(1, keepdim=True)[0]
    m = m / m.max(1, keepdim=True)[0]
    return m.view_as(x)[:, 0]


def prox_loss(x, x_cf, p1, p2):
    m = change_mask(x, x_cf)
    n = m.shape[0]
    smooth = ((m[:, :-1] - m[:, 1:]).abs().pow(2).reshape(n, -1).mean(1)
              + (m[:, :, :-1] - m[:, :, 1:]).abs().pow(2).reshape(n, -1).mean(1)).mean() / 2
    entropy = torch.minimum(m, 1 - m).mean()
    return ((x - x_cf).abs().mean() + p1 * smooth + p2 * entropy) / (1 + p1 + p2)


def perceptual(clf, a, b):
    out = sum((fa - fb).abs().mean() for fa, fb in zip(clf.features(a), clf.features(b)))
    return (out + (a - b).abs().mean()) / 3


def nll(logits, target):
    return F.cross_entropy(logits, torch.full((logits.shape[0],), target, dtype=torch.long))


def bce_real(logit):
    return F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))


def c3lt_loss(nets, maps, x1, x2, pair, a):
    G, E, D, clf = nets
    g, h = maps
    z1, z2 = E(x1), E(x2)
    z1_cf, z2_cf = step(z1, g, a.n_steps), step(z2, h, a.n_steps)
    x1_cf, x2_cf = G(z1_cf), G(z2_cf)
    cls = (nll(clf(x1_cf), pair[1]) + nll(clf(x2_cf), pair[0])) / 2
    # As train.py: a term whose weight is 0 is not computed, and reads 0.
    prox = cyc = adv = torch.zeros(())
    if a.alpha:
        prox = (prox_loss(x1, x1_cf, a.p1, a.p2) + prox_loss(x2, x2_cf, a.p1, a.p2)) / 2
    if a.beta or a.gamma:
        z1_cyc, z2_cyc = step(z1_cf, h, a.n_steps), step(z2_cf, g, a.n_steps)
        x1_cyc, x2_cyc = G(z1_cyc), G(z2_cyc)
    if a.beta:
        cyc = (perceptual(clf, x1, x1_cyc) + perceptual(clf, x2, x2_cyc)
               + (z1 - z1_cyc).abs().mean() + (z2 - z2_cyc).abs().mean()) / 4
    if a.gamma:
        adv = (bce_real(D(x2_cf)) + bce_real(D(x1_cf)) + bce_real(D(x1_cyc)) + bce_real(D(x2_cyc))) / 4
    total = cls + a.alpha * prox + a.beta * cyc + a.gamma * adv
    return total, dict(cls=cls.item(), prox=prox.item(), cyc=cyc.item(), adv=adv.item())


@torch.no_grad()
def evaluate(nets, maps, test, pair):
    """Prox (mean |x − x′| in [-1, 1]) and validity of each direction over all test images of
    the query class, as `eval.py` scores the first; plus, per direction, the encoder's floor
    |G(E(x)) − x| and the maps' own change |G(m(E(x))) − G(E(x))|."""
    G, E, _, clf = nets
    out = {}
    for k, (m, name) in enumerate(zip(maps, ("fwd", "bwd"))):
        x = test[k]
        prox = recon = edit = val = 0.0
        for i in range(0, x.shape[0], 256):
            xb = x[i:i + 256]
            z = E(xb)
            x0 = G(z)
            x_cf = G(step(z, m))
            prox += (xb - x_cf).abs().sum().item()
            recon += (xb - x0).abs().sum().item()
            edit += (x_cf - x0).abs().sum().item()
            val += (clf(x_cf).argmax(1) == pair[1 - k]).sum().item()
        px = x[0].numel() * x.shape[0]
        out[f"prox_gan_{name}"] = prox / px
        out[f"recon_gan_{name}"] = recon / px
        out[f"edit_gan_{name}"] = edit / px
        out[f"val_{name}"] = val / x.shape[0]
    n = [t.shape[0] for t in test]
    out["prox_gan"] = (out["prox_gan_fwd"] * n[0] + out["prox_gan_bwd"] * n[1]) / sum(n)
    return out


def latent_bound(nets, x, target, margin, steps, lr, weight):
    """How little a generated counterfactual `G(z)` needs to change each query `x`: Adam on `z`
    from `E(x)`, minimising `mean |G(z) − x| + weight·max(0, max_{k≠t} f_k − f_t + margin)` on
    the logits `f`; per image, the least |G(z) − x| seen among steps whose `G(z)` the classifier
    puts in `target` with at least `margin`. A local search, so each value is one such `G(z)`
    and the least change is at most it; C3LT's maps, whose counterfactuals are all
    `G(g(E(x)))`, cannot go below the least change itself."""
    G, E, _, clf = nets
    with torch.no_grad():
        z0 = E(x)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best = torch.full((x.shape[0],), float("inf"))
    for _ in range(steps):
        img = G(z)
        logits = clf(img)
        dist = (img - x).abs().flatten(1).mean(1)
        other = logits.clone()
        other[:, target] = -float("inf")
        gap = other.max(1)[0] - logits[:, target]
        with torch.no_grad():
            ok = gap <= -margin
            best = torch.where(ok, torch.minimum(best, dist), best)
        loss = (dist + weight * F.relu(gap + margin)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    found = torch.isfinite(best)
    return dict(margin=margin, found=found.float().mean().item(),
                prox_gan=best[found].mean().item() if found.any() else None,
                moved=(z.detach() - z0).norm(dim=1).mean().item() / math.sqrt(z0.shape[1]))


def write_summary(out, summary):
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--classifier", required=True, help="run folder with model.mpk, model.toml")
    p.add_argument("--gan", required=True, help="run folder with generator.mpk, discriminator.mpk")
    p.add_argument("--encoder", required=True, help="run folder with encoder.mpk")
    p.add_argument("--pair", default="4,9")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--alpha", type=float, default=0.1)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--gamma", type=float, default=0.001)
    p.add_argument("--adam-eps", type=float, default=1e-8, help="PyTorch's default; burn's is 1e-5")
    p.add_argument("--p1", type=float, default=10.0)
    p.add_argument("--p2", type=float, default=1.0)
    p.add_argument("--n-steps", type=int, default=1)
    p.add_argument("--seed", type=int, default=85, help="the reference's default")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--logit-scale", type=float, default=1.0,
                   help="train against the classifier's logits times this: the same decisions, "
                        "another confidence (scores use the classifier as it is)")
    p.add_argument("--maps", help="a maps.mpk of `train c3lt` to score instead of training")
    p.add_argument("--bound", type=int, metavar="N",
                   help="instead of training: how little G(z) needs to change N test queries")
    p.add_argument("--bound-steps", type=int, default=300)
    p.add_argument("--bound-margins", default="0,5", help="logit margins, comma-separated")
    p.add_argument("--out", required=True, help="folder for metrics.csv and summary.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    pair = [int(c) for c in a.pair.split(",")]
    os.makedirs(a.out, exist_ok=True)

    cls_w = read_record(os.path.join(a.classifier, "model.mpk"))
    with open(os.path.join(a.classifier, "model.toml"), "rb") as f:
        cfg = tomllib.load(f)
    clf = Classifier(cls_w, cfg["input_offset"], cfg["input_scale"])
    G = Generator(read_record(os.path.join(a.gan, "generator.mpk")))
    D = Discriminator(read_record(os.path.join(a.gan, "discriminator.mpk")))
    E = Encoder(read_record(os.path.join(a.encoder, "encoder.mpk")))
    nets = (G, E, D, clf)

    xs, ys = mnist("test")
    xs_gan = xs * 2 - 1
    with torch.no_grad():
        acc = sum((clf(xs_gan[i:i + 1000]).argmax(1) == ys[i:i + 1000]).sum().item()
                  for i in range(0, len(ys), 1000)) / len(ys)
    test = [xs_gan[ys == c] for c in pair]
    with torch.no_grad():
        recon = sum((G(E(t[i:i + 256])) - t[i:i + 256]).abs().sum().item()
                    for t in test for i in range(0, t.shape[0], 256))
    recon_unit = recon / 2 / sum(t.numel() for t in test)
    summary = dict(classifier_test_accuracy=acc, encoder_recon_unit=recon_unit)
    print(f"classifier test accuracy {acc:.4f}; pair test |G(E(x)) - x| (unit) {recon_unit:.4f}", flush=True)

    if a.bound:
        x = test[0][:a.bound]
        summary["bound"] = []
        for m in (float(v) for v in a.bound_margins.split(",")):
            t0 = time.time()
            r = latent_bound(nets, x, pair[1], m, a.bound_steps, 0.02, 0.1)
            r["seconds"] = round(time.time() - t0, 1)
            summary["bound"].append(r)
            print(json.dumps(r), flush=True)
        write_summary(a.out, summary)
        return

    maps = (LatentMap(100), LatentMap(100))
    if a.maps:
        w = read_record(a.maps)
        maps[0].load_burn(w, "g")
        maps[1].load_burn(w, "h")
        summary["scored"] = evaluate(nets, maps, test, pair)
        print(json.dumps(summary, indent=1))
        write_summary(a.out, summary)
        return

    clf.logit_scale = a.logit_scale
    xt, yt = mnist("train")
    train = [xt[yt == c] * 2 - 1 for c in pair]
    opt = torch.optim.Adam(list(maps[0].parameters()) + list(maps[1].parameters()), lr=a.lr, eps=a.adam_eps)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=25, gamma=0.5)
    fields = ["epoch", "lr", "loss", "cls", "prox", "cyc", "adv", "seconds",
              "val_fwd", "prox_gan_fwd", "recon_gan_fwd", "edit_gan_fwd",
              "val_bwd", "prox_gan_bwd", "prox_gan"]
    f = open(os.path.join(a.out, "metrics.csv"), "w", newline="")
    wr = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
    wr.writeheader()
    for epoch in range(1, a.epochs + 1):
        t0 = time.time()
        lr = opt.param_groups[0]["lr"]
        # Two independently shuffled loaders zipped: as many steps as the smaller class has
        # batches, the last pair cut to the smaller of the two.
        perms = [torch.randperm(t.shape[0]) for t in train]
        steps = min(math.ceil(t.shape[0] / a.batch) for t in train)
        sums, seen = dict(loss=0.0, cls=0.0, prox=0.0, cyc=0.0, adv=0.0), 0
        for i in range(steps):
            idx = [pm[i * a.batch:(i + 1) * a.batch] for pm in perms]
            b = min(len(j) for j in idx)
            x1, x2 = train[0][idx[0][:b]], train[1][idx[1][:b]]
            opt.zero_grad()
            loss, terms = c3lt_loss(nets, maps, x1, x2, pair, a)
            loss.backward()
            opt.step()
            sums["loss"] += loss.item() * b
            for k, v in terms.items():
                sums[k] += v * b
            seen += b
        sched.step()
        row = dict(epoch=epoch, lr=lr, seconds=round(time.time() - t0, 1),
                   **{k: v / seen for k, v in sums.items()})
        row.update(evaluate(nets, maps, test, pair))
        wr.writerow(row)
        f.flush()
        print(" ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                       for k in fields), flush=True)
    write_summary(a.out, summary)


if __name__ == "__main__":
    main()
