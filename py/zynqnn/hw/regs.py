"""The accelerator's register map, declared once.

Every consumer derives from :data:`REGMAP`: the RTL register file (``zynqnn.rtl.regfile``), the
driver's register access (:mod:`zynqnn.driver`) and the documentation table
(``docs/registers.md``, written by ``python -m zynqnn.hw.regs --write docs/registers.md``; a test
checks that the committed file is current).

Registers are 32 bits wide at byte offsets inside the AXI4-Lite window of
:data:`zynqnn.hw.platform.REG_SPACE_BYTES` bytes (base :data:`zynqnn.hw.platform.BASE_ADDRESS` on
PYNQ). Access modes:

``RW``
    read/write; byte strobes honoured.
``RO``
    read-only; writes are accepted (OKAY) and ignored. Some RO registers are constants of the
    build (the config readback), the others are driven by the hardware.
``W1C``
    read the hardware's sticky bits; writing 1 to a bit clears it (a set by the hardware in the
    same cycle wins).
``WO``
    write-only, self-clearing: writing 1 to a bit gives the hardware a one-cycle pulse; reads
    return 0.

A 64-bit counter is a ``_LO`` / ``_HI`` pair: reading ``_LO`` latches the upper half, which the
next read of ``_HI`` returns, so ``LO`` then ``HI`` is one consistent 64-bit value.

An access to an offset that no register occupies is answered with SLVERR.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path

from zynqnn.hw import isa, platform
from zynqnn.hw.config import HwConfig

__all__ = [
    "Access",
    "Field",
    "Register",
    "RegisterMap",
    "REGMAP",
    "ID_MAGIC",
    "VERSION",
    "CMD_INDEX_BITS",
    "watchdog_default_cycles",
    "render_markdown",
    "render_c_header",
]

#: Value of the ID register: "ZYNN" in ASCII.
ID_MAGIC = 0x5A59_4E4E
#: Register-map version (major, minor): a driver refuses a different major version.
VERSION = (1, 0)
#: Width of command indices and of CMD_COUNT (programs of up to 2**20 - 1 commands).
CMD_INDEX_BITS = 20
#: A bus wait (or a stretch without any progress) ends with the WATCHDOG error after this long
#: when the WATCHDOG register is 0.
WATCHDOG_DEFAULT_US = 1000


def watchdog_default_cycles(cfg: HwConfig) -> int:
    """The bound the hardware uses when WATCHDOG is 0: :data:`WATCHDOG_DEFAULT_US` at the
    build's clock."""
    return round(WATCHDOG_DEFAULT_US * cfg.clock_mhz)


class Access(enum.Enum):
    RW = "RW"
    RO = "RO"
    W1C = "W1C"
    WO = "WO"


@dataclass(frozen=True)
class Field:
    """Bits ``[lsb + width - 1 : lsb]`` of a register."""

    name: str
    lsb: int
    width: int
    doc: str
    reset: int = 0

    @property
    def msb(self) -> int:
        return self.lsb + self.width - 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    def bits(self) -> str:
        return f"[{self.msb}:{self.lsb}]" if self.width > 1 else f"[{self.lsb}]"


