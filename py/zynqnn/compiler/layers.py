"""The compiler's input: hardware layers over tensors of integer codes.

This description is deliberately small and explicit (an importer from a model IR lowers to it):
every layer maps onto the engine's ``CONV`` command in one of its modes, except :class:`HwAdd`
(the residual add) and :class:`HwLut` (a table lookup: unary activations), which map onto
``ELTWISE``. The requantization is a
``zynqnn.numerics`` Requant object (any scheme) with an optional activation, or, for hand-built
networks, TFLite constants (per output channel int32 bias, Q31 multiplier, shift).

A :class:`Network` is an input tensor, a list of layers in execution order and its output
tensors (``outputs``; ``output`` is the first, for single-output code).
Channel concatenation costs nothing: :class:`HwConcat` makes its inputs views of channel-block
ranges of its output, so their producers store straight into the concatenated tensor. An input
whose channel count is not a multiple of ``rows`` takes whole blocks (``HwConcat.offsets``): the
rest of its last block are padding channels that no consumer reads (zero weights).
:class:`HwView` re-reads a tensor's ``NHWC<R>`` words as another map (a flattened map as a 1x1
map of all its words, for a linear layer); it emits no command either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "CompileError",
    "Tensor",
    "HwConv",
    "HwConvTranspose",
    "HwMaxPool",
    "HwGlobalSumPool",
    "HwUpsample2x",
    "HwConcat",
    "HwView",
    "HwAdd",
    "HwLut",
    "ADD_SEMANTICS",
    "Network",
    "code_range",
    "norm_padding",
]


class CompileError(ValueError):
    """A layer the hardware cannot run (the message names the layer and the limit)."""


class CompileErrors(CompileError):
    """Several nodes the hardware cannot run, found in one pass: :attr:`errors` holds one
    :class:`CompileError` per node (graph order); :attr:`unchecked` names the nodes downstream
    of a refused one, which were checked only for op support (their inputs do not exist). A
    single refusal is raised as its own :class:`CompileError` (with an ``unchecked`` list)."""

    def __init__(self, errors: list, unchecked: list | None = None, what: str = "the graph"):
        self.errors = list(errors)
        self.unchecked = list(unchecked or [])
        lines = [f"{len(self.errors)} nodes of {what} cannot run on the accelerator:"]
        lines += [f"  {e}" for e in self.errors]
        if self.unchecked:
            lines.append("  " + unchecked_note(self.unchecked))
        super().__init__("\n".join(lines))


def unchecked_note(names: list) -> str:
    """The line that names the nodes checked for op support only (after a refused node)."""
    return (f"({len(names)} nodes after a refused node were checked for op support only: "
            f"{', '.join(names[:8])}{', ...' if len(names) > 8 else ''})")


def code_range(signed: bool, bits: int) -> tuple[int, int]:
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)


def norm_padding(p) -> tuple[int, int, int, int]:
    """``int``, ``(ph, pw)`` or ``(top, bottom, left, right)`` -> (top, bottom, left, right)."""
    if isinstance(p, int):
        return (p, p, p, p)
    p = tuple(int(v) for v in p)
    if len(p) == 2:
        return (p[0], p[0], p[1], p[1])
    if len(p) == 4:
        return p
    raise ValueError(f"padding {p!r}: an int, (ph, pw) or (top, bottom, left, right)")


@dataclass(eq=False)
class Tensor:
    """A feature map of codes: ``channels x height x width``, zero point and signedness."""

    name: str
    channels: int
    height: int
    width: int
    zero_point: int = 0
    signed: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def __repr__(self):
        return f"Tensor({self.name!r}, {self.channels}x{self.height}x{self.width})"


def _out_size(n, k, s, lo, hi):
    return (n + lo + hi - k) // s + 1


def _post_fields(layer, channels):
    """Check a layer's post-processing: a Requant, or the three TFLite constant vectors."""
    tfl = ("bias", "multiplier", "shift")
    if layer.requant is None:
        missing = [f for f in tfl if getattr(layer, f) is None]
        if missing:
            raise CompileError(f"{layer.name}: needs a requant or TFLite {', '.join(missing)}")
        for f in tfl:
            v = np.broadcast_to(np.asarray(getattr(layer, f), dtype=np.int64), (channels,))
            setattr(layer, f, v.copy())
        if layer.act is not None:
            raise CompileError(f"{layer.name}: an activation needs a requant object")
    elif layer.requant.channels not in (1, channels):
        raise CompileError(f"{layer.name}: requant has {layer.requant.channels} channels of "
                           f"constants, the layer {channels}")


