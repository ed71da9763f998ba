"""Natural compression C_nat (Horvath et al.) and deterministic natural rounding (paper 1), SPEC 2.7.

For 2^a <= |x_i| < 2^(a+1): C_nat(x)_i = sign(x_i) 2^a with probability (2^(a+1) - |x_i|)/2^a,
else sign(x_i) 2^(a+1); C(0) = 0. Unbiased, U(1/8) (worst at |x_i| = (4/3) 2^a); the exact
per-coordinate variance is (2^(a+1) - |x_i|)(|x_i| - 2^a) [D].
Natural rounding rounds |x_i| to the nearest power of two (up iff |x_i| >= 1.5 2^a):
biased, B3(9/8) (P1's biased rounding with levels 2^k, delta = (b+1)^2/(4b) at b = 2), B1(4/9, 4/3), B2(2/3, 4/3).

Wire: 9 bits per coordinate, the 8-bit binary32 exponent field (0 = zero) and a sign bit,
the mantissa dropped [EF21 code "9/32 d"]: d exponent bytes then d packed sign bits,
d + ceil(d/8) = ceil(9d/8) bytes. Values below 2^-126 (fp32 subnormals)
round between 0 and 2^-126 the same way, so the omega = 1/8 bound holds from 2^-126 up;
an |x_i| that could round to 2^128 (2^16 for fp16 input), beyond binary32 or the decoded dtype,
is refused (NonFiniteError).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from psgd.compress.base import Compressor, Message, largest, narrowest
from psgd.compress.randomness import uniform
from psgd.compress.registry import register
from psgd.errors import FrameError, NonFiniteError
from psgd.wire import pack_bits, unpack_bits

CODE_BITS = 9
_MIN_EXP = -126  # the smallest binary32 normal exponent
_BIAS = 127


def check_range(x: torch.Tensor, stochastic: bool) -> None:
    """Refuse x that could round to a power of two beyond fp32 or x's dtype (2^16 for fp16, 2^128
    otherwise): random rounding may go up from any |x_i| > 2^e_max, nearest rounding from 1.5 2^e_max."""
    e = math.floor(math.log2(largest(x.dtype)))
    amax = float(torch.linalg.vector_norm(x, ord=math.inf))
    if amax > 2.0**e if stochastic else amax >= 1.5 * 2.0**e:
        raise NonFiniteError(f"x: max |x_i| = {amax:.4g} could round to 2^{e + 1}, beyond {narrowest(x.dtype)}")


def natural_fields(x: torch.Tensor, u: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(binary32 exponent field of C_nat(x) as int32, sign bit) with uniforms u, or of natural
    rounding when u is None; field 0 stands for zero."""
    check_range(x, u is not None)
    if x.dtype == torch.float64:
        field = _fields_float64(x, u)
    else:
        # binary32 bit trick: |x| = 2^(e-127)(1 + m/2^23), so round up with probability m/2^23;
        # subnormals (e = 0, |x| = 2^-126 m/2^23) round between 0 and 2^-126 by the same rule
        bits = x.float().view(torch.int32)
        mantissa = bits & 0x7FFFFF
        up = mantissa >= 2**22 if u is None else u.float() * 2.0**23 < mantissa
        field = (bits >> 23).bitwise_and_(0xFF).add_(up)
    return field, torch.signbit(x)


def _fields_float64(x: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    ax = x.abs()
    mant, e = torch.frexp(ax)  # ax = mant 2^e, mant in [0.5, 1)
    tiny = ax < 2.0**_MIN_EXP  # zero and subnormals: the two levels are 0 (field 0) and 2^-126 (field 1)
    lower = torch.where(tiny, -_BIAS, e - 1)
    frac = torch.where(tiny, ax * 2.0**-_MIN_EXP, 2 * mant - 1)
    up = frac >= 0.5 if u is None else u < frac
    return lower + up + _BIAS


def natural_codes(x: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """9-bit codes, exponent field << 1 | sign bit (for packing with other fields)."""
    field, negative = natural_fields(x, u)
    return (field << 1) | negative


def natural_values(field: torch.Tensor, negative: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """+-2^(field - 127) (0 for field 0), built from the binary32 bits."""
    magnitude = (field.to(torch.int32) << 23).view(torch.float32)
    return torch.where(negative, -magnitude, magnitude).to(dtype)


def natural_code_values(codes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return natural_values(codes >> 1, (codes & 1).bool(), dtype)


class _Natural(Compressor):
    stochastic: ClassVar[bool]
    wire_bits = "9d"

    def _encode(self, x, generator):
        u = uniform(x.numel(), x, generator) if self.stochastic else None
        field, negative = natural_fields(x, u)
        return (), torch.cat([field.to(torch.uint8), pack_bits(negative)])

    def _decode(self, m: Message) -> torch.Tensor:
        return natural_values(m.body[: m.d], unpack_bits(m.body[m.d :], m.d), m.dtype)

    def _validate(self, m: Message) -> None:
        if int(m.body[: m.d].max()) == 255:
            raise FrameError(f"{self.name}: exponent field 255 (Inf/NaN)")

    def _bits(self, d):
        return CODE_BITS * d


@register
@dataclass(frozen=True)
class Natural(_Natural):
    name = "natural"
    unbiased = True
    stochastic = True
    summary = "C_nat: random rounding to a power of two, sign + 8-bit exponent"
    klass = "U(1/8)"

    def omega(self, d):
        return 1 / 8


@register
@dataclass(frozen=True)
class NaturalRound(_Natural):
    name = "natural_round"
    stochastic = False
    summary = "deterministic rounding to the nearest power of two, sign + 8-bit exponent"
    klass = "B1(4/9, 4/3), B2(2/3, 4/3), B3(9/8)"

    def delta(self, d):
        return 9 / 8

    def b1(self, d):
        """B1(4/9, 4/3) [D, SPEC 2.7/2.9]: per coordinate ||C||^2/<C, x> <= 2^(a+1)/(1.5 2^a) = 4/3 and
        |C|/|x| >= 1/1.5 = 2/3, so ||C||^2 >= (4/9)||x||^2 (in the normal range, as delta)."""
        return 4 / 9, 4 / 3

    def b2(self, d):
        """B2(2/3, 4/3) [D]: <C(x), x> >= (2/3)||x||^2 and ||C(x)||^2 <= (4/3)<C(x), x>."""
        return 2 / 3, 4 / 3
