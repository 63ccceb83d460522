"""The ``zynqnn`` command line.

Sub-commands register themselves with :func:`command`; each gets an ``argparse`` sub-parser and
a function ``run(args) -> int``. Errors a user can cause (a bad model, a bad option, a bad
file) end the program with exit status 1 and one line ``zynqnn <command>: error: <reason>`` on
stderr, naming the file; any other exception (a bug) with status 2 and one line too. ``--debug``
(before or after the command) shows the traceback instead. When stdout's reader goes away
(``zynqnn report PROG | head``) the command stops silently with status 141 (128 + SIGPIPE, as
``cat`` or ``git log`` do). Long steps show progress on stderr when it is a terminal
(:mod:`zynqnn.progress`); ``--verbose`` shows it anywhere, ``--quiet`` nowhere.

Adding a sub-command (``compile``, ``run``, ``report``, ``verilog`` ...)::

    @command("compile", help="compile a graph for a hardware configuration")
    def _compile_args(p):                  # add arguments to the sub-parser
        p.add_argument("graph")

    def _compile(args) -> int: ...
    COMMANDS["compile"].run = _compile     # or pass run= to command()

Implemented: ``errors`` (per-layer float vs quantized error table and PNG), ``compile`` (a model
to a program file), ``example-input`` (an input .npy for a program), ``run`` (a program on an
input .npy), ``report`` (performance model and synthesis estimate), ``deploy`` (a folder that
runs a program on the board) and ``verilog`` (the generated top level).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import TOOL_PACKAGES

__all__ = ["COMMANDS", "command", "main", "build_parser"]


@dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int] | None = None


COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, run: Callable[[argparse.Namespace], int] | None = None):
    """Register a sub-command; decorates the function that adds its arguments."""

    def deco(add_arguments: Callable[[argparse.ArgumentParser], None]):
        COMMANDS[name] = Command(name, help, add_arguments, run)
        return add_arguments

    return deco


class UserError(Exception):
    """An error to report as one line (bad option combination, missing file ...)."""


# ---------------------------------------------------------------------------------------------
# errors


ENGINES = ("fbgemm", "qnnpack", "onnxruntime", "tflite", "pow2", "fixed16")


@command("errors", help="per-layer float vs quantized error of a model (table and PNG)")
def _errors_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP + " (float ONNX: quantized here "
                   "with ONNX Runtime on random calibration data; QDQ/QOperator ONNX and .zqg: "
                   "as they are, errors measured against their dequantized weights)")
    p.add_argument("--engine", choices=ENGINES, default="fbgemm",
                   help="who quantizes a zoo model: torch.ao FX with the fbgemm or qnnpack "
                        "engine, ONNX Runtime quantize_static (onnxruntime), or zynqnn.quantize "
                        "with the tflite, pow2 or fixed16 scheme (default: fbgemm)")
    p.add_argument("--size", type=int, default=None,
                   help="input height = width (default: the zoo model's own size; for ONNX "
                        "files with dynamic sizes, this or --input-shape is required)")
    p.add_argument("--input-shape", type=_shape_arg, default=None, metavar="N,C,H,W",
                   help="the input shape of an ONNX file with dynamic (symbolic) dimensions")
    p.add_argument("--calib", type=int, default=8, metavar="N",
                   help="calibration images (default 8)")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help=f"images the errors are measured on (default {ERRORS_IMAGES}, or "
                        f"{ERRORS_IMAGES_LARGE} for inputs above {ERRORS_LARGE}x{ERRORS_LARGE} "
                        "such as ResNet-18 at 224x224)")
    p.add_argument("--png", type=Path, default=None, metavar="PATH",
                   help="where to write the plot (default: <model>-<engine>-errors.png)")
    p.add_argument("--sensitivity", action="store_true",
                   help="also quantize one node at a time (the rest float) and list the "
                        "output SQNR of each, most sensitive first")
    p.add_argument("--seed", type=int, default=0, help="seed of the random zoo weights/inputs")


#: `zynqnn errors --images` default: images measured, and fewer for inputs larger than this side.
ERRORS_IMAGES, ERRORS_IMAGES_LARGE, ERRORS_LARGE = 8, 2, 64
#: Short names accepted besides the zoo's own, by every command that takes a model.
ZOO_ALIASES = {"digits": "digits_cnn"}
MODEL_HELP = ("a zoo model (digits or digits_cnn, resnet18, mobilenet_v2, yolov3_tiny), an ONNX "
              "file or a zynqnn graph file (.zqg)")


def _shape_arg(text: str) -> tuple[int, ...]:
    """``N,C,H,W`` (or ``NxCxHxW``) -> a tuple of 4 positive ints (argparse type)."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 4 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: four positive integers N,C,H,W "
                                         "(e.g. 1,3,224,224)")
    return shape


def _model_source(arg: str) -> tuple[str, Any]:
    """What MODEL names, the same for every command that takes one: ``("zoo", name)`` (a zoo
    name or alias), ``("zqg", path)`` or ``("onnx", path)``; a UserError otherwise."""
    from . import zoo

    name = ZOO_ALIASES.get(arg, arg)
    if name in zoo.NAMES:
        return "zoo", name
    path = Path(arg)
    suffix = path.suffix.lower()
    if suffix == ".zqp":
        raise UserError(f"{arg}: a compiled program (zynqnn compile writes them); this command "
                        "takes a model: " + MODEL_HELP)
    if suffix == ".zqg":
        return "zqg", path
    if suffix == ".onnx" or path.exists():
        return "onnx", path
    names = ", ".join(sorted({*zoo.NAMES, *ZOO_ALIASES}))
    raise UserError(f"unknown model {arg!r}: not a zoo model ({names}), an ONNX file nor a .zqg "
                    "graph")


def _zoo_inputs(name: str, size: int | None, count: int, seed: int, split: str):
    import torch

    from . import zoo

    if name == "digits_cnn":
        x_tr, _, x_te, _ = zoo.digits.load_data()
        data = x_tr if split == "train" else x_te
        if count > len(data):
            raise UserError(f"digits has only {len(data)} {split} images")
        return data[:count].clone()
    size = size or zoo.default_size(name)
    return torch.cat([zoo.example_input(name, size, batch=1, seed=seed + i) for i in range(count)])


def _prepare_zoo(args) -> tuple[Any, Any, str]:
    """(graph, evaluation input, label) for a zoo model."""
    from . import zoo
    from .analysis import attach_float_weights
    from .frontend import from_onnx, from_torch, quantize
    from .zoo.ort import export_onnx, ort_quantize
    from .zoo.quant import quiet_torch_ao

    name = ZOO_ALIASES.get(args.model, args.model)
    if args.input_shape:
        raise UserError("--input-shape applies to ONNX files; a zoo model takes --size")
    if name == "digits_cnn" and args.size not in (None, 8):
        raise UserError("digits_cnn takes 8x8 inputs (--size 8)")
    if name == "yolov3_tiny" and args.size and args.size % 32:
        raise UserError("yolov3_tiny needs --size to be a multiple of 32")
    model = _zoo_model(name, args.seed)
    calib = _zoo_inputs(name, args.size, args.calib, args.seed + 100, "train")
    images = args.images or _default_images(calib.shape[-2:])
    x = _zoo_inputs(name, args.size, images, args.seed + 1000, "test")
    with _quantizing(name, args.engine, len(calib)):
        if args.engine in ("fbgemm", "qnnpack"):
            with quiet_torch_ao():
                q = zoo.quantize_fx(model, x[:1], engine=args.engine, calibration=calib)
                graph = from_torch(q, x, engine=args.engine)
            attach_float_weights(graph, model)
        elif args.engine == "onnxruntime":
            with tempfile.TemporaryDirectory() as tmp:
                float_path = Path(tmp) / f"{name}.onnx"
                export_onnx(model, x[:1], float_path)
                c = calib.numpy()
                qpath = ort_quantize(float_path, [c[i:i + 1] for i in range(len(c))],
                                     Path(tmp) / f"{name}_qdq.onnx")
                graph = from_onnx(qpath)
                attach_float_weights(graph, float_path)
        else:
            graph = quantize(model, calib, example_input=x, scheme=args.engine)
    return graph, x.numpy(), f"{name}-{args.engine}"


