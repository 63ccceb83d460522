"""Compiled models: ``zynqnn.compile(graph)`` -> :class:`CompiledModel`, run, save, load, report.

A compiled model is a command stream with its DDR image (:class:`zynqnn.compiler.Program`)
plus the graph's float boundary (:class:`zynqnn.compiler.lower.BoundaryInfo`)::

    model = zynqnn.compile(graph, "pynq_z2")
    y = model.run(x)                          # float32 NCHW in, float out, == graph.run(x)
                                              # (a tuple of arrays for several outputs)
    y = model.run(x, backend="verilator")     # the same commands on the RTL in simulation
    codes = model.run_int(graph.quantize_input(x))
    model.save("digits.zqp"); model = zynqnn.load("digits.zqp", config="pynq_z2")
    print(model.report(clock_mhz=142.857).table())

Backends: ``"golden"`` executes the command stream on the command-level model
(:mod:`zynqnn.machine`), not the graph; ``"verilator"`` / ``"icarus"`` on ``zynqnn_top`` in
simulation (:func:`zynqnn.sim.program_runner.run_program`); ``"pynq"`` on the board through
:class:`zynqnn.driver.Driver` (:func:`zynqnn.pynq_overlay.open_accelerator`). Each runs the
samples of a batch one after the other; the RTL backends record each run's busy cycles in
:attr:`CompiledModel.last_cycles`.

Several outputs (e.g. YOLOv3-tiny's two detection heads): ``run`` and ``run_int`` return what
``graph.run`` / ``graph.run_int`` return, one array for one output and a tuple of arrays, one
per graph output in graph order, for several.

The file (``save``/``load``) is a zip archive: ``zynqnn-program.json`` (format name, format
version, config id and name, the SHA-256 of the payload) and the payload: ``program.json``
(addresses, the boundary, per-command layer labels, the layer table) and one ``segment-<i>.bin``
per DDR image segment (commands, constants). No pickle: loading runs no code from the file.
The SHA-256 detects damage; it is not authentication (anyone can recompute it), so ``load``
then type- and bound-checks every field (:func:`_check_program`) before anything can run.
Format version 2 lists every output (``program.json`` ``outputs``: name, shape, zero point,
signedness, address of each; the boundary's ``outputs``); version 1 (one ``output``, written
before networks could have several) is still read. Version 3 adds the boundary's
``input_patches`` (the host gathers the first convolution's windows, see
:meth:`~zynqnn.compiler.lower.BoundaryInfo.to_network`); a reader of version 2 would feed such a
program the wrong input, so version 3 files are refused there.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from zynqnn.hw import isa
from zynqnn.hw.config import HwConfig, get_config

__all__ = [
    "BACKENDS",
    "FORMAT",
    "READ_VERSIONS",
    "VERSION",
    "BackendError",
    "CompiledModel",
    "ModelReport",
    "ProgramFileError",
    "compile",
    "load",
    "relocate",
]

#: Format name and version of the program file (the version written; READ_VERSIONS are read).
FORMAT = "zynqnn-program"
VERSION = 3
READ_VERSIONS = (1, 2, 3)
HEADER = "zynqnn-program.json"
BACKENDS = ("golden", "verilator", "icarus", "pynq")


class ProgramFileError(ValueError):
    """A program file cannot be used (message: the file and the problem, one line)."""


class BackendError(RuntimeError):
    """A backend is not available here or failed (message names the backend)."""


# -------------------------------------------------------------------------------------------------
# relocation


def relocate(commands: bytes, base: int) -> bytes:
    """The command stream with every LOAD/STORE DDR address moved up by ``base`` (programs are
    compiled for DDR address 0; a board buffer starts elsewhere)."""
    field_ = isa.LoadStore["ddr_addr"]
    off, width = field_.offset, field_.shape.width
    mask = ((1 << width) - 1) << off
    out = bytearray(commands)
    n = len(commands) // isa.COMMAND_BYTES
    for i in range(n):
        raw = commands[i * isa.COMMAND_BYTES:(i + 1) * isa.COMMAND_BYTES]
        if isa.decode_opcode(raw) not in (isa.Opcode.LOAD, isa.Opcode.STORE):
            continue
        bits = int.from_bytes(raw, "little")
        addr = ((bits & mask) >> off) + base
        if addr >= 1 << width:
            raise BackendError(f"command {i}: DDR address {addr:#x} beyond {width} bits")
        bits = (bits & ~mask) | (addr << off)
        out[i * isa.COMMAND_BYTES:(i + 1) * isa.COMMAND_BYTES] = bits.to_bytes(
            isa.COMMAND_BYTES, "little")
    return bytes(out)


# -------------------------------------------------------------------------------------------------
# the performance report


@dataclass
class ModelReport:
    """Per-layer figures of the performance model and the totals (see :meth:`table`).

    ``rows``: one dict per layer with commands: ``name``, ``kind``, ``cycles`` (first command's
    start to last one's end; neighbouring layers overlap), ``mac``/``post``/``load``/``store``
    (busy cycles of each unit), ``macs`` (useful multiply-accumulates), ``utilization`` (useful
    MACs / (cycles x rows x cols)) and ``bound`` (``compute``, ``post`` or ``memory``).
    ``total``: the same for the whole run plus ``latency_ms`` and ``fps``.
    """

    config: str
    config_id: str
    clock_mhz: float
    ddr_gbps: float
    rows: list = field(default_factory=list)
    total: dict = field(default_factory=dict)

    @property
    def latency_ms(self) -> float:
        return self.total["latency_ms"]

    @property
    def fps(self) -> float:
        return self.total["fps"]

    def table(self) -> str:
        head = (f"{'layer':24s} {'kind':16s} {'cycles':>10s} {'MACs':>12s} {'util':>7s} "
                f"{'bound':>8s}")
        from zynqnn.compiler.perf import BOARD_LATENCY  # the DDR model report() simulates

        lines = [f"performance model: config {self.config} ({self.config_id}), "
                 f"{self.clock_mhz:g} MHz, DDR {self.ddr_gbps:g} GB/s, {BOARD_LATENCY}-cycle "
                 "burst latency", head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['name'][:24]:24s} {r['kind'][:16]:16s} {r['cycles']:>10,d} "
                         f"{r['macs']:>12,d} {100 * r['utilization']:6.1f}% {r['bound']:>8s}")
        t = self.total
        lines += ["-" * len(head),
                  f"{'total':24s} {'':16s} {t['cycles']:>10,d} {t['macs']:>12,d} "
                  f"{100 * t['utilization']:6.1f}% {t['bound']:>8s}",
                  f"estimated latency {t['latency_ms']:.4f} ms per frame, "
                  f"{t['fps']:,.1f} frames/s (one frame at a time)"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# -------------------------------------------------------------------------------------------------
# the compiled model


def _layer_table(net) -> list[dict]:
    from zynqnn.compiler.layers import HwConcat, HwView
    from zynqnn.compiler.perf import useful_macs

    out = []
    for la in net.layers:
        out.append({"name": la.name, "kind": _kind(la),
                    "macs": int(useful_macs(la)),
                    "inputs": [t.name for t in getattr(la, "inputs", [])],
                    "output": la.output.name,
                    "shape": list(la.output.shape),
                    "commands": not isinstance(la, (HwConcat, HwView))})
    return out


def _kind(la) -> str:
    """A short description of a hardware layer for the report."""
    from zynqnn.compiler.layers import (
        HwConcat,
        HwConv,
        HwConvTranspose,
        HwGlobalSumPool,
        HwLut,
        HwMaxPool,
        HwUpsample2x,
    )

    stride = f" /{la.stride}" if getattr(la, "stride", 1) > 1 else ""
    if isinstance(la, HwConvTranspose):
        kh, kw = la.weights.shape[2:]
        return f"convT {kh}x{kw}{stride}"
    if isinstance(la, HwConv):
        return f"conv {la.kernel}x{la.kernel}{stride}"
    if isinstance(la, HwMaxPool):
        return f"maxpool {la.kernel}x{la.kernel}{stride}"
    if isinstance(la, HwGlobalSumPool):
        return "global pool"
    if isinstance(la, HwConcat):
        return "concat"
    if isinstance(la, HwUpsample2x):
        return "upsample x2"
    if isinstance(la, HwLut):
        return f"lut {la.function}"
    return type(la).__name__


def _loaded_program_class():
    from zynqnn.compiler import Program

    class LoadedProgram(Program):
        """A :class:`Program` read from a file: no layers, tensor addresses by name."""

        def tensor_addr(self, t):
            return self.tensor_addrs[t.name]

    return LoadedProgram


class CompiledModel:
    """A graph compiled for one hardware configuration (see the module docstring)."""

    def __init__(self, program, boundary, layers: list[dict], name: str = "graph"):
        self.program = program
        self.boundary = boundary
        self.layers = layers
        self.name = name
        #: Busy cycles of each sample of the last RTL/board run (None after golden runs).
        self.last_cycles: list[int] | None = None
        #: What produced :attr:`last_cycles`: ``"RTL verilator, lean DDR model"``, ``"RTL icarus,
        #: AXI RAM model"``, ``"board"`` (None after golden runs).
        self.last_memory: str | None = None
        self._pynq = None

    @property
    def cfg(self) -> HwConfig:
        return self.program.cfg

    @property
    def config_id(self) -> str:
        return self.cfg.config_id

    def __repr__(self) -> str:
        b = self.boundary
        outs = (f"output {list(b.output_shape)}" if not b.multi else
                "outputs " + ", ".join(str(list(o.shape)) for o in b.outputs))
        return (f"<zynqnn.CompiledModel {self.name!r} for {self.cfg.name} ({self.config_id}): "
                f"{len(self.layers)} layers, {self.program.command_count} commands, "
                f"input {list(b.input_shape)}, {outs}>")

    # -- running -----------------------------------------------------------------------------
    def run(self, x, backend: str = "golden", **options):
        """Float32 ``(N, C, H, W)`` -> the graph's float output ``(N, ...)``, exactly as
        ``graph.run(x)`` (a tuple of arrays, one per output, when the graph has several);
        computed by ``backend`` (options: see :meth:`run_int`)."""
        codes = self.boundary.quantize(x)
        outs = self._run_codes(self.boundary.check_codes(codes), backend, options)
        return self._result(self.boundary.dequantize_all(outs))

    def run_int(self, codes, backend: str = "golden", **options):
        """Input codes ``(N, C, H, W)`` -> output codes ``(N, ...)`` (int64), as
        ``graph.run_int`` (a tuple of arrays, one per output, when the graph has several).

        ``backend``: ``golden`` (command-level model), ``verilator``/``icarus`` (RTL simulation;
        options go to :func:`zynqnn.sim.program_runner.run_program`, e.g. ``backpressure``),
        ``pynq`` (options ``bitfile`` (default ``$ZYNQNN_BITFILE`` or
        ``build/<config id>/zynqnn_<config id>.bit``), ``driver`` (an open
        :class:`zynqnn.driver.Driver`), ``timeout_s``).
        """
        return self._result(self._run_codes(self.boundary.check_codes(codes), backend, options))

    @staticmethod
    def _result(outs: list):
        """``graph.run``'s convention: one array for one output, a tuple for several."""
        return outs[0] if len(outs) == 1 else tuple(outs)

    def _run_codes(self, c: np.ndarray, backend: str, options: dict) -> list:
        """Checked input codes -> a list of ``(N, *shape)`` int64 code arrays, one per output."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        c = self.boundary.to_network(c)
        samples = [s.reshape(self.program.net.input.shape) for s in c]
        if backend == "golden":
            if options:
                raise ValueError(f"the golden backend takes no options ({', '.join(options)})")
            outs = [self.program.run_golden_all(s) for s in samples]
            self.last_cycles = self.last_memory = None
        elif backend == "pynq":
            outs, self.last_cycles = self._run_pynq(samples, **options)
            self.last_memory = "board"
        else:
            outs, self.last_cycles = self._run_sim(samples, backend, **options)
        result = []
        for k, info in enumerate(self.boundary.outputs):
            shape = tuple(info.shape)
            if not outs:
                result.append(np.zeros((0,) + shape, dtype=np.int64))
            else:   # the graph's values out of the hardware tensor (OutputInfo.gather)
                result.append(np.stack([info.gather(o[k]) for o in outs]))
        return result

    def _run_sim(self, samples, sim, **options):
        """Per sample a list of the output codes (one per ``net.outputs``), and the cycles."""
        try:
            from zynqnn.sim import program_runner
        except ModuleNotFoundError as e:
            if e.name in ("zynqnn.sim.program_runner", "zynqnn.sim"):
                raise BackendError(f"backend {sim!r}: zynqnn.sim.program_runner is not part of "
                                   "this installation (the RTL simulation runner)") from None
            raise BackendError(f"backend {sim!r} needs the Python package {e.name!r} "
                               "(run `make setup`)") from None
        label = getattr(program_runner, "memory_model", None)
        self.last_memory = f"RTL {sim}" + (", " + label(
            options.get("fast", False), options.get("ddr_latency", 0),
            options.get("backpressure", 0.0)) if label else "")
        n = len(self.program.net.outputs)
        try:
            if n == 1:
                outs, cycles = program_runner.run_program(self.program, samples, sim, **options)
                return [[o] for o in outs], cycles
            # Several outputs: run_program returns, per input, a list of the code arrays of
            # every output of program.net.outputs (see docs/compiler.md).
            outs, cycles = program_runner.run_program(self.program, samples, sim,
                                                      all_outputs=True, **options)
        except TypeError as e:
            if n > 1 and "all_outputs" in str(e):
                raise BackendError(f"backend {sim!r}: this zynqnn.sim.program_runner cannot "
                                   f"read the {n} outputs of a multi-output network "
                                   "(run_program has no all_outputs)") from None
            raise BackendError(f"backend {sim!r}: {e}") from None
        if any(not isinstance(o, (list, tuple)) or len(o) != n for o in outs):
            raise BackendError(f"backend {sim!r}: run_program(all_outputs=True) must return a "
                               f"list of {n} code arrays per input (one per output)")
        return [list(o) for o in outs], cycles

    def _open_pynq(self, bitfile):
        if bitfile is None:
            bitfile = os.environ.get("ZYNQNN_BITFILE") or str(
                Path("build") / self.config_id / f"zynqnn_{self.config_id}.bit")
        if not Path(bitfile).exists():
            raise BackendError(f"backend 'pynq': no bitstream {bitfile} (pass bitfile=, set "
                               "ZYNQNN_BITFILE, or copy build/<config id>/ to the board)")
        try:
            from zynqnn.pynq_overlay import open_accelerator
        except ModuleNotFoundError as e:
            raise BackendError(f"backend 'pynq' runs on the board: the Python package "
                               f"{e.name!r} is not installed here") from None
        return open_accelerator(str(bitfile), self.cfg)

    def _run_pynq(self, samples, bitfile=None, driver=None, timeout_s: float = 1.0):
        from zynqnn.compiler.layout import act_bytes, act_codes
        from zynqnn.driver import DeviceBuffer

        prog = self.program
        if self._pynq is None or (driver is not None and self._pynq[0] is not driver):
            drv = driver if driver is not None else self._open_pynq(bitfile)
            self.release()   # the previous driver's copy of the image
            buf = drv.alloc(prog.ddr_bytes)
            for addr, data in prog.image.items():
                data = bytes(data)
                if addr <= prog.cmd_addr < addr + len(data):
                    o = prog.cmd_addr - addr
                    n = prog.command_count * isa.COMMAND_BYTES
                    data = data[:o] + relocate(data[o:o + n], buf.address) + data[o + n:]
                drv.write_mem(buf, data, addr)
            self._pynq = (drv, buf)
        drv, buf = self._pynq
        cfg, tin = prog.cfg, prog.net.input
        guard = _scratch_guard(prog)
        outs, cycles = [], []
        for s in samples:
            if guard is not None:
                drv.write_mem(buf, guard[1], guard[0])
            drv.write_mem(buf, bytes(act_bytes(cfg, s, tin.zero_point)), prog.tensor_addr(tin))
            # the window is this program's own buffer, not every buffer of the driver
            result = drv.run(DeviceBuffer(buf.address + prog.cmd_addr,
                                          prog.command_count * isa.COMMAND_BYTES),
                             count=prog.command_count, window=(buf.address, buf.end),
                             timeout_s=timeout_s)
            codes = []
            for t in prog.net.outputs:
                raw = np.frombuffer(drv.read_mem(buf, _tensor_bytes(cfg, t),
                                                 prog.tensor_addr(t)), np.uint8)
                codes.append(act_codes(cfg, raw, t.shape, t.signed))
            outs.append(codes)
            cycles.append(int(result.cycles))
        return outs, cycles

    def release(self) -> None:
        """Free the board buffer holding this program's image (the ``pynq`` backend keeps it
        between runs, so the image is written once); the next ``pynq`` run writes it again."""
        if self._pynq is not None:
            drv, buf = self._pynq
            self._pynq = None
            if any(b is buf for b in drv.buffers):
                drv.free(buf)

    # -- performance -------------------------------------------------------------------------
    def report(self, clock_mhz: float = 150.0, ddr_gbps: float = 1.2) -> ModelReport:
        """Per-layer cycles, utilization and bound from the compiler's performance model
        (:func:`zynqnn.compiler.perf.simulate`) at ``clock_mhz`` with ``ddr_gbps`` of DDR
        bandwidth, plus the totals (latency in ms, frames/s)."""
        from zynqnn.compiler.perf import DmaModel, simulate

        if not ddr_gbps > 0:
            raise ValueError(f"ddr_gbps {ddr_gbps}: must be > 0")
        cfg = self.cfg.replace(clock_mhz=float(clock_mhz))
        prog = self.program
        rep = simulate(cfg, prog.commands, prog.labels, DmaModel(ddr_gbps=float(ddr_gbps)),
                       True, prog.scratch)
        R, C = cfg.rows, cfg.cols
        rows = []
        for la in self.layers:
            d = rep.layers.get(la["name"])
            if d is None:
                continue
            cyc = d["end"] - d["start"]
            rows.append(dict(name=la["name"], kind=la["kind"], cycles=int(cyc),
                             mac=int(d["mac"]), post=int(d["post"]), load=int(d["load"]),
                             store=int(d["store"]), macs=la["macs"],
                             utilization=la["macs"] / (cyc * R * C) if cyc else 0.0,
                             bound=max((d["mac"], "compute"), (d["post"], "post"),
                                       (max(d["load"], d["store"]), "memory"))[1]))
        macs = sum(la["macs"] for la in self.layers)
        ms = rep.cycles / (cfg.clock_mhz * 1e3)
        total = dict(cycles=int(rep.cycles), mac=rep.mac_cycles, post=rep.post_cycles,
                     load=rep.load_cycles, store=rep.store_cycles, macs=macs,
                     utilization=rep.utilization(cfg, macs), bound=rep.bound(),
                     latency_ms=ms, fps=1e3 / ms if ms else 0.0)
        return ModelReport(self.cfg.name, self.config_id, float(clock_mhz), float(ddr_gbps),
                           rows, total)

    # -- files -------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the compiled model to one file (see the module docstring); returns the path."""
        from zynqnn import __version__

        prog = self.program
        segments = sorted((int(a), bytes(d)) for a, d in prog.image.items())
        tin = prog.net.input
        doc = {
            "name": self.name,
            "cfg": prog.cfg.to_dict(),
            "cmd_addr": int(prog.cmd_addr),
            "command_count": int(prog.command_count),
            "ddr_bytes": int(prog.ddr_bytes),
            "segments": [a for a, _ in segments],
            "input": _tensor_doc(tin, prog.tensor_addr(tin)),
            "outputs": [_tensor_doc(t, prog.tensor_addr(t)) for t in prog.net.outputs],
            "labels": list(prog.labels),
            "scratch": [int(v) for v in prog.scratch],
            "stats": {k: int(v) for k, v in prog.stats.items()},
            "layers": self.layers,
            "boundary": self.boundary.to_dict(),
        }
        payload = {"program.json": json.dumps(doc, indent=1).encode()}
        for i, (_, data) in enumerate(segments):
            payload[f"segment-{i}.bin"] = data
        header = {"format": FORMAT, "version": VERSION, "config_id": prog.cfg.config_id,
                  "config_name": prog.cfg.name, "sha256": _digest(payload),
                  "zynqnn": __version__}
        path = Path(path)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr(HEADER, json.dumps(header, indent=1))
            for name, data in payload.items():
                z.writestr(name, data)
        return path


