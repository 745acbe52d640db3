"""Exports an IB-INN of the authors' code to safetensors for `cargo xtask import-ibinn`.

Two sources:

  --checkpoint model.pt   a checkpoint their `model.py::save` wrote ({'inn', 'mu', 'phi', ...});
  --build                 a fresh model built by their code, trained --steps steps on MNIST
                          with their loss and optimiser, so that its weights and batch-norm
                          statistics are not the initial ones.

With --reference DIR (a folder holding their `model.py`, `inn_architecture.py`,
`all_in_one_block.py`, `downsampling_coupling_block.py` and `dct_transform.py`; see README.md)
the model is rebuilt by their code and run on --check images of the MNIST test set in eval
mode, and the batch with their outputs goes into the file as `check.x`, `check.z`,
`check.l_x` and `check.logits`; the import then reports how far our model is from them.
--build needs --reference. With --grad-batch N (and --build) the model trains without dropout and
the file gets one training-mode pass of their loss over N images (`check.train.*`); with
--step-batches K as well, K steps of their optimiser on batches of N from the exported weights
(`check.steps.*`) and every tensor after them (`after.*`), which the import repeats with ours.

    python3 bench/reference/export_ibinn.py --reference REF --build --steps 30 --out ab.safetensors
    cargo xtask import-ibinn --weights ab.safetensors --name ibinn-authors-ab --test-limit 1000
"""
import argparse
import configparser
import copy
import gzip
import os
import re
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
MNIST = os.path.join(HERE, '..', '..', 'datasets', 'data', 'mnist')