def _default_images(hw) -> int:
    return ERRORS_IMAGES if max(hw) <= ERRORS_LARGE else ERRORS_IMAGES_LARGE


def _zoo_model(name: str, seed: int):
    """A zoo model: digits_cnn trained (once, then cached), the others with random weights."""
    from . import progress, zoo

    if name != "digits_cnn":
        return zoo.get(name, seed=seed)
    fresh = zoo.digits.cache_path().exists()
    with (contextlib.nullcontext() if fresh else progress.step(
            f"training the digits CNN once, for the cache {zoo.digits.cache_dir()}",
            "about 5-10 s")):
        return zoo.get(name, pretrained=True)


def _quantizing(name: str, engine: str, calib: int):
    """The progress step of quantizing a zoo model."""
    from . import progress

    who = {"fbgemm": "torch.ao FX (fbgemm)", "qnnpack": "torch.ao FX (qnnpack)",
           "onnxruntime": "ONNX Runtime quantize_static"}.get(engine, f"zynqnn.quantize ({engine})")
    return progress.step(f"quantizing {name} with {who}, calibrating on {calib} images")


_QUANT_OPS = {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm", "DequantizeLinear"}


def _prepare_onnx(args) -> tuple[Any, Any, str]:
    import numpy as np
    import onnx

    from .analysis import attach_float_weights
    from .frontend import from_onnx
    from .frontend.common import FrontendError
    from .frontend.onnx_import import load_onnx
    from .zoo.ort import ort_quantize

    path = Path(args.model)
    m, label = load_onnx(path)
    inits = {i.name for i in m.graph.initializer}
    inputs = [i for i in m.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UserError(f"{label}: zynqnn errors takes models with one input, this has "
                        f"{len(inputs)}")
    vi = inputs[0]
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
            for d in vi.type.tensor_type.shape.dim]
    if len(dims) != 4:
        raise UserError(f"{label}: input {vi.name!r} is not 4-D NCHW")
    dynamic = any(d is None for d in dims)
    if args.input_shape:
        if args.size:
            raise UserError("pass --size or --input-shape, not both")
        if any(d is not None and d != v for d, v in zip(dims, args.input_shape, strict=True)):
            raise UserError(f"{label}: --input-shape {','.join(map(str, args.input_shape))} "
                            f"does not fit input {vi.name!r} "
                            f"[{', '.join(str(d or '?') for d in dims)}]")
        dims = list(args.input_shape)
    if args.size:
        dims[2] = dims[3] = args.size
    if dims[1] is None or dims[2] is None or dims[3] is None:
        raise UserError(f"{label}: input {vi.name!r} has dynamic sizes; pass --size or "
                        "--input-shape N,C,H,W")
    shape = (dims[0] or 1, dims[1], dims[2], dims[3])
    shapes = {vi.name: shape} if dynamic or args.size or args.input_shape else None
    rng = np.random.default_rng(args.seed)
    images = args.images or _default_images(shape[2:])
    x = rng.standard_normal((images,) + shape[1:]).astype(np.float32)
    quantized = any(n.op_type in _QUANT_OPS for n in m.graph.node)
    if quantized:
        graph = from_onnx(path, input_shapes=shapes)  # errors name the file
        return graph, x, path.stem
    calib = rng.standard_normal((args.calib * shape[0],) + shape[1:]).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp, _quantizing(path.name, "onnxruntime", len(calib)):
        fixed = onnx.ModelProto()
        fixed.CopyFrom(m)
        for d, v in zip(fixed.graph.input[[i.name for i in fixed.graph.input].index(vi.name)]
                        .type.tensor_type.shape.dim, shape, strict=True):
            d.Clear()
            d.dim_value = v
        fpath = Path(tmp) / "float.onnx"
        onnx.save(fixed, str(fpath))
        n = shape[0]
        qpath = ort_quantize(fpath, [calib[i:i + n] for i in range(0, len(calib), n)],
                             Path(tmp) / "qdq.onnx")
        try:
            graph = from_onnx(qpath)
        except FrontendError as exc:      # name the user's file, not the temporary one
            raise UserError(str(exc).replace(
                qpath.name, f"{path.name} (quantized by ONNX Runtime)")) from None
        attach_float_weights(graph, fpath)
    return graph, x, f"{path.stem}-onnxruntime"


def _prepare_graph(args, path: Path) -> tuple[Any, Any, str]:
    """A .zqg graph and random normal inputs of its input's shape."""
    import numpy as np

    from .ir import load as load_graph

    if args.size or args.input_shape:
        raise UserError(f"{path}: a .zqg graph has fixed shapes; --size and --input-shape do "
                        "not apply")
    graph = load_graph(path)
    shape = graph.tensors[graph.inputs[0]].shape
    images = args.images or _default_images(shape[2:])
    x = np.random.default_rng(args.seed).standard_normal((images, *shape[1:]))
    return graph, x.astype(np.float32), path.stem


def _errors(args: argparse.Namespace) -> int:
    from . import progress
    from .analysis import layer_errors

    if args.calib < 1 or (args.images is not None and args.images < 1):
        raise UserError("--calib and --images must be at least 1")
    kind, _ = _model_source(args.model)
    if kind != "zoo" and args.engine not in ("fbgemm", "onnxruntime"):
        raise UserError("ONNX files are quantized (or were quantized) by ONNX Runtime and .zqg "
                        "graphs are quantized already; --engine does not apply")
    if kind == "zoo":
        graph, x, label = _prepare_zoo(args)
    elif kind == "zqg":
        graph, x, label = _prepare_graph(args, Path(args.model))
    else:
        graph, x, label = _prepare_onnx(args)
    with progress.step(f"measuring the per-layer errors of {label} on {len(x)} images"):
        rows = layer_errors(graph, x)
    rows.title = f"per-layer quantization error: {label} ({len(x)} image{'s' * (len(x) > 1)})"
    print(rows.table())
    png = args.png or Path(f"{label}-errors.png")
    rows.plot(png)
    print(f"wrote {png}")
    if args.sensitivity:
        from .analysis import sensitivity

        with progress.step(f"per-node sensitivity of {label} on {len(x)} images"):
            sens = sensitivity(graph, x)
        sens.title = f"per-node sensitivity: {label} (output SQNR with only that node quantized)"
        print(sens.table())
    return 0


COMMANDS["errors"].run = _errors


# ---------------------------------------------------------------------------------------------
# compile


COMPILE_ENGINES = ("fbgemm", "qnnpack", "tflite", "pow2", "fixed16")


@command("compile", help="compile a model for the accelerator into a program file")
def _compile_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Quantize (zoo models) or import (ONNX, .zqg) a model, map it onto the accelerator's "
        "layers and write the command stream, its constants and the model's float interface "
        "to one program file. Example: zynqnn compile digits -o digits.zqp")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP + " (zoo models are quantized "
                   "here; an ONNX file must be quantized already: QDQ or QOperator)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="PROG",
                   help="the program file to write (e.g. digits.zqp)")
    p.add_argument("--config", default="pynq_z2", metavar="NAME",
                   help="hardware configuration preset (default pynq_z2; pynq_z2_int16 for "
                        "16-bit models)")
    p.add_argument("--engine", choices=COMPILE_ENGINES, default="fbgemm",
                   help="who quantizes a zoo model: torch.ao FX with the fbgemm or qnnpack "
                        "engine, or zynqnn.quantize with the tflite, pow2 or fixed16 scheme "
                        "(fixed16 needs --config pynq_z2_int16) (default: fbgemm)")
    p.add_argument("--size", type=int, default=None,
                   help="input height = width of a zoo model (default: its own size)")
    p.add_argument("--input-shape", type=_shape_arg, default=None, metavar="N,C,H,W",
                   help="the input shape of an ONNX file with dynamic (symbolic) dimensions, "
                        "e.g. a batch axis from torch.onnx.export(..., dynamic_shapes=...)")
    p.add_argument("--calib", type=int, default=64, metavar="N",
                   help="calibration images for a zoo model (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of random zoo weights/inputs")


