"""A chain-only stand-in for the 2020 FrEIA graph API that IB-INN's code was written against
(PyPI's FrEIA 0.2 replaced it): old-style blocks return [out] and report jacobian();
FrEIA 0.2's own blocks return (out, log_jac). The node order, and so the state dict's
`module_list.<k>` keys, is the 2020 graph's."""
import torch.nn as nn
import FrEIA.framework as Ff


class InputNode:
    def __init__(self, *dims, name=None):
        self.dims = tuple(dims); self.name = name; self.out0 = (self, 0)

class Node:
    def __init__(self, inp, module_type, args, name=None):
        prev = inp[0] if isinstance(inp, tuple) else inp
        dims_in = [prev.dims]
        self.module = module_type(dims_in, **args)
        self.dims = tuple(self.module.output_dims(dims_in)[0])
        self.name = name; self.out0 = (self, 0); self.prev = prev

class OutputNode:
    def __init__(self, inp, name=None):
        self.prev = inp[0] if isinstance(inp, tuple) else inp

OLD = ('AIO_Block', 'DownsampleCouplingBlock', 'DCTPooling2d')

class ReversibleGraphNet(nn.Module):
    def __init__(self, nodes, verbose=False):
        super().__init__()
        chain = [n for n in nodes if isinstance(n, Node)]
        self.names = [n.name for n in chain]
        self.module_list = nn.ModuleList([n.module for n in chain])
        self.last_jac = None
        # When a list, forward appends each node's output (the export's per-node check).
        self.record = None

    def forward(self, x, rev=False):
        mods = list(self.module_list)
        if rev:
            mods = mods[::-1]
        jac = 0.
        for m in mods:
            if type(m).__name__ in OLD:
                y = m([x], rev=rev)[0]
                j = m.jacobian([x], rev=rev)
            else:
                ys, j = m([x], rev=rev, jac=True)
                y = ys[0]
            jac = jac + j
            x = y
            if self.record is not None:
                self.record.append(y)
        self.last_jac = jac
        return x

    def log_jacobian(self, run_forward=False):
        return self.last_jac

Ff.InputNode, Ff.Node, Ff.OutputNode, Ff.ReversibleGraphNet = InputNode, Node, OutputNode, ReversibleGraphNet
