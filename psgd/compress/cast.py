"""Half-precision casts: fp16 (IEEE binary16) and bf16 (bfloat16), 16 bits per coordinate.

C(x)_i = round_to_nearest_even(x_i) in the narrow format; decode widens back. Deterministic
and biased. For values in the format's normal range the relative error per coordinate is at
most the unit roundoff u (2^-11 for fp16, 2^-8 for bf16), so ||C(x) - x||^2 <= u^2 ||x||^2:
B3(1/(1 - u^2)) [D]. Values that underflow to subnormals lose that bound (documented, not
refused); a value beyond the format's largest finite value (65504 for fp16) is refused (NonFiniteError),
as it would become Inf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from psgd.compress.base import Compressor, Message, require_finite
from psgd.compress.registry import register
from psgd.errors import NonFiniteError


class _Cast(Compressor):
    target: ClassVar[torch.dtype]
    roundoff: ClassVar[float]
    wire_bits = "16d"

    def _encode(self, x, generator):
        finfo = torch.finfo(self.target)
        if x.dtype != self.target and float(x.abs().max()) > finfo.max:
            raise NonFiniteError(f"x: |x_i| exceeds the largest finite {self.name} value {finfo.max:g}")
        return (), x.to(self.target).contiguous().view(torch.uint8).reshape(-1)

    def _decode(self, m: Message) -> torch.Tensor:
        return m.body.view(self.target).to(m.dtype)

    def _validate(self, m: Message) -> None:
        require_finite(self.name, m.body.view(self.target), "value")

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
