"""Scaled sign (EF-SignSGD, Karimireddy et al. 2019; LIEC Def. 4), SPEC 2.5.

C(x) = (||x||_1 / d) sign(x). Body: one fp32 scale, then d sign bits: d + 32 bits.
Zero maps to +: the packed bit is 1 for x_i >= 0, so C(0-entries) = +scale.
Biased; ||C(x) - x||^2 = (1 - phi(x))||x||^2 with phi = ||x||_1^2 / (d ||x||^2) >= 1/d.
"""

from __future__ import annotations

from dataclasses import dataclass

from psgd.compress.registry import register
from psgd.compress.sign import SignBits


@register
@dataclass(frozen=True)
class ScaledSign(SignBits):
    name = "scaled_sign"
    summary = "(||x||_1/d) sign(x): d sign bits + one fp32 scale"
    klass = "B3(1/phi(x)) <= B3(d)"
    wire_bits = "d + 32"
    scale_name = "||x||_1/d"

    def delta(self, d):
        return float(d)
