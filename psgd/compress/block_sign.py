"""Blockwise scaled sign (Zheng, Huang, Kwok 2019; LIEC "Blockwise-SignSGD", Def. 5), SPEC 2.5.

For blocks G_b of size d_b: C(x)_{G_b} = (||x_{G_b}||_1 / d_b) sign(x_{G_b}), sign(0) = +1.
Blocks are byte buckets (default 5 MiB of fp32, the LIEC setting) or the model's layers
grouped into buckets (``layers=``; ``bucket=0`` gives one block per layer); see layout.py.
Biased; per block ||C - x||^2 = (1 - phi_b)||x_b||^2 with phi_b >= 1/d_b, so B3(max_b d_b) [D].
Wire: B fp32 scales, then d sign bits: d + 32B bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.compress.base import Compressor, Message, check_fits, require_finite
from psgd.compress.layout import FIVE_MIB, blocks, check_bucket
from psgd.compress.registry import register
from psgd.wire import unpack_bits
from psgd.wire.bits import pack_nonnegative


@register
@dataclass(frozen=True)
class BlockSign(Compressor):
    bucket: int = FIVE_MIB
    layers: str | None = None

    name = "block_sign"
    summary = "scaled sign per block (byte bucket or layer): d sign bits + one fp32 scale per block"
    klass = "B3(max_b d_b)"
    wire_bits = "d + 32B"

    def __post_init__(self):
        check_bucket(self.name, self.bucket)

    def _encode(self, x, generator):
        sizes = blocks(self.name, x.numel(), self.bucket, self.layers)
        scales = self._scales(x, sizes, torch.float64 if x.dtype == torch.float64 else torch.float32)
        if not bool(torch.isfinite(scales).all()):  # an fp32 sum overflowed: ||x_b||_1/d_b <= max |x_i| fits
            scales = self._scales(x, sizes, torch.float64)
        if x.dtype == torch.float64:
            check_fits("||x_b||_1/d_b", float(scales.max()), x.dtype)
        return (), torch.cat([scales.to(torch.float32).view(torch.uint8), pack_nonnegative(x)])

    @staticmethod
    def _scales(x: torch.Tensor, sizes: list[int], work: torch.dtype) -> torch.Tensor:
        l1 = torch.stack([torch.linalg.vector_norm(b, 1, dtype=work) for b in x.split(sizes)])  # a loop over blocks
        return l1 / torch.tensor(sizes, dtype=work, device=x.device)

    def _validate(self, m: Message) -> None:
        nb = len(blocks(self.name, m.d, self.bucket, self.layers))
        require_finite(self.name, m.body[: 4 * nb].view(torch.float32), "scale")

    def _decode(self, m: Message) -> torch.Tensor:
        sizes = blocks(self.name, m.d, self.bucket, self.layers)
        nb = len(sizes)
        scales = m.body[: 4 * nb].view(torch.float32).to(m.dtype)
        scale = torch.cat([s.expand(n) for s, n in zip(scales, sizes, strict=True)])
        return torch.where(unpack_bits(m.body[4 * nb :], m.d), scale, -scale)

    def _bits(self, d):
        return d + 32 * len(blocks(self.name, d, self.bucket, self.layers))

    def delta(self, d):
        return float(max(blocks(self.name, d, self.bucket, self.layers)))