def _zoo_graph(args):
    from . import zoo
    from .frontend import from_torch, quantize
    from .zoo.quant import quiet_torch_ao

    name = ZOO_ALIASES.get(args.model, args.model)
    if args.calib < 1:
        raise UserError("--calib must be at least 1")
    if name == "digits_cnn" and args.size not in (None, 8):
        raise UserError("digits takes 8x8 inputs (--size 8)")
    if name == "yolov3_tiny" and args.size and args.size % 32:
        raise UserError("yolov3_tiny needs --size to be a multiple of 32")
    if getattr(args, "input_shape", None):
        raise UserError("--input-shape applies to ONNX files; a zoo model takes --size")
    model = _zoo_model(name, args.seed)
    calib = _zoo_inputs(name, args.size, args.calib, args.seed + 100, "train")
    x = calib[:1]
    with _quantizing(name, args.engine, len(calib)):
        if args.engine in ("fbgemm", "qnnpack"):
            with quiet_torch_ao():
                q = zoo.quantize_fx(model, x, engine=args.engine, calibration=calib)
                graph = from_torch(q, x, engine=args.engine)
        else:
            graph = quantize(model, calib, example_input=x, scheme=args.engine)
    return graph, f"{name}-{args.engine}"


def _load_model(args):
    """(graph, label) of the compile command's MODEL."""
    kind, path = _model_source(args.model)
    if kind == "zoo":
        return _zoo_graph(args)
    if kind == "zqg":
        from .ir import load as load_graph

        if args.input_shape:
            raise UserError(f"{path}: a .zqg graph has fixed shapes; --input-shape does not "
                            "apply")
        return load_graph(path), path.stem
    from .frontend import from_onnx
    from .frontend.onnx_import import load_onnx

    m, label = load_onnx(path)
    if not any(n.op_type in _QUANT_OPS for n in m.graph.node):
        raise UserError(f"{label}: a float ONNX model; quantize it first (ONNX Runtime's "
                        "quantize_static, QDQ format), or see its per-layer errors with "
                        f"`zynqnn errors {args.model}`, or compile a zoo model")
    inits = {i.name for i in m.graph.initializer}
    for vi in m.graph.input:
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else
                (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]
        if vi.name not in inits and not args.input_shape and \
                not all(isinstance(d, int) for d in dims):
            example = ",".join(str(d) if isinstance(d, int) else "1" for d in dims)
            raise UserError(f"{label}: input {vi.name!r} has the dynamic shape "
                            f"[{', '.join(map(str, dims))}]: pass --input-shape N,C,H,W "
                            f"(e.g. --input-shape {example})")
    # errors name the file, not <ModelProto>
    return from_onnx(path, input_shapes=args.input_shape), path.stem


def _compile(args: argparse.Namespace) -> int:
    from .hw.config import get_config
    from .program import compile as compile_model

    cfg = get_config(args.config)
    if args.engine != "fbgemm" and _model_source(args.model)[0] != "zoo":
        raise UserError("--engine applies to zoo models only")
    graph, label = _load_model(args)
    graph.name = label
    model = compile_model(graph, cfg)
    path = model.save(args.output)
    prog = model.program
    b = model.boundary
    print(f"compiled {label} for {cfg.name} ({cfg.config_id}): {len(model.layers)} layers, "
          f"{prog.command_count} commands, {prog.ddr_bytes:,} bytes of DDR")
    print(f"input {b.input_dtype} {['N', *b.input_shape]}, output {b.output_dtype} "
          f"{['N', *b.output_shape]}")
    print(f"wrote {path}")
    return 0


COMMANDS["compile"].run = _compile


# ---------------------------------------------------------------------------------------------
# check


@command("check", help="list every node of a model the accelerator cannot run, all at once")
def _check_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Import (and for a float ONNX file or a zoo model, quantize) a model, map it onto the "
        "accelerator and compile it, and list every node that does not map, each with its "
        "reason, instead of stopping at the first. Exit status 0 when everything maps, 1 "
        "otherwise. Example: zynqnn check model.onnx --config pynq_z2")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP + " (a float ONNX file is "
                   "quantized here with ONNX Runtime on random calibration data)")
    p.add_argument("--config", default="pynq_z2", metavar="NAME",
                   help="hardware configuration preset (default pynq_z2)")
    p.add_argument("--engine", choices=COMPILE_ENGINES, default="fbgemm",
                   help="who quantizes a zoo model (as for compile; default fbgemm)")
    p.add_argument("--size", type=int, default=None,
                   help="input height = width (zoo models; ONNX files with dynamic sizes)")
    p.add_argument("--input-shape", type=_shape_arg, default=None, metavar="N,C,H,W",
                   help="the input shape of an ONNX file with dynamic (symbolic) dimensions")
    p.add_argument("--calib", type=int, default=8, metavar="N",
                   help="calibration images when quantizing here (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of random weights/inputs")


def _quantized_graph(args: argparse.Namespace):
    """``(graph, label)`` of MODEL for check and graph: a zoo model quantized by --engine, a
    float ONNX file quantized by ONNX Runtime on random data, a quantized ONNX file or a .zqg;
    ``(None, lines)`` when ONNX nodes have no translation in the importer."""
    kind, path = _model_source(args.model)
    if kind != "zoo" and args.engine != "fbgemm":
        raise UserError("--engine applies to zoo models only")
    if kind == "onnx":
        from .frontend.onnx_import import unsupported_nodes

        bad = unsupported_nodes(path)
        if bad:
            return None, [f"{path.name}: {len(bad)} ONNX nodes have no translation in the "
                          "importer:"] + [f"  ONNX node {name!r} ({op}): operator is not "
                                          "supported" for name, op in bad]
        args.images = 1
        graph, _, label = _prepare_onnx(args)
    elif kind == "zqg":
        from .ir import load as load_graph

        graph, label = load_graph(path), path.stem
    else:
        if args.input_shape:
            raise UserError("--input-shape applies to ONNX files; a zoo model takes --size")
        graph, label = _zoo_graph(args)
    graph.name = label
    return graph, label


def _check(args: argparse.Namespace) -> int:
    from .compiler import CompileError
    from .hw.config import get_config
    from .program import compile as compile_model

    cfg = get_config(args.config)
    graph, label = _quantized_graph(args)
    if graph is None:
        print("\n".join(label))
        return 1
    try:
        model = compile_model(graph, cfg)
    except CompileError as exc:
        errors = getattr(exc, "errors", [exc])
        print(f"{label}: {len(errors)} of {len(graph.nodes)} nodes cannot run on "
              f"{cfg.name} ({cfg.config_id}):")
        from .compiler.layers import unchecked_note

        for err in errors:
            print(f"  {err}")
        if len(errors) == 1 and getattr(exc, "unchecked", None):
            print("  " + unchecked_note(exc.unchecked))
        elif len(errors) > 1 and exc.unchecked:
            print(str(exc).splitlines()[-1])
        return 1
    print(f"{label}: all {len(graph.nodes)} nodes map onto {cfg.name} ({cfg.config_id}): "
          f"{len(model.layers)} layers, {model.program.command_count} commands")
    return 0


COMMANDS["check"].run = _check


# ---------------------------------------------------------------------------------------------
# graph


@command("graph", help="draw a model's quantized graph and where each node runs (SVG/HTML/DOT)")
def _graph_args(p: argparse.ArgumentParser) -> None:
    _check_args(p)
    p.description = (
        "Import (and quantize, as `zynqnn check` does) a model and draw its quantized graph: "
        "each node's op, output shape, type, scale and zero point, flavour, and after "
        "compiling for --config the hardware layers it became with their estimated cycles "
        "(refused nodes in red, with the reason). Example: zynqnn graph digits -o digits.svg")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                   help="the picture: .svg, .html or .dot (Graphviz source)")
    p.add_argument("--no-compile", action="store_true",
                   help="draw the quantized graph only (no hardware mapping)")


