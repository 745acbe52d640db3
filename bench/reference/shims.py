"""Lets the authors' IB-INN code (vislearn/IB-INN, fhvilshoj/ECINN) run on a CPU with today's
torch and FrEIA, without editing it. Import this module before theirs.

* Their code calls `.cuda()` and `torch.cuda.FloatTensor` throughout; on a machine without a
  GPU those become identities.
* `dct_transform.py` calls `torch.rfft`/`torch.irfft` (removed in torch 1.8) with
  `onesided=False`: the full complex spectrum as a trailing (re, im) axis, which
  `torch.fft.fft` gives.
* Their `inn_architecture.py` builds a FrEIA graph of blocks written for the 2020 FrEIA API
  (`forward` returns `[out]`, `jacobian()` reports the log-det); PyPI's FrEIA 0.2 has another
  one. `freia_chain` stands in for the graph classes they use (a chain of nodes), and
  `Glow2020` puts back the 2020 soft clamp of the fully connected coupling.
"""
import torch
import torch.nn as nn

if not torch.cuda.is_available():
    torch.cuda.is_available = lambda: True
    torch.Tensor.cuda = lambda self, *a, **k: self
    nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.FloatTensor = lambda *s: torch.FloatTensor(*s)

if not hasattr(torch, 'rfft'):
    torch.rfft = lambda v, d, onesided=False: torch.view_as_real(torch.fft.fft(v, dim=-1))
    torch.irfft = lambda V, d, onesided=False: torch.fft.ifft(
        torch.view_as_complex(V.contiguous()), dim=-1).real

import freia_chain  # noqa: E402,F401  (patches FrEIA.framework)

import FrEIA.modules as Fm  # noqa: E402


class Glow2020(Fm.GLOWCouplingBlock):
    """The fully connected coupling with the 2020 FrEIA soft clamp the authors trained with,
    `clamp·0.636·atan(s/clamp)`; FrEIA 0.2's default is `clamp·0.636·atan(s)`, which saturates
    `clamp` times sooner."""

    def __init__(self, dims_in, dims_c=[], subnet_constructor=None, clamp=2.):
        super().__init__(dims_in, dims_c, subnet_constructor=subnet_constructor, clamp=clamp,
                         clamp_activation=lambda u: 0.636 * torch.atan(u / clamp))


Fm.GLOWCouplingBlock = Glow2020
