"""Pictures of a quantized graph: ``zynqnn graph MODEL -o graph.svg``.

Each node is a box with its name and op, its output's shape, type and quantization (scale and
zero point, or "per channel"), and its flavour (whose arithmetic it follows). Given the compiled
model, each box also says where the node runs: the hardware layers the lowering made of it (a
node may become several: a chain of poolings, a relabelling convolution) and the performance
model's cycles for them; given the compile errors instead, the refused nodes are drawn red with
their reason. Boxes sit in rows by depth (the longest path from the input), edges go down.

Formats by suffix: ``.svg`` (written here, no Graphviz needed), ``.html`` (the SVG in a page)
and ``.dot`` (Graphviz source, for ``dot -Tpng``).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

__all__ = ["draw_graph", "node_labels"]

_BOX_W, _LINE_H, _PAD, _GAP_X, _GAP_Y = 300, 15, 6, 24, 36


def _qparams(t) -> str:
    import numpy as np

    if t is None:
        return ""
    if not t.is_quantized:
        return t.dtype
    if np.ndim(t.scale):
        return f"{t.dtype} per channel"
    return f"{t.dtype} s={float(t.scale):.4g} zp={int(t.zero_point)}"


def _shape(t) -> str:
    return "x".join(str(d) for d in t.shape) if t is not None else "?"


def _hardware(model) -> dict[str, list[str]]:
    """node name -> lines on the hardware layers made of it (kind, cycles)."""
    if model is None:
        return {}
    try:
        rows = {r["name"]: r for r in model.report().rows}
    except Exception:   # noqa: BLE001 - a picture without cycles rather than none
        rows = {}
    out: dict[str, list[str]] = {}
    for la in model.layers:
        name = la["name"]
        r = rows.get(name)
        cyc = f", {int(r['cycles']):,} cycles" if r else ""
        line = f"-> {la['kind']}{cyc}"
        out.setdefault(name, []).append(line)
        base = name.rsplit(".", 1)[0]   # node.zp, node.s0, node.packed.3 ...
        if base != name:
            out.setdefault(base, []).append(f"-> {name.split('.', 1)[1]}: {la['kind']}{cyc}")
    return out


def _refusals(errors) -> dict[str, str]:
    out = {}
    for e in errors or []:
        m = re.match(r"node '(.+?)' \([^)]*\): (.*)", str(e), re.S)
        if m:
            out[m.group(1)] = m.group(2).splitlines()[0]
    return out


def node_labels(graph, model=None, errors=None) -> dict[str, list[str]]:
    """The text lines of each node's box (also what the tests read)."""
    hw, refused = _hardware(model), _refusals(errors)
    labels = {}
    for n in graph.nodes:
        out = graph.tensors.get(n.outputs[0]) if n.outputs else None
        lines = [f"{n.name} ({n.op})", f"{_shape(out)} {_qparams(out)}".strip()]
        if n.flavour:
            lines.append(f"flavour {n.flavour}")
        lines += hw.get(n.name, [])
        if n.name in refused:
            lines.append(f"REFUSED: {refused[n.name]}")
        labels[n.name] = lines
    return labels


def _layout(graph) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """(node name -> (depth, index in its row), tensor name -> producing node)."""
    prod = {o: n.name for n in graph.nodes for o in n.outputs}
    depth: dict[str, int] = {}
    for n in graph.nodes:   # graph order is topological
        depth[n.name] = 1 + max([depth[prod[i]] for i in n.inputs if i in prod], default=-1)
    rows: dict[int, int] = {}
    pos = {}
    for n in graph.nodes:
        d = depth[n.name]
        pos[n.name] = (d, rows.get(d, 0))
        rows[d] = rows.get(d, 0) + 1
    return pos, prod


def _wrap(text: str, width: int = 46) -> list[str]:
    return [text[i:i + width] for i in range(0, len(text), width)] or [""]


def _svg(graph, labels, refused) -> str:
    pos, prod = _layout(graph)
    boxes = {k: [w for line in v for w in _wrap(line)] for k, v in labels.items()}
    depth_h: dict[int, int] = {}
    for name, (d, _) in pos.items():
        depth_h[d] = max(depth_h.get(d, 0), len(boxes[name]) * _LINE_H + 2 * _PAD)
    y0, acc = {}, _GAP_Y
    for d in sorted(depth_h):
        y0[d] = acc
        acc += depth_h[d] + _GAP_Y
    width = (max(i for _, i in pos.values()) + 1) * (_BOX_W + _GAP_X) + _GAP_X
    rect = {}
    parts = []
    for name, (d, i) in pos.items():
        x, y = _GAP_X + i * (_BOX_W + _GAP_X), y0[d]
        h = len(boxes[name]) * _LINE_H + 2 * _PAD
        rect[name] = (x, y, h)
        color = "#fde0e0" if name in refused else "#eef4fb"
        parts.append(f'<rect x="{x}" y="{y}" width="{_BOX_W}" height="{h}" rx="4" '
                     f'fill="{color}" stroke="#456"/>')
        for k, line in enumerate(boxes[name]):
            weight = ' font-weight="bold"' if k == 0 else ""
            parts.append(f'<text x="{x + _PAD}" y="{y + _PAD + (k + 1) * _LINE_H - 3}"'
                         f'{weight}>{html.escape(line)}</text>')
    for n in graph.nodes:
        for i in n.inputs:
            if i in prod:
                sx, sy, sh = rect[prod[i]]
                tx, ty, _ = rect[n.name]
                parts.append(f'<line x1="{sx + _BOX_W // 2}" y1="{sy + sh}" '
                             f'x2="{tx + _BOX_W // 2}" y2="{ty}" stroke="#789" '
                             'marker-end="url(#arrow)"/>')
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{acc}" '
            'font-family="monospace" font-size="11">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
            'markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#789"/></marker>'
            f'</defs><title>{html.escape(graph.name)}</title>')
    return head + "".join(parts) + "</svg>\n"


def _dot(graph, labels, refused) -> str:
    _, prod = _layout(graph)
    lines = [f"digraph {json_str(graph.name)} {{", "  node [shape=box, fontname=monospace];"]
    for n in graph.nodes:
        text = "\\n".join(labels[n.name]).replace('"', "'")
        fill = ', style=filled, fillcolor="#fde0e0"' if n.name in refused else ""
        lines.append(f"  {json_str(n.name)} [label=\"{text}\"{fill}];")
    for n in graph.nodes:
        for i in n.inputs:
            if i in prod:
                lines.append(f"  {json_str(prod[i])} -> {json_str(n.name)};")
    return "\n".join(lines + ["}"]) + "\n"


def json_str(s: str) -> str:
    import json

    return json.dumps(s)


def draw_graph(graph, path, model=None, errors=None) -> Path:
    """Write the picture of ``graph`` to ``path`` (.svg, .html or .dot); ``model``: its
    compiled model (where each node runs), ``errors``: its compile errors (refused nodes).
    Returns the path."""
    path = Path(path)
    labels = node_labels(graph, model, errors)
    refused = _refusals(errors)
    suffix = path.suffix.lower()
    if suffix == ".dot":
        text = _dot(graph, labels, refused)
    elif suffix in (".svg", ".html"):
        text = _svg(graph, labels, refused)
        if suffix == ".html":
            text = (f"<!doctype html><meta charset=utf-8><title>{html.escape(graph.name)}"
                    f"</title>\n{text}")
    else:
        raise ValueError(f"{path}: draw .svg, .html or .dot files")
    path.write_text(text)
    return path
