"""Half-precision casts: fp16 (IEEE binary16) and bf16 (bfloat16), 16 bits per coordinate.

C(x)_i = round_to_nearest_even(x_i) in the narrow format; decode widens back. Deterministic
and biased. For values in the format's normal range the relative error per coordinate is at
most the unit roundoff u (2^-11 for fp16, 2^-8 for bf16), so ||C(x) - x||^2 <= u^2 ||x||^2:
B3(1/(1 - u^2)) [D]. Values that underflow to subnormals lose that bound (documented, not
refused); a value beyond the format's largest finite value (65504 for fp16) is refused (NonFiniteError),
as it would become Inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from psgd.compress.base import Compressor, Message, magnitude, require_finite_input, require_fits
from psgd.compress.registry import register
from psgd.errors import NonFiniteError
from psgd.kernels.cast import add_widened, add_widened_pair


class _Cast(Compressor):
    target: ClassVar[torch.dtype]
    roundoff: ClassVar[float]
    wire_bits = "16d"

    finite_by_own_pass = True  # the range check's max |x_i| is NaN/Inf iff x holds one

    def _encode(self, x, generator):
        finfo = torch.finfo(self.target)
        top = float(magnitude(x))
        if not math.isfinite(top):
            require_finite_input(x)
        if x.dtype != self.target and top > finfo.max:
            raise NonFiniteError(f"x: |x_i| exceeds the largest finite {self.name} value {finfo.max:g}")
        return (), x.to(self.target).contiguous().view(torch.uint8).reshape(-1)

    def _parse(self, m: Message) -> torch.Tensor:
        """The narrow values (a view of the body), all finite in the message's dtype (bf16 beyond
        fp16's 65504 is not): min and max from one read (a sum in fp16 overflows, and the element
        check writes d booleans); recorded where m defers its checks."""
        values = m.body.view(self.target)
        require_fits(self.name, values, "value", m.dtype, m.deferred)
        return values

    def _decode(self, m: Message) -> torch.Tensor:
        return self.parsed(m).to(m.dtype)

    def _decode_into(self, m: Message, out: torch.Tensor) -> None:
        """out = C(x) by one widening copy."""
        values = self.parsed(m)
        out.copy_(values if out.dtype == m.dtype else values.to(m.dtype))

    def _accumulate(self, m: Message, out: torch.Tensor, weight: float) -> None:
        if out.dtype != m.dtype:  # values are C(x) in the message's dtype first
            out.add_(self._decode(m), alpha=weight)
        else:
            add_widened(self.parsed(m), out, weight)

    def _add_pair(self, a: Message, b: Message, out: torch.Tensor, start: bool) -> None:
        """Both bodies in one pass over an fp32 aggregate on the CPU (add_widened_pair): the parse
        checked every value, nothing is left to the add; else one message after the other."""
        if out.dtype == a.dtype == b.dtype == torch.float32 and out.device.type == "cpu" and out.is_contiguous():
            add_widened_pair(self.parsed(a), self.parsed(b), out, start)
        else:
            super()._add_pair(a, b, out, start)

    def _bits(self, d):
        return 16 * d

    def delta(self, d):
        return 1 / (1 - self.roundoff**2)


@register
@dataclass(frozen=True)
class FP16(_Cast):
    name = "fp16"
    target = torch.float16
    roundoff = 2.0**-11
    summary = "IEEE half precision, round to nearest"
    klass = "B3(1/(1 - 2^-22)) in the normal range"


@register
@dataclass(frozen=True)
class BF16(_Cast):
    name = "bf16"
    target = torch.bfloat16
    roundoff = 2.0**-8
    summary = "bfloat16, round to nearest"
    klass = "B3(1/(1 - 2^-16)) in the normal range"
