"""Adaptive random sparsification (paper 1, SPEC 2.3): C(x) = x_i e_i with probability |x_i| / ||x||_1.

Biased, B3(d): E||C(x) - x||^2 = ||x||^2 - sum_i |x_i|^3 / ||x||_1 <= (1 - 1/d)||x||^2
(Chebyshev's sum inequality) [D]. Wire: one fp32 value and its index, 32 + ceil(log2 d) bits.
The index is found by inverse-CDF sampling: one uniform draw against the cumulative |x|.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.compress.base import Compressor, Message
from psgd.compress.randomness import uniform
from psgd.compress.registry import register
from psgd.compress.sparse import scatter_sparse
from psgd.compress.topk import index_bits, pack_sparse, validate_sparse


@register
@dataclass(frozen=True)
class AdaptiveRand(Compressor):
    name = "adaptive_rand"
    summary = "one coordinate i with probability |x_i|/||x||_1"
    klass = "B3(d)"
    wire_bits = "32 + IDX"

    def _encode(self, x, generator):
        cdf = torch.cumsum(x.abs().to(torch.float64), 0)
        u = uniform(1, cdf, generator)
        if float(cdf[-1]) == 0:
            idx = torch.zeros(1, dtype=torch.int64, device=x.device)
        else:  # first i with cdf_i > u * total: never a zero coordinate
            idx = torch.searchsorted(cdf, u * cdf[-1], right=True).clamp_(max=x.numel() - 1)
        return (), pack_sparse(x[idx], idx, x.numel())

    def _decode(self, m: Message) -> torch.Tensor:
        return scatter_sparse(m, 1)

    def _validate(self, m: Message) -> None:
        validate_sparse(self.name, m.body, 1, m.d)

    def _bits(self, d):
        return 32 + index_bits(d)

    def delta(self, d):
        return float(d)

    def b1(self, d):
        """<E C(x), x> = E||C(x)||^2 = sum_i |x_i|^3/||x||_1 >= ||x||^2/d (Chebyshev's sum inequality):
        B1(1/d, 1) [D]."""
        return 1 / d, 1.0

    def b2(self, d):
        """B2(1/d, 1) [D], as b1."""
        return self.b1(d)
