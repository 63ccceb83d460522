"""The ``zynqnn`` command line.

Sub-commands register themselves with :func:`command`; each gets an ``argparse`` sub-parser and
a function ``run(args) -> int``. Errors a user can cause (a bad model, a bad option) end the
program with exit status 1 and one line ``zynqnn <command>: error: <reason>`` on stderr.

Adding a sub-command (``compile``, ``run``, ``report``, ``verilog`` ...)::

    @command("compile", help="compile a graph for a hardware configuration")
    def _compile_args(p):                  # add arguments to the sub-parser
        p.add_argument("graph")

    def _compile(args) -> int: ...
    COMMANDS["compile"].run = _compile     # or pass run= to command()

Implemented: ``errors`` (per-layer float vs quantized error table and PNG), ``compile`` (a model
to a program file), ``run`` (a program on an input .npy), ``report`` (performance model and
synthesis estimate) and ``verilog`` (the generated top level).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    p.add_argument("model", metavar="MODEL",
                   help="a zoo model name (resnet18, mobilenet_v2, yolov3_tiny, digits_cnn) or "
                        "an ONNX file (float: quantized here with ONNX Runtime; QDQ/QOperator: "
                        "imported as is)")
    p.add_argument("--engine", choices=ENGINES, default="fbgemm",
                   help="who quantizes a zoo model: torch.ao FX with the fbgemm or qnnpack "
                        "engine, ONNX Runtime quantize_static (onnxruntime), or zynqnn.quantize "
                        "with the tflite, pow2 or fixed16 scheme (default: fbgemm)")
    p.add_argument("--size", type=int, default=None,
                   help="input height = width (default: the zoo model's own size; for ONNX "
                        "files with dynamic sizes this is required)")
    p.add_argument("--calib", type=int, default=8, metavar="N",
                   help="calibration images (default 8)")
    p.add_argument("--images", type=int, default=2, metavar="N",
                   help="images the errors are measured on (default 2)")
    p.add_argument("--png", type=Path, default=None, metavar="PATH",
                   help="where to write the plot (default: <model>-<engine>-errors.png)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random zoo weights/inputs")


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

    name = args.model
    model = zoo.get(name, pretrained=True) if name == "digits_cnn" else zoo.get(name,
                                                                               seed=args.seed)
    if name == "digits_cnn" and args.size not in (None, 8):
        raise UserError("digits_cnn takes 8x8 inputs (--size 8)")
    if name == "yolov3_tiny" and args.size and args.size % 32:
        raise UserError("yolov3_tiny needs --size to be a multiple of 32")
    calib = _zoo_inputs(name, args.size, args.calib, args.seed + 100, "train")
    x = _zoo_inputs(name, args.size, args.images, args.seed + 1000, "test")
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


_QUANT_OPS = {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm", "DequantizeLinear"}


def _prepare_onnx(args) -> tuple[Any, Any, str]:
    import numpy as np
    import onnx

    from .analysis import attach_float_weights
    from .frontend import from_onnx
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
    if args.size:
        dims[2] = dims[3] = args.size
    if dims[1] is None or dims[2] is None or dims[3] is None:
        raise UserError(f"{label}: input {vi.name!r} has dynamic sizes; pass --size")
    shape = (dims[0] or 1, dims[1], dims[2], dims[3])
    shapes = {vi.name: shape} if dynamic or args.size else None
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.images,) + shape[1:]).astype(np.float32)
    quantized = any(n.op_type in _QUANT_OPS for n in m.graph.node)
    if quantized:
        graph = from_onnx(m, input_shapes=shapes)
        return graph, x, path.stem
    calib = rng.standard_normal((args.calib * shape[0],) + shape[1:]).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
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
        graph = from_onnx(qpath)
        attach_float_weights(graph, fpath)
    return graph, x, f"{path.stem}-onnxruntime"


def _errors(args: argparse.Namespace) -> int:
    from . import zoo
    from .analysis import layer_errors

    if args.calib < 1 or args.images < 1:
        raise UserError("--calib and --images must be at least 1")
    if args.model in zoo.NAMES:
        graph, x, label = _prepare_zoo(args)
    elif args.model.lower().endswith(".onnx") or Path(args.model).exists():
        if args.engine not in ("fbgemm", "onnxruntime"):
            raise UserError("ONNX files are quantized (or were quantized) by ONNX Runtime; "
                            "--engine does not apply")
        graph, x, label = _prepare_onnx(args)
    else:
        raise UserError(f"unknown model {args.model!r}: not a zoo model "
                        f"({', '.join(zoo.NAMES)}) nor an ONNX file")
    rows = layer_errors(graph, x)
    rows.title = f"per-layer quantization error: {label} ({len(x)} image(s))"
    print(rows.table())
    png = args.png or Path(f"{label}-errors.png")
    rows.plot(png)
    print(f"wrote {png}")
    return 0


COMMANDS["errors"].run = _errors


# ---------------------------------------------------------------------------------------------
# compile


COMPILE_ENGINES = ("fbgemm", "qnnpack", "tflite", "pow2", "fixed16")
#: Short names accepted besides the zoo's own.
ZOO_ALIASES = {"digits": "digits_cnn"}


@command("compile", help="compile a model for the accelerator into a program file")
def _compile_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Quantize (zoo models) or import (ONNX, .zqg) a model, map it onto the accelerator's "
        "layers and write the command stream, its constants and the model's float interface "
        "to one program file. Example: zynqnn compile digits -o digits.zqp")
    p.add_argument("model", metavar="MODEL",
                   help="a zoo model name (digits, or digits_cnn, resnet18, mobilenet_v2, "
                        "yolov3_tiny; quantized here), a quantized ONNX file (QDQ or QOperator) "
                        "or a zynqnn graph file (.zqg)")
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
    model = zoo.get(name, pretrained=True) if name == "digits_cnn" else zoo.get(name,
                                                                               seed=args.seed)
    calib = _zoo_inputs(name, args.size, args.calib, args.seed + 100, "train")
    x = calib[:1]
    if args.engine in ("fbgemm", "qnnpack"):
        with quiet_torch_ao():
            q = zoo.quantize_fx(model, x, engine=args.engine, calibration=calib)
            graph = from_torch(q, x, engine=args.engine)
    else:
        graph = quantize(model, calib, example_input=x, scheme=args.engine)
    return graph, f"{name}-{args.engine}"


def _load_model(args):
    """(graph, label) of the compile command's MODEL."""
    from . import zoo

    name = ZOO_ALIASES.get(args.model, args.model)
    if name in zoo.NAMES:
        return _zoo_graph(args)
    path = Path(args.model)
    if path.suffix.lower() == ".zqg":
        from .ir import load as load_graph

        return load_graph(path), path.stem
    if path.suffix.lower() == ".onnx" or path.exists():
        from .frontend import from_onnx
        from .frontend.onnx_import import load_onnx

        m, label = load_onnx(path)
        if not any(n.op_type in _QUANT_OPS for n in m.graph.node):
            raise UserError(f"{label}: a float ONNX model; quantize it first (ONNX Runtime's "
                            "quantize_static, QDQ format) or compile a zoo model")
        return from_onnx(m), path.stem
    names = ", ".join(sorted({*zoo.NAMES, *ZOO_ALIASES}))
    raise UserError(f"unknown model {args.model!r}: not a zoo model ({names}), an ONNX file "
                    "nor a .zqg graph")


