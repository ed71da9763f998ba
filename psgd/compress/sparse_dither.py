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
from typing import NamedTuple

import numpy as np
import torch

from psgd import kernels
from psgd.compress.base import SENT, Compressor, Message, check_fits, largest, narrowest
from psgd.compress.dithering import work_dtype
from psgd.compress.registry import register
from psgd.errors import FrameError
from psgd.kernels import codes as kc
from psgd.kernels import np_view, rng
from psgd.wire.codes import BitReader, BitWriter, pack_trits, trit_bits, unpack_trits

GAMMA_BITS = kc.GAMMA_BITS
FP32_TINY = torch.finfo(torch.float32).tiny


class Packed(NamedTuple):
    """A checked body, read by the compiled kernels: gamma, the body as words, and the signs as
    bitmaps (s_i != 0, s_i < 0; read out of their base-3 groups while checking them)."""

    gamma: np.float32
    words: np.ndarray
    nonzero: np.ndarray
    negative: np.ndarray


class Dense(NamedTuple):
    """A body read by the reference: gamma (fp32 tensor), k_i (int64) and s_i < 0 (bool)."""

    gamma: torch.Tensor
    k: torch.Tensor
    neg: torch.Tensor


def norm(x: torch.Tensor) -> torch.Tensor:
    """||x||_2 as float64: summed in fp32 for fp32 and half x (one fast read; a float64 sum would
    convert x first), in float64 where fp32 squares overflow or underflow."""
    n = torch.linalg.vector_norm(x, dtype=work_dtype(x))
    if not 1e-18 < float(n) < math.inf:
        n = torch.linalg.vector_norm(x, dtype=torch.float64)
    return n.to(torch.float64)


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
        gamma64 = 2 * math.sqrt(self.nu / d) * norm(x)
        check_fits("gamma = 2 sqrt(nu/d) ||x||", float(gamma64), x.dtype)
        gamma = gamma64.to(torch.float32)
        key = rng.draw_key(generator) if self.random else 0  # one draw: u_i = rng.uniform(key, d)_i
        if x.dtype != torch.float32 or 0 < float(gamma) < FP32_TINY:  # a subnormal gamma: 1/gamma may overflow
            return self._encode_reference(x, gamma, key)
        return kernels.run(
            kc.sparse_dither_encode,
            (x,),
            lambda: self._encode_compiled(x.contiguous(), gamma, key),
            lambda: self._encode_reference(x, gamma, key),
        )

    def _encode_compiled(self, x, gamma, key):
        """One pass over x (after the norm's): signs, groups and unary codes straight into the body."""
        d = x.numel()
        k0, k1 = rng.split(key)
        inv = np.float32(1 / float(gamma) if float(gamma) > 0 else 0)
        upos = kc.unary_start(d)
        words = kc.new_words(upos + int(d * (0.5 / math.sqrt(self.nu) + 1)))  # sum_i k_i <= sum_i (z_i + 1)
        gamma_bits = int(gamma.reshape(1).view(torch.int32))
        # a block's k_i as int32 and as bytes, its signs, the unary strings of its eights and their lengths
        block = (np.empty(29 * 64, np.int32), np.empty(29 * 8, np.uint64), np.empty(29 * 64 + 3, np.int8))
        block += (np.empty(29 * 8, np.uint64), np.empty(29 * 8, np.uint64))
        args = (self.random, k0, k1, self._k_max(d) + 1, gamma_bits, words, upos, *block)
        words, nbits, kmax = kc.sparse_dither_encode(np_view(x), inv, *args)
        if nbits < 0:  # not with a normal gamma: |x_i| inv <= ||x|| inv ~ 1/(2h)
            return self._encode_reference(x, gamma, key)
        check_fits("gamma max k_i", float(kmax) * float(gamma), x.dtype)  # the largest decoded |C(x)_i|
        return (nbits,), torch.from_numpy(words.view(np.uint8)[: -(-nbits // 8)])

    def _encode_reference(self, x, gamma, key):
        d = x.numel()
        w = work_dtype(x)
        z = x.abs().to(w) * torch.where(gamma > 0, 1 / gamma.to(w), 0)
        if self.random:
            low = z.floor()
            k = low + (rng.uniform(key, d, z) < z - low)
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

    def _k_max(self, d: int) -> int:
        return math.ceil(math.sqrt(d / self.nu) / 2) + 1  # |u_i|/(2h) <= 1/(2h)

    def _parse(self, m: Message) -> Packed | Dense:
        """Packed where the compiled kernels read the body (fp32 and half messages on the CPU),
        else Dense (float64 messages decode k_i gamma in float64; CUDA)."""
        if m.dtype == torch.float64:
            parsed = self._parse_reference(m)
        else:
            parsed = kernels.run(
                kc.sparse_dither_check, (m.body,), lambda: self._parse_compiled(m), lambda: self._parse_reference(m)
            )
        self._check_range(m, parsed)
        return parsed

    def _check_range(self, m: Message, parsed: Packed | Dense) -> None:
        """Every decoded |C(x)_i| = gamma k_i must fit m's dtype: at once where gamma k_max(d) does
        (nearly always), else from the largest k_i the body holds (read again, only then)."""
        gamma = float(parsed.gamma)
        if gamma * self._k_max(m.d) <= largest(m.dtype):
            return
        k = parsed.k if isinstance(parsed, Dense) else self._parse_reference(m).k
        if k.numel() and gamma * int(k.max()) > largest(m.dtype):
            raise FrameError(f"{self.name}: gamma max k_i = {gamma * int(k.max()):.4g} beyond {narrowest(m.dtype)}")

    def _parse_compiled(self, m: Message) -> Packed:
        (nbits,) = m.meta
        r = BitReader(m.body, nbits, self.name)
        if nbits < GAMMA_BITS:
            raise FrameError(f"{self.name}: body ends early")
        gamma = np.array([r.words[0] & np.uint64(2**GAMMA_BITS - 1)], dtype=np.uint32).view(np.float32)[0]
        if not math.isfinite(gamma):
            raise FrameError(f"{self.name}: bad scale")
        if nbits < kc.unary_start(m.d):
            raise FrameError(f"{self.name}: body ends early")
        nonzero, negative = np.zeros(m.d // 64 + 2, np.uint64), np.zeros(m.d // 64 + 2, np.uint64)
        status, end = kc.sparse_dither_check(r.words, nbits, self._k_max(m.d) - 1, nonzero, negative, m.d)
        if status == kc.UNREAD:
            raise FrameError(f"{self.name}: {nbits - end} unread bits")
        r._check(status)
        return Packed(gamma, r.words, nonzero, negative)

    def _parse_reference(self, m: Message) -> Dense:
        (nbits,) = m.meta
        r = BitReader(m.body, nbits, self.name)
        gamma = r.uints(1, GAMMA_BITS).to(torch.int32).view(torch.float32)
        if not bool(torch.isfinite(gamma)):
            raise FrameError(f"{self.name}: bad scale")
        trits = unpack_trits(r, m.d, tight=True)
        nz = trits > 0
        k = torch.zeros(m.d, dtype=torch.int64, device=m.body.device)
        k[nz] = r.unary(int(nz.sum()), self._k_max(m.d) - 1) + 1
        r.finish()
        return Dense(gamma, k, trits == 2)

    def _dense(self, m: Message) -> Dense:
        p = self.parsed(m)
        return p if isinstance(p, Dense) else self._parse_reference(m)

    def _values(self, m: Message, out: torch.Tensor, weight: float, add: bool) -> bool:
        """out (+)= weight C(x) by the compiled kernel; False where it cannot (then nothing is done)."""
        p = self.parsed(m)
        if not (isinstance(p, Packed) and out.dtype == torch.float32 and out.is_contiguous()):
            return False

        def fast():
            k = np.empty(2 * kc.BLOCK, np.int32)
            kc.sparse_dither_values(p.words, p.nonzero, p.negative, p.gamma, np.float32(weight), np_view(out), add, k)
            return True

        return kernels.run(kc.sparse_dither_values, (out,), fast, lambda: False)

    def _decode(self, m: Message) -> torch.Tensor:
        if m.dtype != torch.float64:
            out = torch.from_numpy(np.empty(m.d, dtype=np.float32))  # numpy's fresh pages are huge pages
            if self._values(m, out, 1.0, add=False):
                return out.to(m.dtype)
        gamma, k, neg = self._dense(m)
        w = torch.float64 if m.dtype == torch.float64 else torch.float32
        v = k.to(w) * gamma.to(w)
        return torch.where(neg, -v, v).to(m.dtype)

    def _decode_into(self, m: Message, out: torch.Tensor) -> None:
        if not (m.dtype == torch.float32 and self._values(m, out, 1.0, add=False)):
            super()._decode_into(m, out)

    def _accumulate(self, m: Message, out: torch.Tensor, weight: float) -> None:
        if m.dtype != torch.float32 or not self._values(m, out, weight, add=True):
            super()._accumulate(m, out, weight)

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
