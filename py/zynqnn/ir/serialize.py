"""Graph files: a zip archive holding ``graph.json`` and one ``.npy`` per constant.

Layout (format :data:`FORMAT`, version :data:`VERSION`)::

    graph.json            {"format", "version", "name", "inputs", "outputs", "meta",
                           "tensors": [{name, shape, dtype, scale, zero_point, axis, layout,
                                        qmin, qmax, data: "arrays/<i>.npy" | null}],
                           "nodes": [{name, op, inputs, outputs, flavour, attrs, source}],
                           "checksums": {"arrays/<i>.npy": sha256}}
    arrays/<i>.npy        constants (numpy format, no pickles; codes in their dtype's width)

Per-channel scales and zero points are JSON lists (Python floats round-trip exactly). A file that
is not a zip, is truncated, fails a CRC or checksum, lacks a member, or has another format or a
newer version raises :class:`GraphFileError` naming the file and the reason.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .core import Graph, IRError, Node, Tensor

__all__ = ["FORMAT", "VERSION", "GraphFileError", "load", "save"]

FORMAT = "zynqnn-graph"
_STORE = {"uint8": np.uint8, "int8": np.int8, "uint16": np.uint16, "int16": np.int16,
          "int32": np.int32}
VERSION = 1


class GraphFileError(IRError):
    """A graph file cannot be read (not a graph file, corrupt, truncated, unknown version)."""


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return buf.getvalue()


def save(graph: Graph, path: Any) -> None:
    """Write ``graph`` to ``path`` (validated first)."""
    graph.validate()
    tensors, arrays = [], {}
    for i, t in enumerate(graph.tensors.values()):
        member = None
        if t.data is not None:
            member = f"arrays/{i}.npy"
            data = t.data
            if t.dtype in _STORE:  # codes travel in their own width, not as int64
                data = data.astype(_STORE[t.dtype])
            arrays[member] = _npy(data)
        tensors.append({
            "name": t.name, "shape": list(t.shape), "dtype": t.dtype,
            "scale": _jsonable(t.scale), "zero_point": _jsonable(t.zero_point),
            "axis": t.axis, "layout": t.layout, "qmin": t.qmin, "qmax": t.qmax, "data": member,
        })
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "name": graph.name,
        "inputs": list(graph.inputs),
        "outputs": list(graph.outputs),
        "meta": _jsonable(graph.meta),
        "tensors": tensors,
        "nodes": [{"name": n.name, "op": n.op, "inputs": list(n.inputs),
                   "outputs": list(n.outputs), "flavour": n.flavour,
                   "attrs": _jsonable(n.attrs), "source": n.source} for n in graph.nodes],
        "checksums": {k: hashlib.sha256(v).hexdigest() for k, v in arrays.items()},
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w") as z:
        z.writestr("graph.json", json.dumps(doc, indent=1), compress_type=zipfile.ZIP_DEFLATED)
        for k, v in arrays.items():
            z.writestr(k, v, compress_type=zipfile.ZIP_STORED)
    tmp.replace(path)


def load(path: Any) -> Graph:
    """Read a graph written by :func:`save` (validated)."""
    path = Path(path)

    def fail(why: str) -> GraphFileError:
        return GraphFileError(f"{path}: {why}")

    if not path.is_file():
        raise fail("no such file")
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            if "graph.json" not in names:
                raise fail(f"not a {FORMAT} file (no graph.json member)")
            doc = json.loads(z.read("graph.json").decode("utf-8"))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise fail(f"not a {FORMAT} file (format {doc.get('format')!r})"
                           if isinstance(doc, dict) else f"not a {FORMAT} file")
            version = doc.get("version")
            if not isinstance(version, int) or version > VERSION or version < 1:
                raise fail(f"format version {version!r} is not supported (this zynqnn reads "
                           f"versions 1..{VERSION})")
            sums = doc.get("checksums", {})
            data = {}
            for t in doc["tensors"]:
                member = t.get("data")
                if member is None:
                    continue
                if member not in names:
                    raise fail(f"member {member!r} of tensor {t['name']!r} is missing "
                               "(truncated file?)")
                raw = z.read(member)
                if sums.get(member) != hashlib.sha256(raw).hexdigest():
                    raise fail(f"member {member!r} fails its checksum (corrupt file)")
                arr = np.load(io.BytesIO(raw), allow_pickle=False)
                data[t["name"]] = arr.astype(np.int64) if arr.dtype.kind in "iu" else arr
    except GraphFileError:
        raise
    except zipfile.BadZipFile as exc:
        raise fail(f"corrupt or truncated file ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise fail(f"graph.json is not valid JSON ({exc})") from None
    except (KeyError, TypeError, ValueError, EOFError, OSError) as exc:
        raise fail(f"corrupt or truncated file ({type(exc).__name__}: {exc})") from None
    try:
        g = Graph(doc.get("name", path.stem))
        g.meta = doc.get("meta", {})
        for t in doc["tensors"]:
            scale = t.get("scale")
            zp = t.get("zero_point")
            g.add_tensor(Tensor(
                name=t["name"], shape=tuple(t["shape"]), dtype=t["dtype"],
                scale=np.array(scale, dtype=np.float64) if isinstance(scale, list) else scale,
                zero_point=np.array(zp, dtype=np.int64) if isinstance(zp, list) else zp,
                axis=t.get("axis"), layout=t.get("layout", "nchw"), data=data.get(t["name"]),
                qmin=t.get("qmin"), qmax=t.get("qmax")))
        for n in doc["nodes"]:
            g.add_node(Node(n["name"], n["op"], list(n["inputs"]), list(n["outputs"]),
                            n.get("flavour"), dict(n.get("attrs", {})), n.get("source")))
        g.inputs = list(doc["inputs"])
        g.outputs = list(doc["outputs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise fail(f"malformed graph description ({type(exc).__name__}: {exc})") from None
    try:
        g.validate()
    except IRError as exc:
        raise fail(f"invalid graph: {exc}") from None
    return g