def _graph(args: argparse.Namespace) -> int:
    from .compiler import CompileError
    from .draw import draw_graph
    from .hw.config import get_config
    from .program import compile as compile_model

    if args.output.suffix.lower() not in (".svg", ".html", ".dot"):
        raise UserError(f"{args.output}: the picture is a .svg, .html or .dot file")
    cfg = get_config(args.config)
    graph, label = _quantized_graph(args)
    if graph is None:
        raise UserError(label[0] + " " + "; ".join(x.strip() for x in label[1:]))
    model = errors = None
    if not args.no_compile:
        try:
            model = compile_model(graph, cfg)
        except CompileError as exc:
            errors = getattr(exc, "errors", [exc])
    path = draw_graph(graph, args.output, model, errors)
    where = "" if args.no_compile else (
        f", {len(errors)} refused on {cfg.name}" if errors else
        f", {len(model.layers)} hardware layers on {cfg.name}")
    print(f"wrote {path} ({len(graph.nodes)} nodes{where})")
    return 0


COMMANDS["graph"].run = _graph


# ---------------------------------------------------------------------------------------------
# run


@command("run", help="run a program file on an input .npy")
def _run_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run a compiled program on the inputs of a .npy file (float32 N x C x H x W, like "
        "the framework model; or integer codes with --codes) and write the outputs to a .npy "
        "file (an .npz of output0, output1 ... for several outputs); the input may also be an "
        ".npz holding the array under the model's input name or alone (`zynqnn example-input "
        "PROG -o x.npy` writes one). Example: zynqnn run digits.zqp --input x.npy --output "
        "y.npy")
    p.add_argument("program", metavar="PROG", type=Path, help="a program file (zynqnn compile)")
    p.add_argument("--input", "-i", required=True, type=Path, metavar="X.npy",
                   help="input array, N x C x H x W (a single C x H x W sample is accepted): "
                        "a .npy file, or an .npz with the array under the model's input name "
                        "or alone; or an image (.png, .jpg ...: grey or RGB by the model, "
                        "resized to its input, values in [0, 1])")
    p.add_argument("--mean", type=_floats, default=None, metavar="M[,M,M]",
                   help="image inputs: subtract per channel (e.g. 0.485,0.456,0.406)")
    p.add_argument("--std", type=_floats, default=None, metavar="S[,S,S]",
                   help="image inputs: then divide per channel (e.g. 0.229,0.224,0.225)")
    p.add_argument("--output", "-o", required=True, type=Path, metavar="Y.npy",
                   help="where to write the output array")
    p.add_argument("--backend", choices=("golden", "verilator", "icarus", "pynq"),
                   default="golden",
                   help="golden: the command stream on the Python model of the accelerator "
                        "(default); verilator/icarus: the generated Verilog in simulation "
                        "(slow); pynq: the accelerator on the board")
    p.add_argument("--codes", action="store_true",
                   help="the input holds integer codes (the quantized input) and the output "
                        "is written as codes")
    p.add_argument("--config", default=None, metavar="NAME",
                   help="refuse the program unless it was compiled for this config")
    p.add_argument("--bitfile", default=None, metavar="BIT",
                   help="pynq backend: the bitstream (.hwh beside it; default "
                        "$ZYNQNN_BITFILE or build/<config id>/zynqnn_<config id>.bit)")
    p.add_argument("--fast", action="store_true",
                   help="verilator/icarus: serve the accelerator's DDR port with the lean DDR "
                        "model (always ready, about twice as fast to simulate) instead of "
                        "cocotbext-axi's AXI RAM with the protocol checker")
    p.add_argument("--ddr-latency", type=int, default=0, metavar="CYCLES",
                   help="with --fast: cycles the lean DDR model waits before each burst (a "
                        "board-like DDR is about 100; default 0)")
    p.add_argument("--waves", nargs="?", const=True, default=None, metavar="FST",
                   help="verilator/icarus: also write an FST waveform of the whole accelerator "
                        "(zynqnn_top) to FST (default: the output's name with .fst); open it "
                        "with `gtkwave FST` or `surfer FST`. A separate simulator build, the "
                        "first one takes a few minutes")
    p.add_argument("--layers", default=None, metavar="A:B",
                   help="with --waves: only the cycles of layers A to B (both included; names "
                        "or numbers from 0 in `zynqnn report`'s order; A: or :B for open "
                        "ends), for every input")


def _bitfile(args, cfg) -> str:
    """The pynq backend's bitstream: --bitfile, else $ZYNQNN_BITFILE, else the build's."""
    import os

    bit = args.bitfile or os.environ.get("ZYNQNN_BITFILE") or str(
        Path("build") / cfg.config_id / f"zynqnn_{cfg.config_id}.bit")
    if not Path(bit).is_file():
        where = ("--bitfile" if args.bitfile else "$ZYNQNN_BITFILE"
                 if os.environ.get("ZYNQNN_BITFILE") else "the default")
        raise UserError(f"no bitstream {bit} ({where}): pass --bitfile BIT or set "
                        f"$ZYNQNN_BITFILE (`make bitstream CONFIG={cfg.name}` writes "
                        f"build/{cfg.config_id}/zynqnn_{cfg.config_id}.bit and its .hwh)")
    return bit


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from .program import load

    model = load(args.program, config=args.config)
    if args.input.suffix.lower() in IMAGE_SUFFIXES:
        x = _read_image(args.input, model.boundary.input_shape, args.mean, args.std)
    else:
        if args.mean is not None or args.std is not None:
            raise UserError("--mean and --std apply to image inputs (.png, .jpg ...)")
        x = _read_input(args.input, model.boundary.input_name)
    if x.ndim == len(model.boundary.input_shape):
        x = x[None]
    sim = args.backend in ("verilator", "icarus")
    if (args.fast or args.ddr_latency) and not sim:
        raise UserError("--fast and --ddr-latency apply to the verilator and icarus backends")
    if args.ddr_latency and not args.fast:
        raise UserError("--ddr-latency needs --fast (the lean DDR model adds the latency)")
    options = {}
    if args.backend == "pynq":
        options["bitfile"] = _bitfile(args, model.cfg)
    elif args.fast:
        options = {"fast": True, "ddr_latency": args.ddr_latency}
    window = None
    if args.layers is not None and args.waves is None:
        raise UserError("--layers selects the cycles of --waves: pass --waves too")
    if args.waves is not None:
        if not sim:
            raise UserError("--waves applies to the verilator and icarus backends")
        from .compiler.window import layer_window

        waves = args.output.with_suffix(".fst") if args.waves is True else Path(args.waves)
        if args.layers is not None:
            try:
                window = layer_window(model.program, args.layers)
            except ValueError as e:
                raise UserError(f"--layers {args.layers}: {e}") from None
        options.update(waves=waves, waves_layers=window)
    if not args.codes and x.dtype.kind != "f":
        raise UserError(f"{args.input}: {x.dtype} values; the model takes float32 inputs "
                        "(pass --codes for integer codes)")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        bad = ~np.isfinite(x)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise UserError(f"{args.input}: {int(bad.sum())} of {x.size} values are NaN or "
                        f"infinite (the first at index {list(first)}); the model takes finite "
                        "inputs")
    several = len(model.boundary.outputs) > 1
    _check_output(args.output, ".npz" if several else None,
                  f"the model has {len(model.boundary.outputs)} outputs, written as an .npz "
                  "archive (output0, output1, ...)")
    try:  # the input's own errors name its file
        if args.codes:
            model.boundary.check_codes(x)
        else:
            model.boundary.check_shape(x, "input")
    except ValueError as e:
        raise UserError(f"{args.input}: {e}") from None
    if args.codes:
        y = model.run_int(x, args.backend, **options)
    else:
        y = model.run(x, args.backend, **options)
    if isinstance(y, tuple):  # several outputs: one array per output in an .npz
        _save(args.output, {f"output{i}": v for i, v in enumerate(y)})
        shapes = ", ".join(f"{v.dtype} {list(v.shape)}" for v in y)
        line = f"wrote {args.output} (.npz, output0..{len(y) - 1}): {shapes} ({args.backend})"
    else:
        _save(args.output, y)
        line = f"wrote {args.output}: {y.dtype} {list(y.shape)} ({args.backend})"
    if model.last_cycles:
        cyc = model.last_cycles
        line += (f"; accelerator busy cycles per input ({model.last_memory}): "
                 f"{', '.join(f'{c:,}' for c in cyc)}")
    print(line)
    if args.waves is not None:
        w = options["waves"]
        what = "every cycle of the run"
        if window is not None:
            names = window.layers
            span = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"
            what = (f"the cycles of layer(s) {span} (commands {window.first}..{window.last} and "
                    f"up to {window.tail:,} cycles after), for each input")
        print(f"waveform: {w} ({what}); open it with `gtkwave {w}` or `surfer {w}`")
    return 0


