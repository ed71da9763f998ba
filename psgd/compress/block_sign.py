"""Blockwise scaled sign (Zheng, Huang, Kwok 2019; LIEC "Blockwise-SignSGD", Def. 5), SPEC 2.5.

For blocks G_b of size d_b: C(x)_{G_b} = (||x_{G_b}||_1 / d_b) sign(x_{G_b}), sign(0) = +1.
Blocks are byte buckets (default 5 MiB of fp32, the LIEC setting) or the model's layers
grouped into buckets (``layers=``; ``bucket=0`` gives one block per layer); see layout.py.
Biased; per block ||C - x||^2 = (1 - phi_b)||x_b||^2 with phi_b >= 1/d_b, so B3(max_b d_b) [D].
Wire: B fp32 scales, then d sign bits: d + 32B bits.
"""

from __future__ import annotations

from dataclasses import dataclass

from psgd.compress.layout import FIVE_MIB, blocks, check_bucket
from psgd.compress.registry import register
from psgd.compress.sign import SignBits


@register
@dataclass(frozen=True)
class BlockSign(SignBits):
    bucket: int = FIVE_MIB
    layers: str | None = None

    name = "block_sign"
    summary = "scaled sign per block (byte bucket or layer): d sign bits + one fp32 scale per block"
    klass = "B3(max_b d_b)"
    wire_bits = "d + 32B"

    def __post_init__(self):
        check_bucket(self.name, self.bucket)

    def sizes(self, d):
        return blocks(self.name, d, self.bucket, self.layers)

    def delta(self, d):
        return float(max(self.sizes(d)))
