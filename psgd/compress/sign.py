"""Unscaled sign (signSGD), SPEC 2.5: C(x) = sign(x), with sign(0) = +1. d bits.

Biased and not contractive without a scale (||sign(x) - x|| is unbounded relative to
||x||): no omega, no delta. Use ``scaled_sign`` or ``block_sign`` for error feedback.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.compress.base import Compressor, Message
from psgd.compress.registry import register
from psgd.wire import unpack_bits
from psgd.wire.bits import pack_nonnegative


@register
@dataclass(frozen=True)
class Sign(Compressor):
    name = "sign"
    summary = "sign(x) in {-1, +1} (0 -> +1): one bit per coordinate"
    klass = "biased, not contractive"
    wire_bits = "d"

    def _encode(self, x, generator):
        return (), pack_nonnegative(x)

    def _decode(self, m: Message) -> torch.Tensor:
        positive = unpack_bits(m.body, m.d)
        one = torch.ones((), dtype=m.dtype, device=m.body.device)
        return torch.where(positive, one, -one)

    def _bits(self, d):
        return d