def _check_output(path: Path, suffix: str | None, why: str = "") -> None:
    """Refuse an ``--output`` that cannot be written as named, before any work is done: a
    folder, a missing folder, or (``suffix``) another suffix than the one the file will have."""
    if path.is_dir():
        raise UserError(f"{path}: is a directory; name the file to write")
    if not path.parent.is_dir():
        raise UserError(f"{path}: No such file or directory (the folder {path.parent} does not "
                        "exist)")
    if suffix is not None and path.suffix.lower() != suffix:
        raise UserError(f"{path}: {why}: name the file {path.with_suffix(suffix).name}")


def _save(path: Path, arrays) -> None:
    """Write one array (``.npy`` format) or a dict of arrays (``.npz``) to exactly ``path``
    (``numpy.save`` / ``savez`` given a name would append ``.npy`` / ``.npz`` to another
    suffix, and the message would name a file that was not written)."""
    import numpy as np

    with open(path, "wb") as f:
        if isinstance(arrays, dict):
            np.savez(f, **arrays)
        else:
            np.save(f, arrays)


#: ``zynqnn run --input`` files read as images (Pillow).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".gif", ".tif", ".tiff")


def _read_image(path: Path, shape, mean, std):
    """An image file as the model's input: grey or RGB by the model's channels, resized
    (bilinear) to its height x width, values in [0, 1], then ``(x - mean) / std`` per channel
    when given; shape (1, C, H, W), float32."""
    import numpy as np

    try:
        from PIL import Image, UnidentifiedImageError
    except ModuleNotFoundError:
        raise UserError(f"{path}: reading images needs Pillow (pip install pillow), or pass "
                        "a .npy array") from None
    c, h, w = (tuple(shape) + (1, 1))[:3] if len(shape) == 3 else (None, None, None)
    if c not in (1, 3):
        raise UserError(f"{path}: the model takes {list(shape)} inputs, not 1- or 3-channel "
                        "images: pass a .npy array")
    try:
        with Image.open(path) as im:
            im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
            x = np.asarray(im, dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"{path}: not a readable image ({e})") from None
    x = x[None] if c == 1 else x.transpose(2, 0, 1)
    for name, v in (("mean", mean), ("std", std)):
        if v is not None and len(v) not in (1, c):
            raise UserError(f"--{name} takes 1 or {c} values, not {len(v)}")
    if mean is not None:
        x = x - np.asarray(mean, np.float32).reshape(-1, 1, 1)
    if std is not None:
        x = x / np.asarray(std, np.float32).reshape(-1, 1, 1)
    return x[None].astype(np.float32)


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: comma-separated numbers") from None


def _read_input(path: Path, input_name: str):
    """The array of ``zynqnn run --input``: a ``.npy`` file, or an ``.npz`` archive holding the
    array under the model's input name or as its only array (``zynqnn run`` writes several
    outputs as an ``.npz``, so one model's outputs can feed the next)."""
    import zipfile
    import zlib

    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a .npy array nor an .npz archive ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        return data
    with data:
        names = list(data.files)
        if input_name in names:
            key = input_name
        elif len(names) == 1:
            key = names[0]
        elif not names:
            raise UserError(f"{path}: an .npz archive without arrays")
        else:
            raise UserError(f"{path}: {len(names)} arrays ({', '.join(names)}) and none is named "
                            f"after the model's input {input_name!r}: store the input under "
                            "that name or alone")
        try:
            return data[key]
        except (ValueError, OSError, zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise UserError(f"{path}: array {key!r} cannot be read ({e})") from None


COMMANDS["run"].run = _run


# ---------------------------------------------------------------------------------------------
# example-input


@command("example-input", help="write an input .npy for a program (for zynqnn run)")
def _example_input_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Write N inputs of PROG's input shape to a .npy file (an .npz: under the model's input "
        "name) for `zynqnn run`: held-out images of scikit-learn's digits for the digits CNN "
        "(their labels are printed), the zoo's representative images for the other zoo "
        "models, random normal values otherwise (integer codes when the program takes codes). "
        "Example: zynqnn example-input digits.zqp -o x.npy")
    p.add_argument("program", metavar="PROG", type=Path, help="a program file (zynqnn compile)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="X.npy",
                   help="the file to write")
    p.add_argument("-n", "--count", type=int, default=8, metavar="N",
                   help="inputs to write (default 8)")
    p.add_argument("--random", action="store_true",
                   help="random normal values even for a zoo model")
    p.add_argument("--seed", type=int, default=0, help="seed of the random values")


def _zoo_example(name: str, shape, count: int, seed: int):
    """(array, what it is) of a zoo model's representative inputs, or None."""
    from . import zoo

    if name == "digits_cnn":
        _, _, x_te, y_te = zoo.digits.load_data()
        if count > len(x_te):
            raise UserError(f"--count {count}: the digits test split has {len(x_te)} images")
        labels = " ".join(str(int(v)) for v in y_te[:count])
        return (x_te[:count].numpy(), f"the first {count} held-out images of scikit-learn's "
                f"digits (labels {labels})")
    if shape[1] != shape[2]:
        return None
    x = zoo.example_input(name, shape[1], batch=count, seed=seed)
    if tuple(x.shape[1:]) != tuple(shape):
        return None
    return x.numpy(), f"zynqnn.zoo.example_input({name!r}, {shape[1]}, batch={count})"


def _example_input(args: argparse.Namespace) -> int:
    import numpy as np

    from .program import load

    if args.count < 1:
        raise UserError("--count must be at least 1")
    model = load(args.program)
    b = model.boundary
    shape = tuple(b.input_shape)
    x, what = None, None
    zoo_name = model.name.split("-")[0]
    if b.input_flavour is not None and not args.random:
        try:
            from . import zoo

            if zoo_name in zoo.NAMES:
                found = _zoo_example(zoo_name, shape, args.count, args.seed)
                if found is not None:
                    x, what = found
        except ModuleNotFoundError:  # the runtime alone: no zoo
            pass
    rng = np.random.default_rng(args.seed)
    if x is None and b.input_flavour is None:   # the program takes codes
        x = rng.integers(b.input_qmin, b.input_qmax + 1, size=(args.count, *shape))
        what = (f"random integer codes in [{b.input_qmin}, {b.input_qmax}]; run them with "
                "--codes")
    elif x is None:
        x = rng.standard_normal((args.count, *shape)).astype(np.float32)
        what = f"random normal values (seed {args.seed})"
    if args.output.suffix.lower() == ".npz":
        _save(args.output, {b.input_name: x})
    else:
        _save(args.output, x)
    print(f"wrote {args.output}: {x.dtype} {list(x.shape)}, {what}")
    return 0


COMMANDS["example-input"].run = _example_input


# ---------------------------------------------------------------------------------------------
# report


