"""The hardware configuration: the single source of truth for the accelerator's shape.

Every consumer reads one :class:`HwConfig`: the Amaranth generator in ``rtl/``, the golden model,
the compiler, the driver (which checks the config readback of the hardware it talks to) and the
Vivado scripts (through a generated parameter file). No size is written anywhere else.

Example::

    from zynqnn.hw.config import get_config
    cfg = get_config("pynq_z2")
    cfg.config_id          # '16x16i8-…', used in artifact names
    cfg.replace(cols=8)    # a validated variant
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

__all__ = ["ConfigError", "HwConfig", "PRESETS", "get_config", "XC7Z020", "PBUF_WORD_BITS"]

#: Bits of one PBUF word: one output channel's post-processing constants (a conv's
#: ``zynqnn.hw.post`` word or a depthwise channel's ``zynqnn.hw.step`` word).
PBUF_WORD_BITS = 128


class ConfigError(ValueError):
    """A hardware configuration field has a value the hardware cannot be built with."""


@dataclass(frozen=True)
class DeviceBudget:
    """Resources of the target FPGA, the limits every fit check compares against."""

    part: str
    lut: int
    ff: int
    dsp: int
    bram36: int


#: xc7z020clg400-1 (Pynq-Z2). Numbers from the Zynq-7000 product table.
XC7Z020 = DeviceBudget(part="xc7z020clg400-1", lut=53_200, ff=106_400, dsp=220, bram36=140)


#: Highest clock the design may ask of a global clock buffer: BUFG FMAX of the 7-series -1
#: speed grade (DS189, Table 32, as cited in docs/timing.md).
MAX_CLOCK_MHZ = 464

#: Parameters left out of :meth:`HwConfig.params` (hence of ``config_id``, ``canonical_json``
#: and ``to_dict``) while they hold their default: fields added after builds were recorded.
_OMITTED_AT_DEFAULT = ("dsp_clock_ratio",)


def _pow2(v: int) -> bool:
    return v > 0 and (v & (v - 1)) == 0


@dataclass(frozen=True)
class HwConfig:
    """One build of the accelerator.

    The PE array is ``rows x cols``: each cycle it reduces ``rows`` input-channel operands against
    a ``rows x cols`` stationary weight tile and emits ``cols`` output-channel sums.

    Parameters
    ----------
    rows, cols:
        PE array size. ``rows`` is the reduction width (input channels per step), ``cols`` the
        number of output channels computed in parallel.
    operand_bits:
        Operand width of activations and weights: 8 (int8/uint8 models) or 16 (16-bit fixed point).
    acc_bits:
        Accumulator width: 32 for the int8 build (PyTorch/ORT/TFLite accumulate in int32), 48 for
        the int16 build (the DSP48E1 P register).
    requant_lanes:
        Parallel post-processing (bias, requantization, activation) lanes; divides ``cols``.
    add_lanes:
        Lanes of the element-wise (residual add) unit; divides ``cols``. An ``ELTWISE`` command
        takes ``cols / add_lanes`` cycles per pixel. Fewer than ``requant_lanes``: each lane's
        float32 emulation of every framework's add is large, and adds are a small share of a
        network's cycles.
    act_buffer_depth:
        Words of the on-chip activation buffer, one word = ``rows`` operands (one pixel's
        input-channel slice).
    weight_buffer_depth:
        Words of the on-chip weight buffer, one word = one row of ``cols`` weights.
    acc_buffer_depth:
        Output pixels held by the accumulator buffer (each ``cols`` x ``acc_bits``) and by the
        output buffer (each ``cols`` codes).
    param_buffer_depth:
        Output channels whose post-processing constants the parameter buffer holds.
    max_width:
        Widest feature-map row the line buffers hold (pixels).
    max_kernel:
        Largest square kernel the window generator supports.
    axi_data_bits, axi_addr_bits:
        Width of the DDR manager port (64 for a Zynq HP port) and of its addresses.
    clock_mhz:
        Target clock of the programmable-logic design (FCLK_CLK0).
    dsp_packing:
        Pack two int8 products sharing an activation into one DSP48E1 (int8 builds only).
    dsp_clock_ratio:
        Clock of the PE array's DSP48E1 columns over the fabric clock: 1 (the array runs on the
        fabric clock) or 2 (double-pumped: the DSPs run on a phase-aligned clock at twice
        ``clock_mhz`` and do two pixels' work per fabric cycle, ``zynqnn.rtl.pe_array2x``). Left
        out of :meth:`params` (and so of :attr:`config_id`) at its default, so that a 1x
        config's id and artifacts are those of the builds before the field existed.
    name:
        A label (the preset's name); not part of :attr:`config_id`.
    """

    rows: int = 16
    cols: int = 16
    operand_bits: int = 8
    acc_bits: int = 32
    requant_lanes: int = 4
    add_lanes: int = 2
    act_buffer_depth: int = 4096
    weight_buffer_depth: int = 2048
    acc_buffer_depth: int = 1024
    param_buffer_depth: int = 1024
    max_width: int = 512
    max_kernel: int = 7
    axi_data_bits: int = 64
    axi_addr_bits: int = 32
    clock_mhz: float = 150.0
    dsp_packing: bool = True
    dsp_clock_ratio: int = 1
    name: str = field(default="custom", compare=False)

    def __post_init__(self):
        self._validate()

    # -- validation ------------------------------------------------------------------------------

    def _fail(self, fname: str, why: str):
        raise ConfigError(f"HwConfig.{fname} = {getattr(self, fname)!r}: {why}")

    def _validate(self):
        for fname in (
            "rows",
            "cols",
            "operand_bits",
            "acc_bits",
            "requant_lanes",
            "add_lanes",
            "act_buffer_depth",
            "weight_buffer_depth",
            "acc_buffer_depth",
            "param_buffer_depth",
            "max_width",
            "max_kernel",
            "axi_data_bits",
            "axi_addr_bits",
            "dsp_clock_ratio",
        ):
            v = getattr(self, fname)
            if not isinstance(v, int) or isinstance(v, bool):
                self._fail(fname, f"must be an int, not {type(v).__name__}")
        if not isinstance(self.dsp_packing, bool):
            self._fail("dsp_packing", "must be a bool")
        if not 1 <= self.rows <= 64:
            self._fail("rows", "must be between 1 and 64")
        if not 1 <= self.cols <= 64:
            self._fail("cols", "must be between 1 and 64")
        if self.operand_bits not in (8, 16):
            self._fail("operand_bits", "must be one of 8, 16")
        # An operand is sign-extended by one bit so uint8 and int8 activations share the array.
        product_bits = 2 * self.operand_bits + 1
        need = product_bits + max(self.rows - 1, 0).bit_length()
        if self.acc_bits not in (32, 48):
            self._fail("acc_bits", "must be one of 32, 48")
        if self.acc_bits < need:
            self._fail("acc_bits", f"must be at least {need} for {self.operand_bits}-bit operands")
        if self.operand_bits == 16 and self.acc_bits != 48:
            self._fail("acc_bits", "must be 48 for the 16-bit build (the DSP48E1 P register)")
        if self.requant_lanes < 1 or self.cols % self.requant_lanes:
            self._fail("requant_lanes", f"must be >= 1 and divide cols ({self.cols})")
        if self.add_lanes < 1 or self.cols % self.add_lanes:
            self._fail("add_lanes", f"must be >= 1 and divide cols ({self.cols})")
        for fname in ("act_buffer_depth", "weight_buffer_depth", "acc_buffer_depth",
                      "param_buffer_depth"):
            v = getattr(self, fname)
            if not _pow2(v) or v < 16:
                self._fail(fname, "must be a power of two >= 16")
        if self.weight_buffer_depth < self.rows:
            self._fail("weight_buffer_depth",
                       f"must hold at least one weight tile ({self.rows} rows)")
        if self.max_kernel not in (1, 3, 5, 7):
            self._fail("max_kernel", "must be one of 1, 3, 5, 7")
        if not self.max_kernel <= self.max_width <= 4096:
            self._fail("max_width", f"must be between max_kernel ({self.max_kernel}) and 4096")
        if self.axi_data_bits not in (32, 64):
            self._fail("axi_data_bits", "must be one of 32, 64 (Zynq HP port widths)")
        if self.axi_addr_bits != 32:
            self._fail("axi_addr_bits", "must be 32 (the Zynq PS address map)")
        if not isinstance(self.clock_mhz, (int, float)) or not 10 <= self.clock_mhz <= 250:
            self._fail("clock_mhz", "must be a number between 10 and 250")
        if self.dsp_clock_ratio not in (1, 2):
            self._fail("dsp_clock_ratio",
                       "must be 1 or 2: the DSP columns run on the fabric clock or on a "
                       "phase-aligned clock at twice it, whose operands a 2:1 mux selects "
                       "(other ratios need a wider mux and a phase counter in the fast domain)")
        if self.clock_mhz * self.dsp_clock_ratio > MAX_CLOCK_MHZ:
            self._fail("dsp_clock_ratio",
                       f"the DSP clock ({self.clock_mhz * self.dsp_clock_ratio:g} MHz) must not "
                       f"exceed {MAX_CLOCK_MHZ} MHz, the -1 global clock buffer's maximum")
        if self.dsp_packing and self.operand_bits != 8:
            self._fail("dsp_packing", "only applies to the 8-bit build")
        if self.dsp_packing and self.cols % 2:
            self._fail("cols", "must be even with dsp_packing (two columns share a DSP48E1)")
        # Buffer words move over the AXI bus whole: a word must pack into beats or beats into it.
        for fname in ("rows", "cols"):
            bits = getattr(self, fname) * self.operand_bits
            if bits % self.axi_data_bits and self.axi_data_bits % bits:
                self._fail(fname, f"{fname} x operand_bits = {bits} bits must divide or be a "
                                  f"multiple of axi_data_bits ({self.axi_data_bits})")

    # -- derived quantities ----------------------------------------------------------------------

    @property
    def signed_operand_bits(self) -> int:
        """Width of an operand inside the array: one extra bit so uint8 and int8 both fit."""
        return self.operand_bits + 1

    @property
    def act_word_bits(self) -> int:
        """Bits of one activation word (``rows`` operands: one pixel's channel block)."""
        return self.rows * self.operand_bits

    @property
    def out_word_bits(self) -> int:
        """Bits of one weight row or output word (``cols`` operands)."""
        return self.cols * self.operand_bits

    @property
    def dw_kernel(self) -> int:
        """Kernel of the depthwise mode (``isa.Mode.DW``): 3 when ``rows == cols >= 9`` (PE row
        ``r`` holds channel ``r``'s nine taps), else 0 (no such mode; depthwise layers take
        diagonal weight tiles)."""
        return 3 if self.rows == self.cols >= 9 else 0

    @property
    def dw_pairs(self) -> bool:
        """Whether the depthwise mode also has fbgemm's saturating int16 tap pairs
        (``isa.Mode.DW_PAIRS``): int8 builds with :attr:`dw_kernel`."""
        return bool(self.dw_kernel) and self.operand_bits == 8

    # The step requantizer (``zynqnn.rtl.steprequant``, ``zynqnn.numerics.stepfit``): one lane is
    # ``clamp((acc * mult + offset) >> step_frac_bits) + exception``. The widths follow the
    # DSP48E1: ``mult`` is two 17-bit B-port pieces, ``offset`` enters the first piece's 48-bit
    # post-adder (C port) beside a product of up to 38 bits.

    @property
    def dw_acc_bits(self) -> int:
        """Signed width of a 3x3 depthwise accumulator: 9 taps of (x - zp_x) * w."""
        top = 9 * (2 ** self.operand_bits - 1) * 2 ** (self.operand_bits - 1)
        return top.bit_length() + 1

    @property
    def step_frac_bits(self) -> int:
        """Fraction bits of a step lane's multiplier."""
        return 32

    @property
    def step_mult_bits(self) -> int:
        """Unsigned width of a step lane's multiplier (two 17-bit DSP pieces)."""
        return 34

    @property
    def step_offset_bits(self) -> int:
        """Signed width of a step lane's offset (the first DSP's 48-bit sum keeps a bit of
        headroom for the product)."""
        return 46

    @property
    def step_exceptions(self) -> int:
        """Accumulator values per channel where a step lane corrects its affine result: as many
        as fit beside ``mult`` and ``offset`` in the channel's PBUF word (2 in int8
        builds, each a ``dw_acc_bits`` value and a 2-bit correction)."""
        free = PBUF_WORD_BITS - self.step_mult_bits - self.step_offset_bits
        return free // (self.dw_acc_bits + 2)

    @property
    def step_lanes(self) -> int:
        """Step requantization lanes of the engine (``isa.ConvOp.step``): one per column, in
        builds with the depthwise mode and int8 operands (a 3x3 depthwise sum then fits the
        DSP48E1's 25-bit port); else 0."""
        return self.cols if self.dw_kernel and self.operand_bits == 8 else 0

    @property
    def macs_per_cycle(self) -> int:
        """MACs of the PE array per fabric cycle (twice ``rows x cols`` when double-pumped)."""
        return self.rows * self.cols * self.dsp_clock_ratio

    @property
    def config_id(self) -> str:
        """Stable id of the parameter set (not of the label), used in every artifact name."""
        digest = hashlib.sha256(self.canonical_json().encode()).hexdigest()[:8]
        return f"{self.rows}x{self.cols}i{self.operand_bits}-{digest}"

    @property
    def config_hash32(self) -> int:
        """The id's digest as a 32-bit number: what the hardware's config readback reports."""
        return int(self.config_id.rsplit("-", 1)[1], 16)

    # -- serialization ---------------------------------------------------------------------------

    def params(self) -> dict:
        """Every hardware parameter (not the label), in declaration order; fields added after
        the first builds (:data:`_OMITTED_AT_DEFAULT`) only when they differ from their default,
        so that the ids of the existing configs do not change."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "name"
                and not (f.name in _OMITTED_AT_DEFAULT and getattr(self, f.name) == f.default)}

    def canonical_json(self) -> str:
        p = self.params()
        p["clock_mhz"] = float(p["clock_mhz"])
        return json.dumps(p, sort_keys=True, separators=(",", ":"))

    def to_dict(self) -> dict:
        return {"name": self.name, **self.params()}

    @classmethod
    def from_dict(cls, d: dict) -> HwConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"HwConfig: unknown field(s) {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> HwConfig:
        return dataclasses.replace(self, **changes)


#: Named builds. ``pynq_z2`` is the board build; ``tiny`` and ``tiny16`` keep simulations fast.
#: ``pynq_z2_2x`` is ``pynq_z2`` with the double-pumped PE array: for now a component-only
#: config (``zynqnn.rtl.gen`` generates only ``zynqnn_pe_array_2x`` for it; the engine does not
#: use that array yet, docs/architecture.md).
PRESETS: dict[str, HwConfig] = {
    "pynq_z2": HwConfig(name="pynq_z2"),
    "pynq_z2_2x": HwConfig(name="pynq_z2_2x", dsp_clock_ratio=2),
    "pynq_z2_int16": HwConfig(
        name="pynq_z2_int16",
        rows=12,
        cols=12,
        operand_bits=16,
        acc_bits=48,
        requant_lanes=4,
        add_lanes=2,
        dsp_packing=False,
    ),
    "tiny": HwConfig(
        name="tiny",
        rows=4,
        cols=4,
        requant_lanes=2,
        add_lanes=1,
        act_buffer_depth=1024,
        weight_buffer_depth=256,
        acc_buffer_depth=256,
        param_buffer_depth=256,
        max_width=64,
    ),
    "tiny16": HwConfig(
        name="tiny16",
        rows=4,
        cols=4,
        operand_bits=16,
        acc_bits=48,
        requant_lanes=2,
        add_lanes=1,
        act_buffer_depth=1024,
        weight_buffer_depth=256,
        acc_buffer_depth=256,
        param_buffer_depth=256,
        max_width=64,
        dsp_packing=False,
    ),
}


def get_config(name_or_cfg: str | HwConfig) -> HwConfig:
    """Return a preset by name (or pass a :class:`HwConfig` through)."""
    if isinstance(name_or_cfg, HwConfig):
        return name_or_cfg
    try:
        return PRESETS[name_or_cfg]
    except KeyError:
        raise ConfigError(
            f"unknown hardware config {name_or_cfg!r}; presets: {', '.join(PRESETS)}"
        ) from None
