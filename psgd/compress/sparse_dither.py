"""Sparse Dithering (paper 2, SPEC 2.11): deterministic (worst case) and randomised (unbiased).

u = x/||x||, h = sqrt(nu/d), levels {0, 2h, 4h, ...}; C(x) = gamma s o k with gamma = 2h||x||,
k_i in N and s_i = sign(u_i k_i) in {-1, 0, 1}.
  * deterministic (``random=false``): k_i = round(|u_i|/(2h)), so ||C(x) - x||^2 <= d h^2 ||x||^2
    = nu ||x||^2 surely: the class C(nu), B3(1/(1 - nu)) for nu < 1.
  * randomised (``random=true``): k_i is |u_i|/(2h) rounded at random, unbiasedly; per
    coordinate variance <= (2h)^2/4 ||x||^2, so U(omega) with omega = nu [D].
Wire (the paper's structure): gamma in 31 bits (the fp32 without its sign bit); the signs
s in {-1, 0, 1}^d; then each k_i > 0 in unary, k_i bits (k_i - 1 zeros and a one), sum_i k_i
bits. The signs are packed in base 3, 29 to 46 bits, the last m = d mod 29 in ceil(m log2 3)
bits: d log2(3) bits (+0.08%) as the paper's randomised count. The paper's deterministic
count codes the support by enumeration, log2 d + log2 C(d, n0) + (d - n0) bits, at most
d log2(3) + log2 d; exact enumerative coding needs sequential big-integer arithmetic, so
this codec spends the base-3 count for both. bits = 31 + 46 floor(d/29) + ceil((d mod 29)
log2 3) + sum_i k_i, data-dependent (the exact length is in the header).
Paper bounds at nu = 0.1 [S: P2 poster]: deterministic <= 3.35d + log d + 30 (worst case);
randomised E bits <= (log2 3 + 1/(2 sqrt(nu)))d + log d + 30.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from psgd.compress.base import SENT, Compressor, Message, check_fits
from psgd.compress.dithering import work_dtype
from psgd.compress.randomness import uniform
from psgd.compress.registry import register
from psgd.errors import FrameError
from psgd.wire.codes import BitReader, BitWriter, pack_trits, trit_bits, unpack_trits

GAMMA_BITS = 31


@register
@dataclass(frozen=True)
class SparseDither(Compressor):
    nu: float = 0.1
    random: bool = False

    name = "sparse_dither"
    summary = "paper 2's sparse dithering: levels 2h k, h = sqrt(nu/d); base-3 signs + unary magnitudes"
    klass = "C(nu), B3(1/(1-nu)); random: U(nu)"
    wire_bits = "31 + 46 floor(d/29) + ceil((d mod 29) log2 3) + sum_i k_i"

    def __post_init__(self):
        if not self.nu > 0:
            raise ValueError(f"{self.name}: nu must be > 0, got {self.nu}")

    @property
    def unbiased(self) -> bool:  # type: ignore[override]
        return self.random

    def _encode(self, x, generator):
        d = x.numel()
        w = work_dtype(x)
        gamma64 = 2 * math.sqrt(self.nu / d) * torch.linalg.vector_norm(x, dtype=torch.float64)
        check_fits("gamma = 2 sqrt(nu/d) ||x||", float(gamma64), x.dtype)
        gamma = gamma64.to(torch.float32)
        z = x.abs().to(w) * torch.where(gamma > 0, 1 / gamma.to(w), 0)
        if self.random:
            low = z.floor()
            k = low + (uniform(d, z, generator) < z - low)
        else:
            k = z.round()
        k = k.to(torch.int64)
        check_fits("gamma max k_i", float(k.max()) * float(gamma), x.dtype)  # the largest decoded |C(x)_i|
        trits = torch.where(k > 0, torch.where(x < 0, 2, 1), 0)
        out = BitWriter(x.device)
        out.uints(gamma.reshape(1).view(torch.int32).to(torch.int64), GAMMA_BITS)
        pack_trits(out, trits, tight=True)
        out.unary(k[k > 0] - 1)
        return (out.nbits,), out.packed()

    def _parse(self, m: Message) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        (nbits,) = m.meta
        r = BitReader(m.body, nbits, self.name)
        gamma = r.uints(1, GAMMA_BITS).to(torch.int32).view(torch.float32)
        if not bool(torch.isfinite(gamma)):
            raise FrameError(f"{self.name}: bad scale")
        trits = unpack_trits(r, m.d, tight=True)
        nz = trits > 0
        k_max = math.ceil(math.sqrt(m.d / self.nu) / 2) + 1  # |u_i|/(2h) <= 1/(2h)
        k = torch.zeros(m.d, dtype=torch.int64, device=m.body.device)
        k[nz] = r.unary(int(nz.sum()), k_max - 1) + 1
        r.finish()
        return gamma, k, trits == 2

    def _validate(self, m: Message) -> None:
        self._parse(m)

    def _decode(self, m: Message) -> torch.Tensor:
        gamma, k, neg = self._parse(m)
        w = torch.float64 if m.dtype == torch.float64 else torch.float32
        v = k.to(w) * gamma.to(w)
        return torch.where(neg, -v, v).to(m.dtype)

    def meta_layout(self, d):
        return (SENT,)

    def _message_bits(self, d, meta):
        (nbits,) = meta
        if nbits < GAMMA_BITS + trit_bits(d, tight=True):
            raise ValueError(f"nbits={nbits} for d={d}")
        return nbits

    def omega(self, d):
        return self.nu if self.random else None

    def delta(self, d):
        if self.random:
            return super().delta(d)
        return 1 / (1 - self.nu) if self.nu < 1 else None
