"""PyTorch peer of `cargo xtask bench step` and `cargo xtask bench ecinn`: the IB-INN MNIST
architecture of crates/flows (IbInnConfig::mnist, or ::tiny with --small) built block for block
the same way, so both sides run the same computation.

* `step`: one training step at batch 128 — host batch to the device, smoothed one-hot targets,
  forward, the IB loss, backward, global gradient-norm clipping (8), SGD with the three
  parameter groups of the trainer (network / GMM means / class weights), gradient norm read back.
* `ecinn`: batched ECINN — forward of the test images, α0 per (image, other class), α1 =
  0.8 + 0.5 α0, inverse passes in chunks of 1024 latents, the last row read back.

The weights are freshly initialised (the cost does not depend on training), as in the Rust benches.
Usage: python3 bench/pytorch/ibinn.py step|ecinn [--device cpu|cuda] [--small] [--json OUT]
"""
import argparse
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

import common


def space_to_depth(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)


def depth_to_space(x):
    n, c4, h, w = x.shape
    return x.reshape(n, c4 // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c4 // 4, 2 * h, 2 * w)


def channel_mix(x, w):
    n, c, h, wd = x.shape
    return torch.matmul(w, x.reshape(n, c, h * wd)).reshape(n, c, h, wd)


def random_rotation(c, gen):
    q, r = torch.linalg.qr(torch.randn(c, c, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


class Dropout2d(nn.Module):
    """One mask value per (sample, channel), as crates/flows' Dropout2d."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p <= 0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = torch.bernoulli(torch.full((x.shape[0], x.shape[1], 1, 1), keep, device=x.device))
        return x * mask / keep


class ConvSubnet(nn.Module):
    def __init__(self, c_in, c_out, width, dropout=0.0, relu_first=True, stride=1):
        super().__init__()
        self.relu_first = relu_first
        self.conv1 = nn.Conv2d(c_in, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=1e-4, momentum=0.999)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, stride=stride, bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=1e-4, momentum=0.999)
        self.drop = Dropout2d(dropout)
        self.conv3 = nn.Conv2d(width, c_out, 1)

    def forward(self, x):
        if self.relu_first:
            x = F.relu(x)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.conv3(self.drop(x))


def affine(x, a, clamp, pre, inverse=False):
    c = x.shape[1]
    s = clamp * torch.tanh(pre * a[:, :c])
    t = a[:, c:]
    if inverse:
        return (x - t) * torch.exp(-s), None
    return x * torch.exp(s) + t, s.flatten(1).sum(1)


class Haar(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.5, -0.5, 0.5, -0.5], [0.5, 0.5, -0.5, -0.5], [0.5, -0.5, -0.5, 0.5]])
        self.register_buffer("mix", torch.block_diag(*([h] * c)))

    def forward(self, x):
        return channel_mix(space_to_depth(x), self.mix), torch.zeros(x.shape[0], device=x.device)

    def inverse(self, z):
        return depth_to_space(channel_mix(z, self.mix))


class AllInOne(nn.Module):
    def __init__(self, c, width, clamp, act_norm, dropout, relu_first, gen):
        super().__init__()
        self.split = c - c // 2
        self.clamp = clamp
        self.subnet = ConvSubnet(self.split, 2 * (c // 2), width, dropout, relu_first)
        self.register_buffer("rotation", random_rotation(c, gen))
        self.register_buffer("log_scale", torch.full((c,), math.log(act_norm)))
        self.register_buffer("offset", torch.zeros(c))

    def forward(self, x):
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y2, ld = affine(x2, self.subnet(x1), self.clamp, 0.1)
        y = channel_mix(torch.cat([x1, y2], 1), self.rotation)
        ls = self.log_scale.view(1, -1, 1, 1)
        h, w = x.shape[2:]
        return y * torch.exp(ls) + self.offset.view(1, -1, 1, 1), ld + self.log_scale.sum() * h * w

    def inverse(self, z):
        y = (z - self.offset.view(1, -1, 1, 1)) * torch.exp(-self.log_scale.view(1, -1, 1, 1))
        y = channel_mix(y, self.rotation.t())
        x1, y2 = y[:, : self.split], y[:, self.split :]
        x2, _ = affine(y2, self.subnet(x1), self.clamp, 0.1, inverse=True)
        return torch.cat([x1, x2], 1)


class DownsampleCoupling(nn.Module):
    def __init__(self, c, width, clamp, dropout):
        super().__init__()
        c1, c2 = c // 2, c - c // 2
        self.split, self.clamp = c1, clamp
        self.s_hi = ConvSubnet(c1, 8 * c2, width, relu_first=False, stride=2)
        self.s_lo = ConvSubnet(4 * c2, 8 * c1, width, dropout, relu_first=False)

    def forward(self, x):
        x1, x2 = x[:, : self.split], x[:, self.split :]
        y2, ld2 = affine(space_to_depth(x2), self.s_hi(x1), self.clamp, 0.2)
        y1, ld1 = affine(space_to_depth(x1), self.s_lo(y2), self.clamp, 0.2)
        return torch.cat([y1, y2], 1), ld1 + ld2

    def inverse(self, z):
        k = 4 * self.split
        y1, y2 = z[:, :k], z[:, k:]
        x1 = depth_to_space(affine(y1, self.s_lo(y2), self.clamp, 0.2, inverse=True)[0])
        x2 = depth_to_space(affine(y2, self.s_hi(x1), self.clamp, 0.2, inverse=True)[0])
        return torch.cat([x1, x2], 1)


def dct_matrix(s):
    n = torch.arange(s, dtype=torch.float64).unsqueeze(1)
    k = torch.arange(s, dtype=torch.float64).unsqueeze(0)
    return 2.0 * torch.cos(math.pi * k * (2 * n + 1) / (2 * s))


class DctPooling(nn.Module):
    def __init__(self, c, s, rebalance):
        super().__init__()
        d = dct_matrix(s)
        self.register_buffer("dct", d.float())
        self.register_buffer("idct", torch.linalg.inv(d).float())
        self.c, self.s = c, s
        self.scale = rebalance / (2.0 * (s + 1.0))
        self.log_det = c * (2.0 * s * torch.linalg.slogdet(d)[1].item() + s * s * math.log(self.scale))

    def forward(self, x):
        n = x.shape[0]
        a = torch.matmul(x, self.dct).transpose(2, 3)
        y = torch.matmul(a, self.dct)
        z = y.permute(0, 2, 3, 1).reshape(n, -1, 1, 1) * self.scale
        return z, torch.full((n,), self.log_det, device=x.device)

    def inverse(self, z):
        n = z.shape[0]
        y = (z / self.scale).reshape(n, self.s, self.s, self.c).permute(0, 3, 1, 2)
        a = torch.matmul(y, self.idct).transpose(2, 3)
        return torch.matmul(a, self.idct)


class Permutation(nn.Module):
    def __init__(self, dim, gen):
        super().__init__()
        p = torch.randperm(dim, generator=gen)
        self.register_buffer("perm", p)
        self.register_buffer("inv", torch.argsort(p))

    def forward(self, x):
        return x[:, self.perm], torch.zeros(x.shape[0], device=x.device)

    def inverse(self, z):
        return z[:, self.inv]


class FcSubnet(nn.Module):
    def __init__(self, c_in, c_out, width, dropout):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c_in, width), nn.Linear(width, c_out)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.fc2(self.drop(F.relu(self.fc1(x))))


class GlowCoupling(nn.Module):
    def __init__(self, dim, width, clamp, dropout):
        super().__init__()
        self.l1, self.l2 = dim // 2, dim - dim // 2
        self.clamp = clamp
        self.s1 = FcSubnet(self.l1, 2 * self.l2, width, dropout)
        self.s2 = FcSubnet(self.l2, 2 * self.l1, width, dropout)

    def log_e(self, s):
        return self.clamp * 0.636 * torch.atan(s / self.clamp)

    def forward(self, x):
        shape = x.shape
        x = x.flatten(1)
        x1, x2 = x[:, : self.l1], x[:, self.l1 :]
        r2 = self.s2(x2)
        ls2, t2 = self.log_e(r2[:, : self.l1]), r2[:, self.l1 :]
        y1 = x1 * torch.exp(ls2) + t2
        r1 = self.s1(y1)
        ls1, t1 = self.log_e(r1[:, : self.l2]), r1[:, self.l2 :]
        y2 = x2 * torch.exp(ls1) + t1
        return torch.cat([y1, y2], 1).reshape(shape), ls1.sum(1) + ls2.sum(1)

    def inverse(self, z):
        shape = z.shape
        z = z.flatten(1)
        y1, y2 = z[:, : self.l1], z[:, self.l1 :]
        r1 = self.s1(y1)
        x2 = (y2 - r1[:, self.l2 :]) * torch.exp(-self.log_e(r1[:, : self.l2]))
        r2 = self.s2(x2)
        x1 = (y1 - r2[:, self.l1 :]) * torch.exp(-self.log_e(r2[:, : self.l1]))
        return torch.cat([x1, x2], 1).reshape(shape)


def config(small):
    if small:
        return dict(stages=[(2, 8, 0.0), (2, 16, 0.0)], fc_width=64, fc_dropout=0.0)
    return dict(stages=[(24, 32, 0.0), (24, 64, 0.25)], fc_width=1024, fc_dropout=0.5)


class IbInn(nn.Module):
    def __init__(self, small, n_classes=10, mu_init=5.0):
        super().__init__()
        cfg = config(small)
        gen = torch.Generator().manual_seed(0)
        c, h = 4, 14
        blocks = [Haar(1)]
        for i, (count, width, dropout) in enumerate(cfg["stages"]):
            for _ in range(count):
                blocks.append(AllInOne(c, width, 0.7, 0.8, dropout, True, gen))
            if i + 1 < len(cfg["stages"]):
                blocks.append(DownsampleCoupling(c, 2 * width, 0.7, dropout))
                c, h = 4 * c, h // 2
        blocks.append(DctPooling(c, h, 0.5))
        self.dim = c * h * h
        blocks.append(Permutation(self.dim, gen))
        blocks.append(GlowCoupling(self.dim, cfg["fc_width"], 2.0, cfg["fc_dropout"]))
        self.blocks = nn.ModuleList(blocks)
        k, d = n_classes, self.dim
        mu = torch.zeros(k, d)
        s = mu_init / math.sqrt(2 * (d // k))
        for b in range(d // k):
            mu[torch.arange(k), b * k + torch.arange(k)] = s
        self.mu = nn.Parameter(mu)
        self.phi = nn.Parameter(torch.zeros(k))

    def encode(self, x):
        ld = torch.zeros(x.shape[0], device=x.device)
        for b in self.blocks:
            x, l = b(x)
            ld = ld + l
        return x.flatten(1), ld

    def decode(self, z):
        x = z.reshape(z.shape[0], self.dim, 1, 1)
        for b in reversed(self.blocks):
            x = b.inverse(x)
        return x

    def sq_distances(self, z):
        return (z * z).sum(1, keepdim=True) + (self.mu * self.mu).sum(1).unsqueeze(0) - 2.0 * z @ self.mu.t()


def ib_loss(model, x, targets, beta=1.4265):
    z, log_det = model.encode(x)
    joint = -0.5 * model.sq_distances(z)
    log_w = torch.log_softmax(model.phi, 0).unsqueeze(0)
    l_x = (-torch.logsumexp(joint + log_w, 1) - log_det) / model.dim
    lw = log_w.detach()
    l_y = ((torch.log_softmax(joint + lw, 1) - lw) * targets).sum(1)
    return 2.0 / (1.0 + beta) * l_x.mean() - 2.0 * beta / (1.0 + beta) * l_y.mean()


def bench_step(args, dev):
    torch.manual_seed(0)
    model = IbInn(args.small).to(dev).train()
    lr = 0.07
    net = [p for n, p in model.named_parameters() if n not in ("mu", "phi")]
    optim = torch.optim.SGD(
        [
            dict(params=net, lr=lr, momentum=0.9, weight_decay=1e-4),
            dict(params=[model.mu], lr=3.0 * lr, momentum=0.0),
            dict(params=[model.phi], lr=lr, momentum=0.8),
        ],
        lr=lr,
    )
    x, y = common.mnist_images("train", args.batch_size)
    gen = torch.Generator().manual_seed(0)
    x = x + torch.rand(x.shape, generator=gen) / 256.0
    x = (x + 0.01 * torch.randn(x.shape, generator=gen) - 0.5) * 2.0

    def step():
        xb, yb = x.to(dev), y.to(dev)
        targets = F.one_hot(yb, 10).float() * (1 - 0.01) + 0.01 / 10
        loss = ib_loss(model, xb, targets)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 8.0)
        optim.step()
        norm.item()

    name = common.backend_name(dev)
    ms = common.timed(step, dev, args.warmup, args.steps, f"{name} step")
    row = dict(backend=name, batch_size=args.batch_size, steps=args.steps, median_ms=ms,
               images_per_second=args.batch_size / (ms / 1e3))
    print(f"{name:<8} batch {args.batch_size:>4}: median {ms:>9.1f} ms/step, {row['images_per_second']:>8.1f} images/s")
    common.write_json(args.json, [row])


def bench_ecinn(args, dev):
    torch.manual_seed(0)
    model = IbInn(args.small).to(dev).eval()
    x, _ = common.mnist_images("t10k", args.batch_size)
    x = x.to(dev)
    means = model.mu.detach()

    @torch.no_grad()
    def call():
        z, _ = model.encode((x - 0.5) * 2.0)
        pred = (-0.5 * model.sq_distances(z)).argmax(1).tolist()
        inputs, frm, to = [], [], []
        for i, p in enumerate(pred):
            for t in range(10):
                if t != p:
                    inputs.append(i), frm.append(p), to.append(t)
        inputs, frm, to = (torch.tensor(v, device=dev) for v in (inputs, frm, to))
        zq, mu_p, mu_q = z[inputs], model.mu[frm], model.mu[to]
        delta = means[to] - means[frm]
        w = mu_q - mu_p
        a0 = -(w * (zq - 0.5 * (mu_p + mu_q))).sum(1) / (w * delta).sum(1)
        a1 = 0.8 + 0.5 * torch.tensor(a0.tolist(), device=dev)
        moved = zq + delta * a1.unsqueeze(1)
        out = [model.decode(part) / 2.0 + 0.5 for part in moved.split(args.decode_batch)]
        cf = torch.cat(out)
        cf[-1:].cpu()
        return cf.shape[0]

    count = call()
    name = common.backend_name(dev)
    ms = common.timed(call, dev, args.warmup, args.repeats, f"{name} ecinn call")
    row = dict(backend=name, inputs=args.batch_size, counterfactuals=count, decode_batch=args.decode_batch,
               median_ms=ms, counterfactuals_per_second=count / (ms / 1e3))
    print(f"{name:<8} ecinn {args.batch_size:>5} inputs, {count:>6} counterfactuals: median {ms:>9.1f} ms, "
          f"{row['counterfactuals_per_second']:>10.1f} CF/s")
    common.write_json(args.json, [row])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("bench", choices=["step", "ecinn"])
    p.add_argument("--device", default="auto")
    p.add_argument("--small", action="store_true")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--decode-batch", type=int, default=1024)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.warmup is None:
        args.warmup = 2 if args.bench == "step" else 1
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = common.device(args.device)
    (bench_step if args.bench == "step" else bench_ecinn)(args, dev)


if __name__ == "__main__":
    main(sys.argv[1:])
