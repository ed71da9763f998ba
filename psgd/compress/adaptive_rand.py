"""Adaptive random sparsification (paper 1, SPEC 2.3): C(x) = x_i e_i with probability |x_i| / ||x||_1.

Biased, B3(d): E||C(x) - x||^2 = ||x||^2 - sum_i |x_i|^3 / ||x||_1 <= (1 - 1/d)||x||^2
(Chebyshev's sum inequality) [D]. Wire: one fp32 value and its index, 32 + ceil(log2 d) bits.
The index is found by inverse-CDF sampling: one uniform draw against the cumulative |x| (float64).
"""

from __future__ import annotations

from dataclasses import dataclass

from psgd.compress.base import Compressor
from psgd.compress.registry import register
from psgd.compress.sparse import Scattered, sent_values
from psgd.compress.topk import index_bits, pack_sparse, validate_sparse
from psgd.kernels.rng import draw_key, uniform64_ref
from psgd.kernels.topk import inverse_cdf


@register
@dataclass(frozen=True)
class AdaptiveRand(Scattered, Compressor):
    name = "adaptive_rand"
    summary = "one coordinate i with probability |x_i|/||x||_1"
    klass = "B3(d)"
    wire_bits = "32 + IDX"

    def _encode_parsed(self, x, generator):
        # the first i with cdf_i > u ||x||_1 (never a zero coordinate), u with 53 random bits
        idx = inverse_cdf(x, uniform64_ref(draw_key(generator), 1, x.device))
        values = x[idx]
        return (), pack_sparse(values, idx, x.numel()), (sent_values(values, x.dtype), idx)

    def _parse(self, m):
        return validate_sparse(self.name, m.body, 1, m.d, m.dtype)

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
