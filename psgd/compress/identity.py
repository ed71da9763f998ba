"""Identity: the uncompressed baseline, 32 bits per coordinate (fp32 on the wire)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.compress.base import Compressor, Message, check_fits, require_finite
from psgd.compress.registry import register


@register
@dataclass(frozen=True)
class Identity(Compressor):
    name = "identity"
    unbiased = True
    summary = "fp32 values, no compression"
    klass = "U(0)"
    wire_bits = "32d"

    def _encode(self, x, generator):
        if x.dtype == torch.float64:
            check_fits("max |x_i|", float(x.abs().max()), x.dtype)
        return (), x.to(torch.float32, copy=True).view(torch.uint8).reshape(-1)

    def _validate(self, m: Message) -> None:
        require_finite(self.name, m.body.view(torch.float32), "value")

    def _decode(self, m: Message) -> torch.Tensor:
        return m.body.view(torch.float32).to(m.dtype)

    def _bits(self, d):
        return 32 * d

    def omega(self, d):
        return 0.0

    def delta(self, d):
        return 1.0
