"""Step-lane words: one output channel's constants of ``zynqnn.rtl.steprequant.StepRequant``.

``clamp((acc * mult + offset) >> step_frac_bits) + delta``, with ``delta`` the correction of at
most ``step_exceptions`` listed accumulator values (``zynqnn.numerics.stepfit`` finds them).
"""

from __future__ import annotations

from amaranth import signed, unsigned
from amaranth.lib import data

from zynqnn.hw.config import HwConfig

__all__ = ["step_params_layout", "step_params"]


def step_params_layout(cfg: HwConfig) -> data.StructLayout:
    """One lane's (one output channel's) constants."""
    E = cfg.step_exceptions
    return data.StructLayout({
        "mult": unsigned(cfg.step_mult_bits),
        "offset": signed(cfg.step_offset_bits),
        "exc_acc": data.ArrayLayout(signed(cfg.dw_acc_bits), E),
        "exc_delta": data.ArrayLayout(signed(2), E),   # 0: unused slot
    })


def step_params(fit, cfg: HwConfig, what: str = "layer") -> list[dict]:
    """Per channel, the lane constants of a ``numerics.stepfit.StepFit`` (a dict for
    :func:`step_params_layout`); ``ValueError`` naming the channel and field when the fit does not
    fit the lane."""
    if fit.frac_bits != cfg.step_frac_bits:
        raise ValueError(f"{what}: step fit has {fit.frac_bits} fraction bits, the lane "
                         f"{cfg.step_frac_bits}")
    A, E = cfg.dw_acc_bits, cfg.step_exceptions
    out = []
    for c in range(fit.channels):
        m, b, exc = fit.mult[c], fit.offset[c], fit.exceptions[c]
        if not 0 < m < 2 ** cfg.step_mult_bits:
            raise ValueError(f"{what}: channel {c}: mult {m} needs more than "
                             f"{cfg.step_mult_bits} bits (multiplier >= "
                             f"{2 ** (cfg.step_mult_bits - cfg.step_frac_bits)})")
        if not -(2 ** (cfg.step_offset_bits - 1)) <= b < 2 ** (cfg.step_offset_bits - 1):
            raise ValueError(f"{what}: channel {c}: offset {b} needs more than "
                             f"{cfg.step_offset_bits} bits")
        if fit.lo[c] < -(2 ** (A - 1)) or fit.hi[c] >= 2 ** (A - 1):
            raise ValueError(f"{what}: channel {c}: accumulator range {fit.lo[c]}..{fit.hi[c]} "
                             f"beyond {A} bits")
        if len(exc) > E:
            raise ValueError(f"{what}: channel {c}: {len(exc)} exceptions, the lane holds {E}")
        if any(d not in (-1, 1) for _, d in exc):
            raise ValueError(f"{what}: channel {c}: exception deltas {[d for _, d in exc]} "
                             "beyond +-1")
        pad = [(0, 0)] * (E - len(exc))
        out.append({"mult": m, "offset": b,
                    "exc_acc": [a for a, _ in exc + pad],
                    "exc_delta": [d for _, d in exc + pad]})
    return out
