"""torch.ao quantization helpers: FX post-training quantization, FX QAT, and a graph summary.

Both flows use torch's default qconfig mapping for the engine (``fbgemm``: per-channel symmetric
int8 weights, quint8 activations with ``reduce_range`` i.e. 0..127; ``qnnpack``: per-tensor int8
weights, full-range quint8 activations) and return a converted FX ``GraphModule`` whose
``int_repr()`` values are what the hardware is compared against.

Backend config: by default the helpers use torch's native backend config extended with
``nn.ZeroPad2d`` and ``nn.Upsample`` as ops that share their input's observer (see
:func:`backend_config`); after ``convert_fx`` the ``dequantize -> op -> quantize_per_tensor``
triples those ops leave behind are rewritten to run the op on the quantized tensor directly, which
is exact because the requantization uses the input's own qparams (checked on the example inputs
before any rewrite). Pass ``backend="native"`` for torch's stock observer placement (the exact
rewrite still applies wherever a stock requantization happens to reuse the input's qparams).

qnnpack: torch 2.13's quantized clamp (ReLU6 / Hardtanh / clamp) is wrong on the channels-last
tensors quantized convs return; :func:`fix_qnnpack_clamp` patches converted graphs (both helpers
apply it for ``engine="qnnpack"``).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

# torch 2.13 needs this submodule imported before get_native_backend_config() can run.
import torch.ao.quantization.backend_config.utils  # noqa: F401
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import (
    QConfigMapping,
    disable_observer,
    get_default_qat_qconfig_mapping,
    get_default_qconfig_mapping,
)
from torch.ao.quantization.backend_config import (
    BackendConfig,
    BackendPatternConfig,
    DTypeConfig,
    ObservationType,
    get_native_backend_config,
)
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx
from torch.fx import GraphModule, Interpreter, Node

__all__ = [
    "ENGINES",
    "cpu_independent_qconfig_mapping",
    "INTEGER_DOMAIN_MODULES",
    "TORCH_AO_NOISE",
    "backend_config",
    "fix_qnnpack_clamp",
    "lower_integer_domain_modules",
    "op_summary",
    "qat_finetune",
    "quantize_fx",
    "quiet_torch_ao",
    "set_engine",
]

#: Quantized engines the zoo is tested with.
ENGINES: tuple[str, ...] = ("fbgemm", "qnnpack")

#: Modules that run unchanged on a quantized tensor and keep its qparams, but which torch's native
#: backend config does not list (so stock FX runs them in float between dequantize/quantize).
INTEGER_DOMAIN_MODULES: tuple[type[nn.Module], ...] = (nn.ZeroPad2d, nn.Upsample)


#: Messages of the deprecation notices torch.ao emits on every use (torch 2.13).
TORCH_AO_NOISE: tuple[str, ...] = (
    r".*torch\.ao\.quantization is deprecated",
    r".*reduce_range will be deprecated",
    r".*quantized tensor creation functions .* are deprecated",
)


def cpu_independent_qconfig_mapping(engine: str) -> QConfigMapping:
    """torch's default mapping; for fbgemm with min/max activation observers (reduce_range).

    fbgemm multiplies activation codes in int16 pairs (``vpmaddubsw``) in its depthwise kernels
    on every CPU and in all kernels on CPUs without AVX-512 VNNI; codes above 127 can then
    saturate. The golden model reproduces the depthwise pairs; min/max observers over the
    calibration data keep its codes in 0..127, so the comparison is also independent of the
    CPU's other (non-VNNI) kernels (docs/numerics.md).
    """
    from torch.ao.quantization import MinMaxObserver, PerChannelMinMaxObserver, QConfig

    qmap = get_default_qconfig_mapping(engine)
    if engine == "fbgemm":
        qmap.set_global(QConfig(
            activation=MinMaxObserver.with_args(reduce_range=True),
            weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8,
                                                      qscheme=torch.per_channel_symmetric)))
    return qmap


@contextlib.contextmanager
def quiet_torch_ao() -> Iterator[None]:
    """Silence torch.ao's deprecation notices (:data:`TORCH_AO_NOISE`) inside the block."""
    with warnings.catch_warnings():
        for message in TORCH_AO_NOISE:
            warnings.filterwarnings("ignore", message=message)
        yield


