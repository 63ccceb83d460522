"""Feedback on long work: progress lines and bars on stderr.

The long steps (the Verilator / Icarus build, RTL program runs, calibration, ``zynqnn.compile``,
``make synth``) report here. Who sees it:

* on when stderr is a terminal, off when it is not (a CI log or a pipe stays as it was);
* ``zynqnn --verbose`` (or ``ZYNQNN_PROGRESS=1``) turns it on wherever stderr goes (plain lines,
  no bars, when it is not a terminal); ``zynqnn --quiet`` (``ZYNQNN_PROGRESS=0``) turns it off.

The setting is the environment variable :data:`ENV`, so the processes zynqnn starts (the cocotb
simulator, ``make``) follow it. Bars are tqdm's (a tool-chain package, imported only when a bar
is drawn on a terminal); without tqdm, plain lines. Nothing here writes to stdout.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator

__all__ = ["ENV", "Bar", "duration", "elapsed_bar", "enabled", "note", "set_level", "step"]

#: ``1`` (verbose: always on), ``0`` (quiet: never), unset (on when stderr is a terminal).
ENV = "ZYNQNN_PROGRESS"
_ON = ("1", "on", "yes", "true", "verbose")
_OFF = ("0", "off", "no", "false", "quiet")
#: Seconds between two plain progress lines (no terminal, or no tqdm).
LINE_EVERY_S = 10.0
#: The tqdm bars on the terminal now: a line printed meanwhile goes above them.
_active: list = []


def set_level(level: str | None) -> None:
    """``"verbose"``, ``"quiet"`` or None (back to: on when stderr is a terminal)."""
    if level is None:
        os.environ.pop(ENV, None)
    elif level in ("verbose", "quiet"):
        os.environ[ENV] = "1" if level == "verbose" else "0"
    else:
        raise ValueError(f"progress level {level!r}: 'verbose', 'quiet' or None")


def _tty() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # no stderr, or a closed one
        return False


def enabled() -> bool:
    """Whether progress is shown (see the module docstring)."""
    v = os.environ.get(ENV, "").strip().lower()
    if v in _OFF:
        return False
    return v in _ON or _tty()


def note(message: str) -> None:
    """One progress line on stderr, when progress is shown."""
    if not enabled():
        return
    if _active:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


def duration(seconds: float) -> str:
    """``4.2 s``, ``3 min 12 s``, ``1 h 05 min``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


@contextlib.contextmanager
def step(what: str, expect: str | None = None) -> Iterator[None]:
    """``what (expect) ...`` before the block, ``what: done in <time>`` after it (``failed
    after`` when it raised); nothing when progress is off."""
    if not enabled():
        yield
        return
    note(f"{what}" + (f" ({expect})" if expect else "") + " ...")
    start = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        note(f"{what}: {'done in' if ok else 'failed after'} {duration(time.monotonic() - start)}")


@contextlib.contextmanager
def elapsed_bar(desc: str, estimate_s: float) -> Iterator[None]:
    """A tqdm bar of the seconds a step without measurable progress of its own has taken against
    ``estimate_s`` (a subprocess such as a simulator build), ticking from a thread while the
    block runs; it stops one short of the end until the block returns, says so when the
    estimate is passed, and is cleared afterwards (:func:`step`'s lines stay). Only on a
    terminal with tqdm: a log gets :func:`step`'s two lines and nothing in between."""
    if not (enabled() and _tty()):
        yield
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield
        return
    total = max(1, int(round(estimate_s)))
    bar = tqdm(total=total, desc=desc, unit=" s", file=sys.stderr, dynamic_ncols=True,
               leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} s "
                                       "(estimated){postfix}")
    _active.append(bar)
    stop = threading.Event()
    start = time.monotonic()

    def tick():
        while not stop.wait(0.5):
            elapsed = time.monotonic() - start
            n = min(int(elapsed), total - 1)
            if elapsed > total:
                bar.set_postfix_str(f"longer than estimated: {duration(elapsed)}", refresh=False)
            bar.update(n - bar.n)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        bar.close()
        if bar in _active:
            _active.remove(bar)


class Bar:
    """A progress bar of ``total`` ``unit``: tqdm on a terminal, plain lines elsewhere (every
    :data:`LINE_EVERY_S` s and at the end), nothing when progress is off. ``update(n)`` adds,
    ``set(done)`` sets; ``info`` is shown beside the count (e.g. ``"layer 3/9, 41k cycles/s"``).
    """

    def __init__(self, total: int | None, desc: str, unit: str = "it") -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.on = enabled()
        self.done = 0
        self.info = ""
        self._start = time.monotonic()
        self._last = self._start
        self._tqdm = None
        self._closed = False
        if self.on and _tty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._tqdm = tqdm(total=total, desc=desc, unit=f" {unit}", file=sys.stderr,
                                  dynamic_ncols=True, leave=True)
                _active.append(self._tqdm)
        if self.on and self._tqdm is None:
            note(f"{desc}: {self._count()} ...")

    def _count(self) -> str:
        return f"{self.done:,}" + (f"/{self.total:,}" if self.total is not None else "") + \
            f" {self.unit}"

    def set(self, done: int, info: str | None = None) -> None:
        self.update(done - self.done, info)

    def update(self, n: int = 1, info: str | None = None) -> None:
        if not self.on:
            return
        self.done += n
        if info is not None:
            self.info = info
        if self._tqdm is not None:
            if info is not None:   # redrawn now when the count does not move
                self._tqdm.set_postfix_str(info, refresh=n == 0)
            self._tqdm.update(n)
            return
        now = time.monotonic()
        if now - self._last >= LINE_EVERY_S:
            self._last = now
            note(f"{self.desc}: {self._count()}" + (f", {self.info}" if self.info else ""))

    def close(self, info: str | None = None) -> None:
        """End the bar; the last line says how long it took (and ``info``)."""
        if not self.on or self._closed:
            return
        self._closed = True
        if info is not None:
            self.info = info
        if self._tqdm is not None:
            if info is not None:
                self._tqdm.set_postfix_str(info, refresh=False)
            self._tqdm.close()
            if self._tqdm in _active:
                _active.remove(self._tqdm)
            return
        note(f"{self.desc}: {self._count()} in {duration(time.monotonic() - self._start)}"
             + (f", {self.info}" if self.info else ""))

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