@dataclass(frozen=True)
class Register:
    """One 32-bit register.

    ``const`` (RO only) makes the register a constant of the build, computed from the
    :class:`~zynqnn.hw.config.HwConfig` as a dict of field values; ``const_doc`` says which.
    ``counter`` names the 64-bit counter a ``_LO`` / ``_HI`` register belongs to and ``half`` is
    0 (``_LO``) or 1 (``_HI``).
    """

    name: str
    offset: int
    access: Access
    doc: str
    fields: tuple[Field, ...]
    const: Callable[[HwConfig], dict] | None = dc_field(default=None, compare=False)
    const_doc: str = ""
    counter: str | None = None
    half: int = 0

    def __post_init__(self):
        if self.offset % 4 or not 0 <= self.offset < platform.REG_SPACE_BYTES:
            raise ValueError(f"{self.name}: offset {self.offset:#x} is not a word in the window")
        used = 0
        for f in self.fields:
            if f.lsb < 0 or f.width < 1 or f.msb > 31:
                raise ValueError(f"{self.name}.{f.name}: bits {f.bits()} outside 31..0")
            if used & f.mask:
                raise ValueError(f"{self.name}.{f.name}: bits {f.bits()} overlap another field")
            if f.reset >> f.width:
                raise ValueError(f"{self.name}.{f.name}: reset {f.reset} does not fit")
            used |= f.mask
        if self.const is not None and self.access is not Access.RO:
            raise ValueError(f"{self.name}: only RO registers can be constants")

    @property
    def reset(self) -> int:
        return sum(f.reset << f.lsb for f in self.fields)

    @property
    def hw_driven(self) -> bool:
        """An RO register whose value comes from the hardware (not a constant)."""
        return self.access is Access.RO and self.const is None

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}; fields: "
                       f"{', '.join(f.name for f in self.fields)}")

    def encode(self, **values: int) -> int:
        """The register value with the given fields set (others 0)."""
        word = 0
        for name, v in values.items():
            f = self.field(name)
            v = int(v)
            if not 0 <= v < (1 << f.width):
                raise ValueError(f"{self.name}.{name} = {v} does not fit in {f.width} bits")
            word |= v << f.lsb
        return word

    def decode(self, word: int) -> dict[str, int]:
        """Field values of a register value."""
        return {f.name: (word >> f.lsb) & ((1 << f.width) - 1) for f in self.fields}

    def const_value(self, cfg: HwConfig) -> int:
        assert self.const is not None
        return self.encode(**self.const(cfg))


def _f(name, lsb, width, doc, reset=0):
    return Field(name, lsb, width, doc, reset)


def _word(doc, name="value"):
    return (_f(name, 0, 32, doc),)


def _counter(name: str, offset: int, doc: str) -> list[Register]:
    return [
        Register(f"{name}_LO", offset, Access.RO, f"{doc} (bits 31:0; reading latches _HI)",
                 _word("low half"), counter=name, half=0),
        Register(f"{name}_HI", offset + 4, Access.RO, f"{doc} (bits 63:32, latched by _LO)",
                 _word("high half"), counter=name, half=1),
    ]


class RegisterMap:
    """An ordered set of registers with lookup by name and offset."""

    def __init__(self, registers: list[Register]):
        self.registers = tuple(sorted(registers, key=lambda r: r.offset))
        self._by_name = {}
        self._by_offset = {}
        for r in self.registers:
            if r.name in self._by_name:
                raise ValueError(f"register name {r.name} declared twice")
            if r.offset in self._by_offset:
                raise ValueError(f"{r.name} and {self._by_offset[r.offset].name} share offset "
                                 f"{r.offset:#x}")
            self._by_name[r.name] = r
            self._by_offset[r.offset] = r

    def __getitem__(self, name: str) -> Register:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no register {name!r}") from None

    def __iter__(self):
        return iter(self.registers)

    def __len__(self):
        return len(self.registers)

    def at(self, offset: int) -> Register | None:
        return self._by_offset.get(offset)

    @property
    def counters(self) -> list[str]:
        """Names of the 64-bit counters, in offset order."""
        out = []
        for r in self.registers:
            if r.counter is not None and r.counter not in out:
                out.append(r.counter)
        return out


def _cfg_array(cfg):
    return {"rows": cfg.rows, "cols": cfg.cols, "operand_bits": cfg.operand_bits,
            "acc_bits": cfg.acc_bits}


def _cfg_geometry(cfg):
    return {"max_width": cfg.max_width, "max_kernel": cfg.max_kernel,
            "requant_lanes": cfg.requant_lanes}


def _cfg_bus(cfg):
    return {"axi_data_bits": cfg.axi_data_bits, "axi_addr_bits": cfg.axi_addr_bits,
            "dsp_packing": int(cfg.dsp_packing)}


def clock_khz(cfg: HwConfig) -> int:
    return round(cfg.clock_mhz * 1000)


_ci = CMD_INDEX_BITS

