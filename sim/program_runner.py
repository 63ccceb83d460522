"""Run a compiled program on the RTL top level for many inputs in one simulator process.

:func:`run_program` is the RTL backend of a compiled model: it builds ``zynqnn_top`` (SoC shell +
engine) for the program's hardware config once, starts one cocotb process
(:mod:`zynqnn.sim.tb_program`) that loads the program image into the simulated DDR once and then,
for each input, writes the input tensor, runs the commands through the real driver
(:class:`zynqnn.driver.Driver` over :class:`zynqnn.sim.backend.CocotbBackend`) and reads the
output tensor back::

    from zynqnn.sim.program_runner import run_program
    outputs, cycles = run_program(prog, [x0, x1, x2], "verilator")
    assert all(np.array_equal(y, prog.run_golden(x)) for x, y in zip([x0, x1, x2], outputs))

The hand-off between the two processes is plain data, no pickle: this process encodes each input
into its DDR bytes (the ``NHWC<R>`` layout of :func:`zynqnn.compiler.layout.act_bytes`) and
writes the image, the input bytes and a JSON description (addresses, sizes, timeouts) into a work
directory; the cocotb process writes the raw output bytes and the busy-cycle counts back there,
and this process decodes them with :func:`~zynqnn.compiler.layout.act_codes`.

The simulator build is the one of the system tests (``build/system/sim/zynqnn_top-<config
id>-<simulator>``, see ``tests/test_system.py``), so repeated calls do not rebuild; a lock file
beside it (``<build dir>.lock``) serializes the callers of this function that share it (not
other users of the directory: ``zynqnn.sim.runner.run`` takes no lock). The work directory is
``<build dir>/program-run/`` (kept after the call, for a look at a failed run).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from zynqnn.compiler.window import WavesWindow, layer_window

__all__ = ["ProgramRunError", "WavesWindow", "run_program", "build_dir", "build_lock",
           "layer_window", "memory_model"]

#: Names inside the work directory (shared with zynqnn.sim.tb_program).
JOB_JSON = "job.json"
JOB_NPZ = "job.npz"
RESULT_NPZ = "result.npz"
ERROR_JSON = "error.json"
PROGRESS = "progress"
#: ``"<simulated cycles> <command index being dispatched, -1 idle>"``, every POSITION_EVERY cycles.
POSITION = "position"
POSITION_EVERY = 2000
#: Environment variable naming the work directory for the cocotb process.
ENV_DIR = "ZYNQNN_PROGRAM_DIR"
TEST_MODULE = "zynqnn.sim.tb_program"


class ProgramRunError(RuntimeError):
    """The simulated accelerator failed on an input.

    Attributes: ``index`` (the input, ``None`` when the failure came before the first input),
    ``kind`` (``"accelerator"``: error status; ``"timeout"``; ``"bus"``: a register access
    failed or the AXI checker saw a protocol violation; ``"image"``: the run wrote into the
    program's commands or constants, which are loaded once as on the board; ``"simulation"``:
    anything else), ``cause`` (the error cause name for accelerator errors), ``log`` (the
    simulator's log file).
    """

    def __init__(self, message, index=None, kind="simulation", cause=None, log=None):
        super().__init__(message)
        self.index = index
        self.kind = kind
        self.cause = cause
        self.log = log


def build_lock(cfg, sim: str, build_root: Path | None = None):
    """A context holding :func:`run_program`'s lock on its build directory for ``cfg`` on
    ``sim``: other users of that directory (tests/test_system.py runs its own testbench on the
    same top level) hold it while they build and run, so one build serves both."""
    bdir = build_dir(cfg, sim, build_root)
    return _locked(bdir.parent / f"{bdir.name}.lock")


def build_dir(cfg, sim: str, build_root: Path | None = None) -> Path:
    """The simulator build directory :func:`run_program` uses for ``cfg`` on ``sim`` (named as
    :func:`zynqnn.sim.runner.run` names it under ``build_root``, default ``build/system``)."""
    from zynqnn.hw.platform import TOP_NAME
    from zynqnn.sim.runner import default_build_root

    root = default_build_root() / "system" if build_root is None else Path(build_root).resolve()
    return root / "sim" / f"{TOP_NAME}-{cfg.config_id}-{sim}"


def _encode_inputs(program, inputs) -> np.ndarray:
    """(N, bytes) uint8: every input's DDR bytes, after checking shape and code range."""
    from zynqnn.compiler.layers import code_range
    from zynqnn.compiler.layout import act_bytes

    cfg, t = program.cfg, program.net.input
    lo, hi = code_range(t.signed, cfg.operand_bits)
    rows = []
    for i, x in enumerate(inputs):
        a = np.asarray(x)
        if a.size != int(np.prod(t.shape)):
            raise ValueError(f"input {i}: shape {a.shape}, the network takes {t.shape}")
        if a.dtype.kind not in "iub" and not np.array_equal(a, np.round(a)):
            raise ValueError(f"input {i}: integer codes expected, got {a.dtype} values")
        a = a.astype(np.int64).reshape(t.shape)
        if a.size and (a.min() < lo or a.max() > hi):
            raise ValueError(f"input {i}: codes in [{a.min()}, {a.max()}], outside the "
                             f"input's range [{lo}, {hi}]")
        rows.append(np.asarray(act_bytes(cfg, a, t.zero_point), dtype=np.uint8))
    return np.stack(rows) if rows else np.zeros((0, 0), np.uint8)


def _output_nbytes(program, t) -> int:
    from zynqnn.compiler.layout import cblocks

    cfg = program.cfg
    return cblocks(t.channels, cfg.rows) * t.height * t.width * cfg.rows * cfg.operand_bits // 8


def _cycle_estimate(program) -> int:
    try:
        return int(program.perf(check=False).cycles)
    except Exception:  # the estimate only sizes the timeout
        return 0


def _write_job(work: Path, program, data: np.ndarray, backpressure: float, seed: int,
               fast: bool, ddr_latency: int = 0) -> None:
    image = sorted((int(a), bytes(b)) for a, b in program.image.items())
    arrays = {"inputs": data}
    for i, (_, blob) in enumerate(image):
        arrays[f"seg{i}"] = np.frombuffer(blob, dtype=np.uint8)
    np.savez(work / JOB_NPZ, **arrays)
    job = {
        "config_id": program.cfg.config_id,
        "segments": [a for a, _ in image],
        "cmd_addr": int(program.cmd_addr),
        "command_count": int(program.command_count),
        "ddr_bytes": int(program.ddr_bytes),
        "input_addr": int(program.tensor_addr(program.net.input)),
        "outputs": [[int(program.tensor_addr(t)), _output_nbytes(program, t)]
                    for t in program.net.outputs],
        "scratch": [int(v) for v in getattr(program, "scratch", (0, 0))],
        "count": int(len(data)),
        "cycle_estimate": _cycle_estimate(program),
        "backpressure": float(backpressure),
        "seed": int(seed),
        "fast": bool(fast),
        "ddr_latency": int(ddr_latency),
    }
    (work / JOB_JSON).write_text(json.dumps(job, indent=1))


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _DropSkipping(logging.Filter):
    def filter(self, record):
        return not str(record.msg).startswith("Skipping compilation")


@contextlib.contextmanager
def _quiet_runner_logs():
    """cocotb's runners warn "Skipping compilation of ..." on every up-to-date Icarus build,
    which Python's last-resort handler prints: drop that message while we run."""
    loggers = [logging.getLogger(n) for n in ("Icarus", "Verilator")]
    flt = _DropSkipping()
    for lg in loggers:
        lg.addFilter(flt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(flt)


def _read_progress(work: Path) -> int:
    return _read_progress_detail(work)[0]


def _read_progress_detail(work: Path) -> tuple[int, int | None]:
    """(inputs finished, their busy cycles so far or None) from the progress file: ``"<done>"``
    or ``"<done> <cycles>"``."""
    try:
        parts = (work / PROGRESS).read_text().split()
        return (int(parts[0]) if parts else 0,
                int(parts[1]) if len(parts) > 1 else None)
    except (OSError, ValueError):
        return 0, None


def memory_model(fast: bool = False, ddr_latency: int = 0, backpressure: float = 0.0) -> str:
    """What served the accelerator's DDR port in a run of :func:`run_program`, for labelling
    its cycle counts: ``"lean DDR model"`` (``fast``, with ``ddr_latency``: ``"lean DDR model
    with 100-cycle latency"``) or ``"AXI RAM model"`` (cocotbext-axi's ``AxiRam`` with the
    protocol checker; ``"... with 30 % back-pressure"``)."""
    if fast:
        return "lean DDR model" + (f" with {ddr_latency}-cycle latency" if ddr_latency else "")
    return "AXI RAM model" + (f" with {100 * backpressure:g} % back-pressure"
                              if backpressure else "")


def _k(v: float) -> str:
    return f"{v / 1e3:,.1f}k" if v >= 1e4 else f"{v:,.0f}"


def _read_position(work: Path) -> tuple[int, int] | None:
    """(simulated cycles, command index or -1) from the position file, or None."""
    try:
        cycles, index = (int(v) for v in (work / POSITION).read_text().split())
        return cycles, index
    except (OSError, ValueError):
        return None


class _RunProgress:
    """The default ``progress`` of :func:`run_program` (:mod:`zynqnn.progress`): inputs done,
    busy cycles so far and simulated cycles per second of wall time (the perf model's estimate,
    marked ``~``, until the simulator reports measured cycles); while an input runs, the layer
    the command processor is dispatching (``labels``: the layer of each command) and the
    simulated cycles per second, from the position the testbench writes every
    :data:`POSITION_EVERY` cycles. The bar opens when the simulator starts (its ``test-*.log``
    appears; :meth:`poll`), after the build and its own lines."""

    def __init__(self, work: Path, sim: str, label: str, estimate: int, total: int,
                 labels: Sequence[str] = ()):
        self.work, self.estimate, self.total = work, estimate, total
        self.labels = list(labels)
        self.layers = [n for n in dict.fromkeys(self.labels) if n not in ("barrier", "end")]
        self.position = None   # (wall time, simulated cycles) of the last position read
        self.desc = f"{sim} run ({label})"
        self.launched = time.time()
        self.start = None
        self.bar = None

    def _open(self):
        if self.bar is None:
            from zynqnn.progress import Bar

            self.bar = Bar(self.total, self.desc, "input(s)")
        return self.bar

    def poll(self) -> None:
        """Open the bar once the simulator has started (called while waiting for it); then
        show the layer being dispatched and the simulation's speed."""
        if self.bar is None and any(p.stat().st_mtime >= self.launched - 1
                                    for p in self.work.parent.glob("test-*.log")):
            self._open()
        if self.bar is None:
            return
        pos = _read_position(self.work)
        if pos is None or (self.position is not None and pos[0] == self.position[1]):
            return
        now = time.monotonic()
        info = []
        cycles, index = pos
        if 0 <= index < len(self.labels):
            name = self.labels[index]
            if name in self.layers:
                info.append(f"layer {name} ({self.layers.index(name) + 1}/{len(self.layers)})")
        if self.position is not None and now > self.position[0]:
            info.append(f"{_k((cycles - self.position[1]) / (now - self.position[0]))} "
                        "simulated cycles/s")
        self.position = (now, cycles)
        if info:
            self.bar.set(self.bar.done, ", ".join(info))

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.start is None:   # the first input finished: the build and the image load are
            self.start = now     # behind; rates count from the first input on
            self.first = done
        _, cycles = _read_progress_detail(self.work)
        info = []
        if cycles is not None:
            info.append(f"{cycles:,} cycles")
        if done > self.first and now > self.start:
            if cycles is not None:
                rate = cycles * (done - self.first) / done / (now - self.start)
                info.append(f"{_k(rate)} cycles/s")
            elif self.estimate:
                rate = self.estimate * (done - self.first) / (now - self.start)
                info.append(f"~{_k(rate)} cycles/s")
        self._open().set(done, ", ".join(info) or None)

    def fail(self) -> None:
        if self.bar is not None:
            self.bar.close("failed")

    def close(self, cycles: list[int] | None) -> None:
        """End the bar: the busy cycles, and the simulation rate over the inputs after the
        first (the build and the simulator's start-up come before the first)."""
        info = None
        if cycles:
            info = f"{sum(cycles):,} busy cycles"
            n = len(cycles)
            if self.start is not None and n > self.first and time.monotonic() > self.start:
                rate = sum(cycles[self.first:]) / (time.monotonic() - self.start)
                info += f", {_k(rate)} cycles/s"
        self._open().close(info)


def _simulate(make, cfg, sim, root, work, progress, total, window=None):
    """Run the cocotb process; call ``progress(done, total)`` from this thread as images
    finish. ``window``: build with a waveform (:func:`zynqnn.sim.runner.waves_window_module`)
    of these cycles (a :class:`WavesWindow`, or True for all)."""
    from zynqnn.hw.platform import TOP_NAME
    from zynqnn.sim.runner import run

    waves = {}
    if window is not None:
        waves = {"waves": True, "waves_window": True,
                 "plusargs": window.plusargs() if isinstance(window, WavesWindow) else []}

    def launch():
        with _quiet_runner_logs():
            return run(make, TOP_NAME, TEST_MODULE, sim, cfg, extra_env={ENV_DIR: str(work)},
                       build_root=root, **waves)

    if progress is None:
        return launch()
    seen = 0
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(launch)
        while True:
            try:
                result = fut.result(timeout=0.25)
                break
            except concurrent.futures.TimeoutError:
                pass
            poll = getattr(progress, "poll", None)
            if poll is not None:
                poll()
            done = _read_progress(work)
            if done > seen:
                seen = done
                progress(done, total)
    done = _read_progress(work)
    if done > seen:
        progress(done, total)
    return result


def run_program(
    program,
    inputs: Sequence[np.ndarray],
    sim: str = "verilator",
    *,
    backpressure: float = 0.0,
    build_root: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    seed: int = 1,
    fast: bool = False,
    all_outputs: bool = False,
    ddr_latency: int = 0,
    waves: Path | str | None = None,
    waves_layers: str | WavesWindow | None = None,
) -> tuple[list, list[int]]:
    """Run ``program`` (a :class:`zynqnn.compiler.Program`) on ``zynqnn_top`` in ``sim``
    (``"verilator"`` or ``"icarus"``) for every input of ``inputs`` ((C, H, W) integer codes, as
    :meth:`Program.run_golden` takes them), in one simulator process.

    Returns ``(outputs, cycles)``: the output codes of each input (as ``run_golden`` returns them;
    with ``all_outputs`` a list per input, one array per tensor of ``program.net.outputs``, as
    ``run_golden_all`` returns them) and the accelerator's busy cycles of each run
    (``PERF_CYCLES_BUSY``).

    ``backpressure``: probability of a random pause per cycle on every AXI channel (0: none).
    ``build_root``: the simulator builds go to ``<build_root>/sim/`` (default
    ``build/system``, the system tests' builds). ``progress(done, total)`` is called as inputs
    finish; without it, a bar on stderr when :mod:`zynqnn.progress` is on (inputs done, cycles,
    cycles/s; labelled with :func:`memory_model`), nothing otherwise. ``seed`` seeds the
    back-pressure pattern.

    ``fast``: serve the manager port with a lean always-ready memory model
    (:class:`zynqnn.sim.tb_program.LeanDdr`, no wait states, so slightly fewer cycles) instead
    of cocotbext-axi's ``AxiRam``, without the AXI protocol checker and without back-pressure:
    on Verilator about twice as many images per second once the model itself is fast.
    ``ddr_latency`` (fast only): cycles the lean memory adds before each burst's first read
    beat and write response, to measure the accelerator behind a board-like DDR latency.
    The default runs the system tests' harness (:class:`zynqnn.sim.tb_soc.SocTb`: ``AxiRam``,
    the protocol checker, optional back-pressure).

    ``waves``: also write an FST waveform of the top level to this path, from a build of its
    own (``build/system-waves/``, so the plain build stays as it is); ``waves_layers`` (``"A:B"``
    as :func:`layer_window` reads it, or a :class:`WavesWindow`): only the cycles of those
    layers, for every input.

    Raises :class:`ProgramRunError` naming the input and the cause when the accelerator stops
    with an error, a run times out, the AXI checker sees a protocol violation or a run writes
    into the program image; ``ValueError`` for an input of the wrong shape or range.
    """
    from zynqnn.compiler.layout import act_codes
    from zynqnn.rtl.engine import Engine
    from zynqnn.rtl.top import Top
    from zynqnn.sim.runner import SIMULATORS

    if sim not in SIMULATORS:
        raise ValueError(f"sim must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    if not 0.0 <= backpressure < 1.0:
        raise ValueError(f"backpressure {backpressure}: a probability in [0, 1)")
    if fast and backpressure:
        raise ValueError("fast=True has no back-pressure (its memory is always ready)")
    if ddr_latency and not fast:
        raise ValueError("ddr_latency needs fast=True (the lean memory model adds it)")
    if not 0 <= int(ddr_latency) <= 10_000:
        raise ValueError(f"ddr_latency {ddr_latency}: cycles in 0..10000")
    window = None
    if waves_layers is not None and waves is None:
        raise ValueError("waves_layers needs waves (the waveform's path)")
    if waves is not None:
        window = waves_layers if isinstance(waves_layers, WavesWindow) else (
            layer_window(program, waves_layers) if waves_layers is not None else True)
        if build_root is None:
            from zynqnn.sim.runner import default_build_root
            build_root = default_build_root() / "system-waves"
    inputs = list(inputs)
    cfg = program.cfg
    data = _encode_inputs(program, inputs)
    if not inputs:
        return [], []
    bdir = build_dir(cfg, sim, build_root)
    root = bdir.parent.parent
    # One work directory per build directory (a fixed path keeps the runner's log name fixed,
    # so repeated calls overwrite one log); the lock serializes callers sharing the build.
    work = bdir / "program-run"
    shown = None
    if progress is None:
        from zynqnn.progress import enabled

        if enabled():
            shown = _RunProgress(work, sim, memory_model(fast, ddr_latency, backpressure),
                                 _cycle_estimate(program), len(inputs),
                                 getattr(program, "labels", ()))
            progress = shown
    with build_lock(cfg, sim, build_root):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        _write_job(work, program, data, backpressure, seed, fast, ddr_latency)
        try:
            _simulate(lambda: Top(cfg, Engine(cfg)), cfg, sim, root, work, progress, len(inputs),
                      window)
        except (RuntimeError, SystemExit, subprocess.CalledProcessError) as e:
            # zynqnn.sim.runner raises RuntimeError for failed cocotb tests; cocotb's runner
            # exits (SystemExit) instead when it runs under pytest or the simulator crashed.
            if shown is not None:
                shown.fail()
            log = _newest_log(bdir)
            err = work / ERROR_JSON
            if err.exists():
                info = json.loads(err.read_text())
                raise ProgramRunError(info["message"], index=info.get("index"),
                                      kind=info.get("kind", "simulation"),
                                      cause=info.get("cause"), log=log) from None
            raise ProgramRunError(f"{sim} simulation of {cfg.config_id} failed "
                                  f"({type(e).__name__}: {e}); log: {log}", log=log) from e
        with np.load(work / RESULT_NPZ) as res:
            raw, cycles = res["outputs"], res["cycles"]
        if waves is not None:
            from zynqnn.hw.platform import TOP_NAME

            Path(waves).parent.mkdir(parents=True, exist_ok=True)
            shutil.move(bdir / f"{TOP_NAME}-window.fst", waves)
    if shown is not None:
        shown.close([int(c) for c in cycles])
    outputs = []
    for i in range(len(inputs)):
        per, off = [], 0
        for t in program.net.outputs:
            n = _output_nbytes(program, t)
            per.append(act_codes(cfg, raw[i][off:off + n], t.shape, t.signed))
            off += n
        outputs.append(per if all_outputs else per[0])
    return outputs, [int(c) for c in cycles]


def _newest_log(bdir: Path) -> str | None:
    logs = sorted(bdir.glob("test-*.log"), key=lambda p: p.stat().st_mtime)
    return str(logs[-1]) if logs else None


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(f"use zynqnn.sim.program_runner.run_program(); {os.path.basename(__file__)} "
                     f"is a library")
