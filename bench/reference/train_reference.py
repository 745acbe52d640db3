"""Trains the authors' IB-INN (their code, see README.md) on MNIST on the CPU for some steps with
their loss, clipping and optimiser, logging 10-step means as JSON lines, then scores it on clean
test images in eval mode as their test code does. The side-by-side peer of

    cargo xtask train ib-inn --dataset mnist --config log10.toml --val-size 100 --epochs 1 \\
        --no-bn-calibration --test-limit 1000 --seed S

(`log10.toml`: `log_every = 10`), whose log prints running means from the epoch's start.

    python3 bench/reference/train_reference.py --reference REF --steps 467 --seed 1 --out ref-s1.json
"""
import argparse
import json
import time

import numpy as np
import torch

import export_ibinn as ex


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--reference', required=True)
    p.add_argument('--steps', type=int, default=467, help='467: one epoch of 59 900 images')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--test-limit', type=int, default=1000)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--out', required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)

    m = ex.build(a.reference)
    x, labels = ex.mnist('train')
    beta, smooth = 1.4265, 0.01
    bx, by = 2. / (1 + beta), 2. * beta / (1 + beta)

    def onehot(l):
        y = torch.zeros(len(l), 10).scatter_(1, torch.as_tensor(l).view(-1, 1), 1.)
        return y * (1 - smooth) + smooth / 10

    order = np.random.permutation(len(x))
    log, window, t0 = [], {k: [] for k in ('L_x_tr', 'L_y_tr', 'acc_tr', 'grad_norm')}, time.time()
    m.train()
    for step in range(a.steps):
        b = order[step * 128:(step + 1) * 128]
        xb = torch.as_tensor(x[b])
        xb = 2. * (xb + torch.rand_like(xb) / 256. + 0.01 * torch.randn_like(xb) - 0.5)
        losses = m(xb, onehot(labels[b]))
        (bx * losses['L_x_tr'] - by * losses['L_y_tr']).backward()
        norm = torch.nn.utils.clip_grad_norm_(m.trainable_params, 8.).item()
        m.optimizer.step()
        m.optimizer.zero_grad()
        for k in ('L_x_tr', 'L_y_tr', 'acc_tr'):
            window[k].append(losses[k].item())
        window['grad_norm'].append(norm)
        if (step + 1) % 10 == 0:
            row = {'step': step + 1, 's': time.time() - t0, **{k: float(np.mean(v)) for k, v in window.items()}}
            print(json.dumps(row), flush=True)
            log.append(row)
            window = {k: [] for k in window}

    xt, lt = ex.mnist('test')
    with torch.no_grad():
        v = m.validate(2. * (torch.as_tensor(xt[:a.test_limit]) - 0.5), onehot(lt[:a.test_limit]))
    res = {k: float(v[k]) for k in ('L_x_val', 'L_y_val', 'acc_val')}
    # Their test code's bits/dim (evaluation/test_metrics.py).
    res['bpd_reference'] = (res['L_x_val'] + np.log(256) - 0.5 * np.log(2 * np.pi)) / np.log(2)
    print(json.dumps(res))
    log.append(res)
    json.dump(log, open(a.out, 'w'))


if __name__ == '__main__':
    main()
