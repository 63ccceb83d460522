"""Cross-layer equalization (Nagel et al., "Data-Free Quantization Through Weight Equalization
and Bias Correction", ICCV 2019; Vitis AI's and AIMET's CLE) on a BN-folded float FX graph.

For two layers A -> f -> B where ``f`` is positively homogeneous (identity, ReLU, LeakyReLU:
``f(x / s) = f(x) / s`` for ``s > 0``), scaling A's output channel ``i`` (weights and bias) by
``1 / s_i`` and B's input channel ``i`` by ``s_i`` leaves the float function unchanged. With
``s_i = sqrt(r_A,i / r_B,i)`` (``r``: the largest weight magnitude of the channel in each
layer) both channels end with the same range ``sqrt(r_A,i * r_B,i)``, which is what per-tensor
weight quantization (the ``pow2`` DPU scheme) needs: no channel's small weights are crushed by
another's large ones. A depthwise convolution is B of one pair and A of the next, so MobileNet's
1x1 -> depthwise -> 1x1 chains are equalized as a whole (a few sweeps).

ReLU6 and other clamps are not homogeneous (``relu6(x / s) * s`` clips at ``6 s``): pairs
through them are left alone, as are layers whose output has other users (a residual branch).
"""

from __future__ import annotations

import numpy as np

__all__ = ["equalize"]

#: Activations between two layers that scaling passes through unchanged (module types and
#: functions by name).
_HOMOGENEOUS_MODULES = ("ReLU", "LeakyReLU", "Identity", "Dropout")
_HOMOGENEOUS_FUNCTIONS = ("relu", "leaky_relu")


def _module(gm, node):
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def _layer(gm, node):
    """The Conv2d (groups 1 or depthwise) or Linear a node calls, else None."""
    import torch

    m = _module(gm, node)
    if isinstance(m, torch.nn.Conv2d) and m.groups in (1, m.in_channels) and (
            m.groups == 1 or m.out_channels == m.in_channels):
        return m
    if isinstance(m, torch.nn.Linear):
        return m
    return None


def _homogeneous(gm, node) -> bool:
    m = _module(gm, node)
    if m is not None:
        return type(m).__name__ in _HOMOGENEOUS_MODULES
    if node.op in ("call_function", "call_method"):
        name = getattr(node.target, "__name__", str(node.target))
        return name in _HOMOGENEOUS_FUNCTIONS and not node.kwargs.get("inplace", False)
    return False


def _pairs(gm) -> list:
    """(A, B) layer pairs joined by a chain of homogeneous single-user nodes."""
    out = []
    for node in gm.graph.nodes:
        a = _layer(gm, node)
        if a is None:
            continue
        cur = node
        while len(cur.users) == 1:
            nxt = next(iter(cur.users))
            b = _layer(gm, nxt)
            if b is not None:
                if nxt.args and nxt.args[0] is cur and _in_channels(b) == _out_channels(a):
                    out.append((a, b))
                break
            if not _homogeneous(gm, nxt) or not nxt.args or nxt.args[0] is not cur:
                break
            cur = nxt
    return out


def _out_channels(m) -> int:
    return m.weight.shape[0]


def _in_channels(m) -> int:
    import torch

    if isinstance(m, torch.nn.Conv2d) and m.groups > 1:
        return m.in_channels
    return m.weight.shape[1]


def _ranges(a, b) -> tuple[np.ndarray, np.ndarray]:
    import torch

    wa = a.weight.detach().double().abs().reshape(a.weight.shape[0], -1)
    ra = wa.max(dim=1).values.numpy()
    wb = b.weight.detach().double().abs()
    if isinstance(b, torch.nn.Conv2d) and b.groups > 1:   # depthwise: channel i's own taps
        rb = wb.reshape(wb.shape[0], -1).max(dim=1).values.numpy()
    else:
        rb = wb.transpose(0, 1).reshape(wb.shape[1], -1).max(dim=1).values.numpy()
    return ra, rb


def _scale(a, b, s: np.ndarray) -> None:
    import torch

    with torch.no_grad():
        sa = torch.as_tensor(s, dtype=a.weight.dtype)
        a.weight.div_(sa.reshape((-1,) + (1,) * (a.weight.dim() - 1)))
        if a.bias is not None:
            a.bias.div_(sa)
        sb = torch.as_tensor(s, dtype=b.weight.dtype)
        if isinstance(b, torch.nn.Conv2d) and b.groups > 1:
            b.weight.mul_(sb.reshape((-1,) + (1,) * (b.weight.dim() - 1)))
        else:
            b.weight.mul_(sb.reshape((1, -1) + (1,) * (b.weight.dim() - 2)))


def equalize(gm, sweeps: int = 4) -> int:
    """Equalize every layer pair of the float FX GraphModule ``gm`` in place (``sweeps``
    passes over the pairs, for chains); returns the number of pairs."""
    pairs = _pairs(gm)
    for _ in range(sweeps):
        for a, b in pairs:
            ra, rb = _ranges(a, b)
            ok = (ra > 0) & (rb > 0)
            s = np.ones_like(ra)
            s[ok] = np.sqrt(ra[ok] / rb[ok])
            _scale(a, b, s)
    return len(pairs)