@command("report", help="performance estimate of a program and the synthesis estimate")
def _report_args(p: argparse.ArgumentParser) -> None:
    from .hw.platform import TOP_NAME

    p.description = (
        "Print the per-layer performance model of a program (cycles, utilization, what bounds "
        "each layer), its estimated latency and frames/s, and the resources of the synthesis "
        "estimate of its hardware config (build/<config id>/resources.json, written by `make "
        "synth`, looked for under the current directory, the program's directory and this "
        "checkout of zynqnn; shown as the accelerator's only when it estimates the top level "
        f"{TOP_NAME}). Without PROG, only the resources of --config. Example: zynqnn report "
        "digits.zqp --clock-mhz 142.857")
    p.add_argument("program", metavar="PROG", type=Path, nargs="?", default=None,
                   help="a program file (zynqnn compile); omit for the resources alone")
    p.add_argument("--config", default=None, metavar="NAME",
                   help="hardware config (default: the program's, else pynq_z2)")
    p.add_argument("--clock-mhz", type=float, default=None, metavar="F",
                   help="accelerator clock (default: the config's, 150; the Pynq-Z2 runs "
                        "142.857)")
    p.add_argument("--ddr-gbps", type=float, default=1.2, metavar="G",
                   help="DDR bandwidth the accelerator sees in GB/s (default 1.2)")
    p.add_argument("--build", type=Path, default=None, metavar="DIR",
                   help="look for <config id>/resources.json in DIR only (default: build/ "
                        "under the current directory, the program's directory and the zynqnn "
                        "checkout)")
    p.add_argument("--resources", type=Path, default=None, metavar="FILE",
                   help="the resources.json of `make synth` to show")


RESOURCES_JSON = "resources.json"


def _resource_dirs(args) -> list[Path]:
    """Where `zynqnn report` looks for <config id>/resources.json."""
    if args.build is not None:
        return [args.build]
    dirs = [Path("build")]
    if args.program is not None:
        dirs.append(args.program.parent / "build")
    root = Path(__file__).resolve().parents[2]  # py/zynqnn/cli.py in a checkout
    if (root / "pyproject.toml").is_file():
        dirs.append(root / "build")
    out, seen = [], set()
    for d in dirs:
        if d.resolve() not in seen:
            seen.add(d.resolve())
            out.append(d)
    return out


def _resources(cfg, args) -> str:
    """The synthesis estimate of ``cfg``, labelled with what it estimates."""
    import json

    from .hw.platform import TOP_NAME
    from .synth import Resources, format_report

    if args.resources is not None:
        path = args.resources
        if not path.is_file():
            raise UserError(f"{path}: no such file")
    else:
        dirs = _resource_dirs(args)
        found = [d / cfg.config_id / RESOURCES_JSON for d in dirs
                 if (d / cfg.config_id / RESOURCES_JSON).is_file()]
        if not found:
            where = ", ".join(str(d / cfg.config_id) for d in dirs)
            return (f"no synthesis estimate for {cfg.name} ({cfg.config_id}) in {where}: run "
                    f"`make synth CONFIG={cfg.name}` (or pass --resources FILE)")
        path = found[0]
    try:
        d = json.loads(path.read_text())
        fields = set(Resources.__dataclass_fields__)
        r = Resources(**{k: v for k, v in d.items() if k in fields})
        text = format_report(r).rstrip("\n")
    except (ValueError, TypeError, AttributeError) as e:
        raise UserError(f"{path}: not a resources.json of `make synth` ({e})") from None
    if r.module == TOP_NAME:
        head = f"synthesis estimate of the accelerator ({TOP_NAME}), from {path}:"
    else:
        head = (f"synthesis estimate of the component {r.module} alone, not of the whole "
                f"accelerator ({TOP_NAME}: `make synth CONFIG={r.config or cfg.name}`), from "
                f"{path}:")
    if r.config_id and r.config_id != cfg.config_id:
        head += (f" NOTE: it estimates config {r.config} ({r.config_id}), not {cfg.name} "
                 f"({cfg.config_id})")
    return f"{head}\n{text}"


def _report(args: argparse.Namespace) -> int:
    from .hw.config import get_config
    from .program import load

    if args.program is None:
        cfg = get_config(args.config or "pynq_z2")
        print(_resources(cfg, args))
        return 0
    model = load(args.program, config=args.config)
    cfg = model.cfg
    rep = model.report(args.clock_mhz if args.clock_mhz is not None else cfg.clock_mhz,
                       args.ddr_gbps)
    resources = _resources(cfg, args)   # a bad --resources fails before anything is printed
    print(f"{args.program}: {model.name}, {model.program.command_count} commands")
    print(rep.table())
    print()
    print(resources)
    return 0


COMMANDS["report"].run = _report


# ---------------------------------------------------------------------------------------------
# deploy

#: What the board installs besides the zynqnn runtime: pyproject.toml's [project] dependencies
#: (tests/test_packaging.py keeps the two equal). numpy and pynq come with the PYNQ image.
RUNTIME_REQUIREMENTS = ("numpy>=1.21,<3", "amaranth==0.5.10")

EXAMPLE_INPUT = "example_input.npy"


@command("deploy", help="write a folder that runs a program on the board")
def _deploy_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Write DIR with what running PROG on a Pynq-Z2 takes: the program file, the bitstream "
        "and its .hwh, the zynqnn runtime (this package's Python files; it needs only numpy "
        "and amaranth), requirements.txt, run_on_board.py, and an example input with the "
        "output the golden backend computes for it here. Copy DIR to the board and run "
        "`python3 run_on_board.py` there. Example: zynqnn deploy digits.zqp -o digits-board "
        "--bitfile build/<config id>/zynqnn_<config id>.bit")
    p.add_argument("program", metavar="PROG", type=Path, help="a program file (zynqnn compile)")
    p.add_argument("-o", "--output", required=True, type=Path, metavar="DIR",
                   help="the folder to write (created; the files written are replaced)")
    p.add_argument("--bitfile", default=None, type=Path, metavar="BIT",
                   help="the bitstream, its .hwh beside it (default: $ZYNQNN_BITFILE or "
                        "build/<config id>/zynqnn_<config id>.bit when it exists; without one "
                        "the folder runs on the golden backend only)")
    p.add_argument("--config", default=None, metavar="NAME",
                   help="refuse the program unless it was compiled for this config")


def _deploy_bitfile(args, cfg) -> Path | None:
    """The bitstream to copy (its .hwh checked), or None when there is none."""
    import os

    bit = args.bitfile
    if bit is None:
        bit = Path(os.environ.get("ZYNQNN_BITFILE")
                   or Path("build") / cfg.config_id / f"zynqnn_{cfg.config_id}.bit")
        if not bit.exists():
            return None
    elif not bit.is_file():
        raise UserError(f"{bit}: no such file")
    if not bit.with_suffix(".hwh").is_file():
        raise UserError(f"{bit.with_suffix('.hwh')}: no such file (PYNQ reads the .hwh beside "
                        "the .bit; `make bitstream` writes both)")
    return bit