REGMAP = RegisterMap([
    Register("ID", 0x000, Access.RO, "Identifies the accelerator", _word("ID_MAGIC", "magic"),
             const=lambda cfg: {"magic": ID_MAGIC}, const_doc=f"{ID_MAGIC:#010x} (\"ZYNN\")"),
    Register("VERSION", 0x004, Access.RO, "Register-map version", (
        _f("minor", 0, 16, "compatible additions"),
        _f("major", 16, 16, "incompatible changes")),
        const=lambda cfg: {"major": VERSION[0], "minor": VERSION[1]},
        const_doc=f"{VERSION[0]}.{VERSION[1]}"),
    Register("CONTROL", 0x008, Access.WO, "Starts and resets the command processor", (
        _f("start", 0, 1, "run CMD_COUNT commands from CMD_BASE (ignored while busy); clears "
                          "done, error and the counters"),
        _f("soft_reset", 1, 1, "abort: every unit returns to idle, outstanding AXI transactions "
                               "complete; clears done and error"))),
    Register("STATUS", 0x00C, Access.RO, "State of the command processor", (
        _f("busy", 0, 1, "running, or completing AXI transactions after an abort"),
        _f("done", 1, 1, "the last run reached END with every unit idle"),
        _f("error", 2, 1, "the last run stopped with an error"),
        _f("cause", 4, 8, "zynqnn.hw.isa.ErrorCause of the error"),
        _f("cmd_index", 12, _ci, "index of the failing command; while running, the command "
                                 "being dispatched; after done, the END"))),
    Register("IRQ_ENABLE", 0x010, Access.RW, "Interrupt sources routed to irq", (
        _f("done", 0, 1, "interrupt on done"),
        _f("error", 1, 1, "interrupt on error"))),
    Register("IRQ_STATUS", 0x014, Access.W1C, "Sticky interrupt events; irq = "
             "|(IRQ_STATUS & IRQ_ENABLE)", (
        _f("done", 0, 1, "a run finished"),
        _f("error", 1, 1, "a run stopped with an error"))),
    Register("CMD_BASE", 0x018, Access.RW, "DDR address of command 0 (multiple of the AXI beat)",
             _word("byte address", "addr")),
    Register("CMD_COUNT", 0x01C, Access.RW, "Commands in the program, END included",
             (_f("count", 0, _ci, "number of commands"),)),
    Register("WINDOW_BASE", 0x020, Access.RW, "First byte of the DDR window the accelerator may "
             "access", _word("byte address", "addr")),
    Register("WINDOW_LIMIT", 0x024, Access.RW, "End (exclusive) of the DDR window; reset 0 = "
             "empty window", _word("byte address", "addr")),
    Register("WATCHDOG", 0x028, Access.RW, "Cycles a bus wait (or a stretch without progress) "
             "may last before the WATCHDOG error; 0 = the build's default",
             _word("cycles", "cycles")),
    Register("CFG_ARRAY", 0x040, Access.RO, "Config readback: PE array", (
        _f("rows", 0, 8, "HwConfig.rows"),
        _f("cols", 8, 8, "HwConfig.cols"),
        _f("operand_bits", 16, 8, "HwConfig.operand_bits"),
        _f("acc_bits", 24, 8, "HwConfig.acc_bits")),
        const=_cfg_array, const_doc="HwConfig"),
    Register("CFG_IBUF_DEPTH", 0x044, Access.RO, "Config readback: IBUF words per bank",
             _word("HwConfig.act_buffer_depth", "depth"),
             const=lambda cfg: {"depth": cfg.act_buffer_depth}, const_doc="HwConfig"),
    Register("CFG_WBUF_DEPTH", 0x048, Access.RO, "Config readback: WBUF words per bank",
             _word("HwConfig.weight_buffer_depth", "depth"),
             const=lambda cfg: {"depth": cfg.weight_buffer_depth}, const_doc="HwConfig"),
    Register("CFG_PBUF_DEPTH", 0x04C, Access.RO, "Config readback: PBUF words per bank",
             _word("HwConfig.param_buffer_depth", "depth"),
             const=lambda cfg: {"depth": cfg.param_buffer_depth}, const_doc="HwConfig"),
    Register("CFG_OBUF_DEPTH", 0x050, Access.RO, "Config readback: OBUF words per bank",
             _word("HwConfig.acc_buffer_depth", "depth"),
             const=lambda cfg: {"depth": cfg.acc_buffer_depth}, const_doc="HwConfig"),
    Register("CFG_GEOMETRY", 0x054, Access.RO, "Config readback: window and post-processing", (
        _f("max_width", 0, 16, "HwConfig.max_width"),
        _f("max_kernel", 16, 8, "HwConfig.max_kernel"),
        _f("requant_lanes", 24, 8, "HwConfig.requant_lanes")),
        const=_cfg_geometry, const_doc="HwConfig"),
    Register("CFG_BUS", 0x058, Access.RO, "Config readback: DDR port", (
        _f("axi_data_bits", 0, 8, "HwConfig.axi_data_bits"),
        _f("axi_addr_bits", 8, 8, "HwConfig.axi_addr_bits"),
        _f("dsp_packing", 16, 1, "HwConfig.dsp_packing")),
        const=_cfg_bus, const_doc="HwConfig"),
    Register("CFG_CLOCK_KHZ", 0x05C, Access.RO, "Config readback: target clock in kHz",
             _word("round(HwConfig.clock_mhz * 1000)", "khz"),
             const=lambda cfg: {"khz": clock_khz(cfg)}, const_doc="HwConfig"),
    Register("CFG_HASH", 0x060, Access.RO, "Config readback: HwConfig.config_hash32",
             _word("digest of every HwConfig parameter", "hash"),
             const=lambda cfg: {"hash": cfg.config_hash32}, const_doc="HwConfig"),
    *_counter("PERF_CYCLES_BUSY", 0x080, "Cycles from start to done or error"),
    *_counter("PERF_CYCLES_COMPUTE", 0x088, "Cycles the compute engine reported busy"),
    *_counter("PERF_DMA_RD_BYTES", 0x090, "Bytes read over m_axi (commands included)"),
    *_counter("PERF_DMA_WR_BYTES", 0x098, "Bytes written over m_axi (whole beats)"),
    *_counter("PERF_DMA_STALL", 0x0A0, "Cycles m_axi had a valid without ready or waited for "
              "read data"),
])

