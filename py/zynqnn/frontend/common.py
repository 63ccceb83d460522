"""Shared pieces of the importers: the error type and small helpers."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ir import Graph, IRError

__all__ = ["FrontendError", "check_example_input", "compare_codes", "finish"]


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


def finish(graph: Graph, kind: str) -> Graph:
    try:
        graph.validate()
    except IRError as exc:
        raise FrontendError(f"{kind} import produced an invalid graph: {exc}") from None
    return graph