@dataclass(eq=False)
class HwConv:
    """Convolution + requantization (+ activation).

    ``weights``: (cout, cin / groups, k, k) signed codes (weight zero point 0); ``groups``: 1, or
    depthwise (groups = cin = cout, weights (cout, 1, k, k); ``saturate_pairs`` for fbgemm's
    int16 tap pairs). ``requant``: a
    ``zynqnn.numerics`` Requant (``make_requant``), any scheme; ``act``: None,
    ``zynqnn.hw.post.LeakyFixed`` or ``LeakyTorch``. Without ``requant``: TFLite
    ``clamp(MBQM(acc + bias) + zp_out, lo, hi)`` from ``bias``, ``multiplier``, ``shift`` (per
    output channel), ``clamp`` (default: the output's code range; ReLU is a clamp at the zero
    point) and ``single_rounding``. With ``requant`` the clamp is the Requant's (or the
    LeakyTorch's) and the output zero point must match it.
    """

    name: str
    input: Tensor
    output: Tensor
    weights: np.ndarray
    bias: np.ndarray | None = None
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    stride: int = 1
    padding: object = 0
    clamp: tuple[int, int] | None = None
    single_rounding: bool = False
    requant: object = None
    act: object = None
    groups: int = 1
    #: Depthwise only: fbgemm's sums (raw-code products of taps 2m, 2m+1 added in saturating
    #: int16, ``numerics.ops.conv2d_acc(saturate_pairs=True)``), run as ``isa.Mode.DW_PAIRS``
    #: (3x3 on configs with ``dw_pairs``) or ``isa.Mode.PAIRS``.
    saturate_pairs: bool = False
    #: Useful MACs of the layer when its weights hold zeros the graph does not have (padding
    #: channels of a concatenation, a linear layer over a re-viewed map); default: all of them.
    macs: int | None = None

    def __post_init__(self):
        self.weights = np.asarray(self.weights, dtype=np.int64)
        _post_fields(self, self.weights.shape[0])

    @property
    def kernel(self) -> int:
        return int(self.weights.shape[2])

    @property
    def inputs(self) -> list[Tensor]:
        return [self.input]

    def out_shape(self):
        k, (t, b, left, r) = self.kernel, norm_padding(self.padding)
        return (self.weights.shape[0], _out_size(self.input.height, k, self.stride, t, b),
                _out_size(self.input.width, k, self.stride, left, r))


@dataclass(eq=False)
class HwConvTranspose(HwConv):
    """Transposed convolution + requantization (+ activation), an :class:`HwConv` whose output
    pixel ``(oy, ox)`` sums ``x[c, i, j] * weights[o, c, ky, kx]`` over every input pixel and
    tap with ``oy = i * stride + ky - top`` and ``ox = j * stride + kx - left``.

    ``weights``: (cout, cin, kh, kw) signed codes (PyTorch's ``(cin, cout, kh, kw)`` transposed;
    not necessarily square); ``padding``: ``(top, bottom, left, right)`` rows and columns removed
    from the full ``((H - 1) * stride + kh) x ((W - 1) * stride + kw)`` output (``bottom`` and
    ``right`` may be negative: PyTorch's ``output_padding`` adds rows that only the bias
    reaches). ``groups`` is 1 (grouped layers come block-diagonal). The compiler runs it as
    ``stride x stride`` stride-1 convolutions, one per output phase (see
    ``compile._Compiler.conv_transpose``); ``macs``: the products of the transposed convolution
    (default: every tap of every input pixel)."""

    def __post_init__(self):
        super().__post_init__()
        if self.groups != 1:
            raise CompileError(f"{self.name}: a transposed convolution takes groups = 1 "
                               "(block-diagonal weights for a grouped one)")
        if self.macs is None:
            cout, cin, kh, kw = self.weights.shape
            self.macs = cout * cin * kh * kw * self.input.height * self.input.width

    @property
    def kernel(self) -> int:
        return int(max(self.weights.shape[2:]))

    def out_shape(self):
        t, b, left, r = norm_padding(self.padding)
        s, (kh, kw) = self.stride, self.weights.shape[2:]
        return (self.weights.shape[0], (self.input.height - 1) * s + kh - t - b,
                (self.input.width - 1) * s + kw - left - r)