def _scratch_guard(prog):
    """(address, bytes) of the image around the scratch word, restored before every run.

    The dummy STOREs of barriers and split reductions write one OBUF word (``cols`` codes) at
    the scratch address, which may be wider than the scratch word the compiler reserved; the
    constants after it would then change from one run to the next when the image is written
    once (the golden backend rewrites the whole image per run)."""
    lo = int(prog.scratch[0])
    n = max(prog.cfg.cols * prog.cfg.operand_bits // 8, prog.cfg.axi_data_bits // 8)
    for addr, data in prog.image.items():
        if addr <= lo < addr + len(data):
            return lo, bytes(data[lo - addr:lo - addr + n])
    return None


def _tensor_doc(t, addr: int) -> dict:
    return {"name": t.name, "shape": list(t.shape), "zero_point": int(t.zero_point),
            "signed": bool(t.signed), "addr": int(addr)}


def _tensor_bytes(cfg: HwConfig, t) -> int:
    from zynqnn.compiler.layout import cblocks

    return cblocks(t.channels, cfg.rows) * t.height * t.width * cfg.rows * cfg.operand_bits // 8


def _digest(payload: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(payload):
        data = payload[name]
        h.update(name.encode() + b"\0" + len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


# -------------------------------------------------------------------------------------------------
# entry points


def compile(graph, config: HwConfig | str = "pynq_z2") -> CompiledModel:  # noqa: A001
    """Compile a quantized IR graph for ``config``: lowering (:func:`zynqnn.compiler.lower.
    lower_graph`), then the compiler (:func:`zynqnn.compiler.compile_network`). Raises
    :class:`zynqnn.compiler.CompileError` naming the node or layer the hardware cannot run."""
    from zynqnn import progress
    from zynqnn.compiler import compile_network
    from zynqnn.compiler.lower import lower_graph

    cfg = get_config(config)
    name = getattr(graph, "name", "graph")
    nodes = len(getattr(graph, "nodes", ()))
    with progress.step(f"compiling {name} ({nodes} nodes) for {cfg.name} ({cfg.config_id})"):
        net, boundary = lower_graph(graph, cfg)
        prog = compile_network(net, cfg)
    return CompiledModel(prog, boundary, _layer_table(net), name)


def load(path, config: HwConfig | str | None = None) -> CompiledModel:
    """Read a compiled model written by :meth:`CompiledModel.save`. With ``config``, the file
    must have been compiled for that hardware configuration. Raises :class:`ProgramFileError`
    (one line: the file and the problem) for a missing, damaged, truncated, modified or
    foreign file, another format version, or another config, and for any field of the file
    that is missing, of the wrong type or out of its bounds (checked after the checksum, which
    detects damage but does not vouch for the contents: nothing of a refused file runs)."""
    from zynqnn.compiler import Network, Tensor
    from zynqnn.compiler.lower import BoundaryInfo

    def bad(why: str) -> ProgramFileError:
        return ProgramFileError(f"{path}: {why}")

    try:
        z = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise bad("no such file") from None
    except (zipfile.BadZipFile, EOFError):
        raise bad("not a zynqnn program (not a zip archive, or truncated)") from None
    except OSError as e:
        raise bad(f"cannot read ({e.strerror or e})") from None
    with z:
        try:
            header = json.loads(z.read(HEADER))
        except KeyError:
            raise bad(f"not a zynqnn program (no {HEADER})") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RecursionError):
            raise bad("damaged (the header cannot be read)") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise bad("not a zynqnn program (wrong format name)")
        version = header.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or (
                version not in READ_VERSIONS):
            raise bad(f"program format version {version!r}; this zynqnn reads versions "
                      f"{', '.join(map(str, READ_VERSIONS))} (recompile the model)")
        _check_members(z, bad)   # from the zip's directory, before anything is decompressed
        try:
            payload = {n: z.read(n) for n in z.namelist() if n != HEADER}
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
            raise bad("damaged (a member fails its CRC or is truncated)") from None
    if _digest(payload) != header.get("sha256"):
        raise bad("checksum mismatch: the file is damaged or was modified")
    _check_header(header, bad)
    if "program.json" not in payload:
        raise bad("not a zynqnn program (no program.json)")
    try:
        doc = json.loads(payload["program.json"])
    except RecursionError:
        raise bad("program.json is not valid JSON (nested too deeply)") from None
    except ValueError as e:
        raise bad(f"program.json is not valid JSON ({str(e)[:80] or type(e).__name__})") from None
    cfg = _check_program(doc, header, payload, version, bad)
    try:
        segs = [payload[f"segment-{i}.bin"] for i in range(len(doc["segments"]))]
        boundary = BoundaryInfo.from_dict(doc["boundary"])
        tin = Tensor(**_tensor_args(doc["input"]))
        # version 1: one output ("output"); version 2: every output ("outputs")
        out_docs = [doc["output"]] if version == 1 else list(doc["outputs"])
        touts = [Tensor(**_tensor_args(d)) for d in out_docs]
        if len(touts) != len(boundary.outputs):
            raise ValueError(f"{len(touts)} output tensors, {len(boundary.outputs)} in the "
                             "boundary")
    except (KeyError, ValueError, TypeError) as e:
        raise bad(f"damaged (program.json: {e})") from None
    if config is not None:
        want = get_config(config)
        if want.config_id != cfg.config_id:
            raise bad(f"compiled for config {cfg.name} ({cfg.config_id}), not {want.name} "
                      f"({want.config_id}); recompile with --config {want.name}")
    image = dict(zip(doc["segments"], segs, strict=True))
    n = doc["command_count"] * isa.COMMAND_BYTES
    home = next(a for a, d in image.items() if a <= doc["cmd_addr"] < a + len(d))
    cmds = image[home][doc["cmd_addr"] - home:doc["cmd_addr"] - home + n]
    prog = _loaded_program_class()(
        cfg, Network(tin, [], outputs=touts), cmds, doc["cmd_addr"], image, {},
        doc["ddr_bytes"], [], doc.get("stats", {}))
    prog.labels = list(doc["labels"])
    prog.scratch = tuple(doc["scratch"])
    prog.tensor_addrs = {d["name"]: d["addr"] for d in (doc["input"], *out_docs)}
    if len(cmds) != n:
        raise bad("damaged (the command stream is incomplete)")
    return CompiledModel(prog, boundary, doc["layers"], doc.get("name", "graph"))


def _tensor_args(d: dict) -> dict:
    c, h, w = d["shape"]
    return {"name": d["name"], "channels": c, "height": h, "width": w,
            "zero_point": d["zero_point"], "signed": d["signed"]}


# -------------------------------------------------------------------------------------------------
# checking a program file's fields (after its checksum: the checksum detects damage, it does not
# vouch for the contents; anyone can write a file with a valid checksum)

#: The largest DDR image: its window limit must fit the 32-bit WINDOW_LIMIT register.
MAX_DDR_BYTES = (1 << 32) - 1
#: Buffer addresses are 16-bit fields of the commands.
MAX_BUFFER_DEPTH = 1 << 16
#: The largest ``program.json`` read (YOLOv3-tiny's, labels of every command included, is
#: well under a megabyte).
MAX_JSON_BYTES = 1 << 28


def _check_members(z: zipfile.ZipFile, bad) -> None:
    """The archive's members by their directory entries: only the header, ``program.json`` and
    ``segment-<i>.bin``, each once, and no more bytes than a DDR image can hold (a small file
    may declare gigabytes; nothing is decompressed before this check)."""
    seen, segment_bytes = set(), 0
    for info in z.infolist():
        n = info.filename
        if n in seen:
            raise bad(f"{n}: the archive holds this member twice")
        seen.add(n)
        if n == HEADER:
            continue
        is_segment = n.startswith("segment-") and n.endswith(".bin") and n[8:-4].isdigit() \
            and str(int(n[8:-4])) == n[8:-4]
        if n != "program.json" and not is_segment:
            raise bad(f"{n}: unknown member (a program file holds {HEADER}, program.json and "
                      "segment-<i>.bin)")
        limit = MAX_DDR_BYTES if is_segment else MAX_JSON_BYTES
        if info.file_size > limit:
            raise bad(f"{n}: {info.file_size} bytes, more than the {limit} a program file's "
                      f"{'segment' if is_segment else 'program.json'} may hold")
        segment_bytes += info.file_size if is_segment else 0
        if segment_bytes > MAX_DDR_BYTES:
            raise bad(f"{n}: the segments hold {segment_bytes} bytes, more than a 4 GB DDR "
                      "image")


def _type_name(v) -> str:
    if v is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(v), type(v).__name__)


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _what(v) -> str:
    """``v`` for a message: its JSON type and (short) value."""
    return "null" if v is None else f"{_type_name(v)} {_show(v)}"


class _Fields:
    """Typed reads of a program file's JSON; ``fail(where, why)`` names the member and the
    field (e.g. ``program.json: input.addr: -64 is negative``)."""

    def __init__(self, bad, member: str = "program.json"):
        self.bad, self.member = bad, member

    def fail(self, where: str, why: str) -> ProgramFileError:
        return self.bad(f"{self.member}: {where}: {why}")

    def get(self, d: dict, key: str, where: str):
        if not isinstance(d, dict):
            raise self.fail(where, f"must be an object, not {_type_name(d)}")
        if key not in d:
            raise self.fail(f"{where}.{key}" if where else key, "missing")
        return d[key]

    def int(self, v, where: str, lo: int | None = 0, hi: int | None = None) -> int:
        if not isinstance(v, int) or isinstance(v, bool):
            raise self.fail(where, f"must be an integer, not {_what(v)}")
        if lo is not None and v < lo:
            raise self.fail(where, f"{v} is negative" if lo == 0 else f"{v} is below {lo}")
        if hi is not None and v > hi:
            raise self.fail(where, f"{v} is above {hi}")
        return v

    def str(self, v, where: str) -> str:
        if not isinstance(v, str) or not v:
            raise self.fail(where, f"must be a non-empty string, not {_what(v)}")
        return v

    def bool(self, v, where: str) -> bool:
        if not isinstance(v, bool):
            raise self.fail(where, f"must be true or false, not {_what(v)}")
        return v

    def list(self, v, where: str, n: int | None = None) -> list:
        if not isinstance(v, list):
            raise self.fail(where, f"must be a list, not {_what(v)}")
        if n is not None and len(v) != n:
            raise self.fail(where, f"must have {n} entries, not {len(v)}")
        return v

    def scale(self, v, where: str, optional: bool, flavour: str | None = None) -> float | None:
        if v is None and optional:
            return None
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            raise self.fail(where, f"must be a number, not {_what(v)}")
        if v != v:
            raise self.fail(where, "is NaN (a scale must be finite and > 0)")
        if v in (float("inf"), float("-inf")):
            raise self.fail(where, f"is {v} (a scale must be finite and > 0)")
        if not v > 0:
            raise self.fail(where, f"{v} is not > 0")
        if flavour in ("pow2", "fixed16") and math.frexp(v)[0] != 0.5:
            raise self.fail(where, f"{v} is not a power of two ({flavour})")
        return float(v)

    def shape(self, v, where: str, n: int | None = None) -> tuple:
        dims = self.list(v, where, n)
        if not dims:
            raise self.fail(where, "is empty")
        return tuple(self.int(d, f"{where}[{i}]", lo=1, hi=1 << 24) for i, d in enumerate(dims))

    def choice(self, v, where: str, choices, optional: bool = False):
        if v is None and optional:
            return None
        if not isinstance(v, str) or v not in choices:
            raise self.fail(where, f"{_show(v)} is not one of {', '.join(choices)}")
        return v


def _check_header(header: dict, bad) -> None:
    f = _Fields(bad, HEADER)
    for key in ("config_id", "config_name"):
        f.str(f.get(header, key, ""), key)


def _check_program(doc, header: dict, payload: dict, version: int, bad) -> HwConfig:
    """Type- and bound-check every field of ``program.json`` against the config, the image and
    the command stream; raises :class:`ProgramFileError` naming the first bad field."""
    from zynqnn.compiler.layers import code_range
    from zynqnn.hw.regs import CMD_INDEX_BITS
    from zynqnn.machine import transfer_extent

    f = _Fields(bad)
    if not isinstance(doc, dict):
        raise bad(f"program.json: must be an object, not {_type_name(doc)}")
    if "name" in doc:
        f.str(doc["name"], "name")
    # -- the hardware configuration
    raw_cfg = f.get(doc, "cfg", "")
    if not isinstance(raw_cfg, dict):
        raise f.fail("cfg", f"must be an object, not {_type_name(raw_cfg)}")
    try:
        cfg = HwConfig.from_dict(raw_cfg)
    except (ValueError, TypeError) as e:
        raise f.fail("cfg", str(e).splitlines()[0] if str(e) else type(e).__name__) from None
    if cfg.config_id != header["config_id"]:
        raise bad(f"damaged (config {cfg.config_id} in program.json, {header['config_id']} in "
                  "the header)")
    if cfg.name != header["config_name"]:
        raise bad(f"damaged (config name {cfg.name!r} in program.json, "
                  f"{header['config_name']!r} in the header)")
    for name in ("act_buffer_depth", "weight_buffer_depth", "acc_buffer_depth",
                 "param_buffer_depth"):
        if getattr(cfg, name) > MAX_BUFFER_DEPTH:
            raise f.fail(f"cfg.{name}", f"{getattr(cfg, name)} words: beyond the "
                         f"{MAX_BUFFER_DEPTH} a command's 16-bit buffer address reaches")
    beat = cfg.axi_data_bits // 8

    def aligned(v, where):
        if v % beat:
            raise f.fail(where, f"{v:#x} is not a multiple of the {beat}-byte AXI beat")
        return v

    # -- the DDR image: segments inside [0, ddr_bytes), not overlapping
    ddr = f.int(f.get(doc, "ddr_bytes", ""), "ddr_bytes", lo=1, hi=MAX_DDR_BYTES)
    seg_addrs = f.list(f.get(doc, "segments", ""), "segments")
    segs = []
    for i, a in enumerate(seg_addrs):
        where = f"segments[{i}]"
        a = aligned(f.int(a, where), where)
        member = f"segment-{i}.bin"
        if member not in payload:
            raise f.fail(where, f"its data {member} is missing")
        end = a + len(payload[member])
        if end > ddr:
            raise f.fail(where, f"{member} ({len(payload[member])} bytes at {a:#x}) ends at "
                         f"{end:#x}, beyond ddr_bytes {ddr:#x}")
        segs.append((a, end, i))
    for member in payload:
        if member.startswith("segment-") and int(member[8:-4]) >= len(segs):
            raise f.fail("segments", f"{member} is in the archive but not in the image "
                         f"({len(segs)} segments)")
    for (a0, e0, i0), (a1, _, i1) in zip(sorted(segs), sorted(segs)[1:], strict=False):
        if a1 < e0:
            raise f.fail(f"segments[{i1}]", f"segment {i1} at {a1:#x} overlaps segment {i0} "
                         f"[{a0:#x}, {e0:#x})")
    # -- the command stream: whole commands inside one segment, known opcodes, END last,
    # every transfer inside the image and no STORE into the commands
    count = f.int(f.get(doc, "command_count", ""), "command_count", lo=1,
                  hi=(1 << CMD_INDEX_BITS) - 1)
    cmd_addr = aligned(f.int(f.get(doc, "cmd_addr", ""), "cmd_addr"), "cmd_addr")
    home = [s for s in segs if s[0] <= cmd_addr < s[1]]
    if not home:
        raise f.fail("cmd_addr", f"{cmd_addr:#x} is in no segment of the image")
    seg_a, seg_end, seg_i = home[0]
    if seg_a == cmd_addr and (seg_end - seg_a) % isa.COMMAND_BYTES:
        raise f.fail("command_count", f"the command stream segment-{seg_i}.bin has "
                     f"{seg_end - seg_a} bytes, not a whole number of {isa.COMMAND_BYTES}-byte "
                     "commands")
    n = count * isa.COMMAND_BYTES
    if cmd_addr + n > seg_end:
        raise f.fail("command_count", f"{count} commands ({n} bytes from {cmd_addr:#x}) run "
                     f"past the end of segment-{seg_i}.bin ({seg_end - cmd_addr} bytes)")
    cmds = payload[f"segment-{seg_i}.bin"][cmd_addr - seg_a:cmd_addr - seg_a + n]
    known = {op.value for op in isa.Opcode}
    # the LOAD/STORE fields by shifts and masks (amaranth's field access is ~100x slower)
    ls_fields = [(name, isa.LoadStore[name].offset, (1 << isa.LoadStore[name].width) - 1)
                 for name in ("buffer", "line_words", "lines", "ddr_addr", "ddr_stride")]
    for i in range(count):
        bits = int.from_bytes(cmds[i * isa.COMMAND_BYTES:(i + 1) * isa.COMMAND_BYTES], "little")
        op = bits & 0xF
        if op not in known:
            raise f.fail("commands", f"command {i}: undefined opcode {op}")
        if op in (isa.Opcode.LOAD, isa.Opcode.STORE):
            c = SimpleNamespace(**{k: (bits >> o) & m for k, o, m in ls_fields})
            ext = transfer_extent(cfg, c)
            what = isa.Opcode(op).name
            if ext is not None and ext[1] > ddr:
                raise f.fail("commands", f"command {i} ({what}): DDR bytes [{ext[0]:#x}, "
                             f"{ext[1]:#x}) beyond ddr_bytes {ddr:#x}")
            if ext is None and c.ddr_addr > ddr:   # no line moves, but no wild address either
                raise f.fail("commands", f"command {i} ({what}, no lines): DDR address "
                             f"{c.ddr_addr:#x} beyond ddr_bytes {ddr:#x}")
            if (ext is not None and op == isa.Opcode.STORE and int(c.line_words)
                    and ext[0] < cmd_addr + n and cmd_addr < ext[1]):
                raise f.fail("commands", f"command {i} (STORE) writes into the command stream")
    if bits & 0xF != isa.Opcode.END:
        raise f.fail("commands", f"the last command ({count - 1}) is not END")

    # -- tensors: typed, in the image, outside the segments (the input) and the commands
    def tensor(d, where, is_input):
        name = f.str(f.get(d, "name", where), f"{where}.name")
        shape = f.shape(f.get(d, "shape", where), f"{where}.shape", 3)
        if shape[2] > cfg.max_width:
            raise f.fail(f"{where}.shape", f"width {shape[2]} above max_width {cfg.max_width}")
        signed = f.bool(f.get(d, "signed", where), f"{where}.signed")
        lo, hi = code_range(signed, cfg.operand_bits)
        zp = f.int(f.get(d, "zero_point", where), f"{where}.zero_point", lo=lo, hi=hi)
        addr = aligned(f.int(f.get(d, "addr", where), f"{where}.addr"), f"{where}.addr")
        size = -(-shape[0] // cfg.rows) * shape[1] * shape[2] * cfg.rows * cfg.operand_bits // 8
        if addr + size > ddr:
            raise f.fail(f"{where}.addr", f"tensor {name!r} ({size} bytes at {addr:#x}) ends "
                         f"at {addr + size:#x}, beyond ddr_bytes {ddr:#x}")
        for a, e, i in segs:
            if (is_input or a == seg_a) and a < addr + size and addr < e:
                raise f.fail(f"{where}.addr", f"tensor {name!r} [{addr:#x}, "
                             f"{addr + size:#x}) overlaps segment-{i}.bin [{a:#x}, {e:#x})")
        return {"name": name, "shape": shape, "signed": signed, "zero_point": zp}

    tin = tensor(f.get(doc, "input", ""), "input", True)
    if version == 1:
        touts = [tensor(f.get(doc, "output", ""), "output", False)]
    else:
        outs = f.list(f.get(doc, "outputs", ""), "outputs")
        if not outs:
            raise f.fail("outputs", "is empty")
        touts = [tensor(d, f"outputs[{k}]", False) for k, d in enumerate(outs)]
    names = [t["name"] for t in (tin, *touts)]
    for k, t in enumerate(touts):
        if names.count(t["name"]) > 1:  # tensor addresses are looked up by name
            where = "output" if version == 1 else f"outputs[{k}]"
            raise f.fail(f"{where}.name", f"{t['name']!r} names another tensor too")

    # -- per-command labels, scratch bytes, statistics, the layer table
    labels = f.list(f.get(doc, "labels", ""), "labels")
    if len(labels) != count:
        raise f.fail("labels", f"{len(labels)} labels for {count} commands")
    for i, v in enumerate(labels):
        f.str(v, f"labels[{i}]")
    lo_s, hi_s = (f.int(v, f"scratch[{i}]", hi=ddr)
                  for i, v in enumerate(f.list(f.get(doc, "scratch", ""), "scratch", 2)))
    if lo_s > hi_s:
        raise f.fail("scratch", f"[{lo_s:#x}, {hi_s:#x}) is inverted")
    stats = doc.get("stats", {})
    if not isinstance(stats, dict):
        raise f.fail("stats", f"must be an object, not {_type_name(stats)}")
    for k, v in stats.items():
        f.int(v, f"stats.{k}")
    for k, la in enumerate(f.list(f.get(doc, "layers", ""), "layers")):
        where = f"layers[{k}]"
        f.str(f.get(la, "name", where), f"{where}.name")
        f.str(f.get(la, "kind", where), f"{where}.kind")
        f.int(f.get(la, "macs", where), f"{where}.macs")
        for j, v in enumerate(f.list(la.get("inputs", []), f"{where}.inputs")):
            f.str(v, f"{where}.inputs[{j}]")
        if "output" in la:
            f.str(la["output"], f"{where}.output")
        if "shape" in la:
            f.shape(la["shape"], f"{where}.shape")
        if "commands" in la:
            f.bool(la["commands"], f"{where}.commands")

    _check_boundary(f, f.get(doc, "boundary", ""), tin, touts, cfg)
    return cfg


def _check_boundary(f: _Fields, b, tin: dict, touts: list, cfg: HwConfig) -> None:
    """The float interface: known fields, finite scales, shapes that fit the tensors."""
    import dataclasses

    from zynqnn.compiler.layers import code_range
    from zynqnn.compiler.lower import BoundaryInfo
    from zynqnn.ir.core import DTYPES, FLAVOURS

    codes = [d for d in DTYPES if d != "float32"]
    if not isinstance(b, dict):
        raise f.fail("boundary", f"must be an object, not {_type_name(b)}")
    fields = {x.name: x for x in dataclasses.fields(BoundaryInfo)}
    for key in b:
        if key not in fields:
            raise f.fail(f"boundary.{key}", "unknown field")
    for name, x in fields.items():
        if x.default is dataclasses.MISSING and x.default_factory is dataclasses.MISSING:
            f.get(b, name, "boundary")
    w = "boundary."
    f.str(b["input_name"], w + "input_name")
    shape = f.shape(b["input_shape"], w + "input_shape", 3)
    f.choice(b["input_dtype"], w + "input_dtype", codes)
    lo, hi = code_range(tin["signed"], cfg.operand_bits)
    qmin = f.int(b["input_qmin"], w + "input_qmin", lo=lo, hi=hi)
    f.int(b["input_qmax"], w + "input_qmax", lo=qmin, hi=hi)
    flavour = f.choice(b["input_flavour"], w + "input_flavour", FLAVOURS, optional=True)
    f.scale(b["input_scale"], w + "input_scale", optional=flavour is None, flavour=flavour)
    f.int(b["input_zero_point"], w + "input_zero_point", lo=lo, hi=hi)
    for key in ("input_rounding", "input_overflow"):
        if b[key] is not None:
            f.str(b[key], w + key)
    patches = b.get("input_patches")
    if patches is not None:
        k, s, *pads = (f.int(v, f"{w}input_patches[{i}]", lo=1 if i < 2 else 0, hi=64)
                       for i, v in enumerate(f.list(patches, w + "input_patches", 6)))
        c, h, wd = shape
        t, bo, le, r = pads
        oh, ow = (h + t + bo - k) // s + 1, (wd + le + r - k) // s + 1
        net_shape = (k * k * c, oh, ow)
    else:
        net_shape = shape
    if net_shape != tin["shape"]:
        raise f.fail(w + "input_shape", f"{list(shape)} gives the network {list(net_shape)}, "
                     f"but input tensor {tin['name']!r} is {list(tin['shape'])}")
    outs = b.get("outputs") or []
    infos = [(w + "output_", {x: b["output_" + x] for x in
                              ("name", "shape", "dtype", "scale", "zero_point", "flavour")})]
    infos += [(f"{w}outputs[{k}].", o) for k, o in enumerate(f.list(outs, w + "outputs"))]
    for where, o in infos:
        if not isinstance(o, dict):
            raise f.fail(where.rstrip("."), f"must be an object, not {_type_name(o)}")
        for key in o:
            if key not in ("name", "shape", "dtype", "scale", "zero_point", "flavour") and (
                    not where.endswith("].") or key not in ("slots", "size")):
                raise f.fail(where + key, "unknown field")
        f.str(f.get(o, "name", where.rstrip(".")), where + "name")
        f.shape(f.get(o, "shape", where.rstrip(".")), where + "shape")
        f.choice(f.get(o, "dtype", where.rstrip(".")), where + "dtype", codes)
        fl = f.choice(f.get(o, "flavour", where.rstrip(".")), where + "flavour", FLAVOURS,
                      optional=True)
        f.scale(f.get(o, "scale", where.rstrip(".")), where + "scale", optional=fl is None,
                flavour=fl)
        f.int(f.get(o, "zero_point", where.rstrip(".")), where + "zero_point",
              lo=-(1 << 31), hi=(1 << 31) - 1)
    listed = [o for _, o in infos[1:]] or [infos[0][1]]
    if len(listed) != len(touts):
        raise f.fail(w + "outputs", f"{len(listed)} outputs, {len(touts)} output tensors")
    for k, (o, t) in enumerate(zip(listed, touts, strict=True)):
        values = int(np.prod(o["shape"]))
        size = int(np.prod(t["shape"]))
        if o.get("slots") is not None or o.get("size") is not None:
            # the graph's values are a part of the tensor (OutputInfo.gather)
            where = f"{w}outputs[{k}]."
            c, h, wd = t["shape"]
            slots = o.get("slots")
            if slots is not None:
                slots = [f.int(v, f"{where}slots[{j}]", lo=0, hi=c - 1)
                         for j, v in enumerate(f.list(slots, where + "slots"))]
            part = o.get("size")
            if part is not None:
                part = [f.int(v, f"{where}size[{j}]", lo=1, hi=d)
                        for j, (v, d) in enumerate(zip(f.list(part, where + "size", 2),
                                                       (h, wd), strict=True))]
            size = (c if slots is None else len(slots)) * int(np.prod(part or (h, wd)))
        if values != size:
            where = f"{w}outputs[{k}].shape" if outs else w + "output_shape"
            raise f.fail(where, f"{list(o['shape'])} ({values} values) does not fit output "
                         f"tensor {t['name']!r} {list(t['shape'])} ({size} codes)")
