"""cocotb testbench of the compute engine: whole conv layers against the numpy golden model.

Each case fills IBUF/WBUF/PBUF through the engine's write ports exactly as the DMA will, issues
``CONV`` commands, and compares every OBUF word with ``conv2d`` followed by the layer's
post-processing computed by ``zynqnn.numerics`` (``Requant.apply`` in a random scheme, then a
random activation: ReLU/ReLU6 clamps, fixed-point or PyTorch leaky ReLU). ``ELTWISE`` commands
(residual adds) are compared with ``zynqnn.numerics.ops.add_*`` in every add semantics. Knobs:
``TB_CASES`` random layers, ``TB_SEED``.
"""

import os

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from zynqnn.compiler.layout import pairs_tiles
from zynqnn.compiler.reference import post_codes
from zynqnn.compiler.testing import random_requant
from zynqnn.hw import isa
from zynqnn.hw.config import PBUF_WORD_BITS
from zynqnn.hw.post import PostProcLayer, postproc_layer
from zynqnn.hw.step import step_params, step_params_layout
from zynqnn.numerics import make_requant, ops
from zynqnn.numerics.stepfit import dw_acc_range, fit_steps
from zynqnn.sim.clocking import CLOCK_NS, start
from zynqnn.sim.runner import config_from_env
from zynqnn.sim.streams import pack
from zynqnn.sim.tb_eltwise import GROUPS as ADD_GROUPS
from zynqnn.sim.tb_eltwise import add_cases


