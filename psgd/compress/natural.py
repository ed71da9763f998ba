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

from psgd.compress.base import (
    Compressor,
    Message,
    largest,
    narrowest,
    packed_bytes,
    require,
    require_finite_input,
)
from psgd.compress.registry import register
from psgd.errors import NonFiniteError
from psgd.kernels.natural import fields_ref, natural_add_pair, natural_encode, natural_into, values_ref
from psgd.kernels.rng import draw_key

CODE_BITS = 9


def check_range(amax: float, dtype: torch.dtype, stochastic: bool) -> None:
    """Refuse x of max |x_i| = amax that could round to a power of two beyond fp32 or x's dtype
    (2^16 for fp16, 2^128 otherwise): random rounding may go up from any |x_i| > 2^e_max, nearest
    rounding from 1.5 2^e_max."""
    e = math.floor(math.log2(largest(dtype)))
    if amax > 2.0**e if stochastic else amax >= 1.5 * 2.0**e:
        raise NonFiniteError(f"x: max |x_i| = {amax:.4g} could round to 2^{e + 1}, beyond {narrowest(dtype)}")


def natural_codes(x: torch.Tensor, u: torch.Tensor | None) -> torch.Tensor:
    """9-bit codes, exponent field << 1 | sign bit (for packing with other fields), of C_nat(x)
    with uniforms u, or of natural rounding when u is None."""
    check_range(float(torch.linalg.vector_norm(x, ord=math.inf)), x.dtype, u is not None)
    field, negative = fields_ref(x, u)
    return (field << 1) | negative


def natural_code_values(codes: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return values_ref(codes >> 1, (codes & 1).bool(), dtype)


class _Natural(Compressor):
    stochastic: ClassVar[bool]
    wire_bits = "9d"
    finite_by_own_pass = True  # the encoding pass returns max |x_i|: NaN/Inf iff x holds one

    def _encode(self, x, generator, values=None, feedback=False):
        """The body; and C(x) into ``values`` (x's dtype) where given, and with ``feedback`` x <- x - C(x),
        from the same pass."""
        d = x.numel()
        body = torch.empty(d + packed_bytes(d), dtype=torch.uint8, device=x.device)
        amax = natural_encode(x, draw_key(generator) if self.stochastic else None, body, values, feedback)
        if not math.isfinite(amax):  # max |x_i| of the encoding pass is NaN/Inf iff x holds one
            require_finite_input(x)
        check_range(amax, x.dtype, self.stochastic)
        return (), body

    def encode_reconstruct(self, x, generator=None, out=None):
        """(encode(x), C(x)), C(x) written into ``out`` by the encoding pass itself (no second read
        of the body): the field as the exponent and x's sign bit, the bits decode gives."""
        if out is None or out.dtype != x.dtype or out.numel() != x.numel():
            return super().encode_reconstruct(x, generator, out)
        return self._message(x, generator, out), out

    def encode_feedback(self, x, generator=None, out=None):
        """encode(x) and x <- x - C(x) by the encoding pass itself (C(x) into out by it too, where given):
        the floats of the default, no second pass over x. Where the pass refuses x (NaN/Inf, or a value
        that rounds beyond range: NonFiniteError, the run diverged) x is left partly updated."""
        if out is not None and (out.dtype != x.dtype or out.numel() != x.numel()):
            return super().encode_feedback(x, generator, out)
        return self._message(x, generator, out, True), out

    def _parse(self, m: Message) -> torch.Tensor:
        """The body (exponent fields, then sign bits), once no field stands for a power of two
        beyond m's dtype (255, Inf/NaN in fp32; above 2^15 for fp16): one max, read now or recorded."""
        top = 127 + math.floor(math.log2(largest(m.dtype)))  # binary32 bias + the largest exponent
        field = m.body[: m.d].max()
        beyond = narrowest(m.dtype)
        require(m.deferred, field > top, lambda: f"{self.name}: exponent field {int(field)} beyond {beyond}")
        return m.body

    def _decode(self, m: Message) -> torch.Tensor:
        out = torch.empty(m.d, dtype=m.dtype, device=m.body.device)
        natural_into(self.parsed(m), out, 1.0, add=False)
        return out

    def _decode_into(self, m: Message, out: torch.Tensor) -> None:
        if out.dtype != m.dtype:
            super()._decode_into(m, out)
        else:
            natural_into(self.parsed(m), out, 1.0, add=False)

    def _accumulate(self, m: Message, out: torch.Tensor, weight: float) -> None:
        if out.dtype != m.dtype:
            super()._accumulate(m, out, weight)
        else:
            natural_into(self.parsed(m), out, weight, add=True)

    def _add_pair(self, a: Message, b: Message, out: torch.Tensor, start: bool) -> None:
        """Both bodies in one pass over an fp32 aggregate on the CPU (natural_add_pair): the parse
        checked every field, nothing is left to the add; else one message after the other."""
        if out.dtype == a.dtype == b.dtype == torch.float32 and out.device.type == "cpu":
            natural_add_pair(self.parsed(a), self.parsed(b), out, start)
        else:
            super()._add_pair(a, b, out, start)

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