@dataclass(eq=False)
class HwMaxPool:
    """Max pooling; padding is -infinity (``pad_min``) or the input zero point. The output may
    have another zero point: ``clamp(max - zp_in + zp_out)``."""

    name: str
    input: Tensor
    output: Tensor
    kernel: int = 2
    stride: int = 2
    padding: object = 0
    pad_min: bool = True

    @property
    def inputs(self) -> list[Tensor]:
        return [self.input]

    def out_shape(self):
        t, b, left, r = norm_padding(self.padding)
        return (self.input.channels,
                _out_size(self.input.height, self.kernel, self.stride, t, b),
                _out_size(self.input.width, self.kernel, self.stride, left, r))


@dataclass(eq=False)
class HwGlobalSumPool:
    """Global pooling: per channel the requantization of ``sum over pixels (q - zp_in)`` (an
    average is a multiplier of ``1 / (H W)``): a ``requant`` object (any scheme, + ``act``) or
    TFLite ``multiplier``/``shift``/``bias``. Output is ``channels x 1 x 1``."""

    name: str
    input: Tensor
    output: Tensor
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None
    bias: np.ndarray | int = 0
    clamp: tuple[int, int] | None = None
    requant: object = None
    act: object = None
    single_rounding: bool = False

    def __post_init__(self):
        _post_fields(self, self.input.channels)

    @property
    def inputs(self) -> list[Tensor]:
        return [self.input]

    def out_shape(self):
        return (self.input.channels, 1, 1)


@dataclass(eq=False)
class HwUpsample2x:
    """Nearest-neighbour upsampling x2 (codes copied; output zero point may differ)."""

    name: str
    input: Tensor
    output: Tensor

    @property
    def inputs(self) -> list[Tensor]:
        return [self.input]

    def out_shape(self):
        return (self.input.channels, 2 * self.input.height, 2 * self.input.width)


@dataclass(eq=False)
class HwConcat:
    """Channel concatenation by addressing: every input becomes a view of its channel range of
    ``output`` (same size, zero point and signedness). Emits no command.

    ``offsets``: the output channel where each input starts, each a multiple of ``rows``
    (increasing, ranges apart); the channels between one input's end and the next input's
    offset are padding channels, whose codes are whatever the producers leave there (no layer
    reads them as data: the lowering gives them zero weights). Default (None): packed, each
    input right after the previous one, which needs a multiple of ``rows`` channels in all but
    the last input."""

    name: str
    inputs: list[Tensor]
    output: Tensor
    offsets: list[int] | None = None

    def starts(self) -> list[int]:
        """The output channel where each input starts."""
        if self.offsets is not None:
            return [int(o) for o in self.offsets]
        out, off = [], 0
        for t in self.inputs:
            out.append(off)
            off += t.channels
        return out

    def out_shape(self):
        return (self.starts()[-1] + self.inputs[-1].channels, self.inputs[0].height,
                self.inputs[0].width)