def _compile(args: argparse.Namespace) -> int:
    from .config import get_config
    from .program import compile as compile_model

    cfg = get_config(args.config)
    name = ZOO_ALIASES.get(args.model, args.model)
    if args.engine != "fbgemm" and name not in _zoo_names():
        raise UserError("--engine applies to zoo models only")
    graph, label = _load_model(args)
    model = compile_model(graph, cfg)
    model.name = label
    path = model.save(args.output)
    prog = model.program
    b = model.boundary
    print(f"compiled {label} for {cfg.name} ({cfg.config_id}): {len(model.layers)} layers, "
          f"{prog.command_count} commands, {prog.ddr_bytes:,} bytes of DDR")
    print(f"input {b.input_dtype} {['N', *b.input_shape]}, output {b.output_dtype} "
          f"{['N', *b.output_shape]}")
    print(f"wrote {path}")
    return 0


def _zoo_names():
    from . import zoo

    return set(zoo.NAMES)


COMMANDS["compile"].run = _compile


# ---------------------------------------------------------------------------------------------
# run


@command("run", help="run a program file on an input .npy")
def _run_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run a compiled program on the inputs of a .npy file (float32 N x C x H x W, like "
        "the framework model; or integer codes with --codes) and write the outputs to a .npy "
        "file. Example: zynqnn run digits.zqp --input x.npy --output y.npy")
    p.add_argument("program", metavar="PROG", type=Path, help="a program file (zynqnn compile)")
    p.add_argument("--input", "-i", required=True, type=Path, metavar="X.npy",
                   help="input array, N x C x H x W (a single C x H x W sample is accepted)")
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


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from .program import load

    model = load(args.program, config=args.config)
    try:
        x = np.load(args.input, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{args.input}: no such file") from None
    except ValueError as e:
        raise UserError(f"{args.input}: not a .npy array ({e})") from None
    if x.ndim == len(model.boundary.input_shape):
        x = x[None]
    options = {"bitfile": args.bitfile} if args.backend == "pynq" and args.bitfile else {}
    if args.codes:
        y = model.run_int(x, args.backend, **options)
    else:
        if x.dtype.kind != "f":
            raise UserError(f"{args.input}: {x.dtype} values; the model takes float32 inputs "
                            "(pass --codes for integer codes)")
        y = model.run(x, args.backend, **options)
    if isinstance(y, tuple):  # several outputs: one array per output in an .npz
        np.savez(args.output, **{f"output{i}": v for i, v in enumerate(y)})
        shapes = ", ".join(f"{v.dtype} {list(v.shape)}" for v in y)
        line = f"wrote {args.output} (.npz, output0..{len(y) - 1}): {shapes} ({args.backend})"
    else:
        np.save(args.output, y)
        line = f"wrote {args.output}: {y.dtype} {list(y.shape)} ({args.backend})"
    if model.last_cycles:
        cyc = model.last_cycles
        line += f"; accelerator busy cycles per input: {', '.join(f'{c:,}' for c in cyc)}"
    print(line)
    return 0


COMMANDS["run"].run = _run


# ---------------------------------------------------------------------------------------------
# report


@command("report", help="performance estimate of a program and the synthesis estimate")
def _report_args(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Print the per-layer performance model of a program (cycles, utilization, what bounds "
        "each layer), its estimated latency and frames/s, and the resources of the synthesis "
        "estimate of its hardware config (written by `make synth`). Without PROG, only the "
        "resources of --config. Example: zynqnn report digits.zqp --clock-mhz 142.857")
    p.add_argument("program", metavar="PROG", type=Path, nargs="?", default=None,
                   help="a program file (zynqnn compile); omit for the resources alone")
    p.add_argument("--config", default=None, metavar="NAME",
                   help="hardware config (default: the program's, else pynq_z2)")
    p.add_argument("--clock-mhz", type=float, default=None, metavar="F",
                   help="accelerator clock (default: the config's, 150; the Pynq-Z2 runs "
                        "142.857)")
    p.add_argument("--ddr-gbps", type=float, default=1.2, metavar="G",
                   help="DDR bandwidth the accelerator sees in GB/s (default 1.2)")
    p.add_argument("--build", type=Path, default=Path("build"), metavar="DIR",
                   help="where `make synth` wrote <config id>/resources.txt (default build)")


def _resources(cfg, build: Path) -> str:
    path = build / cfg.config_id / "resources.txt"
    if path.exists():
        return path.read_text().rstrip("\n")
    return (f"no synthesis estimate for {cfg.name} ({cfg.config_id}) in {path.parent}: run "
            f"`make synth CONFIG={cfg.name}`")


def _report(args: argparse.Namespace) -> int:
    from .config import get_config
    from .program import load

    if args.program is None:
        cfg = get_config(args.config or "pynq_z2")
        print(_resources(cfg, args.build))
        return 0
    model = load(args.program, config=args.config)
    cfg = model.cfg
    rep = model.report(args.clock_mhz if args.clock_mhz is not None else cfg.clock_mhz,
                       args.ddr_gbps)
    print(f"{args.program}: {model.name}, {model.program.command_count} commands")
    print(rep.table())
    print()
    print(_resources(cfg, args.build))
    return 0


COMMANDS["report"].run = _report


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
                   help="also write the stand-alone components (PE array, requantizer, engine)")


def _verilog(args: argparse.Namespace) -> int:
    from .config import get_config
    from .platform import TOP_NAME
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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for c in COMMANDS.values():
        sp = sub.add_parser(c.name, help=c.help, description=c.help)
        c.add_arguments(sp)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    cmd = COMMANDS[args.command]
    if cmd.run is None:
        parser.error(f"command {args.command!r} is not implemented yet")
    from .frontend.common import FrontendError
    from .ir import IRError

    try:
        return int(cmd.run(args) or 0)
    except (UserError, FrontendError, IRError, KeyError, ValueError, OSError,
            RuntimeError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError):
            msg = str(exc.args[0]) if exc.args else msg
        print(f"zynqnn {args.command}: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