def _deploy(args: argparse.Namespace) -> int:
    import shutil

    import numpy as np

    from .program import load

    model = load(args.program, config=args.config)
    cfg, b = model.cfg, model.boundary
    bit = _deploy_bitfile(args, cfg)
    out = args.output
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: not a folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def copy(src: Path, name: str) -> None:
        if src.resolve() != (out / name).resolve():
            shutil.copyfile(src, out / name)
        written.append(name)

    prog_name = args.program.name if args.program.suffix == ".zqp" else f"{args.program.stem}.zqp"
    copy(args.program, prog_name)
    if bit is not None:
        copy(bit, bit.name)
        copy(bit.with_suffix(".hwh"), bit.with_suffix(".hwh").name)
    # The runtime: this package's Python files (pure Python; what the board imports of it needs
    # numpy and amaranth only). The tool chain's modules come along but are never imported.
    pkg = out / "zynqnn"
    if pkg.exists():
        shutil.rmtree(pkg)
    shutil.copytree(Path(__file__).resolve().parent, pkg,   # not the RTL nor the testbenches
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "rtl", "sim"))
    written.append("zynqnn/")
    (out / "requirements.txt").write_text(
        "# The zynqnn runtime's packages (written by `zynqnn deploy`; zynqnn itself is the\n"
        "# zynqnn/ folder beside this file). numpy and pynq come with the PYNQ image.\n"
        + "".join(f"{r}\n" for r in RUNTIME_REQUIREMENTS))
    written.append("requirements.txt")
    # An example input and what the golden backend computes for it here: run_on_board.py
    # compares the board's output with it.
    rng = np.random.default_rng(0)
    shape = (1, *b.input_shape)
    if b.input_flavour is None:   # the graph takes codes
        x = rng.integers(b.input_qmin, b.input_qmax + 1, size=shape).astype(np.int64)
        y = model.run_int(x)
    else:
        x = rng.standard_normal(shape).astype(np.float32)
        y = model.run(x)
    np.save(out / EXAMPLE_INPUT, x)
    written.append(EXAMPLE_INPUT)
    if isinstance(y, tuple):
        expected = "example_output.npz"
        np.savez(out / expected, **{f"output{i}": v for i, v in enumerate(y)})
    else:
        expected = "example_output.npy"
        np.save(out / expected, y)
    written.append(expected)
    script = (_RUN_ON_BOARD
              .replace("@NAME@", model.name).replace("@CONFIG@", f"{cfg.name} ({cfg.config_id})")
              .replace("@PROGRAM_R@", repr(prog_name)).replace("@CONFIG_R@", repr(cfg.config_id))
              .replace("@BITFILE_R@", repr(bit.name if bit is not None else None))
              .replace("@EXPECTED_R@", repr(expected)))
    (out / "run_on_board.py").write_text(script)
    (out / "run_on_board.py").chmod(0o755)
    written.append("run_on_board.py")
    (out / NOTEBOOK).write_text(board_notebook(model.name, f"{cfg.name} ({cfg.config_id})",
                                               prog_name, bit.name if bit is not None else None,
                                               expected))
    written.append(NOTEBOOK)
    print(f"wrote {out}/: {', '.join(written)}")
    if bit is None:
        print(f"no bitstream for {cfg.name} ({cfg.config_id}): pass --bitfile (`make bitstream "
              f"CONFIG={cfg.name}` writes build/{cfg.config_id}/zynqnn_{cfg.config_id}.bit and "
              ".hwh); until then the folder runs with --backend golden")
    print(f"on the board: pip install -r {out.name}/requirements.txt; "
          f"python3 {out.name}/run_on_board.py")
    return 0


COMMANDS["deploy"].run = _deploy

#: The notebook `zynqnn deploy` writes beside run_on_board.py.
NOTEBOOK = "run_on_board.ipynb"


def board_notebook(name: str, config: str, program: str, bitfile: str | None,
                   expected: str) -> str:
    """The Jupyter notebook (nbformat 4, as JSON text) of a deployed folder: it loads the
    program and the overlay, runs the example input on the accelerator and compares the output
    with the golden one computed when deploying; ``BACKEND = "golden"`` runs it without an
    FPGA. Open it in the board's Jupyter (http://<board>:9090) from the copied folder."""
    import json

    def md(text):
        return {"cell_type": "markdown", "metadata": {}, "source": text.splitlines(True)}

    def code(text):
        return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [],
                "source": text.splitlines(True)}

    cells = [
        md(f"# {name} on the zynqnn accelerator\n\n"
           f"Written by `zynqnn deploy` for config {config}. Copy this folder to the Pynq-Z2 "
           "(e.g. into `/home/xilinx/jupyter_notebooks/`), `pip install -r requirements.txt` "
           "once in PYNQ's Python, then run the cells in order. The zynqnn runtime is the "
           "`zynqnn/` folder beside this notebook.\n\n"
           "Set `BACKEND = \"golden\"` to run the same cells without an FPGA (zynqnn's Python "
           "model of the accelerator; slow on the board's CPU)."),
        code("import sys\n"
             "from pathlib import Path\n\n"
             "HERE = Path.cwd()   # Jupyter starts a notebook in its own folder\n"
             "sys.path.insert(0, str(HERE))   # the zynqnn runtime copied beside it\n\n"
             "import numpy as np\n"
             "import zynqnn\n\n"
             "BACKEND = \"pynq\"   # or \"golden\": no FPGA needed\n"
             f"PROGRAM = {program!r}\n"
             f"BITFILE = {bitfile!r}   # its .hwh beside it; None: none was deployed\n"
             f"EXPECTED = {expected!r}"),
        md("Load the program (checked against its SHA-256) and, on the board, the overlay: "
           "the first run programs the FPGA with the bitstream and binds zynqnn's driver to the "
           "accelerator (`zynqnn.pynq_overlay`), which checks the hardware's config readback."),
        code("model = zynqnn.load(HERE / PROGRAM)\n"
             "print(model)\n"
             "options = {}\n"
             "if BACKEND == \"pynq\":\n"
             "    assert BITFILE is not None, \"no bitstream was deployed: zynqnn deploy "
             "--bitfile BIT\"\n"
             "    options = {\"bitfile\": str(HERE / BITFILE)}"),
        md("Run the example input (float32 N x C x H x W, as the framework model takes it; "
           "integer codes give codes back). Your own input: `x = np.load(\"x.npy\")`."),
        code("x = np.load(HERE / \"example_input.npy\")\n"
             "run = model.run if x.dtype.kind == \"f\" else model.run_int\n"
             "y = run(x, BACKEND, **options)\n"
             "ys = list(y) if isinstance(y, tuple) else [y]\n"
             "print([a.shape for a in ys])\n"
             "if model.last_cycles:\n"
             "    print(\"accelerator busy cycles per input:\", model.last_cycles)"),
        md("Compare with the output the golden backend computed when deploying."),
        code("data = np.load(HERE / EXPECTED)\n"
             "ref = [data[f\"output{i}\"] for i in range(len(data.files))] "
             "if hasattr(data, \"files\") else [data]\n"
             "same = len(ref) == len(ys) and all(np.array_equal(a, b) for a, b in zip(ys, ref))\n"
             "print(\"equal to\" if same else \"DIFFERENT from\", EXPECTED)\n"
             "assert same"),
    ]
    nb = {"cells": cells, "metadata": {
              "kernelspec": {"display_name": "Python 3", "language": "python",
                             "name": "python3"},
              "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    for i, c in enumerate(cells):   # nbformat 4.5 wants cell ids
        c["id"] = f"zynqnn-{i}"
    return json.dumps(nb, indent=1) + "\n"

_RUN_ON_BOARD = '''\
#!/usr/bin/env python3
"""Run @NAME@ (config @CONFIG@) on the zynqnn accelerator of a Pynq-Z2.

Written by `zynqnn deploy`. On the board, as root in PYNQ's Python:

    pip install -r requirements.txt        # once: the zynqnn runtime's packages
    python3 run_on_board.py                # the example input, checked against the output
                                           # the golden backend computed when deploying
    python3 run_on_board.py x.npy -o y.npy # your input: float32 N x C x H x W (or C x H x W;
                                           # integer codes give codes back)

--backend golden runs the command stream on zynqnn's Python model of the accelerator instead
(no FPGA involved; slow on the board's CPU); --check runs it too and compares.
"""

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the zynqnn runtime copied beside this script

import numpy as np  # noqa: E402

import zynqnn  # noqa: E402

PROGRAM = @PROGRAM_R@
CONFIG = @CONFIG_R@
BITFILE = @BITFILE_R@  # beside this script; None: no bitstream was deployed
EXAMPLE_INPUT, EXAMPLE_OUTPUT = "example_input.npy", @EXPECTED_R@


def outputs(y):
    return list(y) if isinstance(y, tuple) else [y]


def load_outputs(path):
    data = np.load(path, allow_pickle=False)
    if hasattr(data, "files"):  # .npz: output0, output1, ...
        return [data[f"output{i}"] for i in range(len(data.files))]
    return [data]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input", nargs="?", default=None, metavar="X.npy",
                   help="input array (default: " + EXAMPLE_INPUT + ", checked against "
                        + EXAMPLE_OUTPUT + ")")
    p.add_argument("-o", "--output", default="y.npy", metavar="Y.npy",
                   help="where to write the output (.npz for several outputs; default y.npy)")
    p.add_argument("--backend", choices=("pynq", "golden"), default="pynq",
                   help="pynq: the accelerator (default); golden: the Python model")
    p.add_argument("--bitfile", default=None, metavar="BIT",
                   help="the bitstream, .hwh beside it (default: the deployed one)")
    p.add_argument("--check", action="store_true",
                   help="also run the golden backend here and compare")
    p.add_argument("--timeout", type=float, default=1.0, metavar="S",
                   help="seconds one inference may take on the accelerator (default 1)")
    args = p.parse_args(argv)

    model = zynqnn.load(HERE / PROGRAM)
    if model.config_id != CONFIG:
        p.error(f"{PROGRAM} is compiled for config {model.config_id}, deployed for {CONFIG}")
    example = args.input is None
    path = HERE / EXAMPLE_INPUT if example else Path(args.input)
    x = np.load(path, allow_pickle=False)
    if x.ndim == len(model.boundary.input_shape):
        x = x[None]
    options = {}
    if args.backend == "pynq":
        bit = Path(args.bitfile) if args.bitfile else HERE / BITFILE if BITFILE else None
        if bit is None:
            p.error("no bitstream was deployed: pass --bitfile, or --backend golden")
        options = {"bitfile": str(bit), "timeout_s": args.timeout}
    run = model.run if x.dtype.kind == "f" else model.run_int
    t0 = time.perf_counter()
    y = run(x, args.backend, **options)
    seconds = time.perf_counter() - t0
    ys = outputs(y)
    if len(ys) > 1:
        np.savez(args.output, **{f"output{i}": v for i, v in enumerate(ys)})
    else:
        np.save(args.output, ys[0])
    loading = " (loading the overlay included)" if args.backend == "pynq" else ""
    print(f"{model.name}: {len(x)} input(s) on {args.backend} in {seconds:.3f} s{loading}; "
          f"wrote {args.output}")
    if model.last_cycles:
        print("accelerator busy cycles per input: "
              + ", ".join(f"{c:,}" for c in model.last_cycles))
    refs = []
    if example:
        refs.append((EXAMPLE_OUTPUT, load_outputs(HERE / EXAMPLE_OUTPUT)))
    if args.check and args.backend != "golden":
        refs.append(("the golden backend", outputs(run(x, "golden"))))
    ok = True
    for what, ref in refs:
        same = len(ref) == len(ys) and all(np.array_equal(a, b) for a, b in zip(ys, ref))
        print(("equal to " if same else "DIFFERENT from ") + what)
        ok = ok and same
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (OSError, ValueError, RuntimeError) as e:  # zynqnn's errors are among these
        sys.exit(f"run_on_board.py: error: {e}")
'''


# ---------------------------------------------------------------------------------------------
# verilog


@command("verilog", help="write the generated Verilog of the accelerator")
def _verilog_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Elaborate the accelerator for a hardware config and write its top level "
        "(zynqnn_top.v, the module Vivado instantiates) to DIR/<config id>/, as `make verilog` "
        "does. Example: zynqnn verilog --config pynq_z2 -o build")
    p.add_argument("--config", default="pynq_z2", metavar="NAME",
                   help="hardware config preset (default pynq_z2)")
    p.add_argument("-o", "--output", type=Path, default=Path("build"), metavar="DIR",
                   help="output directory (default build)")
    p.add_argument("--all", action="store_true",
                   help="also write the stand-alone components (PE array, step lanes, engine)")


def _verilog(args: argparse.Namespace) -> int:
    from .hw.config import get_config
    from .hw.platform import TOP_NAME
    from .rtl.gen import write_verilog

    cfg = get_config(args.config)
    for path in write_verilog(cfg, args.output, None if args.all else TOP_NAME):
        print(f"wrote {path}")
    return 0


COMMANDS["verilog"].run = _verilog


# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="zynqnn", description="zynqnn: bit-exact CNN "
                                     "inference on Zynq-7000 FPGAs")
    parser.add_argument("--version", action="version", version=f"zynqnn {__version__}")
    _global_options(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for c in COMMANDS.values():
        sp = sub.add_parser(c.name, help=c.help, description=c.help)
        c.add_arguments(sp)
        _global_options(sp, argparse.SUPPRESS)
    return parser


def _global_options(p: argparse.ArgumentParser, default) -> None:
    """--debug, --verbose, --quiet: before the command (``default`` False) or after it
    (SUPPRESS: the value given before the command stays)."""
    p.add_argument("--debug", action="store_true", default=default,
                   help="on an error, show the Python traceback instead of one line")
    p.add_argument("-v", "--verbose", action="store_true", default=default,
                   help="progress of long steps (builds, RTL runs, calibration, compile) on "
                        "stderr even when it is not a terminal (default: only on a terminal)")
    p.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="no progress on stderr, not even on a terminal")


