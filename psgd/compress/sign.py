"""Unscaled sign (signSGD), SPEC 2.5: C(x) = sign(x), with sign(0) = +1. d bits.

Biased and not contractive without a scale (||sign(x) - x|| is unbounded relative to
||x||): no omega, no delta. Use ``scaled_sign`` or ``block_sign`` for error feedback.

``SignBits`` is the family's shared codec: the body is one fp32 scale s_b per block (none
here, where s = 1), then d sign bits (1 = x_i >= 0), and C(x)_i = +-s_b for i in block b.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from psgd.compress.base import Compressor, Message, check_fits, head_floats, packed_bytes, require_finite
from psgd.compress.registry import register
from psgd.kernels.signs import pack_signs, sign_pair, sign_values


class SignBits(Compressor):
    """Sign bits with per-block l1 scales s_b = ||x_b||_1 / d_b (or s = 1 when not ``scaled``)."""

    scaled: ClassVar[bool] = True
    scale_name: ClassVar[str] = "||x_b||_1/d_b"

    def sizes(self, d: int) -> list[int]:
        """The block sizes (summing to d)."""
        return [d]

    def _scale_count(self, d: int) -> int:
        return len(self.sizes(d)) if self.scaled else 0

    def _encode(self, x, generator):
        d = x.numel()
        sizes, nb = self.sizes(d), self._scale_count(d)
        body = torch.empty(4 * nb + packed_bytes(d), dtype=torch.uint8, device=x.device)
        l1 = pack_signs(x, sizes, body[4 * nb :], self.scaled)
        if nb:
            means = l1 / torch.tensor(sizes, dtype=torch.float64, device=l1.device)
            if x.dtype == torch.float64:  # else ||x_b||_1/d_b <= max |x_i| fits
                check_fits(self.scale_name, float(means.max()), x.dtype)
            body[: 4 * nb].view(torch.float32).copy_(means)
        return (), body

    def _parse(self, m: Message) -> tuple[torch.Tensor, torch.Tensor]:
        """(one scale per block in the message's dtype, finite there: checked on the host, from the
        bytes as received; the sign bits)."""
        nb = self._scale_count(m.d)
        if not nb:
            return torch.ones(1, dtype=m.dtype, device=m.body.device), m.body
        require_finite(self.name, torch.from_numpy(head_floats(m, nb)).to(m.dtype), "scale")
        return m.body[: 4 * nb].view(torch.float32).to(m.dtype), m.body[4 * nb :]

    def _decode(self, m: Message) -> torch.Tensor:
        scales, bits = self.parsed(m)
        out = torch.empty(m.d, dtype=m.dtype, device=bits.device)
        sign_values(bits, self.sizes(m.d), scales, out, add=False)
        return out

    def _decode_into(self, m: Message, out: torch.Tensor) -> None:
        """out = C(x) in one pass over out."""
        scales, bits = self.parsed(m)
        sign_values(bits, self.sizes(m.d), scales, out, add=False)

    def _accumulate(self, m: Message, out: torch.Tensor, weight: float) -> None:
        scales, bits = self.parsed(m)
        sign_values(bits, self.sizes(m.d), scales * weight, out, add=True)

    def _add_pair(self, a: Message, b: Message, out: torch.Tensor, start: bool) -> None:
        """Both messages' values in one pass over out (fp32 on the CPU: the pair kernel), each with its
        own scales; else one after the other. The parse checked the scales: nothing is left unchecked."""
        if not (out.dtype == a.dtype == b.dtype == torch.float32 and out.device.type == "cpu"):
            super()._add_pair(a, b, out, start)
            return
        (scales_a, bits_a), (scales_b, bits_b) = self.parsed(a), self.parsed(b)
        sign_pair(bits_a, scales_a, bits_b, scales_b, self.sizes(a.d), out, add=not start)

    def _bits(self, d):
        return d + 32 * self._scale_count(d)

    def min_bits(self, d):
        return d  # the sign bits: checked before the blocks are listed


@register
@dataclass(frozen=True)
class Sign(SignBits):
    name = "sign"
    summary = "sign(x) in {-1, +1} (0 -> +1): one bit per coordinate"
    klass = "biased, not contractive"
    wire_bits = "d"
    scaled = False
