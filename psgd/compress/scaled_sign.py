"""Scaled sign (EF-SignSGD, Karimireddy et al. 2019; LIEC Def. 4), SPEC 2.5.

C(x) = (||x||_1 / d) sign(x). Body: one fp32 scale, then d sign bits: d + 32 bits.
Zero maps to +: the packed bit is 1 for x_i >= 0, so C(0-entries) = +scale.
Biased; ||C(x) - x||^2 = (1 - phi(x))||x||^2 with phi = ||x||_1^2 / (d ||x||^2) >= 1/d.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from psgd.compress.base import Compressor, Message, check_fits, require_finite
from psgd.compress.registry import register
from psgd.wire import unpack_bits
from psgd.wire.bits import pack_nonnegative_l1


def pack_signs(x: torch.Tensor) -> torch.Tensor:
    """Body of a scaled-sign message: the fp32 scale ||x||_1/d, then one bit per coordinate (1 = non-negative)."""
    with np.errstate(over="ignore"):  # an overflow is caught below
        bits, l1 = pack_nonnegative_l1(x)
    if l1.device.type == "cpu" and not math.isfinite(float(l1)):  # the CPU pass sums chunks in x's dtype
        l1 = torch.linalg.vector_norm(x, 1, dtype=torch.float64)
    if x.dtype == torch.float64:  # else ||x||_1/d <= max |x_i| fits
        check_fits("||x||_1/d", float(l1) / x.numel(), x.dtype)
    scale = (l1 / x.numel()).to(torch.float32).reshape(1).to(bits.device)
    return torch.cat([scale.view(torch.uint8), bits])


def unpack_signs(body: torch.Tensor, d: int, dtype: torch.dtype) -> torch.Tensor:
    """Dense reconstruction: +-scale per coordinate."""
    scale = body[:4].view(torch.float32).to(dtype)
    positive = unpack_bits(body[4:], d)
    return torch.where(positive, scale, -scale)


@register
@dataclass(frozen=True)
class ScaledSign(Compressor):
    name = "scaled_sign"
    summary = "(||x||_1/d) sign(x): d sign bits + one fp32 scale"
    klass = "B3(1/phi(x)) <= B3(d)"
    wire_bits = "d + 32"

    def _encode(self, x, generator):
        return (), pack_signs(x)

    def _decode(self, m: Message) -> torch.Tensor:
        return unpack_signs(m.body, m.d, m.dtype)

    def _validate(self, m: Message) -> None:
        require_finite(self.name, m.body[:4].view(torch.float32), "scale")

    def _bits(self, d):
        return d + 32

    def delta(self, d):
        return float(d)
