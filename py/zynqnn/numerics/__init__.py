"""Bit-exact integer arithmetic of every quantization scheme the accelerator runs.

Each scheme has a vectorized numpy form and an integer-only "hardware form" (what the RTL
computes); ``tests/numerics`` proves the two equal and equal to the framework itself.

Modules (flat, import what you need)
------------------------------------
``schemes``
    Per-layer requantization ``int32 accumulator -> code``. Build with::

        make_requant(scheme, s_in, s_w, s_out, zp_out=0, bias=None, qmin=None, qmax=None,
                     relu=False, **options) -> Requant

    ``scheme`` is one of :data:`SCHEMES`: ``"torch-fbgemm"``, ``"torch-qnnpack"``,
    ``"onnxruntime"``, ``"tflite"``, ``"tflite-single-rounding"``, ``"pow2"``, ``"fixed16"``.
    ``s_w`` scalar = per-tensor weights, 1-D = per output channel. ``bias``: float (torch
    schemes, as stored in the model) or int32 codes (others). Options: ``per_channel``;
    ``bias_mode`` (torch-fbgemm); ``legacy_uint8``, ``multiplier``/``shift`` (tflite);
    ``s_bias``, ``leaky=(mult, shift)``, ``rounding`` (pow2, fixed16); ``overflow``, ``bits``
    (fixed16). A :class:`Requant` has::

        .apply(acc, axis=1)     # numpy form -> int64 codes
        .apply_hw(acc, axis=1)  # integer-only hardware form, same result
        .constants()            # dict of the integers the hardware is loaded with
        .lo, .hi, .zp_out, .channels, .per_channel, .scheme

    Classes: ``TorchFbgemmRequant``, ``TorchQnnpackRequant``, ``OnnxRuntimeRequant``,
    ``TfliteRequant``, ``Pow2Requant``, ``Fixed16Requant``; ``tflite_multiplier``.
``ops``
    Golden ops on integer NCHW code arrays (exact int64 accumulation)::

        conv2d_acc(x, w, zp_x=0, zp_w=None, stride=1, padding=0, dilation=1, groups=None)
        conv2d(x, w, requant, zp_x=0, zp_w=None, stride=1, padding=0, dilation=1, groups=None,
               hw=False)
        linear_acc(x, w, zp_x=0, zp_w=None);  linear(x, w, requant, zp_x=0, zp_w=None, hw=False)
        pack_weights(w, zp_w=0, groups=1) -> PackedWeights   # prepare a layer's weights once
        pad2d(x, padding, value)
        max_pool2d(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False,
                   pad_value=None)
        avg_pool2d_torch(x, kernel, zero_point, stride=None, padding=0, ceil_mode=False,
                         count_include_pad=True, divisor_override=None, layout="nhwc",
                         vector_width=16)
        adaptive_avg_pool2d_torch(x, output_size, zero_point, layout="nhwc", vector_width=8)
        avg_pool2d_tflite(x, kernel, stride=None, padding=0, act_min=-128, act_max=127)
        avg_pool2d_onnxruntime(x, kernel, s_x, zp_x, s_y, zp_y, stride=None, padding=0,
                               count_include_pad=False)
        global_avg_pool_onnxruntime(x, s_x, zp_x, s_y, zp_y)
        add_torch(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, relu=False, path="vector", hw=False)
        add_qnnpack(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, relu=False)
        add_onnxruntime(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, hw=False)
        add_tflite(a, s_a, zp_a, b, s_b, zp_b, s_out, zp_out, left_shift=20,
                   single_rounding=False)
        relu(x, zero_point);  relu6_torch(x, scale, zero_point)
        hardtanh_torch(x, scale, zero_point, min_val, max_val)
        leaky_relu_fixed(x, zero_point, mult, shift, rounding="half_up")
        leaky_relu_torch(x, s_in, zp_in, s_out, zp_out, negative_slope, path="vector")
        upsample_nearest(x, factor=2);  concat(xs, axis=1)
        concat_torch(xs, scales, zps, s_out, zp_out, axis=1, path="generic")
        concat_onnxruntime / concat_tflite(xs, scales, zps, s_out, zp_out, axis=1)

    (every function also takes ``qmin``/``qmax`` where the code range matters). ``padding`` is
    an int, ``(ph, pw)`` or ``(top, bottom, left, right)``; ``w`` may be a ``PackedWeights``.
    The ``path``/``layout``/``vector_width`` arguments select which of a framework's kernels
    (vector body or scalar tail, NCHW or channels_last) is reproduced; see each docstring.
``quant``
    ``quantize_torch``, ``quantize_onnxruntime``, ``quantize_tflite`` (x, scale, zero_point,
    dtype), ``quantize_pow2(x, fix_pos, bits=8, rounding="half_up", narrow=False)``,
    ``quantize_fixed(x, n_frac, bits=16, rounding="floor", overflow="saturate")`` and the
    matching ``dequantize_*``; ``qrange(dtype)``; PyTorch's three code-rounding primitives
    ``torch_quantize_vec`` / ``torch_quantize_val`` / ``torch_vec_quantize`` (x, inv, zp, qmin,
    qmax).
``f32int``
    float32 in integers: ``decompose``/``compose``/``to_bits``/``from_bits``, ``from_int``,
    ``add``, ``mul``, ``fma``, ``exact_mul``, ``rne_int``, ``round_sig``; ``np_fma32`` (a
    correctly rounded float32 FMA in numpy).
``rounding``
    ``shift_round(v, s, mode)`` (integers) and ``shift_round_float`` for the modes in
    ``ROUNDING_MODES``; ``FXPMATH_ROUNDING`` maps them to fxpmath names.
``gemmlowp``
    TFLite/gemmlowp primitives: ``quantize_multiplier``, ``srdhm``, ``rounding_divide_by_pot``,
    ``multiply_by_quantized_multiplier[_single_rounding]``, ``requantize``, ``wrap_int32``.
``errors``
    ``NumericsError(ValueError)`` and its subclasses ``ScaleError``, ``ZeroPointError``,
    ``ShiftError``, ``ShapeError``, ``RangeError``; messages name the operation and parameter.

Conventions: codes are integer numpy arrays (returned as int64); activations NCHW; the output
channel of an accumulator is ``axis=1`` (``-1`` for linear); scales are converted to float32 the
way the framework does. docs/numerics.md describes each scheme and its hardware datapath.
"""

from .errors import NumericsError, RangeError, ScaleError, ShapeError, ShiftError, ZeroPointError
from .schemes import SCHEMES, Requant, make_requant

__all__ = [
    "SCHEMES",
    "Requant",
    "make_requant",
    "NumericsError",
    "ScaleError",
    "ZeroPointError",
    "ShiftError",
    "ShapeError",
    "RangeError",
]
