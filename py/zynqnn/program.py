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
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from zynqnn import isa
from zynqnn.config import HwConfig, get_config

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
        lines = [f"performance model: config {self.config} ({self.config_id}), "
                 f"{self.clock_mhz:g} MHz, DDR {self.ddr_gbps:g} GB/s", head, "-" * len(head)]
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
    from zynqnn.compiler.layers import HwConcat
    from zynqnn.compiler.perf import useful_macs

    out = []
    for la in net.layers:
        out.append({"name": la.name, "kind": _kind(la),
                    "macs": int(useful_macs(la)),
                    "inputs": [t.name for t in getattr(la, "inputs", [])],
                    "output": la.output.name,
                    "shape": list(la.output.shape), "commands": not isinstance(la, HwConcat)})
    return out


def _kind(la) -> str:
    """A short description of a hardware layer for the report."""
    from zynqnn.compiler.layers import (
        HwConcat,
        HwConv,
        HwGlobalSumPool,
        HwMaxPool,
        HwUpsample2x,
    )

    stride = f" /{la.stride}" if getattr(la, "stride", 1) > 1 else ""
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
            self.last_cycles = None
        elif backend == "pynq":
            outs, self.last_cycles = self._run_pynq(samples, **options)
        else:
            outs, self.last_cycles = self._run_sim(samples, backend, **options)
        result = []
        for k, info in enumerate(self.boundary.outputs):
            shape = tuple(info.shape)
            if not outs:
                result.append(np.zeros((0,) + shape, dtype=np.int64))
            else:
                result.append(np.stack([np.asarray(o[k], dtype=np.int64).reshape(shape)
                                        for o in outs]))
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
            result = drv.run(DeviceBuffer(buf.address + prog.cmd_addr,
                                          prog.command_count * isa.COMMAND_BYTES),
                             count=prog.command_count, timeout_s=timeout_s)
            codes = []
            for t in prog.net.outputs:
                raw = np.frombuffer(drv.read_mem(buf, _tensor_bytes(cfg, t),
                                                 prog.tensor_addr(t)), np.uint8)
                codes.append(act_codes(cfg, raw, t.shape, t.signed))
            outs.append(codes)
            cycles.append(int(result.cycles))
        return outs, cycles

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
    from zynqnn.compiler import compile_network
    from zynqnn.compiler.lower import lower_graph

    cfg = get_config(config)
    net, boundary = lower_graph(graph, cfg)
    prog = compile_network(net, cfg)
    return CompiledModel(prog, boundary, _layer_table(net), getattr(graph, "name", "graph"))


def load(path, config: HwConfig | str | None = None) -> CompiledModel:
    """Read a compiled model written by :meth:`CompiledModel.save`. With ``config``, the file
    must have been compiled for that hardware configuration. Raises :class:`ProgramFileError`
    (one line: the file and the problem) for a missing, damaged, truncated, modified or
    foreign file, another format version, or another config."""
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
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError):
            raise bad("damaged (the header cannot be read)") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise bad("not a zynqnn program (wrong format name)")
        version = header.get("version")
        if version not in READ_VERSIONS:
            raise bad(f"program format version {version!r}; this zynqnn reads versions "
                      f"{', '.join(map(str, READ_VERSIONS))} (recompile the model)")
        try:
            payload = {n: z.read(n) for n in z.namelist() if n != HEADER}
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
            raise bad("damaged (a member fails its CRC or is truncated)") from None
    if _digest(payload) != header.get("sha256"):
        raise bad("checksum mismatch: the file is damaged or was modified")
    try:
        doc = json.loads(payload["program.json"])
        cfg = HwConfig.from_dict(doc["cfg"])
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
    if cfg.config_id != header.get("config_id"):
        raise bad(f"damaged (config {cfg.config_id} in program.json, {header.get('config_id')} "
                  "in the header)")
    if config is not None:
        want = get_config(config)
        if want.config_id != cfg.config_id:
            raise bad(f"compiled for config {cfg.name} ({cfg.config_id}), not {want.name} "
                      f"({want.config_id}); recompile with --config {want.name}")
    image = dict(zip(doc["segments"], segs, strict=True))
    n = doc["command_count"] * isa.COMMAND_BYTES
    cmds = image[doc["cmd_addr"]][:n] if doc["cmd_addr"] in image else b""
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
