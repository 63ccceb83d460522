"""IEEE binary32 arithmetic computed with integers only (the hardware form of the float schemes).

A float is carried as a pair of int64 numpy arrays ``(m, e)`` with value ``m * 2**e``. Results of
the operations below are *normalized*: ``m == 0`` (then ``e == ZERO_EXP``) or
``2**23 <= |m| < 2**24``, i.e. ``m`` is the signed 24-bit significand of the float32. Inputs may
be wider (up to 48 bits, e.g. the exact product of two significands), which is how a fused
multiply-add or an exact 48-bit constant enters an addition.

Operations (all vectorized, no Python loop over elements):

* :func:`from_int`: int32 -> float32, exact below 2**24, else 24 significant bits, ties to even
  (``cvtdq2ps``);
* :func:`add`: aligned exact sum, one rounding to 24 bits, ties to even (``addps``);
* :func:`mul`: exact 24x24 -> 48-bit product, one rounding (``mulps``);
* :func:`fma`: exact ``a*b + c``, one rounding (``vfmadd``);
* :func:`rne_int`: round to an integer, ties to even (``cvtps2dq`` / ``lrintf`` / ``nearbyint``).

The rounding step is what the RTL implements: keep the top 24 bits, look at the next bit (round)
and at the OR of all lower bits (sticky), increment when ``round and (sticky or lsb)``, renormalize
on carry. Addition aligns the smaller operand with 14 guard bits and folds everything below them
into a sticky bit (rounding to odd), which gives the same result as the exact sum.

Overflow, underflow, subnormals, NaN and infinity are out of scope: the host rejects them when it
builds constants, and the values of quantized inference stay far from the float32 limits.

The module also holds :func:`np_fma32`, a correctly rounded float32 FMA in plain numpy floating
point (float64 with round-to-odd), used by the numpy forms of the schemes.
"""

from __future__ import annotations

import numpy as np

from .errors import RangeError

__all__ = [
    "ZERO_EXP",
    "SIG_BITS",
    "decompose",
    "compose",
    "to_bits",
    "from_bits",
    "round_sig",
    "from_int",
    "add",
    "mul",
    "fma",
    "exact_mul",
    "rne_int",
    "bit_length",
    "np_fma32",
]

#: Exponent given to zero so that it always aligns below any other operand.
ZERO_EXP = -(1 << 40)
#: Significand width of binary32 (with the hidden bit).
SIG_BITS = 24
_GUARD = 14  # guard bits of the aligned addition (48-bit operands -> 62-bit aligned sum)
_I64 = np.int64


def _i64(x):
    return np.asarray(x, dtype=_I64)


def bit_length(a):
    """Bit length of non-negative int64 values (``0`` for ``0``), exact up to 2**63 - 1."""
    a = _i64(a)
    # float64 conversion may round up to the next power of two; correct by one in that case.
    _, e = np.frexp(a.astype(np.float64))
    e = e.astype(_I64)
    sh = np.clip(e - 1, 0, 63)
    too_big = (a > 0) & ((a >> sh) == 0)
    return np.where(a == 0, 0, e - too_big)


def decompose(x):
    """Split float32 values into normalized ``(m, e)`` (host side: constants, test inputs).

    Raises :class:`RangeError` for NaN, infinity and subnormals.
    """
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32).astype(_I64)
    sign = np.where(bits >> 31, -1, 1)
    expf = (bits >> 23) & 0xFF
    frac = bits & 0x7FFFFF
    if np.any(expf == 0xFF):
        raise RangeError("f32int.decompose: NaN or infinity has no hardware form")
    if np.any((expf == 0) & (frac != 0)):
        raise RangeError("f32int.decompose: subnormal float32 values are not supported")
    zero = expf == 0
    m = np.where(zero, 0, sign * (frac | (1 << 23)))
    e = np.where(zero, ZERO_EXP, expf - 150)
    return m.astype(_I64), e.astype(_I64)


def compose(m, e):
    """Inverse of :func:`decompose` for normalized pairs: the float32 values (for tests)."""
    m = _i64(m)
    e = _i64(e)
    e = np.where(m == 0, 0, e)
    return np.ldexp(m.astype(np.float64), e.astype(np.int32)).astype(np.float32)


def to_bits(m, e):
    """IEEE binary32 bit patterns (uint32) of normalized pairs: what a register is loaded with."""
    m = _i64(m)
    e = _i64(e)
    a = np.abs(m)
    sign = (m < 0).astype(_I64) << 31
    expf = np.where(m == 0, 0, e + 150)
    if np.any((m != 0) & ((expf < 1) | (expf > 254))):
        raise RangeError("f32int.to_bits: exponent outside the normal binary32 range")
    bits = np.where(m == 0, sign, sign | (expf << 23) | (a & 0x7FFFFF))
    return bits.astype(np.uint32)


def from_bits(bits):
    """``(m, e)`` of IEEE binary32 bit patterns."""
    return decompose(np.asarray(bits, dtype=np.uint32).view(np.float32))