def set_engine(engine: str) -> None:
    """Select the quantized engine (process-global; quantized modules pack weights for it)."""
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(
            f"quantized engine {engine!r} not supported here; "
            f"have {torch.backends.quantized.supported_engines}"
        )
    torch.backends.quantized.engine = engine


def backend_config(kind: str | BackendConfig | None = "zynqnn") -> BackendConfig:
    """The FX backend config the zoo quantizes with.

    ``"zynqnn"`` (default): torch's native config plus :data:`INTEGER_DOMAIN_MODULES` as
    output-shares-input-observer ops. ``"native"``: torch's stock config. A ``BackendConfig`` is
    returned as is.
    """
    if isinstance(kind, BackendConfig):
        return kind
    config = get_native_backend_config()
    if kind in (None, "native"):
        return config
    if kind != "zynqnn":
        raise ValueError(f"unknown backend config {kind!r}; use 'zynqnn' or 'native'")
    quint8 = DTypeConfig(input_dtype=torch.quint8, output_dtype=torch.quint8)
    for op in INTEGER_DOMAIN_MODULES:
        config.set_backend_pattern_config(
            BackendPatternConfig(op)
            .set_observation_type(ObservationType.OUTPUT_SHARE_OBSERVER_WITH_INPUT)
            .set_dtype_configs([quint8])
        )
    return config


def _as_tuple(inputs: Any) -> tuple[Any, ...]:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _random_batches(
    example_inputs: tuple[Any, ...], count: int, seed: int
) -> list[tuple[Any, ...]]:
    """The example inputs plus ``count`` uniform random inputs spanning the same value range."""
    gen = torch.Generator().manual_seed(seed)
    batches = [example_inputs]
    for _ in range(count):
        batch = []
        for t in example_inputs:
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel():
                lo, hi = float(t.min()), float(t.max())
                r = torch.rand(t.shape, generator=gen, dtype=t.dtype)
                batch.append(r * (hi - lo) + lo)
            else:
                batch.append(t)
        batches.append(tuple(batch))
    return batches


def _calibration_batches(calibration: Any, batch_size: int) -> Iterable[tuple[Any, ...]]:
    if isinstance(calibration, torch.Tensor):
        return [(chunk,) for chunk in torch.split(calibration, batch_size)]
    return (_as_tuple(b) for b in calibration)


class _QParamRecorder(Interpreter):
    """Runs a converted model and records the qparams of chosen nodes' quantized outputs."""

    def __init__(self, gm: GraphModule, nodes: set[Node]) -> None:
        super().__init__(gm)
        self.wanted = nodes
        self.seen: dict[Node, list[tuple[float, int, torch.dtype]]] = {}

    def run_node(self, n: Node) -> Any:
        out = super().run_node(n)
        if n in self.wanted and isinstance(out, torch.Tensor) and out.is_quantized:
            self.seen.setdefault(n, []).append((out.q_scale(), out.q_zero_point(), out.dtype))
        return out


def _exact_on_quantized(module: nn.Module | None) -> bool:
    """True if running ``module`` on a quantized tensor equals dequantize -> module -> quantize
    with the same qparams, bit for bit (padding with 0.0 pads with the zero point; nearest
    upsampling copies values; bilinear would round differently)."""
    if isinstance(module, nn.ZeroPad2d):
        return True
    return isinstance(module, nn.Upsample) and module.mode == "nearest"


def lower_integer_domain_modules(gm: GraphModule, example_inputs: Sequence[Any]) -> list[str]:
    """Rewrite ``dequantize -> M -> quantize_per_tensor`` to ``M`` on the quantized tensor.

    ``M`` is an ``nn.ZeroPad2d`` or a nearest-mode ``nn.Upsample``. A triple is rewritten only
    when running ``example_inputs`` shows that the requantization uses exactly the input's
    qparams, so the rewrite cannot change any output bit. Returns the rewritten module names.
    """
    modules = dict(gm.named_modules())
    triples: list[tuple[Node, Node, Node]] = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not _exact_on_quantized(modules.get(node.target)):
            continue
        dq = node.args[0] if node.args else None
        if not (isinstance(dq, Node) and dq.op == "call_method" and dq.target == "dequantize"):
            continue
        if len(node.users) != 1:
            continue
        (q,) = node.users
        if q.op == "call_function" and q.target is torch.quantize_per_tensor:
            triples.append((dq, node, q))
    if not triples:
        return []
    rec = _QParamRecorder(gm, {n for dq, _, q in triples for n in (dq.args[0], q)})
    with torch.no_grad():
        rec.run(*example_inputs)
    done = []
    for dq, node, q in triples:
        src = dq.args[0]
        if src not in rec.seen or rec.seen.get(src) != rec.seen.get(q):
            continue
        node.args = (src, *node.args[1:])
        q.replace_all_uses_with(node)
        gm.graph.erase_node(q)
        if not dq.users:
            gm.graph.erase_node(dq)
        done.append(str(node.target))
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return done