#: Exit status when stdout's reader went away (`zynqnn report PROG | head`): 128 + SIGPIPE, as
#: a Unix tool killed by SIGPIPE reports it (`cat`, `git log`); nothing is printed.
EXIT_BROKEN_PIPE = 141


def _broken_pipe() -> int:
    """stdout is a closed pipe: point it at /dev/null so that Python's exit flush stays
    silent, and end with :data:`EXIT_BROKEN_PIPE`."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real file behind sys.stdout
        pass
    return EXIT_BROKEN_PIPE


def _error_line(exc: BaseException) -> str:
    """One line for an error: its message's first line; an OSError names its file."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    # str(KeyError("x")) is "'x'": its argument is the message
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    import os

    from . import progress

    parser = build_parser()
    args = parser.parse_args(argv)
    cmd = COMMANDS[args.command]
    if cmd.run is None:
        parser.error(f"command {args.command!r} is not implemented yet")
    if args.verbose and args.quiet:
        parser.error("--verbose and --quiet exclude each other")
    level = "verbose" if args.verbose else "quiet" if args.quiet else None
    old = os.environ.get(progress.ENV)
    if level:   # in the environment: the processes started (simulator, make) see it too
        progress.set_level(level)
    try:
        return _run_command(cmd, args)
    finally:
        if level:
            os.environ.pop(progress.ENV, None)
            if old is not None:
                os.environ[progress.ENV] = old


def _run_command(cmd: Command, args: argparse.Namespace) -> int:
    from .frontend.common import FrontendError
    from .ir import IRError

    try:
        code = int(cmd.run(args) or 0)
        sys.stdout.flush()   # a closed pipe shows here, not in Python's exit flush
        return code
    except BrokenPipeError:
        return _broken_pipe()
    except ModuleNotFoundError as exc:   # a package this installation lacks
        if getattr(args, "debug", False):
            raise
        top = (exc.name or "").split(".")[0]
        if top in TOOL_PACKAGES:
            print(f"zynqnn {args.command}: error: this needs the tool chain (the Python "
                  f"package {top!r} is not installed): pip install 'zynqnn[tools]'",
                  file=sys.stderr)
        else:
            print(f"zynqnn {args.command}: error: {_error_line(exc)}", file=sys.stderr)
        return 1
    except (UserError, FrontendError, IRError, KeyError, ValueError, TypeError, OSError,
            RuntimeError) as exc:
        # The project's errors are ValueError / RuntimeError subclasses (ProgramFileError,
        # ConfigError, CompileError, MachineError, BackendError, DriverError ...).
        if getattr(args, "debug", False):
            raise
        print(f"zynqnn {args.command}: error: {_error_line(exc)}", file=sys.stderr)
        if getattr(exc, "errors", None):   # CompileErrors: every refused node, one a line
            for line in str(exc).splitlines()[1:]:
                print(line, file=sys.stderr)
        return 1
    except Exception as exc:  # a bug (or an input no check foresaw): still one line
        if getattr(args, "debug", False):
            raise
        print(f"zynqnn {args.command}: error: internal error: {type(exc).__name__}: "
              f"{_error_line(exc)} (`zynqnn --debug {args.command} ...` shows the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
