"""Shared pieces of the importers: the error type and small helpers."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Graph, IRError

__all__ = ["FrontendError", "check_example_input", "compare_codes", "finish",
           "measure_channel_map"]


class FrontendError(ValueError):
    """A model cannot be imported; the message names the node (or file) and the reason.

    ``node`` and ``path`` hold the culprit when known.
    """

    def __init__(self, message: str, *, node: str | None = None, path: str | None = None):
        super().__init__(message)
        self.node = node
        self.path = path


def check_example_input(x: Any, what: str = "example_input") -> Any:
    """The example input must be one float 4-D NCHW tensor (or a tuple of them)."""
    import torch

    xs = x if isinstance(x, (tuple, list)) else (x,)
    if not xs:
        raise FrontendError(f"{what}: no input given")
    out = []
    for i, t in enumerate(xs):
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(t)
        if not isinstance(t, torch.Tensor):
            raise FrontendError(f"{what}[{i}]: expected a float tensor, got {type(t).__name__}")
        if not t.is_floating_point() or t.is_quantized:
            raise FrontendError(f"{what}[{i}]: expected a float32 tensor, got {t.dtype}")
        if t.dim() != 4:
            raise FrontendError(f"{what}[{i}]: zynqnn takes 4-D NCHW inputs, got shape "
                                f"{list(t.shape)}")
        if any(d == 0 for d in t.shape):
            raise FrontendError(f"{what}[{i}]: empty shape {list(t.shape)}")
        out.append(t.float().contiguous())
    return tuple(out)


def compare_codes(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(mismatches, compared) of two code arrays of the same shape."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return max(a.size, b.size), max(a.size, b.size)
    return int(np.count_nonzero(a != b)), int(a.size)


def measure_channel_map(run, shape, qmin: int, qmax: int) -> np.ndarray:
    """The per-channel code map of a framework kernel, measured on every input code.

    ``run(codes)`` runs the kernel on an int64 array of ``shape`` (N, C, H, W) and returns the
    output codes. Every channel gets every code ``qmin..qmax`` (over several runs when the map
    has fewer pixels), in two arrangements over the pixels; returns the ``(C, qmax-qmin+1)``
    table. Raises ``ValueError`` when one code gives different outputs at different positions
    (a kernel whose arithmetic depends on the element's position, which a table cannot hold)."""
    n, c, h, w = shape
    codes = np.arange(qmin, qmax + 1)
    per = n * h * w
    unset = np.iinfo(np.int64).min
    table = np.full((c, codes.size), unset, np.int64)
    for shift in (0, 7):
        perm = (np.arange(codes.size) * 5 + shift) % codes.size
        for r in range(-(-codes.size // per)):
            idx = perm[(np.arange(per) + r * per) % codes.size]
            xs = np.broadcast_to(codes[idx].reshape(n, 1, h, w), (n, c, h, w)).copy()
            y = np.asarray(run(xs), dtype=np.int64).transpose(1, 0, 2, 3).reshape(c, per)
            for i in range(per):
                k = idx[i]
                seen = table[:, k]
                if not np.all((seen == unset) | (seen == y[:, i])):
                    raise ValueError(f"input code {codes[k]} gives different output codes at "
                                     "different positions")
                table[:, k] = y[:, i]
    return table


def fuse_channel_shuffle(graph: Graph) -> int:
    """Replace ShuffleNet's channel shuffle, ``reshape (N, C, H, W) -> (N, g, C/g, H, W)``,
    ``transpose`` of axes 1 and 2, any same-shape reshapes (PyTorch's ``.contiguous()``), and
    ``reshape`` back to ``(N, C, H, W)``, by one ``channel_shuffle`` node (groups ``g``). The
    intermediate tensors must have no other consumer and not be graph outputs. Returns the
    number of shuffles fused."""
    fused = 0
    for first in list(graph.nodes):
        if first not in graph.nodes or first.op != "reshape":
            continue
        x = graph.tensors[first.inputs[0]]
        mid = graph.tensors[first.outputs[0]]
        if len(x.shape) != 4 or len(mid.shape) != 5:
            continue
        n, c, h, w = x.shape
        g = mid.shape[1]
        if mid.shape != (n, g, c // g, h, w) or c % g:
            continue
        chain, cur = [first], first.outputs[0]
        ok = True
        while True:
            cons = graph.consumers(cur)
            if len(cons) != 1 or cur in graph.outputs:
                ok = False
                break
            nxt = cons[0]
            chain.append(nxt)
            cur = nxt.outputs[0]
            shape = graph.tensors[cur].shape
            if nxt.op == "transpose" and len(chain) == 2:
                if list(nxt.attrs.get("perm", [])) != [0, 2, 1, 3, 4]:
                    ok = False
                    break
                continue
            if nxt.op == "reshape" and len(chain) > 2:
                if shape == (n, c // g, g, h, w):
                    continue          # .contiguous(): a reshape to the same shape
                if shape != (n, c, h, w):
                    ok = False
                break
            ok = False
            break
        if not ok or len(chain) < 3 or chain[1].op != "transpose":
            continue
        last = chain[-1]
        for node in chain[1:]:
            graph.nodes.remove(node)
        for node in chain[:-1]:
            graph.tensors.pop(node.outputs[0], None)
        first.op, first.attrs, first.outputs = "channel_shuffle", {"groups": int(g)}, \
            list(last.outputs)
        graph.invalidate()
        fused += 1
    return fused


def finish(graph: Graph, kind: str) -> Graph:
    fuse_channel_shuffle(graph)
    try:
        graph.validate()
    except IRError as exc:
        raise FrontendError(f"{kind} import produced an invalid graph: {exc}") from None
    return graph
