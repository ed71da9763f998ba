"""Random dithering: QSGD (Alistarh et al.) with p = 2 or inf, TernGrad (Wen et al.), and natural
dithering (Horvath et al.), SPEC 2.6 and 2.8. One family: they differ only in the level set.

C(x) = ||x||_p sign(x) o xi(x), where y_i = |x_i| / ||x||_p in [0, 1] is rounded at random,
unbiasedly, to one of the two adjacent levels (independently across coordinates):
  * QSGD / random dithering: levels {0, 1/s, ..., 1}; omega = min(d/s^2, sqrt(d)/s) (QSGD
    Lemma 3.1, p = 2; the same bound holds for p = inf [D]). Exact expected error for a
    given x [D]: (||x||_p/s)^2 sum_i f_i (1 - f_i), f_i the fractional part of s y_i.
  * TernGrad = QSGD with p = inf, s = 1: omega = (sqrt(d) - 1)/2, the worst case of
    zeta(x) = ||x||_inf ||x||_1 / ||x||^2 [D].
  * natural dithering: levels {0, 2^(1-s), ..., 1/2, 1}; omega = 1/8 + d^(1/2) 2^(1-s)
    min{1, d^(1/2) 2^(1-s)} (EF21 code, r = min(p, 2) = 2).
Wire, fixed-length: the fp32 norm, then per coordinate a sign bit and a level in
ceil(log2(s+1)) bits (zero keeps its sign bit): 32 + d(1 + ceil(log2(s+1))) bits
(TernGrad: 32 + 2d). QSGD with ``coding=elias`` (QSGD Thm 3.2): the norm, then for the
nonzero coordinates Elias-gamma gaps between positions, sign bits and Elias-gamma levels,
written split (psgd.wire.codes); the exact length rides in the header.
The norm's squares are summed in float64 and the norm rounded up to fp32 before the levels are
drawn, so E C(x) = x with the norm the decoder sees, no level exceeds s, and every device sends
the same norm (float64 sums in different orders differ far below fp32's rounding). A norm beyond
fp32 (or x's dtype) is refused, NonFiniteError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from psgd.compress.base import (
    SENT,
    Compressor,
    Message,
    check_fits,
    head_floats,
    largest,
    narrowest,
    packed_bytes,
    require,
    require_finite_input,
)
from psgd.compress.registry import register
from psgd.errors import FrameError
from psgd.kernels.dither import (
    dither_encode,
    dither_into,
    dither_pair_into,
    dither_sparse,
    magnitudes_ref,
    max_level,
    natural_level_values,
    scatter_into,
    vector_norm,
    width,
)
from psgd.kernels.dither import natural_levels as natural_levels  # the references topk_compose rounds with
from psgd.kernels.dither import uniform_levels as uniform_levels
from psgd.kernels.rng import draw_key
from psgd.wire.bits import unpack_uint
from psgd.wire.codes import BitReader, BitWriter

INF = math.inf


def work_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def wire_norm(x: torch.Tensor, p: float, work: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(||x||_p computed in work: float64, the wire's definition, by default (kernels.dither.vector_norm);
    the fp32 the decoder will read, rounded up so that |x_i| <= norm)."""
    n = vector_norm(x, p, work)
    n32 = n.to(torch.float32)
    return n, torch.where(n32.to(n.dtype) < n, torch.nextafter(n32, n32.new_tensor(INF)), n32)


def norm_name(p: float) -> str:
    return f"||x||_{p:g}"


def inverse(norm: torch.Tensor, work: torch.dtype) -> torch.Tensor:
    """1 / norm in work (0 for norm 0): y = |x| inverse(norm) lies in [0, 1]."""
    return torch.where(norm > 0, 1 / norm.to(work), 0)


