"""Sparse Dithering (paper 2, SPEC 2.11): deterministic (worst case) and randomised (unbiased).

u = x/||x||, h = sqrt(nu/d), levels {0, 2h, 4h, ...}; C(x) = gamma s o k with gamma = 2h||x||,
k_i in N and s_i = sign(u_i k_i) in {-1, 0, 1}.
  * deterministic (``random=false``): k_i = round(|u_i|/(2h)), so ||C(x) - x||^2 <= d h^2 ||x||^2
    = nu ||x||^2 surely: the class C(nu), B3(1/(1 - nu)) for nu < 1.
  * randomised (``random=true``): k_i is |u_i|/(2h) rounded at random, unbiasedly; per
    coordinate variance <= (2h)^2/4 ||x||^2, so U(omega) with omega = nu [D].
Wire (the paper's deterministic count, for both variants): gamma in 31 bits (the fp32 without
its sign bit); n0 = #{i : k_i = 0} in ceil(log2(d + 1)) bits; each k_i > 0 in unary, k_i bits
(k_i - 1 zeros and a one), sum_i k_i bits; the d - n0 signs of the non-zeros in order, one bit
each; then the support at its enumerative count: the non-zero flags of the coordinates 16 at a
time, rANS-coded with the static model P(zero) = n0/d (psgd.kernels.rans), the last d mod 16 raw.
That is log2 C(d, n0) + O(1) bits: d H(n0/d) is within (1/2) log2(2 pi d p(1 - p)) <= 13 bits of
it, plus the two 64-bit final rANS states (nothing when n0 is 0 or d). bits = 31 + ceil(log2(d + 1))
+ sum_i k_i + (d - n0) + support, data-dependent (the exact length is in the header).
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
from psgd.compress.base import SENT, Compressor, Message, check_fits, largest, narrowest, require_finite_input
from psgd.compress.dithering import work_dtype
from psgd.compress.registry import register
from psgd.errors import FrameError
from psgd.kernels import codes as kc
from psgd.kernels import np_view, rans, rng
from psgd.kernels import sparse_dither as ks
from psgd.wire.codes import BitReader, BitWriter

GAMMA_BITS = ks.GAMMA_BITS
FP32_TINY = torch.finfo(torch.float32).tiny


class Packed(NamedTuple):
    """A checked body, read by the compiled kernels: gamma, the body as words, the support as a
    bitmap (s_i != 0), and where the unary codes and the sign bits start."""

    gamma: np.float32
    words: np.ndarray
    nonzero: np.ndarray
    upos: int
    spos: int


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
    summary = "paper 2's sparse dithering: levels 2h k, h = sqrt(nu/d); rANS support + signs + unary magnitudes"
    klass = "C(nu), B3(1/(1-nu)); random: U(nu)"
    wire_bits = "31 + ceil(log2(d+1)) + log2 C(d, n0) + (d - n0) + sum_i k_i, + <= 128 (rANS) + 13 (Stirling)"
    finite_by_own_pass = True  # the norm is NaN or Inf when x holds one

    def __post_init__(self):
        if not self.nu > 0:
            raise ValueError(f"{self.name}: nu must be > 0, got {self.nu}")

    @property
    def unbiased(self) -> bool:  # type: ignore[override]
        return self.random

    def _encode(self, x, generator):
        d = x.numel()
        n = norm(x)
        if not math.isfinite(float(n)):  # NaN/Inf in x (a float64 norm of finite values may still overflow)
            require_finite_input(x)
        gamma64 = 2 * math.sqrt(self.nu / d) * n
        check_fits("gamma = 2 sqrt(nu/d) ||x||", float(gamma64), x.dtype)
        gamma = gamma64.to(torch.float32)
        key = rng.draw_key(generator) if self.random else 0  # one draw: u_i = rng.uniform(key, d)_i
        if x.dtype != torch.float32 or 0 < float(gamma) < FP32_TINY:  # a subnormal gamma: 1/gamma may overflow
            return self._encode_reference(x, gamma, key)
        return kernels.run(
            ks.sparse_dither_encode,
            (x,),
            lambda: self._encode_compiled(x.contiguous(), gamma, key),
            lambda: self._encode_reference(x, gamma, key),
        )

    def _encode_compiled(self, x, gamma, key):
        """One pass over x (after the norm's): unary codes into the body, support bitmap and signs
        beside; then the support's rANS code backwards, and signs and support appended."""
        d = x.numel()
        k0, k1 = rng.split(key)
        inv = np.float32(1 / float(gamma) if float(gamma) > 0 else 0)
        # the whole message's room: sum k_i <= sum (z_i + 1) <= d (1/(2 sqrt(nu)) + 1), d signs, 2 rANS words a symbol
        words = kc.new_words(ks.GAMMA_BITS + 64 + int(d * (0.5 / math.sqrt(self.nu) + 1)) + 3 * d + 256)
        nonzero, signs = np.empty(d // 64 + 2, np.uint64), np.empty(d // 64 + 2, np.uint64)
        b = ks.BLOCK  # a block's k_i as int32 (large k_i only) and bytes, x_i < 0, its eights' unary strings, lengths
        block = (np.empty(b, np.int32), np.empty(b // 8 + 8, np.uint64), np.empty(b, np.uint8))
        block += (np.empty(b // 8, np.uint64), np.empty(b // 8, np.uint64))
        head = (int(gamma.reshape(1).view(torch.int32)), ks.header_bits(d))
        args = (self.random, k0, k1, self._k_max(d) + 1, head, words, nonzero, signs, *block)
        words, nbits, kmax, nnz = ks.sparse_dither_encode(np_view(x), inv, *args)
        if nbits < 0:  # not with a normal gamma: |x_i| inv <= ||x|| inv ~ 1/(2h)
            return self._encode_reference(x, gamma, key)
        check_fits("gamma max k_i", float(kmax) * float(gamma), x.dtype)  # the largest decoded |C(x)_i|
        n0 = d - nnz
        words[0] |= np.uint64(n0) << np.uint64(GAMMA_BITS)
        flags = nonzero.view(np.uint16)
        if 0 < n0 < d:
            out, first = rans.encode_words(flags[: d // 16], n0, d)
            support = (out, 16 * first, 64 * (out.size - 1) - 16 * first, int(flags[d // 16]) & ((1 << (d % 16)) - 1))
        else:
            support = (signs, 0, 0, 0)
        words, nbits = ks.append_parts(words, nbits, signs, nnz, *support, d % 16 if 0 < n0 < d else 0)
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
        nz = k > 0
        n0 = d - int(nz.sum())
        out = BitWriter(x.device)
        out.uints(gamma.reshape(1).view(torch.int32).to(torch.int64) | n0 << GAMMA_BITS, ks.header_bits(d))
        out.unary(k[nz] - 1)
        out.bits(x[nz] < 0)
        flags = np.packbits(nz.cpu().numpy(), bitorder="little")  # a CUDA x's support: copied to the host once
        flags = np.concatenate([flags, np.zeros(2 + flags.size % 2, np.uint8)])
        stream, tail = support_stream(flags.view(np.uint16), n0, d)
        out.uints(torch.from_numpy(stream.astype(np.int64)).to(x.device), 16)
        out.uints(torch.tensor([tail], device=x.device), d % 16 if 0 < n0 < d else 0)
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
                ks.sparse_dither_check, (m.body,), lambda: self._parse_compiled(m), lambda: self._parse_reference(m)
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

    def _head(self, m: Message, head: int) -> tuple[np.float32, int]:
        """gamma and n0 from the body's first 31 + ceil(log2(d + 1)) bits (FrameError when bad)."""
        gamma = np.array([head & (2**GAMMA_BITS - 1)], dtype=np.uint32).view(np.float32)[0]
        if not math.isfinite(gamma):
            raise FrameError(f"{self.name}: bad scale")
        n0 = head >> GAMMA_BITS
        if n0 > m.d:
            raise FrameError(f"{self.name}: n0 = {n0} zeros in d = {m.d}")
        return gamma, n0

    def _support(self, m: Message, n0: int, src: np.ndarray, tail: int) -> np.ndarray:
        """The support bitmap (d // 64 + 2 words) from its rANS words src (two zero words after
        them) and the raw flags of the last d mod 16 coordinates; n0 zeros, or FrameError."""
        d = m.d
        nonzero = np.zeros(d // 64 + 2, np.uint64)
        flags = nonzero.view(np.uint16)
        if n0 == 0:
            nonzero[: d // 64] = ~np.uint64(0)
            nonzero[d // 64] = (1 << (d % 64)) - 1
        elif n0 < d:
            status, zeros = rans.decode_support(src, src.size - 2, n0, d, flags[: d // 16])
            if status != rans.OK:
                raise FrameError(f"{self.name}: {rans.STATUS[status]}")
            flags[d // 16] = tail
            zeros += d % 16 - tail.bit_count()
            if zeros != n0:
                raise FrameError(f"{self.name}: the support has {zeros} zeros, the header {n0}")
        return nonzero

    def _support_words(self, m: Message, n0: int, pos: int) -> int:
        """How many 16-bit rANS words the support from bit pos holds (FrameError when not whole)."""
        (nbits,) = m.meta
        rest = nbits - pos - (m.d % 16 if 0 < n0 < m.d else 0)
        if rest < 0:
            raise FrameError(f"{self.name}: body ends early")
        if rest % 16 or (rest and n0 in (0, m.d)):
            raise FrameError(f"{self.name}: {rest} bits where the support code has none or 16-bit words")
        return rest // 16

    def _parse_compiled(self, m: Message) -> Packed:
        (nbits,) = m.meta
        r = BitReader(m.body, nbits, self.name)
        upos = ks.header_bits(m.d)
        if nbits < upos:
            raise FrameError(f"{self.name}: body ends early")
        gamma, n0 = self._head(m, int(r.words[0] & ((1 << upos) - 1)))
        status, spos = ks.sparse_dither_check(r.words, nbits, upos, m.d - n0, self._k_max(m.d) - 1)
        r._check(status)
        pos = spos + m.d - n0
        nw = self._support_words(m, n0, pos)
        src = np.zeros(nw + 2, np.uint16)
        kc.read_packed(r.words, pos, src.view(np.uint8), 16 * nw)
        at = pos + 16 * nw
        tail = (int(r.words[at >> 6]) | int(r.words[(at >> 6) + 1]) << 64) >> (at & 63) & ((1 << (nbits - at)) - 1)
        return Packed(gamma, r.words, self._support(m, n0, src, tail), upos, spos)

    def _parse_reference(self, m: Message) -> Dense:
        (nbits,) = m.meta
        r = BitReader(m.body, nbits, self.name)
        head = int(r.uints(1, ks.header_bits(m.d)))
        gamma, n0 = self._head(m, head)
        nnz = m.d - n0
        q = r.unary(nnz, self._k_max(m.d) - 1)
        negative = r.bits(nnz)
        nw = self._support_words(m, n0, r.pos)
        src = np.zeros(nw + 2, np.uint16)
        src[:nw] = r.uints(nw, 16).cpu().numpy()
        n = r.nbits - r.pos
        tail = int((r.bits(n).long().cpu() << torch.arange(n)).sum())
        r.finish()
        flags = np.unpackbits(self._support(m, n0, src, tail).view(np.uint8), bitorder="little")[: m.d]
        nz = torch.from_numpy(flags.astype(bool)).to(m.body.device)
        k = torch.zeros(m.d, dtype=torch.int64, device=m.body.device)
        k[nz] = q + 1
        neg = torch.zeros(m.d, dtype=torch.bool, device=m.body.device)
        neg[nz] = negative
        gamma = torch.tensor([gamma], device=m.body.device)
        return Dense(gamma, k, neg)

    def _dense(self, m: Message) -> Dense:
        p = self.parsed(m)
        return p if isinstance(p, Dense) else self._parse_reference(m)

    def _values(self, m: Message, out: torch.Tensor, weight: float, add: bool) -> bool:
        """out (+)= weight C(x) by the compiled kernel; False where it cannot (then nothing is done)."""
        p = self.parsed(m)
        if not (isinstance(p, Packed) and out.dtype == torch.float32 and out.is_contiguous()):
            return False

        def fast():
            k = np.empty(2 * ks.BLOCK, np.int32)
            args = (p.upos, p.spos, p.gamma, np.float32(weight), np_view(out), add, k)
            ks.sparse_dither_values(p.words, p.nonzero, *args)
            return True

        return kernels.run(ks.sparse_dither_values, (out,), fast, lambda: False)

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
        if nbits < ks.header_bits(d):
            raise ValueError(f"nbits={nbits} for d={d}")
        return nbits

    def omega(self, d):
        return self.nu if self.random else None

    def delta(self, d):
        if self.random:
            return super().delta(d)
        return 1 / (1 - self.nu) if self.nu < 1 else None


def support_stream(flags: np.ndarray, n0: int, d: int) -> tuple[np.ndarray, int]:
    """The support's rANS words (uint16) and the raw flags of its last d mod 16 coordinates, from
    the non-zero flags as 16-bit patterns (at least d // 16 + 1 of them): none when n0 is 0 or d."""
    if n0 in (0, d):
        return np.zeros(0, np.uint16), 0
    return rans.encode_support(flags[: d // 16], n0, d), int(flags[d // 16]) & ((1 << (d % 16)) - 1)
