"""The cycles of some layers of a compiled program, for waveforms: ``zynqnn run --waves --layers
A:B`` (:func:`zynqnn.sim.program_runner.run_program`'s ``waves_layers``)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["WavesWindow", "layer_window"]


@dataclass(frozen=True)
class WavesWindow:
    """The cycles of a waveform: the layers ``layers[0]`` to ``layers[-1]`` (report order), from
    the dispatch of command ``first`` (their first) until a command after ``last`` (their last)
    is dispatched and ``tail`` more cycles passed: the performance model's cycles of the last
    layer, so that its commands still in the pipeline after the next dispatch are in the file
    (or until the accelerator is idle)."""

    layers: tuple
    first: int
    last: int
    tail: int

    def plusargs(self) -> list[str]:
        return [f"+zynqnn_waves_first={self.first}", f"+zynqnn_waves_last={self.last}",
                f"+zynqnn_waves_tail={self.tail}"]


def layer_window(program, spec: str) -> WavesWindow:
    """The :class:`WavesWindow` of ``spec``, ``A:B`` or ``A`` (both ends included): layer names
    or their numbers from 0 in the order of ``zynqnn report`` (the layers that run commands);
    an empty end means the first or the last layer. ``ValueError`` names what is wrong."""
    labels = list(program.labels)
    # the layers with commands, in command order (the compiler's barriers and END are not)
    names = [n for n in dict.fromkeys(labels) if n not in ("barrier", "end")]
    if not names:
        raise ValueError("the program has no layers with commands")

    def index(text: str, default: int) -> int:
        text = text.strip()
        if not text:
            return default
        if text in names:
            return names.index(text)
        try:
            i = int(text)
        except ValueError:
            raise ValueError(f"no layer {text!r}: the layers are 0..{len(names) - 1} or "
                             f"{', '.join(names[:6])}{', ...' if len(names) > 6 else ''}"
                             ) from None
        if not 0 <= i < len(names):
            raise ValueError(f"layer {i}: the program has layers 0..{len(names) - 1}")
        return i

    a_text, _, b_text = spec.partition(":") if ":" in spec else (spec, ":", spec)
    a, b = index(a_text, 0), index(b_text, len(names) - 1)
    if a > b:
        raise ValueError(f"layers {spec}: {names[a]} ({a}) comes after {names[b]} ({b})")
    chosen = set(names[a:b + 1])
    cmds = [i for i, la in enumerate(labels) if la in chosen]
    try:
        d = program.perf(check=False).layers[names[b]]
        tail = int(d["end"] - d["start"])
    except Exception:  # no estimate: the rest of the run
        tail = 1 << 30
    return WavesWindow(tuple(names[a:b + 1]), cmds[0], cmds[-1], tail)
