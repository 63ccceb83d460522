"""Hardware layers -> command stream + DDR image: memory planning, tiling, emission.

``compile_network(net, cfg)`` returns a :class:`Program`. The passes:

1. **Views and planning.** :class:`HwConcat` makes its inputs channel-block views of its output
   (from its ``offsets``: an input of a channel count other than a multiple of ``rows`` takes
   whole blocks); :class:`HwView` makes its output the same words as its input. Every root
   tensor gets a DDR buffer (aligned to the AXI beat); an activation buffer whose last
   consumer has run is reused by tensors produced later (first fit over lifetimes). Every output
   of the network (``net.outputs``) lives to the end of the program.
2. **Tiling** (from the config's buffer depths only): output-channel blocks of ``cols``, spatial
   tiles of full-width output rows with their input halo, the reduction split over commands
   (``acc_keep`` / ``acc_cont``) when the weights or the input tile do not fit one bank.
3. **Emission.** Each buffer (IBUF, WBUF, PBUF) alternates between its two banks; a tile's data
   stays in its bank while consecutive commands use it (weights across spatial tiles, an input
   tile across output-channel blocks) and the last user releases it. The LOADs of the next
   command are emitted before the current ``CONV`` so the load unit fills the other bank while
   the engine computes. OBUF banks alternate; each ``CONV`` is followed by the ``STORE`` of its
   bank. Layers are separated by a *barrier* (see :func:`_barrier`) so a layer never loads an
   activation the store unit has not yet written.

A residual add (:class:`HwAdd`) becomes ``ELTWISE`` commands over tiles of consecutive pixel
words of its tensors (all channel blocks of an ``NHWC<R>`` tensor are one run of words): input
A's tile is loaded into IBUF, B's into WBUF, the add's constants row (``requant_lanes`` PBUF
words, loaded once) into PBUF, and the output tile stored from OBUF. A table lookup
(:class:`HwLut`) is the same over one input, with ``lut`` set: its 256-byte table is a program
constant, loaded once into WBUF (``isa.lut_table_words`` words).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from zynqnn import progress
from zynqnn.hw import isa
from zynqnn.hw.config import HwConfig, get_config
from zynqnn.hw.geometry import pack_words
from zynqnn.machine import Machine

from .layers import (
    CompileError,
    HwAdd,
    HwConcat,
    HwConv,
    HwConvTranspose,
    HwGlobalSumPool,
    HwLut,
    HwMaxPool,
    HwUpsample2x,
    HwView,
    Network,
    Tensor,
    code_range,
    norm_padding,
    view_words,
)
from .layout import (
    act_bytes,
    act_codes,
    cblocks,
    dw_tile,
    has_act,
    pairs_tiles,
    param_bytes,
    post_layer,
    step_post,
    weight_bytes,
)

__all__ = ["Program", "compile_network", "Step"]

_BUFS = (isa.Buffer.IBUF, isa.Buffer.WBUF, isa.Buffer.PBUF)
# Field ranges of isa.ConvOp that tiling must respect.
_OFF_MIN, _OFF_MAX = -8, 7
_CB_MAX = 255
_DIM_MAX = 4095


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


@dataclass
class Load:
    """One LOAD: ``lines`` x ``line_words`` words at ``ddr_addr`` (line stride in bytes).
    ``ddr_addr`` is relative to the activation arena (``arena``; default: IBUF loads) or to the
    constants region."""

    key: object
    ddr_addr: int
    line_words: int
    lines: int = 1
    stride: int = 0
    arena: bool | None = None


@dataclass
class Step:
    """One compute command with the data it needs and where its output goes."""

    layer: str
    op: dict
    loads: dict  # Buffer -> Load
    store: tuple | None  # (ddr_addr, line_words, lines, stride); None: acc_keep part
    macs: int = 0
    barrier: bool = False
    opcode: isa.Opcode = isa.Opcode.CONV   # CONV (op: isa.ConvOp) or ELTWISE (isa.EltwiseOp)


@dataclass
class _Storage:
    root: Tensor
    cb_offset: int


@dataclass
class Program:
    """A compiled network: commands, constants and tensor addresses in one DDR image."""

    cfg: HwConfig
    net: Network
    commands: bytes
    cmd_addr: int
    image: dict  # address -> bytes (commands and constants)
    addrs: dict  # root tensor name -> DDR address
    ddr_bytes: int
    steps: list
    stats: dict = field(default_factory=dict)
    storage: dict = field(default_factory=dict, repr=False)
    labels: list = field(default_factory=list, repr=False)  # layer of every command
    scratch: tuple = (0, 0)  # DDR bytes of the dummy transfers

    def perf(self, dma=None, check: bool = True):
        """Cycle estimate and protocol check (:func:`zynqnn.compiler.perf.simulate`)."""
        from .perf import simulate

        return simulate(self.cfg, self.commands, self.labels, dma, check, self.scratch)

    @property
    def command_count(self) -> int:
        return len(self.commands) // isa.COMMAND_BYTES

    def tensor_addr(self, t: Tensor) -> int:
        """DDR address of tensor ``t`` (the input, any output, any layer's tensor)."""
        s = self.storage[id(t)]
        return self.addrs[s.root.name] + s.cb_offset * _block_bytes(self.cfg, s.root)

    def tensor_bytes(self, t: Tensor) -> int:
        """Bytes of tensor ``t`` in DDR from :meth:`tensor_addr` on (``NHWC<rows>``: whole
        channel blocks of ``height x width`` words)."""
        return cblocks(t.channels, self.cfg.rows) * _block_bytes(self.cfg, t)

    def run_golden_all(self, x_codes: np.ndarray, machine: Machine | None = None) -> list:
        """Execute on :class:`zynqnn.machine.Machine`; returns the codes (C, H, W) of every
        output of the network (``net.outputs``, in order), as a list."""
        m = machine or Machine(self.cfg, ddr_bytes=self.ddr_bytes)
        for addr, data in self.image.items():
            m.write(addr, data)
        x = np.asarray(x_codes, dtype=np.int64).reshape(self.net.input.shape)
        m.write(self.tensor_addr(self.net.input), act_bytes(self.cfg, x, self.net.input.zero_point))
        m.run(self.cmd_addr, self.command_count)
        return [act_codes(self.cfg, m.read(self.tensor_addr(t), self.tensor_bytes(t)), t.shape,
                          t.signed) for t in self.net.outputs]

    def run_golden(self, x_codes: np.ndarray, machine: Machine | None = None) -> np.ndarray:
        """Execute on :class:`zynqnn.machine.Machine`; returns the codes (C, H, W) of the
        (first) output; :meth:`run_golden_all` returns every output's."""
        return self.run_golden_all(x_codes, machine)[0]


def _word_bytes(cfg):
    return cfg.rows * cfg.operand_bits // 8


def _block_bytes(cfg, t: Tensor):
    return t.height * t.width * _word_bytes(cfg)


# -- checks ----------------------------------------------------------------------------------------


def _check_tensor(cfg, layer, t: Tensor, root: Tensor | None = None):
    """Width, zero point and DDR alignment of ``t`` (``root``: the tensor it is stored in)."""
    beat = cfg.axi_data_bits // 8
    if t.width > cfg.max_width:
        raise CompileError(f"{layer}: tensor {t.name!r} is {t.width} pixels wide, above "
                           f"max_width = {cfg.max_width}")
    root = t if root is None else root
    # Transfers start at rows of channel blocks; a one-row, one-block tensor (e.g. a global
    # pool's 1x1 output) has a single transfer start, at its beat-aligned base.
    single = t.height == 1 and root.height == 1 and cblocks(root.channels, cfg.rows) == 1
    if (t.width * _word_bytes(cfg)) % beat and not single:
        raise CompileError(f"{layer}: a row of tensor {t.name!r} ({t.width} words of "
                           f"{_word_bytes(cfg)} bytes) is not a whole number of {beat}-byte AXI "
                           f"beats")
    lo, hi = code_range(t.signed, cfg.operand_bits)
    if not lo <= t.zero_point <= hi:
        raise CompileError(f"{layer}: zero point {t.zero_point} of {t.name!r} outside [{lo}, {hi}]")


def _check_shape(layer):
    want = tuple(layer.out_shape())
    if tuple(layer.output.shape) != want:
        raise CompileError(f"{layer.name}: output {layer.output!r} should be "
                           f"{want[0]}x{want[1]}x{want[2]}")


def _check_geometry(cfg, name, k, stride, pad):
    if k > cfg.max_kernel:
        raise CompileError(f"{name}: kernel {k} above max_kernel = {cfg.max_kernel}")
    if stride not in (1, 2):
        raise CompileError(f"{name}: stride {stride} not supported (1 or 2)")
    if max(pad) > -_OFF_MIN or min(pad) < 0 or max(pad) >= k:
        raise CompileError(f"{name}: padding {pad} must be in 0..kernel-1 ({k - 1})")


def _phase_taps(k: int, s: int, p: int, pad: int) -> tuple[list[int], int]:
    """One axis of output phase ``p`` of a transposed convolution (kernel ``k``, stride ``s``,
    ``pad`` positions cropped at the start): the taps that reach output positions ``p + s * r``,
    in the order a stride-1 convolution applies them (tap ``u`` reads input ``r + off + u``),
    and ``off``. Output ``o = i * s + kt - pad`` takes taps ``kt = o + pad (mod s)``; with
    ``kt = k0 + s * m`` the input is ``i = q + r - m``, ``q = (p + pad - k0) / s``."""
    k0 = (p + pad) % s
    m = len(range(k0, k, s))
    if m == 0:
        return [], 0
    q = (p + pad - k0) // s
    return [k0 + s * (m - 1 - u) for u in range(m)], q - (m - 1)


# -- compilation -----------------------------------------------------------------------------------


class _Compiler:
    def __init__(self, net: Network, cfg: HwConfig):
        self.net, self.cfg = net, cfg
        if cfg.rows != cfg.cols:
            raise CompileError(f"config {cfg.name}: the compiler needs rows == cols (an OBUF word "
                               f"is one activation word); rows = {cfg.rows}, cols = {cfg.cols}")
        self.beat = cfg.axi_data_bits // 8
        self.wb = _word_bytes(cfg)
        self.const = bytearray()
        self.storage: dict[int, _Storage] = {}
        self.addrs: dict[str, int] = {}
        self.steps: list[Step] = []

    # constants -----------------------------------------------------------------------------------
    def add_const(self, data) -> int:
        """Append bytes to the constants region; returns the offset (fixed up later)."""
        off = len(self.const)
        self.const += bytes(np.asarray(data, np.uint8).tobytes() if isinstance(data, np.ndarray)
                            else data)
        self.const += bytes(_align(len(self.const), self.beat) - len(self.const))
        return off

    # views and planning --------------------------------------------------------------------------
    def resolve_views(self):
        R = self.cfg.rows
        for layer in self.net.layers:
            if isinstance(layer, HwView):
                self.view(layer)
            if isinstance(layer, HwConcat):
                _check_shape(layer)
                starts = layer.starts()
                end = 0
                for i, (t, off) in enumerate(zip(layer.inputs, starts, strict=True)):
                    o = layer.output
                    if (t.height, t.width, t.zero_point, t.signed) != (
                            o.height, o.width, o.zero_point, o.signed):
                        raise CompileError(f"{layer.name}: input {t.name!r} differs from the "
                                           f"output in size, zero point or signedness")
                    if off % R or off < end:
                        if layer.offsets is None:
                            prev = layer.inputs[i - 1]
                            raise CompileError(
                                f"{layer.name}: input {prev.name!r} has {prev.channels} "
                                f"channels, not a multiple of rows = {R}; give the concat "
                                "offsets (each input from a channel block of its own)")
                        raise CompileError(f"{layer.name}: input {t.name!r} starts at channel "
                                           f"{off}, not a multiple of rows = {R} after the "
                                           f"previous input's end ({end})")
                    self.storage[id(t)] = _Storage(layer.output, off // R)
                    end = off + t.channels

    def view(self, layer: HwView):
        """A re-read of a tensor's words: the output is stored where the input is."""
        R, t, o = self.cfg.rows, layer.input, layer.output
        if layer.rows != R:
            raise CompileError(f"{layer.name}: a view of {layer.rows}-channel words, the config "
                               f"has rows = {R}")
        if (t.zero_point, t.signed) != (o.zero_point, o.signed) or o.channels % R:
            raise CompileError(f"{layer.name}: the view {o!r} of {t!r} needs a multiple of "
                               f"rows = {R} channels and the input's zero point and signedness")
        if view_words(o, R) - view_words(t, R) >= max(1, o.height * o.width):
            raise CompileError(f"{layer.name}: the view {o!r} holds {view_words(o, R)} words, "
                               f"{t!r} {view_words(t, R)}")
        self.storage[id(o)] = _Storage(t, 0)

    def store_of(self, t: Tensor) -> _Storage:
        s = self.storage.get(id(t))
        if s is None:
            return _Storage(t, 0)
        inner = self.store_of(s.root)
        return _Storage(inner.root, inner.cb_offset + s.cb_offset)

    def plan(self, arena_base: int):
        """First-fit DDR planning over tensor lifetimes (layer indices)."""
        layers = [la for la in self.net.layers if not isinstance(la, (HwConcat, HwView))]
        life: dict[int, list] = {}
        roots: dict[int, Tensor] = {}
        extent: dict[int, int] = {}   # bytes of a root's buffer (a view may reach past it)

        def touch(t, i):
            s = self.store_of(t)
            r = s.root
            roots[id(r)] = r
            lo, hi = life.get(id(r), [i, i])
            life[id(r)] = [min(lo, i), max(hi, i)]
            end = (s.cb_offset * _block_bytes(self.cfg, r)
                   + cblocks(t.channels, self.cfg.rows) * _block_bytes(self.cfg, t))
            extent[id(r)] = max(extent.get(id(r), 0), end)

        touch(self.net.input, -1)
        for i, la in enumerate(layers):
            for t in la.inputs:
                touch(t, i)
            touch(la.output, i)
        for t in self.net.outputs:   # every output stays in DDR until the end
            touch(t, len(layers))
        placed = []  # (start, end, lo, hi)
        total = 0
        top = 0
        for key in sorted(life, key=lambda k: life[k][0]):
            r = roots[key]
            size = _align(max(extent[key], cblocks(r.channels, self.cfg.rows)
                              * _block_bytes(self.cfg, r)), self.beat)
            total += size
            lo, hi = life[key]
            busy = sorted((a, b) for (s, e, a, b) in placed if not (e < lo or s > hi))
            addr = 0
            for a, b in busy:
                if addr + size <= a:
                    break
                addr = max(addr, b)
            placed.append((lo, hi, addr, addr + size))
            top = max(top, addr + size)
            self.addrs[r.name] = arena_base + addr
        if len(set(self.addrs)) != len(roots):
            raise CompileError("tensor names must be unique")
        return total, top

    def addr(self, t: Tensor, cb: int = 0) -> int:
        """DDR address (arena-relative) of channel block ``cb`` of ``t``."""
        s = self.store_of(t)
        return (self.addrs[s.root.name] + s.cb_offset * _block_bytes(self.cfg, s.root)
                + cb * _block_bytes(self.cfg, t))

    # tiling --------------------------------------------------------------------------------------
    def rows_per_tile(self, name, out_h, out_w, in_rows, words_per_in_row):
        """Most output rows such that the outputs fit the accumulators and the input rows
        (``in_rows(th)``) the activation bank."""
        cfg = self.cfg
        th = min(out_h, cfg.acc_buffer_depth // out_w, _DIM_MAX)
        while th > 0 and in_rows(th) * words_per_in_row > cfg.act_buffer_depth:
            th -= 1
        if th == 0:
            raise CompileError(f"{name}: one output row ({out_w} pixels, {in_rows(1)} input rows "
                               f"of {words_per_in_row} words) does not fit acc_buffer_depth = "
                               f"{cfg.acc_buffer_depth} / act_buffer_depth = "
                               f"{cfg.act_buffer_depth}")
        return th

    def post_of(self, la, channels: int, block: int):
        """The layer's post-processing and its PBUF words per command (``block`` channels, then
        the activation row), checked against PBUF."""
        post = post_layer(self.cfg, la, channels)
        words = block + (self.cfg.requant_lanes if has_act(post) else 0)
        if words > self.cfg.param_buffer_depth:
            raise CompileError(f"{la.name}: {words} PBUF words per command exceed "
                               f"param_buffer_depth = {self.cfg.param_buffer_depth}")
        return post, words

    def conv(self, la: HwConv):
        cfg, R, C = self.cfg, self.cfg.rows, self.cfg.cols
        k, s = la.kernel, la.stride
        pt, pb, pl, pr = norm_padding(la.padding)
        _check_geometry(cfg, la.name, k, s, (pt, pb, pl, pr))
        x, y = la.input, la.output
        cout, cin = la.weights.shape[:2]
        # Depthwise: output block j reads input block j only, through a diagonal weight tile
        # (one of the array's rows x cols products per pass is useful: 1/rows utilization).
        dw = la.groups > 1
        if dw:
            if not (la.groups == cout == x.channels and cin == 1):
                raise CompileError(f"{la.name}: groups = {la.groups}: only depthwise groups "
                                   f"(groups = input channels = output channels) are supported")
            if R != C:
                raise CompileError(f"{la.name}: depthwise convolution needs rows == cols")
            cin = R
        elif cin != x.channels:
            raise CompileError(f"{la.name}: weights have {cin} input channels, input has "
                               f"{x.channels}")
        H, W = x.height, x.width
        OH, OW = y.height, y.width
        cb_total = cblocks(cin, R)
        pairs = dw and la.saturate_pairs
        # One-pass depthwise (isa.Mode.DW, DW_PAIRS for fbgemm's pairs): one tile of nine taps
        # per channel, one walk over the padded span; the line delays bound the walk's width.
        one_pass = (dw and k == cfg.dw_kernel and (cfg.dw_pairs or not pairs)
                    and isa.dw_walk(OW, s) - 2 <= cfg.max_width)
        if pairs and not one_pass and R % 2:
            raise CompileError(f"{la.name}: fbgemm's saturating tap pairs need an even "
                               f"number of rows (rows = {R})")
        taps = 1 if one_pass else isa.pairs_passes(k) if pairs else k * k  # tiles per block
        if taps * R > cfg.weight_buffer_depth:
            raise CompileError(f"{la.name}: one input-channel block of a {k}x{k} kernel needs "
                               f"{taps * R} weight words, above weight_buffer_depth = "
                               f"{cfg.weight_buffer_depth}")
        if OW > cfg.acc_buffer_depth:
            raise CompileError(f"{la.name}: an output row of {OW} pixels exceeds "
                               f"acc_buffer_depth = {cfg.acc_buffer_depth}")

        one = min(H, k) * W
        cbp = min(cb_total, cfg.weight_buffer_depth // (taps * R),
                  cfg.act_buffer_depth // one, _CB_MAX)
        if cbp == 0:
            raise CompileError(f"{la.name}: {min(H, k)} input rows of {W} words exceed "
                               f"act_buffer_depth = {cfg.act_buffer_depth}")
        parts = cblocks(cb_total, cbp)
        cbp = cblocks(cb_total, parts)
        th = self.rows_per_tile(la.name, OH, OW, lambda t: min(H, (t - 1) * s + k), cbp * W)
        tiles = [(oy, min(th, OH - oy)) for oy in range(0, OH, th)]
        coblocks = cblocks(cout, C)
        post, pwords = self.post_of(la, cout, C)
        # One-pass depthwise layers of a float scheme go to the step lanes when they fit (one
        # pixel a cycle instead of one lane group).
        step = step_post(cfg, la, post) if one_pass else None
        if step is not None:
            post, pwords = step, C

        # Constants: weights per (cout block, part), parameters per cout block.
        waddr, paddr = {}, {}
        for j in range(coblocks):
            c0, c1 = j * C, min(cout, (j + 1) * C)
            for p in range(parts):
                if pairs or one_pass:
                    wt = (dw_tile(la.weights[c0:c1, 0], R, C) if one_pass
                          else pairs_tiles(la.weights[c0:c1, 0], R))
                    words = pack_words(wt, cfg.operand_bits)
                    waddr[j, p] = (self.add_const(words.reshape(-1)), 1)
                    continue
                i0, i1 = p * cbp * R, min(cin, (p + 1) * cbp * R)
                w = la.weights[c0:c1, i0:i1]
                if dw:
                    n = c1 - c0
                    w = np.zeros((n, n, k, k), np.int64)
                    w[np.arange(n), np.arange(n)] = la.weights[c0:c1, 0]
                waddr[j, p] = (self.add_const(weight_bytes(cfg, w)), cblocks(i1 - i0, R))
            paddr[j] = self.add_const(param_bytes(cfg, post, c0, c1, C))
        # Loop order: the one moving fewer bytes.
        in_bytes = cb_total * H * W * self.wb
        w_bytes = coblocks * cb_total * k * k * R * C * cfg.operand_bits // 8
        cout_outer = (w_bytes * (1 if parts == 1 else len(tiles)) + in_bytes * coblocks
                      <= w_bytes * len(tiles) + in_bytes * (1 if parts == 1 else coblocks))
        order = ([(j, t) for j in range(coblocks) for t in range(len(tiles))] if cout_outer or dw
                 else [(j, t) for t in range(len(tiles)) for j in range(coblocks)])
        for j, t in order:
            oy0, oh = tiles[t]
            iy_lo = oy0 * s - pt
            iy_hi = (oy0 + oh - 1) * s - pt + k - 1
            y_lo, y_hi = max(0, iy_lo), min(H - 1, iy_hi)
            ih = y_hi - y_lo + 1
            for p in range(parts):
                wa, ncb = waddr[j, p]
                macs = oh * OW * k * k * (1 if dw else min(cin - p * cbp * R, ncb * R)) * (
                    min(cout, (j + 1) * C) - j * C)
                mode = (isa.Mode.DW_PAIRS if one_pass and pairs else isa.Mode.DW if one_pass
                        else isa.Mode.PAIRS if pairs else isa.Mode.CONV)
                op = dict(mode=mode, kernel=k, stride=s,
                          y_off=iy_lo - y_lo,
                          x_off=-pl, cin_blocks=ncb, in_h=ih, in_w=W, out_h=oh, out_w=OW,
                          in_signed=int(x.signed), zp_in=x.zero_point, zp_out=post.zp_out,
                          clamp_min=post.clamp_min, clamp_max=post.clamp_max,
                          scheme=post.scheme, act=int(has_act(post)),
                          acc_cont=int(p > 0), acc_keep=int(p < parts - 1),
                          step=int(step is not None))
                loads = {
                    isa.Buffer.IBUF: Load((la.name, "in", t, j if dw else p),
                                          self.addr(x, j if dw else p * cbp) + y_lo * W * self.wb,
                                          ih * W, ncb, H * W * self.wb),
                    isa.Buffer.WBUF: Load((la.name, "w", j, p), wa, taps * ncb * R),
                }
                store = None
                if p == parts - 1:
                    loads[isa.Buffer.PBUF] = Load((la.name, "p", j), paddr[j], pwords)
                    store = (self.addr(y, j) + oy0 * OW * self.wb, oh * OW, 1, 0)
                self.steps.append(Step(la.name, op, loads, store, macs))

    def conv_transpose(self, la: HwConvTranspose):
        """A transposed convolution of stride ``s`` as ``s * s`` stride-1 convolutions, one per
        output phase ``(oy mod s, ox mod s)`` (:func:`_phase_taps`): phase ``(py, px)`` is the
        convolution of the input with the taps ``ky = py + top (mod s)``, ``kx = px + left (mod
        s)`` (flipped), a square ``K x K`` kernel (zero taps where the phase has fewer), whose
        output row ``r`` is output row ``py + s * r``. With ``s > 1`` one ``CONV`` command
        computes one row of one phase for one output-channel block and its ``STORE`` writes
        each output pixel as a line of one word, ``s`` words apart (so a word must be whole AXI
        beats); the phases of one row read the same input tile, and every phase's weights of a
        channel part are one WBUF load (each command's ``wbuf_addr`` picks its phase)."""
        cfg, R, C = self.cfg, self.cfg.rows, self.cfg.cols
        s = int(la.stride)
        x, y = la.input, la.output
        cout, cin, kh, kw = la.weights.shape
        if cin != x.channels:
            raise CompileError(f"{la.name}: weights have {cin} input channels, input has "
                               f"{x.channels}")
        if s < 1:
            raise CompileError(f"{la.name}: stride {s}")
        if s > 1 and self.wb % self.beat:
            raise CompileError(
                f"{la.name}: a transposed convolution of stride {s} stores every {s}th output "
                f"pixel as a DDR line of its own, and config {cfg.name}'s {self.wb}-byte words "
                f"are not whole {self.beat}-byte AXI beats (a line must start on a beat); "
                "compile for a config whose words are whole beats, e.g. pynq_z2")
        H, W, OH, OW = x.height, x.width, y.height, y.width
        top, _, left, _ = norm_padding(la.padding)
        ys = [_phase_taps(kh, s, p, top) for p in range(s)]
        xs = [_phase_taps(kw, s, p, left) for p in range(s)]
        phases = []
        for py in range(s):
            rows = len(range(py, OH, s))
            for px in range(s):
                cols = len(range(px, OW, s))
                if rows == 0 or cols == 0:
                    continue
                (ty, yo), (tx, xo) = ys[py], xs[px]
                k = max(len(ty), len(tx), 1)
                if k > cfg.max_kernel:
                    raise CompileError(f"{la.name}: output phase ({py}, {px}) is a {len(ty)}x"
                                       f"{len(tx)} convolution, above max_kernel = "
                                       f"{cfg.max_kernel}")
                if cols > cfg.acc_buffer_depth:
                    raise CompileError(f"{la.name}: a phase row of {cols} pixels exceeds "
                                       f"acc_buffer_depth = {cfg.acc_buffer_depth}")
                w = np.zeros((cout, cin, k, k), np.int64)
                for u, ky in enumerate(ty):
                    for v, kx in enumerate(tx):
                        w[:, :, u, v] = la.weights[:, :, ky, kx]
                taps = len(ty) * len(tx)
                if taps == 0:   # no tap reaches this phase: the bias alone
                    yo = xo = 0
                if not _OFF_MIN <= xo <= _OFF_MAX:
                    raise CompileError(f"{la.name}: output phase ({py}, {px}) starts {xo} input "
                                       f"columns off, beyond the engine's {_OFF_MIN}..{_OFF_MAX}")
                phases.append(dict(py=py, px=px, rows=rows, cols=cols, k=k, w=w, yo=yo, xo=xo,
                                   my=len(ty) if taps else 0, taps=taps))
        if not phases:
            raise CompileError(f"{la.name}: empty output")

        def span(rr):
            """Input rows the phases of phase row ``rr`` read: (first, last), clipped."""
            act = [ph for ph in phases if ph["rows"] > rr and ph["my"]]
            if not act:
                lo = hi = 0
            else:
                lo = rr + min(ph["yo"] for ph in act)
                hi = rr + max(ph["yo"] + ph["my"] - 1 for ph in act)
            y_lo, y_hi = max(0, lo), min(H - 1, hi)
            if y_lo > y_hi:
                y_lo = y_hi = min(max(lo, 0), H - 1)
            return y_lo, y_hi

        n_rows = max(ph["rows"] for ph in phases)
        spans = [span(rr) for rr in range(n_rows)]
        ih_max = max(b - a + 1 for a, b in spans)
        tap_words = sum(ph["k"] ** 2 for ph in phases) * R     # one input-channel block
        cb_total = cblocks(cin, R)
        cbp = min(cb_total, cfg.weight_buffer_depth // tap_words,
                  cfg.act_buffer_depth // (ih_max * W), _CB_MAX)
        if cbp == 0:
            raise CompileError(f"{la.name}: one input-channel block needs {tap_words} weight "
                               f"words for its {len(phases)} phases and {ih_max} input rows of "
                               f"{W} words: above weight_buffer_depth = "
                               f"{cfg.weight_buffer_depth} or act_buffer_depth = "
                               f"{cfg.act_buffer_depth}")
        parts = cblocks(cb_total, cbp)
        cbp = cblocks(cb_total, parts)
        coblocks = cblocks(cout, C)
        post, pwords = self.post_of(la, cout, C)
        waddr, paddr = {}, {}
        for j in range(coblocks):
            c0, c1 = j * C, min(cout, (j + 1) * C)
            for p in range(parts):
                i0, i1 = p * cbp * R, min(cin, (p + 1) * cbp * R)
                ncb = cblocks(i1 - i0, R)
                offs, off, blob = [], 0, []
                for ph in phases:
                    offs.append(off)
                    blob.append(weight_bytes(cfg, ph["w"][c0:c1, i0:i1]))
                    off += ph["k"] ** 2 * ncb * R
                waddr[j, p] = (self.add_const(np.concatenate(blob)), ncb, offs, off)
            paddr[j] = self.add_const(param_bytes(cfg, post, c0, c1, C))
        for j in range(coblocks):
            c0, c1 = j * C, min(cout, (j + 1) * C)
            for rr in range(n_rows):
                y_lo, y_hi = spans[rr]
                ih = y_hi - y_lo + 1
                for n, ph in enumerate(phases):
                    if rr >= ph["rows"]:
                        continue
                    y_off = rr + ph["yo"] - y_lo if ph["taps"] else 0
                    if not _OFF_MIN <= y_off <= _OFF_MAX:
                        raise CompileError(f"{la.name}: output phase ({ph['py']}, {ph['px']}) "
                                           f"reads {y_off} rows into its input tile, beyond the "
                                           f"engine's {_OFF_MIN}..{_OFF_MAX}")
                    oy = ph["py"] + s * rr
                    for p in range(parts):
                        wa, ncb, offs, words = waddr[j, p]
                        ci = min(cin - p * cbp * R, ncb * R)
                        op = dict(mode=isa.Mode.CONV, kernel=ph["k"], stride=1, y_off=y_off,
                                  x_off=ph["xo"], cin_blocks=ncb, in_h=ih, in_w=W, out_h=1,
                                  out_w=ph["cols"], in_signed=int(x.signed),
                                  zp_in=x.zero_point, zp_out=post.zp_out,
                                  clamp_min=post.clamp_min, clamp_max=post.clamp_max,
                                  scheme=post.scheme, act=int(has_act(post)),
                                  acc_cont=int(p > 0), acc_keep=int(p < parts - 1), step=0,
                                  wbuf_addr=offs[n])
                        loads = {
                            isa.Buffer.IBUF: Load((la.name, "in", rr, p),
                                                  self.addr(x, p * cbp) + y_lo * W * self.wb,
                                                  ih * W, ncb, H * W * self.wb),
                            isa.Buffer.WBUF: Load((la.name, "w", j, p), wa, words),
                        }
                        store = None
                        if p == parts - 1:
                            loads[isa.Buffer.PBUF] = Load((la.name, "p", j), paddr[j], pwords)
                            at = self.addr(y, j) + (oy * OW + ph["px"]) * self.wb
                            store = ((at, 1, ph["cols"], s * self.wb) if s > 1
                                     else (at, ph["cols"], 1, 0))
                        self.steps.append(Step(la.name, op, loads, store,
                                               ph["cols"] * ph["taps"] * ci * (c1 - c0)))

    def bypass(self, la):
        cfg, R = self.cfg, self.cfg.rows
        x, y = la.input, la.output
        H, W, OH, OW = x.height, x.width, y.height, y.width
        clo, chi = getattr(la, "clamp", None) or code_range(y.signed, cfg.operand_bits)
        common = dict(in_signed=int(x.signed), zp_in=x.zero_point, zp_out=y.zero_point,
                      clamp_min=clo, clamp_max=chi, cin_blocks=1, in_w=W, x_off=0,
                      scheme=isa.Scheme.COPY)
        if isinstance(la, HwMaxPool):
            k, s = la.kernel, la.stride
            pt, pb, pl, pr = norm_padding(la.padding)
            _check_geometry(cfg, la.name, k, s, (pt, pb, pl, pr))
            th = self.rows_per_tile(la.name, OH, OW, lambda t: min(H, (t - 1) * s + k), W)
            tiles = [(oy, min(th, OH - oy)) for oy in range(0, OH, th)]
            common.update(mode=isa.Mode.MAXPOOL, kernel=k, stride=s, x_off=-pl,
                          pad_min=int(la.pad_min))
        elif isinstance(la, HwUpsample2x):
            th = self.rows_per_tile(la.name, OH, OW, lambda t: -(-t // 2), W)
            if th < OH:
                th -= th % 2  # a tile starts at an even output row
            if th == 0:
                raise CompileError(f"{la.name}: two output rows of {OW} pixels exceed "
                                   f"acc_buffer_depth = {cfg.acc_buffer_depth}")
            tiles = [(oy, min(th, OH - oy)) for oy in range(0, OH, th)]
            common.update(mode=isa.Mode.COPY, kernel=1, stride=1, upsample=1)
            pt, k, s = 0, 1, 1
        else:  # HwGlobalSumPool
            if H * W > cfg.act_buffer_depth:
                raise CompileError(f"{la.name}: global pooling over {H}x{W} pixels needs the "
                                   f"whole map in IBUF, above act_buffer_depth = "
                                   f"{cfg.act_buffer_depth}")
            tiles = [(0, H)]
            post, pwords = self.post_of(la, x.channels, R)
            common.update(mode=isa.Mode.SUMPOOL, kernel=1, stride=1, scheme=post.scheme,
                          act=int(has_act(post)), zp_out=post.zp_out, clamp_min=post.clamp_min,
                          clamp_max=post.clamp_max)
            pt, k, s = 0, 1, 1
        sumpool = isinstance(la, HwGlobalSumPool)
        for j in range(cblocks(x.channels, R)):
            paddr = None
            if sumpool:
                c0, c1 = j * R, min(x.channels, (j + 1) * R)
                paddr = self.add_const(param_bytes(cfg, post, c0, c1, R))
            for t, (oy0, oh) in enumerate(tiles):
                if isinstance(la, HwUpsample2x):
                    y_lo, ih, y_off = oy0 // 2, -(-oh // 2), 0
                else:
                    iy_lo = oy0 * s - pt
                    y_lo = max(0, iy_lo)
                    y_hi = H - 1 if sumpool else min(H - 1, (oy0 + oh - 1) * s - pt + k - 1)
                    ih, y_off = y_hi - y_lo + 1, iy_lo - y_lo
                op = dict(common, in_h=ih, y_off=y_off, out_h=oh if not sumpool else H,
                          out_w=OW if not sumpool else W)
                loads = {isa.Buffer.IBUF: Load((la.name, "in", j, t),
                                               self.addr(x, j) + y_lo * W * self.wb, ih * W)}
                if sumpool:
                    loads[isa.Buffer.PBUF] = Load((la.name, "p", j), paddr, pwords)
                n = 1 if sumpool else oh * OW
                store = (self.addr(y, j) + oy0 * OW * self.wb, n, 1, 0)
                self.steps.append(Step(la.name, op, loads, store, 0))

    def eltwise(self, la: HwAdd):
        from math import gcd

        from zynqnn.hw.add import add_layer, add_params_layout

        from .reference import add_codes

        cfg, R, L = self.cfg, self.cfg.rows, self.cfg.requant_lanes
        a, b, y = la.a, la.b, la.output
        bits = cfg.operand_bits
        lo, hi = la.out_range(bits)
        if la.semantics == "qnnpack" and (a.signed or b.signed or y.signed):
            raise CompileError(f"{la.name}: qnnpack adds uint8 tensors")
        total = cblocks(a.channels, R) * a.height * a.width
        # (first word, end word, path): PyTorch's scalar tail as words of its own
        split = total
        if la.scalar_from is not None:
            if la.scalar_from % R:
                raise CompileError(f"{la.name}: scalar_from = {la.scalar_from} is not a "
                                   f"multiple of rows = {R}")
            split = la.scalar_from // R * a.height * a.width
            if split * self.wb % self.beat:
                raise CompileError(f"{la.name}: PyTorch's scalar tail starts inside an AXI beat")
        ranges = [r for r in ((0, split, la.path), (split, total, "scalar")) if r[0] < r[1]]
        if la.scalar_mask is not None:
            ranges = self._tail_ranges(la)
        lays = {}
        for _, _, path in ranges:
            try:
                # numerics' own checks (zero points in range, scales, output range) ...
                add_codes(replace(la, path=path), np.array([a.zero_point]),
                          np.array([b.zero_point]), bits)
                # ... and the hardware's constants
                lays[path] = add_layer(la.semantics, cfg, la.s_a, a.zero_point, la.s_b,
                                       b.zero_point, la.s_out, y.zero_point, la.relu, lo, hi,
                                       path=path, left_shift=la.left_shift,
                                       single_rounding=la.single_rounding)
            except ValueError as e:
                raise CompileError(f"{la.name}: {e}") from None
        if add_params_layout(cfg).size > L * 128:
            raise CompileError(f"{la.name}: the add constants do not fit a PBUF row of "
                               f"requant_lanes = {L} words")
        unit = self.beat // gcd(self.beat, self.wb)
        cap = min(cfg.act_buffer_depth, cfg.weight_buffer_depth, cfg.acc_buffer_depth, 0xFFFF)
        size = cap // unit * unit
        if size == 0:
            raise CompileError(f"{la.name}: {unit} words (one AXI beat) exceed the buffers")
        # Tiles of consecutive words; every tile but the last of a range a whole number of AXI
        # beats.
        t = 0
        for w0, w1, path in ranges:
            lay = lays[path]
            paddr = self.add_const(lay.params.to_bytes(L * 16, "little"))
            common = dict(a_signed=int(a.signed), b_signed=int(b.signed), zp_out=lay.zp_out,
                          clamp_min=lay.clamp_min, clamp_max=lay.clamp_max)
            for p0 in range(w0, w1, size):
                n = min(size, w1 - p0)
                loads = {
                    isa.Buffer.IBUF: Load((la.name, "a", t), self.addr(a) + p0 * self.wb, n),
                    isa.Buffer.WBUF: Load((la.name, "b", t), self.addr(b) + p0 * self.wb, n,
                                          arena=True),
                    isa.Buffer.PBUF: Load((la.name, "p", path), paddr, L),
                }
                store = (self.addr(y) + p0 * self.wb, n, 1, 0)
                self.steps.append(Step(la.name, dict(common, pixels=n), loads, store, 0,
                                       opcode=isa.Opcode.ELTWISE))
                t += 1

    def lookup(self, la: HwLut):
        """``ELTWISE`` commands with ``lut`` over tiles of consecutive words of the input."""
        from math import gcd

        cfg = self.cfg
        if cfg.operand_bits != 8:
            raise CompileError(f"{la.name}: table lookups need an 8-bit build, {cfg.name} has "
                               f"{cfg.operand_bits}-bit operands")
        if cfg.rows != cfg.cols:
            raise CompileError(f"{la.name}: table lookups need rows == cols")
        x, y = la.input, la.output
        total = cblocks(x.channels, cfg.rows) * x.height * x.width
        tw = isa.lut_table_words(cfg.cols)
        if tw > cfg.weight_buffer_depth:
            raise CompileError(f"{la.name}: the table ({tw} words) does not fit WBUF")
        table = np.zeros(tw * cfg.cols, dtype=np.int64)
        table[:256] = la.table
        taddr = self.add_const(pack_words(table.reshape(tw, cfg.cols), 8).reshape(-1))
        unit = self.beat // gcd(self.beat, self.wb)
        cap = min(cfg.act_buffer_depth, cfg.acc_buffer_depth, 0xFFFF)
        size = cap // unit * unit
        if size == 0:
            raise CompileError(f"{la.name}: {unit} words (one AXI beat) exceed the buffers")
        for t, p0 in enumerate(range(0, total, size)):
            n = min(size, total - p0)
            loads = {
                isa.Buffer.IBUF: Load((la.name, "a", t), self.addr(x) + p0 * self.wb, n),
                isa.Buffer.WBUF: Load((la.name, "t"), taddr, tw),
            }
            store = (self.addr(y) + p0 * self.wb, n, 1, 0)
            self.steps.append(Step(la.name, dict(pixels=n, lut=1), loads, store, 0,
                                   opcode=isa.Opcode.ELTWISE))

    def _tail_ranges(self, la) -> list:
        """``(first word, end word, path)`` runs of an add's words in DDR order (channel block,
        then pixel) from its ``scalar_mask``; each run starts on an AXI beat."""
        R = self.cfg.rows
        a = la.a
        mask = la.scalar_mask.reshape(a.channels, -1)
        words = []
        for cb in range(cblocks(a.channels, R)):
            block = mask[cb * R:(cb + 1) * R]
            if not np.array_equal(block.all(axis=0), block.any(axis=0)):
                raise CompileError(f"{la.name}: PyTorch's scalar tail splits a word of "
                                   f"channel block {cb}")
            words.append(block.any(axis=0))
        words = np.concatenate(words)
        edges = [0, *(np.flatnonzero(words[1:] != words[:-1]) + 1).tolist(), words.size]
        for e in edges[1:-1]:
            if e * self.wb % self.beat:
                raise CompileError(f"{la.name}: PyTorch's scalar tail starts inside an AXI beat")
        return [(w0, w1, "scalar" if words[w0] else la.path)
                for w0, w1 in zip(edges[:-1], edges[1:], strict=True)]

    def compile(self) -> Program:
        cfg = self.cfg
        self.resolve_views()
        # Barrier dummies read one IBUF word and write one OBUF word at a scratch address of
        # the constants region: reserve the larger of the two words (and a whole beat).
        self.scratch_bytes = max(self.beat, self.wb, cfg.cols * cfg.operand_bits // 8)
        self.scratch = self.add_const(bytes(self.scratch_bytes))
        for la in self.net.layers:
            if not isinstance(la, HwConcat):
                _check_shape(la)
                for t in (*la.inputs, la.output):
                    _check_tensor(cfg, la.name, t, self.store_of(t).root)
        total, used = self.plan(0)  # arena-relative; the arena's base is known at the end
        first = True
        layers = [la for la in self.net.layers if not isinstance(la, (HwConcat, HwView))]
        bar = progress.Bar(len(layers), f"compiling {len(layers)} layers for {cfg.name}",
                           "layers")
        for la in self.net.layers:
            if isinstance(la, (HwConcat, HwView)):
                continue
            bar.update(1, info=f"{la.name} ({len(self.steps)} steps so far)")
            if not first:
                self.steps.append(Step("barrier", {}, {}, None, barrier=True))
            first = False
            if isinstance(la, HwConvTranspose):
                self.conv_transpose(la)
            elif isinstance(la, HwConv):
                self.conv(la)
            elif isinstance(la, (HwMaxPool, HwUpsample2x, HwGlobalSumPool)):
                self.bypass(la)
            elif isinstance(la, HwAdd):
                self.eltwise(la)
            elif isinstance(la, HwLut):
                self.lookup(la)
            else:
                raise CompileError(f"{getattr(la, 'name', la)}: unknown layer type "
                                   f"{type(la).__name__}")
        bar.close(info=f"{len(self.steps)} steps")
        # DDR: commands, constants, activations.
        n_cmds = _count_commands(self.steps)
        cmd_bytes = _align(n_cmds * isa.COMMAND_BYTES, 4096)
        const_base = cmd_bytes
        arena = _align(const_base + len(self.const), 4096)
        cmds, labels = _emit(cfg, self.steps, const_base, arena, const_base + self.scratch)
        self.addrs = {k: v + arena for k, v in self.addrs.items()}
        assert len(cmds) == n_cmds
        commands = b"".join(cmds)
        ddr = _align(arena + used, 4096)
        stats = dict(commands=n_cmds, const_bytes=len(self.const), activation_bytes=used,
                     activation_bytes_unplanned=total, bytes_saved=total - used,
                     ddr_bytes=ddr)
        prog = Program(cfg, self.net, commands, 0, {0: commands, const_base: bytes(self.const)},
                       dict(self.addrs), ddr, self.steps, stats)
        prog.labels = labels
        prog.scratch = (const_base + self.scratch, const_base + self.scratch + self.scratch_bytes)
        prog.storage = {}
        for t in _all_tensors(self.net):
            prog.storage[id(t)] = self.store_of(t)
        return prog


def _all_tensors(net):
    ts = [net.input, *net.outputs]
    for la in net.layers:
        ts += [*la.inputs, la.output]
    return ts


# -- emission --------------------------------------------------------------------------------------


def _assign_banks(steps):
    """Bank of every (step, buffer), which steps load, which release."""
    cur = {b: 1 for b in _BUFS}
    content = {}
    plan = []  # per step: {buf: (bank, load_needed)}
    for i, st in enumerate(steps):
        use = {}
        if st.barrier:
            for bank in range(isa.BANKS):
                content[isa.Buffer.IBUF, bank] = ("barrier", i, bank)
            use[isa.Buffer.IBUF] = (None, True)
        for buf, ld in st.loads.items():
            if content.get((buf, cur[buf])) == ld.key:
                use[buf] = (cur[buf], False)
            else:
                cur[buf] = 1 - cur[buf]
                content[buf, cur[buf]] = ld.key
                use[buf] = (cur[buf], True)
        plan.append(use)
    releases = []
    for i, use in enumerate(plan):
        rel = 0
        for buf, (bank, _) in use.items():
            nxt = next((p[buf] for p in plan[i + 1:] if buf in p), None)
            banks = range(isa.BANKS) if bank is None else [bank]
            for b in banks:
                if nxt is None or nxt[1] or nxt[0] != b:
                    rel |= isa.bank_bit(buf, b)
        releases.append(rel)
    return plan, releases


def _count_commands(steps):
    plan, _ = _assign_banks(steps)
    n = 1  # END
    for st, use in zip(steps, plan, strict=True):
        n += 2 + (isa.BANKS if st.barrier else sum(1 for _, ld in use.values() if ld))
    return n


def _ls(opcode, buf, bank, sram, line_words, lines, addr, stride):
    return isa.encode(isa.LoadStore, opcode=opcode, buffer=buf, bank=bank, sram_addr=sram,
                      line_words=line_words, lines=lines, ddr_addr=addr, ddr_stride=stride)


def _emit(cfg, steps, const_base, arena, scratch):
    plan, releases = _assign_banks(steps)

    def loads_of(i):
        st, use = steps[i], plan[i]
        out = []
        if st.barrier:
            for bank in range(isa.BANKS):
                out.append(_ls(isa.Opcode.LOAD, isa.Buffer.IBUF, bank, 0, 1, 1, scratch, 0))
        for buf, ld in st.loads.items():
            bank, need = use[buf]
            if need:
                in_arena = buf == isa.Buffer.IBUF if ld.arena is None else ld.arena
                addr = ld.ddr_addr + (arena if in_arena else const_base)
                out.append(_ls(isa.Opcode.LOAD, buf, bank, 0, ld.line_words, ld.lines, addr,
                               ld.stride))
        return out

    # IBUF loads and stores address the activation arena, the others the constants region.
    cmds, labels = [], []

    def put(cmd_list, layer):
        cmds.extend(cmd_list)
        labels.extend([layer] * len(cmd_list))

    emitted = set()
    obuf = 1
    for i, st in enumerate(steps):
        if i not in emitted:
            put(loads_of(i), st.layer)
            emitted.add(i)
        j = i + 1
        if j < len(steps) and not st.barrier and not steps[j].barrier:
            put(loads_of(j), steps[j].layer)
            emitted.add(j)
        use = plan[i]
        if st.barrier:
            # Waits for the last STORE (same OBUF bank), and holds both IBUF banks so no later
            # LOAD starts before it: a layer's input is in DDR before the layer reads it.
            needs = isa.bank_bit(isa.Buffer.IBUF, 0) | isa.bank_bit(isa.Buffer.IBUF, 1)
            op = dict(mode=isa.Mode.CONV, kernel=1, stride=1, cin_blocks=1, in_h=1, in_w=1,
                      out_h=1, out_w=1, scheme=isa.Scheme.COPY, clamp_min=-(1 << 16),
                      clamp_max=(1 << 16) - 1)
        else:
            obuf = 1 - obuf
            needs = 0
            for buf, (bank, _) in use.items():
                needs |= isa.bank_bit(buf, bank)
            op = dict(st.op, ibuf_bank=use[isa.Buffer.IBUF][0])
            if isa.Buffer.WBUF in use:
                op["wbuf_bank"] = use[isa.Buffer.WBUF][0]
            if isa.Buffer.PBUF in use:
                op["pbuf_bank"] = use[isa.Buffer.PBUF][0]
        elt = st.opcode == isa.Opcode.ELTWISE
        conv = isa.encode(isa.EltwiseCommand if elt else isa.ConvCommand, opcode=st.opcode,
                          needs=needs, releases=releases[i], obuf_bank=obuf, op=op)
        if st.store is None:
            # acc_keep parts and barriers still mark their OBUF bank full: drain one word.
            store = _ls(isa.Opcode.STORE, isa.Buffer.OBUF, obuf, 0, 1, 1, scratch, 0)
        else:
            addr, words, lines, stride = st.store
            store = _ls(isa.Opcode.STORE, isa.Buffer.OBUF, obuf, 0, words, lines, addr + arena,
                        stride)
        put([conv, store], st.layer)
    put([isa.encode(isa.Header, opcode=isa.Opcode.END)], "end")
    return cmds, labels


def compile_network(net: Network, cfg: HwConfig | str = "pynq_z2") -> Program:
    """Compile ``net`` for ``cfg``; raises :class:`CompileError` for layers that cannot run."""
    return _Compiler(net, get_config(cfg)).compile()