def idx(name, offset):
    with gzip.open(os.path.join(MNIST, name)) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def mnist(split):
    prefix = 'train' if split == 'train' else 't10k'
    x = idx(f'{prefix}-images-idx3-ubyte.gz', 16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.
    return x, idx(f'{prefix}-labels-idx1-ubyte.gz', 8).astype(np.int64)


def config(dataset_ini):
    """Their default.ini with ECINN's configs/mnist.ini on top (as ECINN's config.py merges them)."""
    cfg = configparser.ConfigParser()
    cfg.read_dict(DEFAULT_INI)
    cfg.read_dict(dataset_ini)
    return cfg


# IB-INN's default.ini, the keys their model code reads.
DEFAULT_INI = {
    'model': {'fc_width': '1024', 'n_coupling_blocks_fc': '1', 'dct_pooling': 'True',
              'conv_widths': '[16, 32, 64]', 'n_coupling_blocks_conv': '[8, 24, 24]',
              'n_groups': '1', 'clamp': '0.7', 'act_norm': '0.75', 'weight_init': '1.0',
              'mu_init': '5.0', 'dropout_conv': '[0., 0., 0.25]', 'dropout_fc': '0.5'},
    'data': {'dataset': 'CIFAR10', 'batch_size': '128', 'tanh_augmentation': 'False',
             'noise_amplitde': '0.01', 'label_smoothing': '0.02', 'pad_noise_channels': '0',
             'pad_noise_std': '1.0'},
    'training': {'beta_IB': '1.0', 'n_epochs': '450', 'clip_grad_norm': '8.',
                 'optimizer': 'SGD', 'lr': '0.07', 'weight_decay': '1e-4', 'sgd_momentum': '0.9',
                 'empirical_mu': 'False', 'train_mu': 'True', 'lr_mu': '3.0',
                 'sgd_momentum_mu': '0.0', 'train_phi': 'False', 'lr_phi': '1.',
                 'sgd_momentum_phi': '0.8'},
    'ablations': {'no_NLL_term': 'False', 'class_NLL': 'False', 'standard_softmax_loss': 'False',
                  'feed_forward_resnet': 'False', 'feed_forward_irevnet': 'False', 'vib': 'False'},
}
# ECINN's configs/mnist.ini.
MNIST_INI = {'training': {'beta_IB': '1.4265', 'n_epochs': '60', 'scheduler_milestones': '[50]'},
             'data': {'dataset': 'MNIST', 'label_smoothing': '0.01'},
             'model': {'act_norm': '0.80'}}


# A small model of the same architecture, for the test fixture of cfx-flows
# (`crates/flows/tests/data/ibinn_reference_tiny.safetensors`).
TINY_INI = {'model': {'conv_widths': '[16, 4, 8]', 'n_coupling_blocks_conv': '[8, 2, 2]',
                      'fc_width': '16'}}


def build(reference, tiny=False, no_dropout=False):
    sys.path.insert(0, HERE)
    import shims  # noqa: F401  (before their code imports FrEIA)
    sys.path.insert(0, reference)
    import model as their_model
    cfg = config(MNIST_INI)
    if tiny:
        cfg.read_dict(TINY_INI)
    if no_dropout:  # the layers stay (and with them the keys), at p = 0
        cfg.read_dict({'model': {'dropout_conv': '[0., 0., 0.]', 'dropout_fc': '0.'}})
    return their_model.GenerativeClassifier(cfg)


def gradient_batch(m, n, seed):
    """One training-mode pass of their loss over n augmented training images (batch
    statistics, dropout off): the loss, the global gradient norm their clipping sees (over
    `trainable_params`, μ and φ included) and μ's and φ's gradients."""
    x, labels = mnist('train')
    rng = np.random.default_rng(seed + 1)
    b = rng.choice(len(x), n, replace=False)
    xb = torch.as_tensor(x[b])
    xb = 2. * (xb + torch.rand_like(xb) / 256. + 0.01 * torch.randn_like(xb) - 0.5)
    y = torch.zeros(n, 10).scatter_(1, torch.as_tensor(labels[b]).view(-1, 1), 1.) * 0.99 + 0.001
    beta = 1.4265
    m.train()
    m.optimizer.zero_grad()
    losses = m(xb, y)
    loss = 2. / (1 + beta) * losses['L_x_tr'] - 2. * beta / (1 + beta) * losses['L_y_tr']
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(m.trainable_params, float('inf'))
    out = {'check.train.x': xb, 'check.train.labels': torch.as_tensor(labels[b]).float(),
           'check.train.loss': loss.detach().reshape(1), 'check.train.grad_norm': norm.reshape(1),
           'check.train.grad_mu': m.mu.grad.reshape(10, -1).clone(),
           'check.train.grad_phi': m.phi.grad.clone()}
    m.optimizer.zero_grad()
    return out


def train(m, steps, seed):
    """Their training step (train.py): β-weighted IB loss, gradient clipping at 8, their SGD
    groups; their augmentation (uniform dequantisation, noise 0.01, scaling to [-1, 1])."""
    x, labels = mnist('train')
    rng = np.random.default_rng(seed)
    beta, smooth = 1.4265, 0.01
    bx, by = 2. / (1 + beta), 2. * beta / (1 + beta)
    m.train()
    for step in range(steps):
        b = rng.choice(len(x), 128, replace=False)
        xb = torch.as_tensor(x[b])
        xb = 2. * (xb + torch.rand_like(xb) / 256. + 0.01 * torch.randn_like(xb) - 0.5)
        y = torch.zeros(128, 10).scatter_(1, torch.as_tensor(labels[b]).view(-1, 1), 1.)
        y = y * (1 - smooth) + smooth / 10
        losses = m(xb, y)
        (bx * losses['L_x_tr'] - by * losses['L_y_tr']).backward()
        torch.nn.utils.clip_grad_norm_(m.trainable_params, 8.)
        m.optimizer.step()
        m.optimizer.zero_grad()
        if (step + 1) % 10 == 0:
            print(f"step {step + 1}: L_x {losses['L_x_tr'].item():.4f} "
                  f"acc {100 * losses['acc_tr'].item():.1f}%", flush=True)


def step_batches(m, k, n, seed, control=0.):
    """K steps of their training step (their loss, clipping at 8, their SGD groups) from the
    current weights with the optimiser's momentum buffers cleared, each on n augmented training
    images, dropout off: the batches, each step's loss and gradient norm, and every tensor of
    the state dict after the last step (`after.` + the key), batch-norm statistics included.

    With `control` > 0, a copy of the model whose parameters are first scaled by
    1 + control·N(0, 1) takes the same steps, and how far the two runs end apart is printed:
    how much float rounding alone moves K steps of their code."""
    x, labels = mnist('train')
    rng = np.random.default_rng(seed + 2)
    beta = 1.4265
    m.optimizer.state.clear()
    batches = []
    for _ in range(k):
        b = rng.choice(len(x), n, replace=False)
        xb = torch.as_tensor(x[b])
        xb = 2. * (xb + torch.rand_like(xb) / 256. + 0.01 * torch.randn_like(xb) - 0.5)
        batches.append((xb, torch.as_tensor(labels[b])))
    twin = copy.deepcopy(m) if control > 0 else None

    def run(model):
        model.train()
        losses, norms = [], []
        for xb, lb in batches:
            y = torch.zeros(n, 10).scatter_(1, lb.view(-1, 1), 1.) * 0.99 + 0.001
            out = model(xb, y)
            loss = 2. / (1 + beta) * out['L_x_tr'] - 2. * beta / (1 + beta) * out['L_y_tr']
            loss.backward()
            norms.append(torch.nn.utils.clip_grad_norm_(model.trainable_params, 8.).item())
            model.optimizer.step()
            model.optimizer.zero_grad()
            losses.append(loss.item())
        return losses, norms

    start = {k_: v.detach().clone() for k_, v in m.state_dict().items()}
    losses, norms = run(m)
    if twin is not None:
        with torch.no_grad():
            for p in twin.trainable_params:
                p.mul_(1. + control * torch.randn_like(p))
        twin_losses, twin_norms = run(twin)
        after, twin_after = m.state_dict(), twin.state_dict()
        share, worst = -1., ''
        for key, v in after.items():
            if not v.dtype.is_floating_point:
                continue
            diff = (v - twin_after[key]).abs().max().item()
            moved = (v - start[key]).abs().max().item()
            s_ = diff / moved if moved > 0 else diff
            if s_ > share:
                share, worst = s_, f'{key} ({diff:.3e} of {moved:.3e})'
        print(f'control, parameters scaled by 1 + {control:g}·N(0, 1): losses {twin_losses} '
              f'against {losses}; gradient norms {twin_norms} against {norms}; largest share '
              f'of its own movement after the steps: {worst}')
    out = {'check.steps.x': torch.cat([b[0] for b in batches]),
           'check.steps.labels': torch.cat([b[1] for b in batches]).float(),
           'check.steps.loss': torch.tensor(losses), 'check.steps.grad_norm': torch.tensor(norms)}
    out.update({f'after.inn.{k_}': v.detach().clone() for k_, v in m.inn.state_dict().items()
                if v.dtype.is_floating_point})
    out['after.mu'] = m.mu.data.reshape(m.mu.shape[-2], m.mu.shape[-1]).clone()
    out['after.phi'] = m.phi.data.clone()
    return out


def check_batch(m, n, with_nodes=True):
    """Their model in eval mode on the first n clean test images (their test augmentor)."""
    x, _ = mnist('test')
    x = 2. * (torch.as_tensor(x[:n]) - 0.5)
    m.eval()
    with torch.no_grad():
        m.inn.record = []
        z = m.inn(x)
        nodes = m.inn.record
        m.inn.record = None
        losses = m(x, loss_mean=False)
    out = {'check.x': x, 'check.z': z.reshape(n, -1), 'check.l_x': losses['L_x_tr'],
           'check.logits': losses['logits_tr']}
    if with_nodes:
        # Each node's output, for finding the first block where the two models part.
        out.update({f'check.node.{k}': y.reshape(n, -1) for k, y in enumerate(nodes)})
    return out


def score_test(m, n):
    """What their test code prints (evaluation/test_metrics.py) over the first n clean test
    images: eval mode, bits/dim = (L_x + ln 256 − ½ ln 2π) / ln 2, and the accuracy."""
    x, labels = mnist('test')
    x = 2. * (torch.as_tensor(x[:n]) - 0.5)
    y = torch.zeros(n, 10).scatter_(1, torch.as_tensor(labels[:n]).view(-1, 1), 1.)
    v = m.validate(x, y)
    l_x = float(v['L_x_val'])
    bpd = (l_x + np.log(256) - 0.5 * np.log(2 * np.pi)) / np.log(2)
    print(f'their test code on {n} test images: accuracy {100 * float(v["acc_val"]):.2f} %, '
          f'L_x {l_x:.6f}, bits/dim {bpd:.6f}')


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--checkpoint')
    src.add_argument('--build', action='store_true')
    p.add_argument('--reference', help='folder with the authors\' model code')
    p.add_argument('--steps', type=int, default=30)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--check', type=int, default=256, help='test images in the check batch (0: none)')
    p.add_argument('--score-test', type=int, default=0, metavar='N',
                   help='also print what their test code reports on the first N test images')
    p.add_argument('--grad-batch', type=int, default=0, metavar='N',
                   help='with --build: train without dropout and add one training pass over N '
                        'images (loss, gradient norm, gradients of mu and phi)')
    p.add_argument('--step-batches', type=int, default=0, metavar='K',
                   help='with --grad-batch: then K training steps of their optimiser on batches '
                        'of the same size, from a cleared momentum, and the weights after them')
    p.add_argument('--step-control', type=float, default=0., metavar='EPS',
                   help='with --step-batches: also run the steps from weights scaled by '
                        '1 + EPS·N(0, 1) and print how far apart the two runs end')
    p.add_argument('--tiny', action='store_true', help='the small architecture of the test fixture')
    p.add_argument('--no-nodes', action='store_true', help='leave out the per-node outputs')
    p.add_argument('--threads', type=int, default=1,
                   help='torch threads; more than the idle cores makes torch spin (10x slower '
                        'beside another job on a 2-core machine)')
    p.add_argument('--out', required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.build and not a.reference:
        p.error('--build needs --reference')
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)

    tensors = {}
    if a.grad_batch and not a.build:
        p.error('--grad-batch needs --build')
    if a.step_batches and not a.grad_batch:
        p.error('--step-batches needs --grad-batch (it sets the batch size and turns dropout off)')
    m = build(a.reference, a.tiny, a.grad_batch > 0) if a.reference else None
    if a.checkpoint:
        data = torch.load(a.checkpoint, map_location='cpu', weights_only=False)
        inn = {k: v for k, v in data['inn'].items() if 'tmp_var' not in k}
        if m is not None:
            # The 2020 FrEIA named the fully connected coupling's subnets s1/s2, FrEIA 0.2 (which
            # the shims build on) subnet1/subnet2.
            m.inn.load_state_dict({re.sub(r'\.s([12])\.', r'.subnet\1.', k): v for k, v in inn.items()})
            m.mu.data.copy_(data['mu'].data)
            m.phi.data.copy_(data['phi'].data)
    else:
        train(m, a.steps, a.seed)
    if m is not None:
        inn, mu, phi = m.inn.state_dict(), m.mu.data, m.phi.data
    else:
        mu, phi = data['mu'].data, data['phi'].data
    if a.grad_batch:
        # Before the eval-mode batch: its training-mode pass moves the batch-norm statistics,
        # which the eval-mode pass then uses and the file stores.
        tensors.update(gradient_batch(m, a.grad_batch, a.seed))
    if m is not None and a.check > 0:
        tensors.update(check_batch(m, a.check, not a.no_nodes))
    if m is not None and a.score_test > 0:
        score_test(m, a.score_test)
    # Copies, taken here: the state dict shares storage with the parameters and buffers, which
    # the batches above (statistics) and --step-batches (everything) move.
    tensors.update({f'inn.{k}': v.detach().clone() for k, v in inn.items() if v.dtype.is_floating_point})
    tensors['mu'] = mu.reshape(mu.shape[-2], mu.shape[-1]).clone()
    tensors['phi'] = phi.clone()
    if a.step_batches:
        # Last: it moves the weights the tensors above were taken from.
        tensors.update(step_batches(m, a.step_batches, a.grad_batch, a.seed, a.step_control))

    from safetensors.torch import save_file
    save_file({k: v.detach().float().clone().contiguous() for k, v in tensors.items()}, a.out)
    print(f'{len(tensors)} tensors → {a.out}')


if __name__ == '__main__':
    main()
