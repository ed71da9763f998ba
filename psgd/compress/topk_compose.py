"""Paper 1's new biased compressors: Top-k followed by an unbiased C2 on the kept values, SPEC 2.10.

C(x) = C2(Top_k(x)) / zeta (``scaled=true``, the paper's form) with C2 in U(zeta - 1):
  * ``topk_natural``: C2 = natural compression, zeta = 9/8; B3(9d/(8k)); k(9 + IDX) bits.
  * ``topk_dither``: C2 = natural dithering (p, s) of the k values (paper 1's best operator),
    zeta = 1 + omega_nd(k); B3(zeta d/k); 32 + k(1 + ceil(log2(s+1)) + IDX) bits.
Proof of the class [D]: the error of C2/zeta lives on the support of y = Top_k(x), so
E||C2(y)/zeta - x||^2 = E||C2(y)/zeta - y||^2 + ||x - y||^2 <= ||x||^2 - ||y||^2/zeta
<= (1 - k/(d zeta))||x||^2. Unscaled (``scaled=false``) the same argument gives
B3(d/(k(1 - omega))) when omega < 1.
Each kept coordinate travels as one packed integer: the value's code, then its index.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from psgd.compress.base import Compressor, check_fits, require, require_finite
from psgd.compress.dithering import (
    check_levels,
    natural_dither_omega,
    natural_level_values,
    natural_levels,
    norm_name,
    normalized,
    wire_norm,
)
from psgd.compress.natural import CODE_BITS, natural_code_values, natural_codes
from psgd.compress.randomness import uniform
from psgd.compress.registry import register
from psgd.compress.sparse import Scattered
from psgd.compress.topk import check_ratio_k, index_bits, resolve_k
from psgd.errors import FrameError
from psgd.kernels.sparse import pack, unpack_indices
from psgd.kernels.topk import top_k
from psgd.wire import uint_width


class _TopKThen(Scattered, Compressor):
    """Top-k, then per-value codes of ``code_bits`` bits (+ an optional fp32 prefix)."""

    prefix_bytes = 0

    def __post_init__(self):
        check_ratio_k(self.name, self.ratio, self.k)  # type: ignore[attr-defined]

    def _k(self, d: int) -> int:
        return resolve_k(self.name, d, self.ratio, self.k)  # type: ignore[attr-defined]

    def code_bits(self) -> int:
        raise NotImplementedError

    def omega2(self, k: int) -> float:
        """omega of C2 on k values."""
        raise NotImplementedError

    def _encode_parsed(self, x, generator):
        d = x.numel()
        k = self._k(d)
        idx, v = top_k(x, k)
        prefix, codes = self.value_codes(v, generator)
        joint = pack(codes | (idx << self.code_bits()), self.code_bits() + index_bits(d))
        return (k,), torch.cat([prefix, joint]), (self.values(prefix, codes, x.dtype, k), idx)

    def _parse(self, m):
        (k,) = m.meta
        width = self.code_bits() + index_bits(m.d)
        defer = None if m.deferred is None else functools.partial(require, m.deferred)  # CUDA server: read once a round
        idx, codes = unpack_indices(self.name, m.body[self.prefix_bytes :], k, width, m.d, self.code_bits(), defer)
        values = self.values(m.body[: self.prefix_bytes], codes, m.dtype, k)
        # in the message's dtype: fp16 holds no 2^16, nor a norm above 65504
        require_finite(self.name, values, "value", m.deferred)
        return values, idx

    def values(self, prefix: torch.Tensor, codes: torch.Tensor, dtype: torch.dtype, k: int) -> torch.Tensor:
        """The k decoded values C2(y)/zeta (or C2(y) unscaled) in dtype; FrameError on codes no encoder writes."""
        values = self.code_values(prefix, codes, dtype)
        if self.scaled:  # type: ignore[attr-defined]
            values = values / (1 + self.omega2(k))
        return values.to(dtype)

    def meta_layout(self, d):
        return (self._k(d),)

    def _bits(self, d):
        return 8 * self.prefix_bytes + self._k(d) * (self.code_bits() + index_bits(d))

    def delta(self, d):
        k, w = self._k(d), self.omega2(self._k(d))
        if self.scaled:  # type: ignore[attr-defined]
            return (1 + w) * d / k
        return d / (k * (1 - w)) if w < 1 else None


@register
@dataclass(frozen=True)
class TopKNatural(_TopKThen):
    ratio: float | None = None
    k: int | None = None
    scaled: bool = True

    name = "topk_natural"
    summary = "Top-k, then natural compression of the kept values (x 8/9 when scaled)"
    klass = "B3(9d/(8k)) scaled"
    wire_bits = "k(9 + IDX)"

    def code_bits(self):
        return CODE_BITS

    def omega2(self, k):
        return 1 / 8

    def value_codes(self, v, generator):
        return torch.empty(0, dtype=torch.uint8, device=v.device), natural_codes(v, uniform(v.numel(), v, generator))

    def code_values(self, prefix, codes, dtype):
        return natural_code_values(codes, dtype)  # field 255 (Inf/NaN) is refused by the parse's finite check


@register
@dataclass(frozen=True)
class TopKDither(_TopKThen):
    ratio: float | None = None
    k: int | None = None
    p: float = float("inf")
    s: int = 8
    scaled: bool = True

    name = "topk_dither"
    summary = "Top-k, then natural dithering (p, s) of the kept values (x 1/zeta when scaled)"
    klass = "B3((1 + omega_nd(k)) d/k) scaled"
    wire_bits = "32 + k(1 + ceil(log2(s+1)) + IDX)"
    prefix_bytes = 4

    def __post_init__(self):
        super().__post_init__()
        check_levels(self.name, self.s, self.p)

    def code_bits(self):
        return 1 + uint_width(self.s)

    def omega2(self, k):
        return natural_dither_omega(k, self.s)

    def value_codes(self, v, generator):
        exact, norm = wire_norm(v, self.p, torch.float64)  # k values: float64 costs little
        check_fits(norm_name(self.p), float(exact), v.dtype)
        y = normalized(v, norm)
        levels = natural_levels(y, self.s, uniform(v.numel(), y, generator))
        return norm.reshape(1).view(torch.uint8), (levels << 1) | (v < 0)

    def code_values(self, prefix, codes, dtype):
        norm = prefix.view(torch.float32)
        if not bool(torch.isfinite(norm)) or float(norm) < 0:
            raise FrameError(f"{self.name}: bad norm")
        work = torch.float64 if dtype == torch.float64 else torch.float32
        levels = codes >> 1
        if codes.numel() and int(levels.max()) > self.s:
            raise FrameError(f"{self.name}: level above s = {self.s}")
        v = natural_level_values(levels, self.s, work) * norm.to(work)
        return torch.where((codes & 1).bool(), -v, v)