def view_words(t: Tensor, rows: int) -> int:
    """``NHWC<rows>`` words of ``t``."""
    return -(-t.channels // rows) * t.height * t.width


@dataclass(eq=False)
class HwView:
    """``output`` is ``input``'s DDR words read as another map: the ``NHWC<rows>`` words of
    ``input`` in memory order (channel block, row, column) become the words of ``output``
    (channel block, row, column) in the same order. Used for a linear layer over a flattened map:
    ``output`` is ``n x 1 x w`` words (``w`` words a row so rows are whole AXI beats), and the
    linear layer a convolution over it whose weights follow the words (the flatten order is the
    host's business: it permutes the weight columns). Emits no command.

    ``output.channels`` is a multiple of ``rows``; its words may run past ``input``'s last word
    (at most a row), into the tensor's own allocation. Same zero point and signedness. The
    reference fills ``input``'s padding channels and the words past it with the zero point;
    on the hardware they hold what the producer wrote (the consumer's weights there are 0)."""

    name: str
    input: Tensor
    output: Tensor
    rows: int

    @property
    def inputs(self) -> list[Tensor]:
        return [self.input]

    def out_shape(self):
        o = self.output
        return (o.channels, o.height, o.width)

    def codes(self, x: np.ndarray) -> np.ndarray:
        """The output's codes from the input's (C, H, W)."""
        R, t, o = self.rows, self.input, self.output
        cb = -(-t.channels // R)
        xp = np.full((cb * R, t.height, t.width), t.zero_point, np.int64)
        xp[:t.channels] = x
        words = xp.reshape(cb, R, t.height, t.width).transpose(0, 2, 3, 1).reshape(-1, R)
        ob = o.channels // R
        n = ob * o.height * o.width
        out = np.full((n, R), o.zero_point, np.int64)
        out[:min(n, len(words))] = words[:n]
        return out.reshape(ob, o.height, o.width, R).transpose(0, 3, 1, 2).reshape(o.shape)


#: The add semantics of :class:`HwAdd` (``zynqnn.numerics.ops.add_<semantics>``).
ADD_SEMANTICS = ("torch", "qnnpack", "onnxruntime", "tflite")


@dataclass(eq=False)
class HwAdd:
    """Element-wise (residual) add of two quantized tensors, bit-exact with one framework.

    ``output = add(a, b)`` computed as ``zynqnn.numerics.ops.add_<semantics>(a, s_a,
    a.zero_point, b, s_b, b.zero_point, s_out, output.zero_point, ...)`` does it:

    * ``semantics``: ``"torch"`` (``quantized::add`` on fbgemm/x86; ``path`` ``"vector"`` for
      the AVX kernel or ``"scalar"`` for the scalar tail formulas), ``"qnnpack"`` (PyTorch's
      qnnpack engine; uint8 tensors), ``"onnxruntime"`` (``QLinearAdd``) or ``"tflite"`` (TFLite
      ``ADD``; ``left_shift`` 20 for 8-bit, default 15 on 16-bit builds; ``single_rounding``
      for ``TFLITE_SINGLE_ROUNDING`` builds);
    * ``a``, ``b``, ``output``: tensors of one shape (``channels x height x width``); their zero
      points and signedness are the tensors'; ``s_a``, ``s_b``, ``s_out`` their float scales
      (compiler tensors carry no scales);
    * ``relu``: fused ReLU (``add_relu``; for ONNX Runtime and TFLite the same clamp at the
      output zero point);
    * ``qmin``, ``qmax``: the output code range before the ReLU (default: the output tensor's
      full range, e.g. 0..255 for uint8); numerics' ``qmin``/``qmax``.

    ``path`` holds for every element. PyTorch's own loop (``zynqnn.ir.kernels.torch_elementwise``)
    takes the scalar formulas for the last ``n % vector_block`` elements in memory order, so a
    PyTorch add lowers exactly with ``path="vector"`` when its element count is a multiple of the
    block, and with ``path="scalar"`` when the block is 0; when the tail is whole channel blocks
    (NCHW order, or 1x1 maps) ``scalar_from`` names its first channel and it runs as separate
    ``ELTWISE`` commands with the scalar constants; when it is whole words in NHWC order (the
    last pixels' channel blocks), ``scalar_mask`` marks them; otherwise the tail may differ.

    Scale combinations a framework refuses (qnnpack's ratio range, TFLite's multipliers below
    one) raise :class:`CompileError`. The hardware runs it as ``ELTWISE`` commands over pixel
    tiles (A in IBUF, B in WBUF, the constants row in PBUF).
    """

    name: str
    a: Tensor
    b: Tensor
    output: Tensor
    semantics: str
    s_a: float
    s_b: float
    s_out: float
    relu: bool = False
    path: str = "vector"
    left_shift: int | None = None
    single_rounding: bool = False
    qmin: int | None = None
    qmax: int | None = None
    #: ``torch`` with ``path="vector"``: channels from this one on take the scalar formulas
    #: (PyTorch's scalar tail when it is whole channel blocks; a multiple of ``rows``).
    scalar_from: int | None = None
    #: ``torch`` with ``path="vector"``: a (channels, height, width) bool array of the
    #: elements that take the scalar formulas (PyTorch's tail in NHWC memory order: the last
    #: pixels' channels); every hardware word (``rows`` channels of a pixel) all True or all
    #: False. The compiler runs the True words as ``ELTWISE`` commands of their own.
    scalar_mask: np.ndarray | None = None

    def __post_init__(self):
        if self.semantics not in ADD_SEMANTICS:
            raise CompileError(f"{self.name}: add semantics must be one of "
                               f"{', '.join(ADD_SEMANTICS)}, not {self.semantics!r}")
        if self.path not in ("vector", "scalar"):
            raise CompileError(f"{self.name}: path must be 'vector' or 'scalar', not "
                               f"{self.path!r}")
        if tuple(self.a.shape) != tuple(self.b.shape):
            raise CompileError(f"{self.name}: inputs {self.a!r} and {self.b!r} differ in shape "
                               "(broadcasting adds are not supported)")
        if self.scalar_mask is not None:
            self.scalar_mask = np.asarray(self.scalar_mask, dtype=bool)
            if self.scalar_mask.shape != tuple(self.a.shape) or self.scalar_from is not None:
                raise CompileError(f"{self.name}: scalar_mask must have the inputs' shape "
                                   f"{list(self.a.shape)} (and excludes scalar_from)")

    @property
    def inputs(self) -> list[Tensor]:
        return [self.a, self.b]

    def out_shape(self):
        return tuple(self.a.shape)

    def out_range(self, bits: int) -> tuple[int, int]:
        """``(qmin, qmax)`` before the ReLU."""
        lo, hi = code_range(self.output.signed, bits)
        return (lo if self.qmin is None else int(self.qmin),
                hi if self.qmax is None else int(self.qmax))


@dataclass(eq=False)
class HwLut:
    """Every code of ``input`` replaced by ``table[code & 0xFF]`` (a unary activation whose
    256 entries the front end computed with the framework's own arithmetic).

    ``table``: 256 output codes (entry ``t`` for the input byte ``t``: an int8 code ``c`` reads
    entry ``c & 0xFF``), within ``output``'s code range. ``function`` names the activation (for
    reports). The hardware runs it as ``ELTWISE`` commands with ``lut`` over pixel tiles (the
    input in IBUF, the table in WBUF). 8-bit builds only.
    """

    name: str
    input: Tensor
    output: Tensor
    table: np.ndarray
    function: str = "lut"

    def __post_init__(self):
        self.table = np.asarray(self.table, dtype=np.int64).reshape(-1)
        if self.table.shape != (256,):
            raise CompileError(f"{self.name}: a lookup table has 256 entries, not "
                               f"{self.table.size}")
        lo, hi = code_range(self.output.signed, 8)
        if self.table.min() < lo or self.table.max() > hi:
            raise CompileError(f"{self.name}: table entries outside the output's codes "
                               f"{lo}..{hi}")
        if tuple(self.input.shape) != tuple(self.output.shape):
            raise CompileError(f"{self.name}: input {self.input!r} and output {self.output!r} "
                               "differ in shape")

    @property
    def inputs(self) -> list[Tensor]:
        return [self.input]

    def out_shape(self):
        return tuple(self.input.shape)

    def codes(self, x) -> np.ndarray:
        """Output codes for input codes ``x``."""
        return self.table[np.asarray(x, dtype=np.int64) & 0xFF]


@dataclass(eq=False)
class Network:
    """``input``, ``layers`` in execution order, and the network's outputs.

    ``outputs``: the output tensors in order (a network may have several, e.g. the two
    detection heads of YOLOv3-tiny; the same tensor may appear twice). Default: ``[output]``,
    and ``output`` defaults to the last layer's output. ``output`` is always ``outputs[0]``.
    """

    input: Tensor
    layers: list = field(default_factory=list)
    output: Tensor | None = None
    outputs: list | None = None

    def __post_init__(self):
        if self.outputs is None:
            if self.output is None:
                self.output = self.layers[-1].output
            self.outputs = [self.output]
            return
        self.outputs = list(self.outputs)
        if not self.outputs:
            raise CompileError("a network needs at least one output")
        if self.output is None:
            self.output = self.outputs[0]
        elif self.output is not self.outputs[0]:
            raise CompileError(f"output {self.output!r} is not the first of outputs "
                               f"{self.outputs!r}")