def round_sig(m, e, bits: int = SIG_BITS):
    """Round ``m * 2**e`` (``|m| < 2**63``) to ``bits`` significant bits, ties to even.

    Returns a normalized pair (``2**(bits-1) <= |m| < 2**bits`` or zero).
    """
    m = _i64(m)
    e = _i64(e)
    a = np.abs(m)
    bl = bit_length(a)
    sh = bl - bits
    right = np.clip(sh, 0, 62)
    q = a >> right
    r = a - (q << right)
    half = np.where(right > 0, _I64(1) << np.maximum(right - 1, 0), 0)
    up = (right > 0) & ((r > half) | ((r == half) & ((q & 1) == 1)))
    q = q + up
    carry = q == (_I64(1) << bits)
    q = np.where(carry, q >> 1, q)
    right = right + carry
    left = np.clip(-sh, 0, 62)
    q = q << left
    e_out = e + right - left
    zero = a == 0
    m_out = np.where(m < 0, -q, q)
    return np.where(zero, 0, m_out), np.where(zero, ZERO_EXP, e_out)


def from_int(i):
    """int32 -> float32 (``cvtdq2ps``): exact when ``|i| < 2**24``, else ties to even."""
    i = _i64(i)
    return round_sig(i, np.zeros_like(i))


def _normalize_wide(m, e, width):
    """Shift ``m`` left so that its top bit is bit ``width - 1`` (exact); zero keeps ZERO_EXP."""
    a = np.abs(m)
    bl = bit_length(a)
    if np.any(bl > width):
        raise RangeError(f"f32int: operand wider than {width} bits")
    sh = np.where(a == 0, 0, width - bl)
    return m << sh, np.where(a == 0, ZERO_EXP, e - sh)


def add(a, b):
    """Float addition of two pairs, one rounding to 24 bits (ties to even).

    Operands may carry up to 48-bit significands (exact products); the result is what a single
    float32 rounding of the exact sum gives.
    """
    ma, ea = (_i64(v) for v in a)
    mb, eb = (_i64(v) for v in b)
    ma, ea = _normalize_wide(ma, ea, 48)
    mb, eb = _normalize_wide(mb, eb, 48)
    a_big = ea >= eb
    m_big = np.where(a_big, ma, mb)
    e_big = np.where(a_big, ea, eb)
    m_small = np.where(a_big, mb, ma)
    e_small = np.where(a_big, eb, ea)
    d = e_big - e_small  # >= 0; huge when the small operand is zero
    mag = np.abs(m_small)
    # Exact alignment while d <= GUARD; beyond that, shift right folding the lost bits into a
    # sticky LSB (round to odd), which every later rounding at >= 2 bits above sees correctly.
    lshift = np.clip(_GUARD - d, 0, _GUARD)
    rshift = np.clip(d - _GUARD, 0, 50)
    kept = mag >> rshift
    lost = mag & ((_I64(1) << rshift) - 1)
    aligned = np.where(d <= _GUARD, mag << lshift, kept | (lost != 0))
    aligned = np.where(m_small < 0, -aligned, aligned)
    total = (m_big << _GUARD) + aligned
    e_total = np.where(m_big == 0, 0, e_big - _GUARD)
    return round_sig(total, e_total)


def exact_mul(a, b):
    """Exact product of two pairs (up to 24-bit significands): a 48-bit pair, no rounding."""
    ma, ea = (_i64(v) for v in a)
    mb, eb = (_i64(v) for v in b)
    zero = (ma == 0) | (mb == 0)
    return np.where(zero, 0, ma * mb), np.where(zero, ZERO_EXP, ea + eb)


def mul(a, b):
    """Float multiplication: exact 24x24 -> 48-bit product, one rounding to 24 bits."""
    return round_sig(*exact_mul(a, b))


def fma(a, b, c):
    """Fused multiply-add ``a*b + c`` with a single rounding."""
    return add(exact_mul(a, b), c)


def rne_int(pair):
    """Round a pair to the nearest integer, ties to even (``cvtps2dq`` in the default mode).

    Values are assumed to fit in int64 (the callers clamp or map the int32 overflow case).
    """
    m, e = (_i64(v) for v in pair)
    a = np.abs(m)
    k = np.clip(-e, 0, 62)  # right shift
    left = np.clip(e, 0, 38)
    q = a >> k
    r = a - (q << k)
    half = np.where(k > 0, _I64(1) << np.maximum(k - 1, 0), 0)
    up = (k > 0) & ((r > half) | ((r == half) & ((q & 1) == 1)))
    q = (q + up) << left
    return np.where(m < 0, -q, q)


def np_fma32(a, b, c):
    """Correctly rounded float32 ``a*b + c`` using numpy floating point only.

    The product of two float32 values is exact in float64; the float64 sum is corrected to
    round-to-odd with its exact error (TwoSum), and 53 >= 24 + 2 bits make the final rounding to
    float32 equal to a single rounding of the exact result.
    """
    a = np.asarray(a, dtype=np.float32).astype(np.float64)
    b = np.asarray(b, dtype=np.float32).astype(np.float64)
    c = np.asarray(c, dtype=np.float32).astype(np.float64)
    p = a * b
    s = p + c
    bv = s - p
    err = (p - (s - bv)) + (c - bv)
    inexact = err != 0
    if not inexact.any():  # the float64 sum is exact: one rounding to float32 is the FMA
        return s.astype(np.float32)
    even = (s.view(_I64) & 1) == 0
    fix = inexact & even
    s = np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)
    return s.astype(np.float32)