#: Clamp-like ops whose qnnpack kernel mishandles channels-last quantized input (see below).
_CLAMP_MODULES: tuple[type[nn.Module], ...] = (nn.ReLU6, nn.Hardtanh)
_CLAMP_FUNCTIONS = (F.relu6, F.hardtanh, F.hardtanh_, torch.clamp, torch.clip)
_CLAMP_METHODS = ("clamp", "clip", "clamp_", "clip_")


def fix_qnnpack_clamp(gm: GraphModule) -> list[str]:
    """Insert ``.contiguous()`` before every clamp-like op (ReLU6, Hardtanh, clamp) of ``gm``.

    torch's qnnpack clamp kernel (used for quantized hardtanh / relu6 / clamp when the engine is
    qnnpack) reads a channels-last quantized tensor, which is what every quantized conv returns,
    as if it were NCHW-contiguous and so scrambles the output (torch 2.13; fbgemm is unaffected).
    Making the input NCHW-contiguous first gives the correct clamp. Numerically a no-op otherwise.
    Returns the names of the patched nodes.
    """
    modules = dict(gm.named_modules())
    patched = []
    for node in list(gm.graph.nodes):
        is_clamp = (
            (node.op == "call_module" and isinstance(modules.get(node.target), _CLAMP_MODULES))
            or (node.op == "call_function" and node.target in _CLAMP_FUNCTIONS)
            or (node.op == "call_method" and node.target in _CLAMP_METHODS)
        )
        if not is_clamp or not node.args or not isinstance(node.args[0], Node):
            continue
        src = node.args[0]
        if src.op == "call_method" and src.target == "contiguous":
            continue
        with gm.graph.inserting_before(node):
            contiguous = gm.graph.call_method("contiguous", (src,))
        node.args = (contiguous, *node.args[1:])
        patched.append(node.name)
    if patched:
        gm.recompile()
    return patched


def _finish(gm: GraphModule, engine: str, example_inputs: Sequence[Any]) -> GraphModule:
    lower_integer_domain_modules(gm, example_inputs)
    if engine == "qnnpack":
        fix_qnnpack_clamp(gm)
    return gm


def quantize_fx(
    model: nn.Module,
    example_inputs: Any,
    engine: str = "fbgemm",
    calibration: Any = None,
    *,
    qconfig_mapping: QConfigMapping | None = None,
    backend: str | BackendConfig | None = "zynqnn",
    batch_size: int = 32,
    random_batches: int = 4,
    seed: int = 0,
) -> GraphModule:
    """Post-training static quantization with torch.ao FX graph mode.

    ``example_inputs``: a tensor or a tuple of the model's inputs (used for tracing).
    ``calibration``: a tensor of samples (split into ``batch_size`` chunks), or an iterable of
    batches (each a tensor or a tuple of model inputs; no labels). ``None`` calibrates on the
    example inputs plus ``random_batches`` uniform random inputs in the example's value range.
    Sets ``torch.backends.quantized.engine = engine`` and leaves it set (the converted model runs
    with it). ``model`` itself is not modified; BN is folded as in eval mode.
    """
    example_inputs = _as_tuple(example_inputs)
    set_engine(engine)
    qmap = qconfig_mapping if qconfig_mapping is not None else get_default_qconfig_mapping(engine)
    config = backend_config(backend)
    float_model = copy.deepcopy(model).eval()
    if calibration is None:
        batches: Iterable[tuple[Any, ...]] = _random_batches(example_inputs, random_batches, seed)
    else:
        batches = _calibration_batches(calibration, batch_size)
    with quiet_torch_ao(), torch.no_grad():
        prepared = prepare_fx(float_model, qmap, example_inputs, backend_config=config)
        for batch in batches:
            prepared(*batch)
        quantized = convert_fx(prepared, backend_config=config)
        _finish(quantized, engine, example_inputs)
    return quantized