def normalized(x: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """y = |x| / norm in [0, 1] (all zeros for x = 0)."""
    return magnitudes_ref(x, inverse(norm, work_dtype(x)))


def natural_dither_omega(d: int, s: int) -> float:
    t = math.sqrt(d) * 2.0 ** (1 - s)
    return 1 / 8 + t * min(1.0, t)


def check_levels(name: str, s: int, p: float) -> None:
    if not (isinstance(s, int) and s >= 1):
        raise ValueError(f"{name}: s must be an integer >= 1, got {s!r}")
    if p not in (2.0, INF):
        raise ValueError(f"{name}: p must be 2 or inf, got {p!r}")


class _Dithering(Compressor):
    """Norm + sign + level codecs; subclasses fix the level set, p and s."""

    unbiased = True
    natural: ClassVar[bool] = False
    finite_by_own_pass = True  # the float64 norm is NaN or Inf when x holds one
    # the parse's read of its own is the level check (a level above s decodes beyond the norm, to
    # Inf where 2^(level - s) or level / s is large enough): the decode or add reads the levels anyway
    defers_body_check = True

    @property
    def _p(self) -> float:
        return self.p  # type: ignore[attr-defined]

    @property
    def _s(self) -> int:
        return self.s  # type: ignore[attr-defined]

    @property
    def _elias(self) -> bool:
        return getattr(self, "coding", "fixed") == "elias"

    def level_values(self, n: int, norm: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """|C(x)_i| of the levels 0, ..., n - 1 (in dtype, or fp32 for half types)."""
        work = torch.float64 if dtype == torch.float64 else torch.float32
        levels = torch.arange(n, device=norm.device)
        if self.natural:
            return natural_level_values(levels, self._s, work) * norm.to(work)
        return levels.to(work) * self._step(norm, work)

    def _step(self, norm: torch.Tensor, work: torch.dtype) -> torch.Tensor:
        """The value of uniform level 1: norm / s in work."""
        return norm.to(work) / self._s

    def _encode(self, x, generator, values=None, feedback=False):
        """The message's meta and body; and fixed-length C(x) into ``values`` (x's dtype) where given,
        from the encoding pass, and with ``feedback`` x <- x - C(x) by that pass (fixed-length codes)."""
        exact, norm = wire_norm(x, self._p)
        if not math.isfinite(float(exact)):  # NaN/Inf in x (a float64 norm of finite values may still overflow)
            require_finite_input(x)
        inv = inverse(norm, work_dtype(x))
        head = norm.reshape(1).view(torch.uint8)
        key = draw_key(generator)
        if not self._elias:
            meta, body = (
                (),
                torch.empty(4 + packed_bytes(x.numel() * width(self._s)), dtype=torch.uint8, device=x.device),
            )
            body[:4] = head
            reconstructs = values is not None or feedback
            table = self.level_values(2 ** (width(self._s) - 1), norm, x.dtype) if reconstructs else None
            if feedback:  # x is about to change: refuse a norm that overflows first
                check_fits(norm_name(self._p), float(exact), x.dtype)
            dither_encode(x, inv, key, self._s, self.natural, body[4:], table, values, feedback)
        else:
            gaps, negative, levels = dither_sparse(x, inv, key, self._s)
            w = BitWriter(x.device)
            w.gammas(gaps)
            w.bits(negative)
            w.gammas(levels)
            meta, body = (gaps.numel(), w.nbits), torch.cat([head, w.packed()])
        check_fits(norm_name(self._p), float(exact), x.dtype)  # checked last: a GPU waits only for the message
        return meta, body

    def encode_reconstruct(self, x, generator=None, out=None):
        """(encode(x), C(x)), fixed-length C(x) written into ``out`` by the encoding pass from each block's
        codes, the floats decode gives (no second read of the body); Elias coding decodes its message."""
        if self._elias or out is None or out.dtype != x.dtype or out.numel() != x.numel():
            return super().encode_reconstruct(x, generator, out)
        return self._message(x, generator, out), out

    def encode_feedback(self, x, generator=None, out=None):
        """encode(x) and x <- x - C(x) from the encoding pass itself (fixed-length codes; C(x) into out
        by the same pass where given), the floats of the default: no second pass over x."""
        if self._elias or (out is not None and (out.dtype != x.dtype or out.numel() != x.numel())):
            return super().encode_feedback(x, generator, out)
        return self._message(x, generator, out, True), out

    def _parse(self, m: Message):
        """The fp32 norm (fixed-length codes are read where they are used, once their levels are
        checked), or (norm, positions, signs, levels) of the nonzero Elias-coded levels;
        FrameError on contents no encoder writes. The norm is checked on the host, from the bytes
        as received; where m defers its checks, the levels' is recorded (fixed-length codes)."""
        norm, value = m.body[:4].view(torch.float32), float(head_floats(m, 1)[0])
        if not 0 <= value <= largest(m.dtype):  # every |C(x)_i| <= norm: finite in m.dtype
            raise FrameError(f"{self.name}: bad norm {value!r} (for {narrowest(m.dtype)})")
        if not self._elias:
            if m.deferred is not None and self._level_can_exceed_s():
                top = (unpack_uint(m.body[4:], m.d, width(self._s)) >> 1).max()
                require(m.deferred, top > self._s, self._above_s)
            elif not m.unchecked:
                self._check_levels(m, None)
            return norm
        nnz, nbits = m.meta
        r = BitReader(m.body[4:], nbits, self.name)
        gaps = r.gammas(nnz, max_bits=64)
        negative = r.bits(nnz)
        levels = r.gammas(nnz, max_bits=64)
        r.finish()
        if nnz and (int(gaps.max()) > m.d or int(levels.max()) > self._s):  # gaps <= d: the sum cannot wrap
            raise FrameError(f"{self.name}: position or level out of range")
        pos = torch.cumsum(gaps, 0).sub_(1)
        if nnz and int(pos[-1]) >= m.d:
            raise FrameError(f"{self.name}: position out of range")
        return norm, pos, negative, levels

    def _check_levels(self, m: Message, top: int | None) -> None:
        """FrameError if a fixed-length code's level exceeds s (top: the largest, where a pass that
        read the codes tells; else read here). Such a level fits in the code only when s + 1 is
        not a power of two."""
        if not self._level_can_exceed_s():
            return
        if (max_level(m.body[4:], m.d, self._s) if top is None else top) > self._s:
            raise FrameError(self._above_s())

    def check_body(self, m: Message) -> None:
        if not self._elias:
            self._check_levels(m, None)

    def _level_can_exceed_s(self) -> bool:
        """Whether a fixed-length code can hold a level above s (s + 1 not a power of two)."""
        return self._s + 1 != 2 ** (width(self._s) - 1)

    def _above_s(self) -> str:
        return f"{self.name}: level above s = {self._s}"

    def _into(self, m: Message, out: torch.Tensor, weight: float, add: bool) -> None:
        """out (+)= weight C(x) from the parsed message, out in m's dtype; the levels of an
        ``unchecked`` message checked by the same pass (FrameError after writing out)."""
        work = torch.float64 if m.dtype == torch.float64 else torch.float32
        if not self._elias:
            table = self.level_values(2 ** (width(self._s) - 1), self.parsed(m), m.dtype)
            top = dither_into(m.body[4:], self._s, self.natural, table, out, weight, add)
            if m.unchecked:
                self._check_levels(m, top)
                object.__setattr__(m, "unchecked", False)
        else:
            norm, pos, negative, levels = self.parsed(m)
            scatter_into(pos, negative, levels, self._s, self._step(norm, work), out, weight, add)

    def _add_pair(self, a: Message, b: Message, out: torch.Tensor, start: bool) -> None:
        """Fixed-length fp32 codes on the CPU: both bodies and out in one pass (kernels.dither.dither_pair_into),
        the levels of an ``unchecked`` message checked from the largest that pass read, as _into does;
        else one message after the other."""
        if self._elias or not out.dtype == a.dtype == b.dtype == torch.float32 or out.device.type != "cpu":
            super()._add_pair(a, b, out, start)
            return
        n = 2 ** (width(self._s) - 1)
        tables = [self.level_values(n, self.parsed(m), m.dtype) for m in (a, b)]
        tops = dither_pair_into(a.body[4:], b.body[4:], self._s, self.natural, *tables, out, start)
        for m, top in zip((a, b), tops, strict=True):
            if m.unchecked:
                self._check_levels(m, top)
                object.__setattr__(m, "unchecked", False)

    def _decode(self, m: Message) -> torch.Tensor:
        new = torch.zeros if self._elias else torch.empty  # Elias writes the nonzero levels only
        out = new(m.d, dtype=m.dtype, device=m.body.device)
        self._into(m, out, 1.0, add=False)
        return out

    def _decode_into(self, m: Message, out: torch.Tensor) -> None:
        if out.dtype != m.dtype:
            super()._decode_into(m, out)
            return
        if self._elias:
            out.zero_()
        self._into(m, out, 1.0, add=False)

    def _accumulate(self, m: Message, out: torch.Tensor, weight: float) -> None:
        if out.dtype != m.dtype:
            super()._accumulate(m, out, weight)
        else:
            self._into(m, out, weight, add=True)

    def meta_layout(self, d):
        return (SENT, SENT) if self._elias else ()

    def _bits(self, d):
        return None if self._elias else 32 + d * width(self._s)

    def _message_bits(self, d, meta):
        if not self._elias:
            return super()._message_bits(d, meta)
        nnz, nbits = meta
        if not (nnz <= d and nbits <= 200 * d):
            raise ValueError(f"nnz={nnz}, nbits={nbits} for d={d}")
        return 32 + nbits


@register
@dataclass(frozen=True)
class QSGD(_Dithering):
    p: float = 2.0
    s: int = 1
    coding: str = "fixed"

    name = "qsgd"
    summary = "random dithering, s uniform levels of ||x||_p (p = 2 or inf), fixed or Elias coding"
    klass = "U(min(d/s^2, sqrt(d)/s))"
    wire_bits = "32 + d(1 + ceil(log2(s+1))); elias: data-dependent"

    def __post_init__(self):
        check_levels(self.name, self.s, self.p)
        if self.coding not in ("fixed", "elias"):
            raise ValueError(f"{self.name}: coding must be 'fixed' or 'elias', got {self.coding!r}")

    def omega(self, d):
        if self.p == INF and self.s == 1:
            return (math.sqrt(d) - 1) / 2
        return min(d / self.s**2, math.sqrt(d) / self.s)


@register
@dataclass(frozen=True)
class TernGrad(_Dithering):
    name = "terngrad"
    p = INF
    s = 1
    summary = "||x||_inf sign(x) o Bernoulli(|x_i|/||x||_inf): QSGD with p = inf, s = 1"
    klass = "U((sqrt(d) - 1)/2)"
    wire_bits = "32 + 2d"

    def omega(self, d):
        return (math.sqrt(d) - 1) / 2


@register
@dataclass(frozen=True)
class NaturalDither(_Dithering):
    p: float = INF
    s: int = 8
    natural = True

    name = "natural_dither"
    summary = "dithering to the levels {0, 2^(1-s), ..., 1/2, 1} of ||x||_p (p = 2 or inf)"
    klass = "U(1/8 + sqrt(d) 2^(1-s) min(1, sqrt(d) 2^(1-s)))"
    wire_bits = "32 + d(1 + ceil(log2(s+1)))"

    def __post_init__(self):
        check_levels(self.name, self.s, self.p)

    def omega(self, d):
        return natural_dither_omega(d, self.s)