assert REGMAP["STATUS"].field("cause").width == isa.ErrorCause.as_shape().width


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown() -> str:
    """The register documentation (``docs/registers.md``)."""
    lines = [
        "# zynqnn registers",
        "",
        "Generated from `zynqnn.hw.regs` by `python -m zynqnn.hw.regs --write docs/registers.md`; "
        "do not edit by hand.",
        "",
        f"32-bit registers on the AXI4-Lite port `s_axi` ({platform.REG_SPACE_BYTES:#x} bytes, "
        f"base {platform.BASE_ADDRESS:#010x} under PYNQ). Offsets no register occupies answer "
        "SLVERR. Access: RW read/write; RO read-only (writes ignored); W1C write 1 to clear; WO "
        "write-only, self-clearing (reads 0). A 64-bit counter is a `_LO`/`_HI` pair: reading "
        "`_LO` latches `_HI`. Counters clear on start.",
        "",
        f"The WATCHDOG default is {WATCHDOG_DEFAULT_US} us at the build's clock "
        "(`watchdog_default_cycles(cfg)`).",
        "",
        "| offset | register | access | reset | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in REGMAP:
        reset = r.const_doc if r.const is not None else f"{r.reset:#x}"
        lines.append(f"| {r.offset:#05x} | {r.name} | {r.access.value} | {reset} | {_md(r.doc)} |")
    lines += ["", "## Fields", ""]
    for r in REGMAP:
        if len(r.fields) == 1 and r.fields[0].width == 32:
            continue
        lines += [f"### {r.name} ({r.offset:#05x})", "", "| bits | field | description |",
                  "| --- | --- | --- |"]
        for f in r.fields:
            lines.append(f"| {f.bits()} | {f.name} | {_md(f.doc)} |")
        lines.append("")
    lines += ["## Error causes (STATUS.cause)", "", "| value | cause |", "| --- | --- |"]
    for c in isa.ErrorCause:
        lines.append(f"| {int(c)} | {c.name} |")
    lines += [
        "",
        "STATUS.cmd_index is the index of the command the cause belongs to; a command refused at "
        "dispatch moves nothing. Two causes refuse a command for its successor, which could not "
        "be fetched: EMPTY_PROGRAM at index `CMD_COUNT - 1` (the last command is not END; it is "
        "refused, not run) and DDR_WINDOW at the index of the first command outside the window "
        "(the command before it is refused, not run). EMPTY_PROGRAM at index 0 with CMD_COUNT 0. "
        "The order of the checks: docs/soc.md.",
    ]
    return "\n".join(lines) + "\n"


def _c_ident(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).upper()


def render_c_header(cfg: HwConfig | None = None) -> str:
    """A C99 header of the register map: offsets, field masks and shifts, enum values.

    With ``cfg``, the values the build's constant registers (ID, VERSION, config readback) read
    are added as ``ZYNQNN_<REG>_VALUE``, so a bare-metal driver can check it talks to that build.
    """
    guard = "ZYNQNN_REGS_H"
    lines = [
        "/* zynqnn register map. Generated from zynqnn.hw.regs by",
        " * `python -m zynqnn.hw.regs --write-header PATH`; do not edit by hand. */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <stdint.h>",
        "",
        f"#define ZYNQNN_BASE_ADDRESS 0x{platform.BASE_ADDRESS:08X}u /* PYNQ default */",
        f"#define ZYNQNN_REG_SPACE_BYTES 0x{platform.REG_SPACE_BYTES:X}u",
        f"#define ZYNQNN_ID_MAGIC 0x{ID_MAGIC:08X}u /* \"ZYNN\" */",
        f"#define ZYNQNN_REGMAP_VERSION_MAJOR {VERSION[0]}u",
        f"#define ZYNQNN_REGMAP_VERSION_MINOR {VERSION[1]}u",
        f"#define ZYNQNN_CMD_INDEX_BITS {CMD_INDEX_BITS}u",
        f"#define ZYNQNN_WATCHDOG_DEFAULT_US {WATCHDOG_DEFAULT_US}u",
        "",
        "/* Register byte offsets inside the AXI4-Lite window (ZYNQNN_REG_<name>). */",
    ]
    for r in REGMAP:
        lines.append(f"#define ZYNQNN_REG_{_c_ident(r.name)} 0x{r.offset:03X}u "
                     f"/* {r.access.value}: {r.doc.replace('*/', '* /')} */")
    lines += ["", "/* Fields ZYNQNN_<register>_<field>: _SHIFT the lsb, _MASK the bits in place, "
                  "_WIDTH. */"]
    for r in REGMAP:
        if len(r.fields) == 1 and r.fields[0].width == 32:
            continue
        for f in r.fields:
            base = f"ZYNQNN_{_c_ident(r.name)}_{_c_ident(f.name)}"
            lines += [f"#define {base}_SHIFT {f.lsb}u",
                      f"#define {base}_WIDTH {f.width}u",
                      f"#define {base}_MASK 0x{f.mask:08X}u"]
    lines += ["", "/* STATUS.cause: zynqnn.hw.isa.ErrorCause. */"]
    for c in isa.ErrorCause:
        lines.append(f"#define ZYNQNN_ERROR_CAUSE_{c.name} {int(c)}u")
    if cfg is not None:
        lines += ["", f"/* Constant registers of hardware config {cfg.name} ({cfg.config_id}). */",
                  f"#define ZYNQNN_CONFIG_ID \"{cfg.config_id}\"",
                  f"#define ZYNQNN_CLOCK_MHZ {float(cfg.clock_mhz)!r}"]
        for r in REGMAP:
            if r.const is not None:
                lines.append(f"#define ZYNQNN_{_c_ident(r.name)}_VALUE 0x{r.const_value(cfg):08X}u")
    lines += [
        "",
        "/* The value of field F of register R in word w, and a word with F set to v. */",
        "#define ZYNQNN_GET(R, F, w) (((uint32_t)(w) & ZYNQNN_##R##_##F##_MASK) >> "
        "ZYNQNN_##R##_##F##_SHIFT)",
        "#define ZYNQNN_SET(R, F, v) (((uint32_t)(v) << ZYNQNN_##R##_##F##_SHIFT) & "
        "ZYNQNN_##R##_##F##_MASK)",
        "",
        f"#endif /* {guard} */",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Print or write the register documentation.")
    ap.add_argument("--write", metavar="PATH", help="write the Markdown table to PATH")
    ap.add_argument("--write-header", metavar="PATH",
                    help="write the C header of the register map to PATH")
    ap.add_argument("--config", metavar="PRESET",
                    help="with --write-header: add the constant registers' values of this "
                         "hardware config preset")
    args = ap.parse_args(argv)
    if args.write_header:
        cfg = None
        if args.config:
            from zynqnn.hw.config import get_config

            cfg = get_config(args.config)
        path = Path(args.write_header)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_c_header(cfg))
        if not args.write:
            return 0
    text = render_markdown()
    if args.write:
        Path(args.write).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