def _training_batches(
    train_data: Any, batch_size: int, gen: torch.Generator
) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    if (
        isinstance(train_data, (tuple, list))
        and len(train_data) == 2
        and all(isinstance(t, torch.Tensor) for t in train_data)
    ):
        x, y = train_data
        order = torch.randperm(len(x), generator=gen)
        return [(x[i], y[i]) for i in torch.split(order, batch_size)]
    return train_data


def qat_finetune(
    model: nn.Module,
    train_data: Any,
    engine: str = "fbgemm",
    epochs: int = 3,
    lr: float = 1e-3,
    *,
    batch_size: int = 64,
    momentum: float = 0.9,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None,
    example_inputs: Any = None,
    freeze_bn_epoch: int | None = None,
    freeze_observer_epoch: int | None = None,
    qconfig_mapping: QConfigMapping | None = None,
    backend: str | BackendConfig | None = "zynqnn",
    seed: int = 0,
) -> GraphModule:
    """Quantization-aware fine-tuning with ``prepare_qat_fx``, then ``convert_fx``.

    ``train_data``: ``(x, y)`` tensors (shuffled into ``batch_size`` batches each epoch, seeded) or
    a re-iterable of ``(x, y)`` batches. The usual recipe: start from the trained float model,
    fine-tune for about a tenth of the float epochs with a small LR (SGD with momentum here), freeze
    the BatchNorm running statistics from ``freeze_bn_epoch`` (default: half-way) and the
    observers (fixing the quantization ranges) from ``freeze_observer_epoch`` (default: the last
    epoch, if there is more than one). ``loss_fn`` defaults to cross entropy. Sets the engine like
    :func:`quantize_fx`; ``model`` itself is not modified.
    """
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats

    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    set_engine(engine)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    if freeze_bn_epoch is None:
        freeze_bn_epoch = max(1, epochs // 2)
    if freeze_observer_epoch is None:
        freeze_observer_epoch = epochs - 1 if epochs > 1 else epochs
    if example_inputs is None:
        first = next(iter(_training_batches(train_data, batch_size, torch.Generator())))
        example_inputs = (first[0][:1],)
    example_inputs = _as_tuple(example_inputs)
    qmap = (
        qconfig_mapping if qconfig_mapping is not None else get_default_qat_qconfig_mapping(engine)
    )
    config = backend_config(backend)
    with quiet_torch_ao():
        prepared = prepare_qat_fx(
            copy.deepcopy(model).train(), qmap, example_inputs, backend_config=config
        )
        opt = torch.optim.SGD(prepared.parameters(), lr=lr, momentum=momentum)
        for epoch in range(epochs):
            if epoch >= freeze_observer_epoch:
                prepared.apply(disable_observer)
            if epoch >= freeze_bn_epoch:
                prepared.apply(freeze_bn_stats)
            prepared.train()
            for x, y in _training_batches(train_data, batch_size, gen):
                opt.zero_grad()
                loss = loss_fn(prepared(x), y)
                loss.backward()
                opt.step()
        prepared.eval()
        with torch.no_grad():
            quantized = convert_fx(prepared, backend_config=config)
            _finish(quantized, engine, example_inputs)
    return quantized


def _target_name(target: Any) -> str:
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverloadPacket):
        return f"torch.ops.{target}"
    name = getattr(target, "__name__", None)
    for namespace, prefix in ((torch, "torch"), (F, "torch.nn.functional")):
        if name and getattr(namespace, name, None) is target:
            return f"{prefix}.{name}"
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", name)
    return f"{module}.{qualname}" if module and qualname else str(target)


def op_summary(gm: GraphModule) -> dict[str, int]:
    """Count the operations of a (quantized) FX graph: ``{"module:<class>" | "function:<fn>" |
    "method:<name>": count}``, e.g. ``module:torch.ao.nn.intrinsic.quantized...ConvReLU2d``."""
    modules = dict(gm.named_modules())
    counts: Counter[str] = Counter()
    for node in gm.graph.nodes:
        if node.op == "call_module":
            cls = type(modules[node.target])
            counts[f"module:{cls.__module__}.{cls.__qualname__}"] += 1
        elif node.op == "call_function":
            counts[f"function:{_target_name(node.target)}"] += 1
        elif node.op == "call_method":
            counts[f"method:{node.target}"] += 1
    return dict(sorted(counts.items()))