def conv_acc(x, w, stride, pad):
    """Exact int64 conv of zero-point-free operands x (Cin,H,W) and w (Cout,Cin,K,K)."""
    cin, h, wd = x.shape
    k = w.shape[-1]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    oh = (h + 2 * pad - k) // stride + 1
    ow = (wd + 2 * pad - k) // stride + 1
    out = np.zeros((w.shape[0], oh, ow), dtype=np.int64)
    for ky in range(k):
        for kx in range(k):
            patch = xp[:, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
            out += np.einsum("chw,oc->ohw", patch, w[:, :, ky, kx])
    return out


def random_post(cfg, rng, acc, scheme=None):
    """A random post-processing for accumulators ``acc`` (C, pixels) (``random_requant``): the
    hardware layer, whether it has an activation word, and the expected codes (pixels, C)."""
    rq, act = random_requant(rng, cfg.cols, scheme)
    q = post_codes(rq, act, acc.T, axis=1)
    return postproc_layer(rq, cfg, act, channels=cfg.cols), act is not None, q


def act_words(cfg, post: PostProcLayer):
    """The activation row that follows a layer's constants in PBUF."""
    m = (1 << PBUF_WORD_BITS) - 1
    return [(post.act >> (PBUF_WORD_BITS * i)) & m for i in range(cfg.requant_lanes)]


class Layer:
    """A random conv layer of one output-channel block, with its golden output."""

    def __init__(self, cfg, rng, k, stride, pad, cin, h, w, signed_in=False, depthwise=False):
        R, C, B = cfg.rows, cfg.cols, cfg.operand_bits
        if depthwise and cin != C:
            raise ValueError(f"a depthwise block has cin = cols = {C} channels, not {cin}")
        self.cfg_rows = R
        self.k, self.stride, self.pad, self.h, self.w = k, stride, pad, h, w
        self.cb = -(-cin // R)
        self.signed_in = signed_in
        lo, hi = (-(2 ** (B - 1)), 2 ** (B - 1) - 1) if signed_in else (0, 2**B - 1)
        self.zp_in = int(rng.integers(lo, hi + 1))
        self.x = rng.integers(lo, hi + 1, size=(cin, h, w))
        wl = 2 ** (B - 1) - 1
        self.wt = rng.integers(-wl, wl + 1, size=(C, cin, k, k))
        if depthwise:  # the compiler's diagonal tile: output channel c reads input channel c
            self.wt *= np.eye(C, dtype=self.wt.dtype)[:, :, None, None]
        acc = conv_acc(self.x - self.zp_in, self.wt, stride, pad)
        self.oh, self.ow = acc.shape[1:]
        self.acc = acc.reshape(C, -1)
        self.post, self.act, q = random_post(cfg, rng, acc.reshape(C, -1))
        self.expected = q & (2**B - 1)  # (pixels, C), as OBUF holds them

    def ibuf_words(self, cfg):
        """Input tile words (cb, y, x), R channels each; channels past Cin hold the zero point."""
        R, B = cfg.rows, cfg.operand_bits
        cin = self.x.shape[0]
        xpad = np.full((self.cb * R, self.h, self.w), self.zp_in)
        xpad[:cin] = self.x
        words = []
        for cb in range(self.cb):
            for y in range(self.h):
                for x in range(self.w):
                    v = 0
                    for r in range(R):
                        v |= (int(xpad[cb * R + r, y, x]) & (2**B - 1)) << (r * B)
                    words.append(v)
        return words

    def wbuf_words(self, cfg):
        R, C, B = cfg.rows, cfg.cols, cfg.operand_bits
        cin = self.x.shape[0]
        words = []
        for ky in range(self.k):
            for kx in range(self.k):
                for cb in range(self.cb):
                    for r in range(R):
                        ci = cb * R + r
                        v = 0
                        for c in range(C):
                            wv = int(self.wt[c, ci, ky, kx]) if ci < cin else 0
                            v |= (wv & (2**B - 1)) << (c * B)
                        words.append(v)
        return words

    def pbuf_words(self, cfg):
        return list(self.post.words) + (act_words(cfg, self.post) if self.act else [])

    def part(self, cb_lo, cb_hi):
        """The same layer restricted to input-channel blocks [cb_lo, cb_hi) (its expected output
        stays the whole layer's: parts are accumulated)."""
        R = self.cfg_rows
        p = object.__new__(type(self))
        p.__dict__.update(self.__dict__)
        p.x = self.x[cb_lo * R:cb_hi * R]
        p.wt = self.wt[:, cb_lo * R:cb_hi * R]
        p.cb = cb_hi - cb_lo
        return p

    def command(self, ibuf_addr=0, wbuf_addr=0, pbuf_addr=0, obuf_addr=0, ibuf_bank=0,
                wbuf_bank=0, pbuf_bank=0, obuf_bank=0, acc_cont=0, acc_keep=0):
        op = {
            "mode": isa.Mode.CONV, "acc_cont": acc_cont, "acc_keep": acc_keep,
            "in_signed": int(self.signed_in), "ibuf_bank": ibuf_bank, "wbuf_bank": wbuf_bank,
            "pbuf_bank": pbuf_bank, "kernel": self.k, "stride": self.stride,
            "pool": isa.Pool.NONE, "scheme": self.post.scheme, "act": int(self.act),
            "y_off": -self.pad, "x_off": -self.pad, "cin_blocks": self.cb,
            "in_h": self.h, "in_w": self.w, "out_h": self.oh, "out_w": self.ow,
            "ibuf_addr": ibuf_addr, "wbuf_addr": wbuf_addr, "pbuf_addr": pbuf_addr,
            "obuf_addr": obuf_addr, "zp_in": self.zp_in, "zp_out": self.post.zp_out,
            "clamp_min": self.post.clamp_min, "clamp_max": self.post.clamp_max,
        }
        return pack(isa.ConvCommand, {"opcode": isa.Opcode.CONV, "obuf_bank": obuf_bank,
                                      "op": op})


class BypassLayer(Layer):
    """Max pooling, global sum pooling or nearest upsampling of one channel block."""

    def __init__(self, cfg, rng, mode, k=1, stride=1, pad=0, h=6, w=6, pad_min=False,
                 extra=(0, 0), upsample=False):
        R, B = cfg.rows, cfg.operand_bits
        self.mode, self.k, self.stride, self.pad, self.h, self.w = mode, k, stride, pad, h, w
        self.pad_min, self.upsample, self.cb, self.signed_in = pad_min, upsample, 1, False
        self.zp_in = int(rng.integers(0, 2**B))
        self.x = rng.integers(0, 2**B, size=(R, h, w))
        d = self.x - self.zp_in
        copy = PostProcLayer(isa.Scheme.COPY, self.zp_in, 0, 2**B - 1, 0, (0,) * R)
        self.post, self.act = copy, False
        if mode == isa.Mode.MAXPOOL:
            # (pad, pad) before, (pad + extra) after: extra pads the bottom/right only.
            fill = -(2**B) if pad_min else 0
            dp = np.pad(d, ((0, 0), (pad, pad + extra[0]), (pad, pad + extra[1])),
                        constant_values=fill)
            self.oh = (h + 2 * pad + extra[0] - k) // stride + 1
            self.ow = (w + 2 * pad + extra[1] - k) // stride + 1
            acc = np.full((R, self.oh, self.ow), -(2**40))
            for ky in range(k):
                for kx in range(k):
                    acc = np.maximum(acc, dp[:, ky:ky + stride * self.oh:stride,
                                             kx:kx + stride * self.ow:stride])
        elif mode == isa.Mode.SUMPOOL:
            self.oh, self.ow = h, w  # walked pixels; one output
            acc = d.sum(axis=(1, 2)).reshape(R, 1, 1)
        else:  # COPY, upsampling
            self.oh, self.ow = (2 * h, 2 * w) if upsample else (h, w)
            acc = np.repeat(np.repeat(d, 2, axis=1), 2, axis=2) if upsample else d
        if mode == isa.Mode.SUMPOOL:   # an average in any scheme
            self.post, self.act, q = random_post(cfg, rng, acc.reshape(R, -1))
            self.expected = q & (2**B - 1)
        else:
            self.expected = np.clip(acc + self.zp_in, 0, 2**B - 1).reshape(R, -1).T
        self.outputs = self.expected.shape[0]

    def command(self, obuf_bank=0, **kw):
        raw = Layer.command(self, obuf_bank=obuf_bank, **kw)
        c = isa.ConvCommand.from_bits(raw)
        op = {name: getattr(c.op, name) for name, _ in isa.ConvOp}
        op.update(mode=self.mode, pad_min=int(self.pad_min), upsample=int(self.upsample),
                  y_off=-self.pad, x_off=-self.pad,
                  out_h=self.oh if not self.upsample else self.oh,
                  out_w=self.ow if not self.upsample else self.ow)
        return pack(isa.ConvCommand, {"opcode": isa.Opcode.CONV, "obuf_bank": obuf_bank,
                                      "op": op})


class PairsLayer(Layer):
    """A depthwise layer of one channel block in ``isa.Mode.PAIRS``: fbgemm's sums, whose tap
    pairs saturate to int16 (golden: ``numerics.ops.conv2d_acc(saturate_pairs=True)``)."""

    def __init__(self, cfg, rng, k, stride, pad, h, w):
        C, B = cfg.cols, cfg.operand_bits
        self.cfg_rows, self.cb, self.signed_in = cfg.rows, 1, False
        self.k, self.stride, self.pad, self.h, self.w = k, stride, pad, h, w
        self.zp_in = int(rng.integers(0, 2**B))
        # Codes and weights near the extremes, so that many pairs saturate.
        self.x = np.where(rng.random((C, h, w)) < 0.7, 2**B - 1 - rng.integers(0, 16, (C, h, w)),
                          rng.integers(0, 2**B, (C, h, w)))
        wl = 2 ** (B - 1) - 1
        self.dw = rng.integers(-wl, wl + 1, size=(C, k, k))
        kw = dict(zp_x=self.zp_in, stride=stride, padding=pad, groups=C)
        acc = ops.conv2d_acc(self.x[None], self.dw[:, None], saturate_pairs=True, **kw)[0]
        exact = ops.conv2d_acc(self.x[None], self.dw[:, None], **kw)[0]
        self.saturated = int(np.count_nonzero(acc != exact))
        self.oh, self.ow = acc.shape[1:]
        self.acc = acc.reshape(C, -1)
        self.post, self.act, q = random_post(cfg, rng, acc.reshape(C, -1))
        self.expected = q & (2**B - 1)

    def wbuf_words(self, cfg):
        B = cfg.operand_bits
        tiles = pairs_tiles(self.dw, cfg.rows)
        return [sum((int(v) & (2**B - 1)) << (c * B) for c, v in enumerate(row))
                for tile in tiles for row in tile]

    def command(self, **kw):
        c = isa.ConvCommand.from_bits(Layer.command(self, **kw))
        op = {name: getattr(c.op, name) for name, _ in isa.ConvOp}
        op.update(mode=isa.Mode.PAIRS)
        return pack(isa.ConvCommand, {"opcode": isa.Opcode.CONV, "obuf_bank": c.obuf_bank,
                                      "op": op})


class DwLayer(Layer):
    """A depthwise 3x3 layer of one channel block in ``isa.Mode.DW``: one weight tile whose row
    ``r`` holds channel ``r``'s nine taps (golden: the exact depthwise conv)."""

    def __init__(self, cfg, rng, stride, pad, h, w):
        super().__init__(cfg, rng, 3, stride, pad, cfg.cols, h, w, depthwise=True)

    def wbuf_words(self, cfg):
        B, C = cfg.operand_bits, cfg.cols
        taps = self.wt[np.arange(C), np.arange(C)].reshape(C, 9)
        return [sum((int(v) & (2**B - 1)) << (t * B) for t, v in enumerate(row)) for row in taps]

    def command(self, **kw):
        c = isa.ConvCommand.from_bits(Layer.command(self, **kw))
        op = {name: getattr(c.op, name) for name, _ in isa.ConvOp}
        op.update(mode=isa.Mode.DW)
        return pack(isa.ConvCommand, {"opcode": isa.Opcode.CONV, "obuf_bank": c.obuf_bank,
                                      "op": op})


class DwPairsLayer(PairsLayer):
    """A depthwise 3x3 layer in ``isa.Mode.DW_PAIRS``: ``PairsLayer``'s codes and golden output
    (fbgemm's saturating pairs), ``DwLayer``'s weight tile."""

    def __init__(self, cfg, rng, stride, pad, h, w):
        super().__init__(cfg, rng, 3, stride, pad, h, w)

    def wbuf_words(self, cfg):
        B = cfg.operand_bits
        return [sum((int(v) & (2**B - 1)) << (t * B) for t, v in enumerate(row))
                for row in self.dw.reshape(cfg.cols, 9)]

    def command(self, **kw):
        c = isa.ConvCommand.from_bits(Layer.command(self, **kw))
        op = {name: getattr(c.op, name) for name, _ in isa.ConvOp}
        op.update(mode=isa.Mode.DW_PAIRS)
        return pack(isa.ConvCommand, {"opcode": isa.Opcode.CONV, "obuf_bank": c.obuf_bank,
                                      "op": op})


class StepLayer:
    """A ``DwLayer`` / ``DwPairsLayer`` post-processed by the step lanes (``ConvOp.step``): a
    float-scheme requantization (fbgemm, qnnpack or ONNX Runtime, ReLU6 or not) fitted by
    ``numerics.stepfit``; golden: the scheme's own ``Requant.apply``."""

    def __init__(self, cfg, rng, base, scheme, relu6=False):
        self.base, self.scheme = base, scheme
        B, C = cfg.operand_bits, cfg.cols
        taps = (base.dw if isinstance(base, DwPairsLayer)
                else base.wt[np.arange(C), np.arange(C)]).reshape(C, 3, 3)
        s_in = float(rng.uniform(0.01, 0.05))
        s_w = rng.uniform(0.002, 0.02, C)
        # Multipliers of 0.002..0.01 spread these random sums over the whole code range.
        s_out = s_in * float(np.mean(s_w)) / float(rng.uniform(0.002, 0.01))
        zp_out = int(rng.integers(0, 100))
        bias = (rng.integers(-5000, 5000, C) if scheme == "onnxruntime"
                else rng.normal(0, 0.2, C))
        qmax = min(2**B - 1, zp_out + round(6 / s_out)) if relu6 else 2**B - 1
        self.rq = make_requant(scheme, s_in, s_w, s_out, zp_out=zp_out, bias=bias, qmax=qmax,
                               relu=relu6, per_channel=True)
        lo, hi = dw_acc_range(taps, 0, 2**B - 1, base.zp_in)
        fit = fit_steps(self.rq, lo, hi, cfg.step_frac_bits, cfg.step_exceptions)
        self.exceptions = sum(len(e) for e in fit.exceptions)
        self.words = [pack(step_params_layout(cfg), p) for p in step_params(fit, cfg)]
        self.expected = self.rq.apply(base.acc.T, axis=1) & (2**B - 1)

    def __getattr__(self, name):
        return getattr(self.base, name)

    def pbuf_words(self, cfg):
        return self.words

    def command(self, step=1, **kw):
        c = isa.ConvCommand.from_bits(self.base.command(**kw))
        op = {name: getattr(c.op, name) for name, _ in isa.ConvOp}
        op.update(step=step, act=0, zp_out=self.rq.zp_out, clamp_min=self.rq.lo,
                  clamp_max=self.rq.hi)
        return pack(isa.ConvCommand, {"opcode": isa.Opcode.CONV, "obuf_bank": c.obuf_bank,
                                      "op": op})


class EngineTB:
    def __init__(self, dut, cfg):
        self.dut, self.cfg = dut, cfg
        for port in ("ibuf_w", "wbuf_w", "pbuf_w"):
            getattr(dut, f"{port}__en").value = 0
        dut.obuf_r__en.value = 0
        dut.cancel.value = 0
        dut.cmd__valid.value = 0
        dut.cmd__payload.value = 0
        self.done = 0
        self.errors = []
        self.events = []  # "done" / "error" in the order the engine answered

    async def monitor(self):
        while True:
            await RisingEdge(self.dut.clk)
            await ReadOnly()
            if int(self.dut.done.value):
                self.done += 1
                self.events.append("done")
            if int(self.dut.error.value):
                self.errors.append(int(self.dut.error_cause.value))
                self.events.append("error")

    async def write(self, port, bank, base, words):
        d = self.dut
        for i, v in enumerate(words):
            getattr(d, f"{port}__en").value = 1
            getattr(d, f"{port}__bank").value = bank
            getattr(d, f"{port}__addr").value = base + i
            getattr(d, f"{port}__data").value = v
            await RisingEdge(d.clk)
        getattr(d, f"{port}__en").value = 0

    async def send(self, command):
        d = self.dut
        d.cmd__payload.value = command
        d.cmd__valid.value = 1
        while True:
            await ReadOnly()
            ok = int(d.cmd__ready.value)
            await RisingEdge(d.clk)
            if ok:
                break
        d.cmd__valid.value = 0

    async def wait_done(self, n, timeout):
        for _ in range(timeout):
            if self.done + len(self.errors) >= n:
                return
            await RisingEdge(self.dut.clk)
        raise TimeoutError(f"{self.done} commands done, {len(self.errors)} errors; wanted {n}")

    async def read_obuf(self, bank, base, n):
        """Read ``n`` OBUF words through the read port (one per cycle, one cycle latency)."""
        d = self.dut
        out = []
        for i in range(n):
            d.obuf_r__en.value = 1
            d.obuf_r__bank.value = bank
            d.obuf_r__addr.value = base + i
            await RisingEdge(d.clk)
            await ReadOnly()
            out.append(d.obuf_r__data.value.to_unsigned())
            await FallingEdge(d.clk)
        d.obuf_r__en.value = 0
        return out

    def decode(self, words):
        C, B = self.cfg.cols, self.cfg.operand_bits
        return np.array([[(w >> (c * B)) & (2**B - 1) for c in range(C)] for w in words])


async def load(tb, layer, ibuf_bank=0, wbuf_bank=0, pbuf_bank=0):
    await tb.write("ibuf_w", ibuf_bank, 0, layer.ibuf_words(tb.cfg))
    if not isinstance(layer, BypassLayer):
        await tb.write("wbuf_w", wbuf_bank, 0, layer.wbuf_words(tb.cfg))
    await tb.write("pbuf_w", pbuf_bank, 0, layer.pbuf_words(tb.cfg))


def random_layer(cfg, rng):
    """A random layer that fits the config's buffers."""
    while True:
        k = int(rng.choice([1, 3, 5, 7]))
        stride = int(rng.integers(1, 3))
        pad = int(rng.integers(0, k // 2 + 1))
        cin = int(rng.integers(1, 3 * cfg.rows + 1))
        h = int(rng.integers(max(1, k - 2 * pad), 11))
        w = int(rng.integers(max(1, k - 2 * pad), 11))
        cb = -(-cin // cfg.rows)
        oh = (h + 2 * pad - k) // stride + 1
        ow = (w + 2 * pad - k) // stride + 1
        if (k * k * cb * cfg.rows <= cfg.weight_buffer_depth and cb * h * w
                <= cfg.act_buffer_depth and oh * ow <= cfg.acc_buffer_depth and oh > 0 and ow > 0):
            return Layer(cfg, rng, k, stride, pad, cin, h, w, signed_in=rng.random() < 0.3)


@cocotb.test()
async def random_layers(dut):
    """Random kernels 1/3/5/7, strides 1/2, paddings, channel counts: bit-exact outputs."""
    cfg = config_from_env()
    rng = np.random.default_rng(int(os.environ.get("TB_SEED", 7)))
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    total = 0
    for case in range(int(os.environ.get("TB_CASES", 6))):
        layer = random_layer(cfg, rng)
        await load(tb, layer)
        await tb.send(layer.command())
        await tb.wait_done(case + 1, 200_000)
        got = tb.decode(await tb.read_obuf(0, 0, layer.oh * layer.ow))
        bad = int(np.sum(got != layer.expected))
        dut._log.info("case %d: k%d s%d p%d cin%d %dx%d -> %d outputs, %d mismatches", case,
                      layer.k, layer.stride, layer.pad, layer.x.shape[0], layer.h, layer.w,
                      got.size, bad)
        assert bad == 0, f"case {case}: {bad} of {got.size} outputs differ"
        total += got.size
    assert not tb.errors
    dut._log.info("%d outputs matched", total)


@cocotb.test()
async def bypass_modes(dut):
    """Max pooling (ResNet 3x3/2 with -inf padding, 2x2/2, YOLO's zero-pad + 2x2/1), global
    sum pooling with requantization, nearest upsampling x2."""
    cfg = config_from_env()
    rng = np.random.default_rng(5)
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    M = isa.Mode
    cases = [
        ("maxpool 3x3/2 pad1", BypassLayer(cfg, rng, M.MAXPOOL, 3, 2, 1, 7, 7, pad_min=True)),
        ("maxpool 2x2/2", BypassLayer(cfg, rng, M.MAXPOOL, 2, 2, 0, 8, 6)),
        ("zeropad+maxpool 2x2/1", BypassLayer(cfg, rng, M.MAXPOOL, 2, 1, 0, 5, 5,
                                              extra=(1, 1))),
        ("global sum pool", BypassLayer(cfg, rng, M.SUMPOOL, 1, 1, 0, 5, 7)),
        ("upsample x2", BypassLayer(cfg, rng, M.COPY, 1, 1, 0, 4, 5, upsample=True)),
    ]
    for i, (name, layer) in enumerate(cases):
        await load(tb, layer)
        await tb.send(layer.command())
        await tb.wait_done(i + 1, 50_000)
        got = tb.decode(await tb.read_obuf(0, 0, layer.outputs))
        bad = int(np.sum(got != layer.expected))
        dut._log.info("%s: %d outputs, %d mismatches", name, got.size, bad)
        assert not tb.errors, f"{name}: error {tb.errors}"
        assert bad == 0, f"{name}: {bad} of {got.size} differ"


@cocotb.test()
async def saturating_pairs(dut):
    """fbgemm's depthwise sums (PAIRS): 3x3 stride 1 and 2, 5x5, 1x1 (its pair's second tap is
    below the kernel), tiles narrower than the kernel; accumulators changed by saturation."""
    cfg = config_from_env()
    rng = np.random.default_rng(17)
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    cases = [(3, 1, 1, 6, 7), (3, 2, 1, 7, 6), (5, 1, 2, 6, 5), (1, 1, 0, 3, 4), (3, 1, 1, 2, 1)]
    saturated = 0
    for i, (k, s, p, h, w) in enumerate(cases):
        layer = PairsLayer(cfg, rng, k, s, p, h, w)
        await load(tb, layer)
        await tb.send(layer.command())
        await tb.wait_done(i + 1, 50_000)
        got = tb.decode(await tb.read_obuf(0, 0, layer.oh * layer.ow))
        bad = int(np.sum(got != layer.expected))
        dut._log.info("pairs k%d s%d %dx%d: %d outputs (%d accumulators saturated), %d "
                      "mismatches", k, s, h, w, got.size, layer.saturated, bad)
        assert not tb.errors, f"k{k} s{s}: error {tb.errors}"
        assert bad == 0, f"k{k} s{s}: {bad} of {got.size} differ"
        saturated += layer.saturated
    assert saturated > 0


@cocotb.test()
async def depthwise_one_pass(dut):
    """Depthwise 3x3 in ``DW`` and ``DW_PAIRS`` mode (configs with ``dw_kernel``): stride 1 and
    2, with and without padding, a single output (the shortest line delay), maps wider than tall,
    fbgemm pairs that saturate, DW after DW_PAIRS; DW_PAIRS right after a CONV and the other way
    round; malformed DW commands end in BAD_COMPUTE. Configs without the mode answer every DW
    command with BAD_COMPUTE."""
    cfg = config_from_env()
    rng = np.random.default_rng(23)
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    if not cfg.dw_kernel:
        layer = DwLayer.__new__(DwLayer)
        Layer.__init__(layer, cfg, rng, 3, 1, 1, cfg.cols, 4, 4, depthwise=True)
        await tb.send(layer.command())
        await tb.wait_done(1, 100)
        assert tb.errors == [isa.ErrorCause.BAD_COMPUTE], tb.errors
        return
    done = saturated = 0
    cases = [(1, 1, 6, 7), (2, 1, 7, 6), (1, 0, 5, 5), (1, 1, 1, 1), (2, 1, 3, 9), (2, 0, 5, 4)]
    pairs = [(1, 1, 6, 7), (2, 1, 7, 6), (1, 0, 4, 5), (1, 1, 1, 1)]
    for fbgemm, (s, p, h, w) in ([(False, c) for c in cases] + [(True, c) for c in pairs]
                                 + [(False, (1, 1, 5, 3))]):
        if fbgemm and not cfg.dw_pairs:
            continue
        layer = (DwPairsLayer if fbgemm else DwLayer)(cfg, rng, s, p, h, w)
        saturated += layer.saturated if fbgemm else 0
        await load(tb, layer)
        await tb.send(layer.command())
        done += 1
        await tb.wait_done(done, 50_000)
        got = tb.decode(await tb.read_obuf(0, 0, layer.oh * layer.ow))
        bad = int(np.sum(got != layer.expected))
        dut._log.info("%s s%d p%d %dx%d: %d outputs, %d mismatches", type(layer).__name__,
                      s, p, h, w, got.size, bad)
        assert not tb.errors, f"s{s} p{p} {h}x{w}: error {tb.errors}"
        assert bad == 0, f"s{s} p{p} {h}x{w}: {bad} of {got.size} differ"
    # The pairs cases must exercise the saturation they model.
    dut._log.info("DW_PAIRS: %d accumulators differ from the exact sums", saturated)
    assert saturated > 0 or not cfg.dw_pairs, "no DW_PAIRS accumulator saturated"
    # Back to back: CONV then DW then CONV, in alternating banks.
    a = Layer(cfg, rng, 3, 1, 1, cfg.rows, 5, 6)
    b = (DwPairsLayer if cfg.dw_pairs else DwLayer)(cfg, rng, 1, 1, 6, 5)
    c = Layer(cfg, rng, 1, 1, 0, cfg.rows, 4, 4)
    await load(tb, a, 0, 0, 0)
    await load(tb, b, 1, 1, 1)
    await tb.send(a.command(obuf_bank=0))
    await tb.send(b.command(ibuf_bank=1, wbuf_bank=1, pbuf_bank=1, obuf_bank=1))
    await tb.wait_done(done + 2, 100_000)
    await load(tb, c, 0, 0, 0)
    await tb.send(c.command(obuf_bank=0))
    await tb.wait_done(done + 3, 100_000)
    for layer, bank in ((b, 1), (c, 0)):
        got = tb.decode(await tb.read_obuf(bank, 0, layer.oh * layer.ow))
        assert np.array_equal(got, layer.expected), f"{type(layer).__name__} after a switch"
    # Malformed: two channel blocks, part of a split reduction, a line beyond the delays.
    for over in ({"cb": 2}, {"w": cfg.max_width + 2, "pad": 2}):
        bad = DwLayer(cfg, rng, 1, 1, 4, 4)
        bad.__dict__.update(over)
        bad.oh, bad.ow = 1, bad.w + 2 * bad.pad - 2
        await tb.send(bad.command())
    await tb.send(DwLayer(cfg, rng, 1, 1, 4, 4).command(acc_keep=1))
    await ClockCycles(dut.clk, 20)
    assert tb.errors == [isa.ErrorCause.BAD_COMPUTE] * 3, tb.errors


@cocotb.test()
async def depthwise_step_lanes(dut):
    """DW and DW_PAIRS commands post-processed by the step lanes, one pixel per cycle, in the
    three float schemes with and without ReLU6: strides 1 and 2, padding or not, one output;
    step commands between ordinary ones (DW with the general lanes, CONV); a step command on a
    mode other than DW, or with an activation word, ends in BAD_COMPUTE, as does every step
    command on configs without step lanes."""
    cfg = config_from_env()
    rng = np.random.default_rng(29)
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    if not cfg.step_lanes:
        await tb.send(Layer(cfg, rng, 1, 1, 0, cfg.rows, 3, 3).command())
        await tb.wait_done(1, 20_000)
        c = isa.ConvCommand.from_bits(Layer(cfg, rng, 1, 1, 0, cfg.rows, 3, 3).command())
        op = {name: getattr(c.op, name) for name, _ in isa.ConvOp}
        op.update(step=1)
        await tb.send(pack(isa.ConvCommand, {"opcode": isa.Opcode.CONV, "op": op}))
        await tb.wait_done(2, 100)
        assert tb.errors == [isa.ErrorCause.BAD_COMPUTE], tb.errors
        return
    schemes = ("torch-fbgemm", "torch-qnnpack", "onnxruntime")
    cases = [(DwLayer, 1, 1, 6, 7), (DwLayer, 2, 1, 7, 6), (DwLayer, 1, 0, 5, 5),
             (DwLayer, 1, 1, 1, 1), (DwPairsLayer, 1, 1, 6, 7), (DwPairsLayer, 2, 1, 7, 6)]
    done = exceptions = 0
    for i, (kind, s, p, h, w) in enumerate(cases):
        scheme = "torch-fbgemm" if kind is DwPairsLayer else schemes[i % 3]
        layer = StepLayer(cfg, rng, kind(cfg, rng, s, p, h, w), scheme, relu6=bool(i % 2))
        exceptions += layer.exceptions
        await load(tb, layer)
        await tb.send(layer.command())
        done += 1
        await tb.wait_done(done, 50_000)
        got = tb.decode(await tb.read_obuf(0, 0, layer.oh * layer.ow))
        bad = int(np.sum(got != layer.expected))
        dut._log.info("step %s %s s%d p%d %dx%d: %d outputs, %d mismatches", kind.__name__,
                      scheme, s, p, h, w, got.size, bad)
        assert not tb.errors, f"s{s} p{p} {h}x{w}: error {tb.errors}"
        assert bad == 0, f"{scheme} s{s} p{p} {h}x{w}: {bad} of {got.size} differ"
    # Mixed: DW (general lanes), step DW, CONV, step DW_PAIRS, in alternating banks, queued.
    a = DwLayer(cfg, rng, 1, 1, 5, 6)
    b = StepLayer(cfg, rng, DwLayer(cfg, rng, 1, 1, 6, 5), "onnxruntime")
    c = Layer(cfg, rng, 1, 1, 0, cfg.rows, 4, 4)
    d = StepLayer(cfg, rng, DwPairsLayer(cfg, rng, 2, 1, 5, 5), "torch-fbgemm", relu6=True)
    for first, second in ((a, b), (c, d)):
        await load(tb, first, 0, 0, 0)
        await load(tb, second, 1, 1, 1)
        await tb.send(first.command(obuf_bank=0))
        await tb.send(second.command(ibuf_bank=1, wbuf_bank=1, pbuf_bank=1, obuf_bank=1))
        done += 2
        await tb.wait_done(done, 100_000)
        for layer, bank in ((first, 0), (second, 1)):
            got = tb.decode(await tb.read_obuf(bank, 0, layer.oh * layer.ow))
            assert np.array_equal(got, layer.expected), f"{type(layer).__name__} in a mix"
    assert not tb.errors
    # Malformed: step on a CONV command, step with an activation word.
    conv = Layer(cfg, rng, 1, 1, 0, cfg.rows, 3, 3)
    raw = isa.ConvCommand.from_bits(conv.command())
    for change in ({"step": 1}, {"step": 1, "act": 1, "mode": isa.Mode.DW, "kernel": 3}):
        op = {name: getattr(raw.op, name) for name, _ in isa.ConvOp}
        op.update(change)
        await tb.send(pack(isa.ConvCommand, {"opcode": isa.Opcode.CONV, "op": op}))
    await ClockCycles(dut.clk, 20)
    assert tb.errors == [isa.ErrorCause.BAD_COMPUTE] * 2, tb.errors
    dut._log.info("step lanes: %d layers bit-exact, %d exception values in their fits",
                  len(cases) + 2, exceptions)


@cocotb.test()
async def split_reduction(dut):
    """A layer split over input-channel blocks into keep / cont+keep / cont parts equals the
    whole layer."""
    cfg = config_from_env()
    rng = np.random.default_rng(21)
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    layer = Layer(cfg, rng, 3, 1, 1, 3 * cfg.rows, 5, 6)
    parts = [layer.part(0, 1), layer.part(1, 2), layer.part(2, 3)]
    ioff = woff = 0
    cmds = []
    for i, p in enumerate(parts):
        iw, ww = p.ibuf_words(cfg), p.wbuf_words(cfg)
        await tb.write("ibuf_w", 0, ioff, iw)
        await tb.write("wbuf_w", 0, woff, ww)
        cmds.append(p.command(ibuf_addr=ioff, wbuf_addr=woff, acc_cont=int(i > 0),
                              acc_keep=int(i < len(parts) - 1)))
        ioff, woff = ioff + len(iw), woff + len(ww)
    await tb.write("pbuf_w", 0, 0, layer.pbuf_words(tb.cfg))
    for c in cmds:
        await tb.send(c)
    await tb.wait_done(3, 50_000)
    got = tb.decode(await tb.read_obuf(0, 0, layer.oh * layer.ow))
    assert tb.events == ["done"] * 3, tb.events
    assert np.array_equal(got, layer.expected)


@cocotb.test()
async def answers_in_order_and_cancel(dut):
    """A bad command right behind a good one is answered after it; ``cancel`` drops a running
    command without an answer and the engine works afterwards."""
    cfg = config_from_env()
    rng = np.random.default_rng(8)
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    layer = Layer(cfg, rng, 3, 1, 1, cfg.rows, 6, 6)
    await load(tb, layer)
    bad = layer.command(wbuf_addr=cfg.weight_buffer_depth - 1)
    await tb.send(layer.command())
    await tb.send(bad)
    await tb.wait_done(2, 50_000)
    assert tb.events == ["done", "error"], tb.events
    await tb.send(layer.command())
    await ClockCycles(dut.clk, 30)
    dut.cancel.value = 1
    await RisingEdge(dut.clk)
    dut.cancel.value = 0
    await ClockCycles(dut.clk, 500)
    assert tb.events == ["done", "error"], tb.events
    await tb.send(layer.command(obuf_bank=1))
    await tb.wait_done(3, 50_000)
    got = tb.decode(await tb.read_obuf(1, 0, layer.oh * layer.ow))
    assert np.array_equal(got, layer.expected)


@cocotb.test()
async def overlapped_commands(dut):
    """Two commands back to back (the second's MAC overlaps the first's post stage)."""
    cfg = config_from_env()
    rng = np.random.default_rng(11)
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    a = Layer(cfg, rng, 3, 1, 1, cfg.rows, 6, 6)
    b = Layer(cfg, rng, 1, 1, 0, cfg.rows, 6, 6)
    await load(tb, a, 0, 0, 0)
    await load(tb, b, 1, 1, 1)
    await tb.send(a.command(obuf_bank=0))
    await tb.send(b.command(ibuf_bank=1, wbuf_bank=1, pbuf_bank=1, obuf_bank=1))
    await tb.wait_done(2, 100_000)
    for layer, bank in ((a, 0), (b, 1)):
        got = tb.decode(await tb.read_obuf(bank, 0, layer.oh * layer.ow))
        assert np.array_equal(got, layer.expected)


@cocotb.test()
async def bad_geometry(dut):
    """A command beyond the buffers ends in BAD_COMPUTE, and the engine keeps working."""
    cfg = config_from_env()
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    rng = np.random.default_rng(3)
    layer = Layer(cfg, rng, 3, 1, 1, cfg.rows, 5, 5)
    bad = Layer(cfg, rng, 3, 1, 1, cfg.rows, 5, 5)
    bad.w = cfg.max_width + 1
    await tb.send(bad.command())
    await tb.send(layer.command(wbuf_addr=cfg.weight_buffer_depth - 1))
    # PAIRS over two channel blocks, and PAIRS as part of a split reduction
    pairs = PairsLayer(cfg, rng, 3, 1, 1, 5, 5)
    pairs.cb = 2
    await tb.send(pairs.command())
    pairs.cb = 1
    await tb.send(pairs.command(acc_keep=1))
    await ClockCycles(dut.clk, 20)
    assert tb.errors == [isa.ErrorCause.BAD_COMPUTE] * 4, tb.errors
    await load(tb, layer)
    await tb.send(layer.command())
    await tb.wait_done(5, 50_000)
    got = tb.decode(await tb.read_obuf(0, 0, layer.oh * layer.ow))
    assert np.array_equal(got, layer.expected)


# -- ELTWISE -----------------------------------------------------------------------------------


class AddJob:
    """One ``ELTWISE`` command: an add case of ``tb_eltwise`` placed in the buffers."""

    def __init__(self, cfg, case, ibuf=(0, 0), wbuf=(0, 0), pbuf=(0, 0), obuf=(0, 0)):
        C, B = cfg.cols, cfg.operand_bits
        self.name, self.case = case.name, case
        self.pixels = case.a.size // C
        lo = min(int(case.a.min()), int(case.b.min()), case.layer.clamp_min)
        self.signed = lo < 0   # every code of a case has its output's signedness
        self.ibuf, self.wbuf, self.pbuf, self.obuf = ibuf, wbuf, pbuf, obuf
        self.expected = (case.want & (2**B - 1)).reshape(self.pixels, C)

    def words(self, cfg, codes):
        C, B = cfg.cols, cfg.operand_bits
        v = (np.asarray(codes, dtype=np.int64) & (2**B - 1)).reshape(self.pixels, C)
        return [sum(int(v[p, c]) << (c * B) for c in range(C)) for p in range(self.pixels)]

    def param_words(self, cfg):
        m = (1 << PBUF_WORD_BITS) - 1
        return [(self.case.layer.params >> (PBUF_WORD_BITS * i)) & m
                for i in range(cfg.requant_lanes)]

    async def load(self, tb):
        await tb.write("ibuf_w", self.ibuf[0], self.ibuf[1], self.words(tb.cfg, self.case.a))
        await tb.write("wbuf_w", self.wbuf[0], self.wbuf[1], self.words(tb.cfg, self.case.b))
        await tb.write("pbuf_w", self.pbuf[0], self.pbuf[1], self.param_words(tb.cfg))

    def command(self, **over):
        lay = self.case.layer
        op = {"ibuf_bank": self.ibuf[0], "ibuf_addr": self.ibuf[1],
              "wbuf_bank": self.wbuf[0], "wbuf_addr": self.wbuf[1],
              "pbuf_bank": self.pbuf[0], "pbuf_addr": self.pbuf[1],
              "obuf_addr": self.obuf[1], "pixels": self.pixels,
              "a_signed": int(self.signed), "b_signed": int(self.signed),
              "zp_out": lay.zp_out, "clamp_min": lay.clamp_min, "clamp_max": lay.clamp_max}
        op.update(over)
        return pack(isa.EltwiseCommand, {"opcode": isa.Opcode.ELTWISE,
                                         "obuf_bank": self.obuf[0], "op": op})

    async def check(self, tb, dut):
        got = tb.decode(await tb.read_obuf(self.obuf[0], self.obuf[1], self.pixels))
        bad = int(np.sum(got != self.expected))
        dut._log.info("%s: %d outputs, %d mismatches", self.name, got.size, bad)
        assert bad == 0, f"{self.name}: {bad} of {got.size} outputs differ"
        return got.size


def random_add_jobs(cfg, rng, group, max_pixels=24):
    """The add cases of ``group`` with random sizes, banks and buffer addresses."""
    C, L = cfg.cols, cfg.requant_lanes
    jobs = []
    for case in add_cases(group, cfg, rng, C * max_pixels):
        n = int(rng.integers(1, max_pixels + 1))
        case.a, case.b, case.want = case.a[:n * C], case.b[:n * C], case.want[:n * C]

        def place(depth, size, align=1):
            return (int(rng.integers(0, 2)),
                    int(rng.integers(0, (depth - size) // align + 1)) * align)
        jobs.append(AddJob(cfg, case, place(cfg.act_buffer_depth, n),
                           place(cfg.weight_buffer_depth, n),
                           place(cfg.param_buffer_depth, L, L), place(cfg.acc_buffer_depth, n)))
    return jobs


@cocotb.test()
async def eltwise_adds(dut):
    """Residual adds in every semantics (PyTorch vector and scalar paths, qnnpack, ONNX
    Runtime, TFLite with both roundings), random scales (some powers of two) and zero points,
    fused ReLU, random sizes, banks and addresses: outputs equal numerics' add ops; cycles per
    pixel."""
    cfg = config_from_env()
    rng = np.random.default_rng(int(os.environ.get("TB_SEED", 7)) + 100)
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    total = n = 0
    for group in ADD_GROUPS:
        for job in random_add_jobs(cfg, rng, group):
            await job.load(tb)
            t0 = get_sim_time("ns")
            await tb.send(job.command())
            await tb.wait_done(n + 1, 20_000)
            cycles = round((get_sim_time("ns") - t0) / CLOCK_NS)
            n += 1
            dut._log.info("%s: %d pixels in %d cycles", job.name, job.pixels, cycles)
            total += await job.check(tb, dut)
    assert not tb.errors, tb.errors
    # A long add measures the steady rate: cols / add_lanes cycles per pixel.
    case = add_cases("tflite", cfg, rng, cfg.cols * 200)[0]
    job = AddJob(cfg, case)
    await job.load(tb)
    t0 = get_sim_time("ns")
    await tb.send(job.command())
    await tb.wait_done(n + 1, 20_000)
    cycles = round((get_sim_time("ns") - t0) / CLOCK_NS)
    total += await job.check(tb, dut)
    dut._log.info("eltwise: %d pixels in %d cycles (%.3f per pixel); %d outputs matched",
                  job.pixels, cycles, cycles / job.pixels, total)
    steady = job.pixels * cfg.cols // cfg.add_lanes
    assert steady <= cycles <= steady + 80, (cycles, steady)


@cocotb.test()
async def eltwise_between_convs(dut):
    """conv, ELTWISE, conv back to back: the add waits for the conv's post stage, the next conv
    for the add; answers in order; all three outputs exact."""
    cfg = config_from_env()
    rng = np.random.default_rng(31)
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    a = Layer(cfg, rng, 3, 1, 1, cfg.rows, 6, 6)
    b = Layer(cfg, rng, 1, 1, 0, cfg.rows, 5, 6)
    await load(tb, a, 0, 0, 0)
    await load(tb, b, 1, 1, 1)
    case = add_cases("torch-vector", cfg, rng, cfg.cols * 20)[2]   # with ReLU
    L = cfg.requant_lanes
    add = AddJob(cfg, case, (1, 300), (0, 100), (1, 8 * L), (1, 0))
    await add.load(tb)
    await tb.send(a.command(obuf_bank=0))
    await tb.send(add.command())
    await tb.send(b.command(ibuf_bank=1, wbuf_bank=1, pbuf_bank=1, obuf_bank=0, obuf_addr=100))
    await tb.wait_done(3, 100_000)
    assert tb.events == ["done"] * 3, tb.events
    got = tb.decode(await tb.read_obuf(0, 0, a.oh * a.ow))
    assert np.array_equal(got, a.expected)
    got = tb.decode(await tb.read_obuf(0, 100, b.oh * b.ow))
    assert np.array_equal(got, b.expected)
    await add.check(tb, dut)


@cocotb.test()
async def eltwise_errors_and_cancel(dut):
    """Bad ELTWISE geometries end in BAD_COMPUTE in command order; ``cancel`` drops a running
    add without an answer and the next add is exact."""
    cfg = config_from_env()
    rng = np.random.default_rng(41)
    tb = EngineTB(dut, cfg)
    await start(dut)
    cocotb.start_soon(tb.monitor())
    case = add_cases("qnnpack", cfg, rng, cfg.cols * 60)[0]
    job = AddJob(cfg, case)
    await job.load(tb)
    L = cfg.requant_lanes
    bad = [
        job.command(pixels=0),
        job.command(ibuf_addr=cfg.act_buffer_depth - job.pixels + 1),
        job.command(wbuf_addr=cfg.weight_buffer_depth - job.pixels + 1),
        job.command(obuf_addr=cfg.acc_buffer_depth - job.pixels + 1),
        job.command(pbuf_addr=cfg.param_buffer_depth - L + (1 if L == 1 else L)),
    ]
    if L > 1:
        bad.append(job.command(pbuf_addr=1))
    await tb.send(job.command())
    for c in bad:
        await tb.send(c)
    await tb.wait_done(1 + len(bad), 20_000)
    assert tb.events == ["done"] + ["error"] * len(bad), tb.events
    assert tb.errors == [isa.ErrorCause.BAD_COMPUTE] * len(bad), tb.errors
    await job.check(tb, dut)
    # cancel in the middle of an add (results still in the adder's pipeline)
    await tb.send(job.command(obuf_addr=64))
    await ClockCycles(dut.clk, 40)
    dut.cancel.value = 1
    await RisingEdge(dut.clk)
    dut.cancel.value = 0
    await ClockCycles(dut.clk, 300)
    assert len(tb.events) == 1 + len(bad), tb.events
    other = AddJob(cfg, add_cases("onnxruntime", cfg, rng, cfg.cols * 30)[1], obuf=(0, 128))
    await other.load(tb)
    await tb.send(other.command())
    await tb.wait_done(2 + len(bad), 20_000)
    assert tb.events[-1] == "done", tb.events
    await other.check(tb, dut)
