"""bits(message) is the papers' count: checked against formulas written here from SPEC's table
(section 2.14), never the codec's own method, for every compressor, many d and random x."""

import math
import struct

import numpy as np
import pytest
import torch
from compress_specs import SPECS, resolve

from psgd.compress import make
from psgd.compress.base import Message
from psgd.compress.spherical import candidates, cap_probability
from psgd.kernels import rans

DIMS = [1, 2, 7, 8, 9, 29, 30, 31, 64, 100, 1001]


def idx(d: int) -> int:
    """IDX = ceil(log2 d)."""
    return math.ceil(math.log2(d))


def k_of(c, d: int) -> int:
    return max(1, math.ceil(c.ratio * d)) if c.ratio is not None else min(c.k, d)


def gamma(v: int) -> int:
    """Length of the Elias gamma code of v >= 1: 2 floor(log2 v) + 1."""
    return 2 * int(math.floor(math.log2(v))) + 1


def chunks(d: int, n: int) -> list[int]:
    return [n] * (d // n) + ([d % n] if d % n else [])


def blocks_of(c, d: int) -> list[int]:
    if c.layers is not None:
        return [int(v) for v in c.layers.split("+")]
    return chunks(d, c.size // 4)


class Bits:
    """A plain-Python reader of a body's bit stream (stream bit 8i + j is bit j of byte i), written
    here from SPEC's layout so that the counts below check the codecs rather than restate them."""

    def __init__(self, body: bytes):
        self.value, self.size, self.pos = int.from_bytes(body, "little"), 8 * len(body), 0

    def uint(self, width: int) -> int:
        """width bits, least significant first."""
        assert self.pos + width <= self.size, "read past the body"
        v = (self.value >> self.pos) & ((1 << width) - 1)
        self.pos += width
        return v

    def unary(self) -> int:
        """q zeros then a one."""
        q = 0
        while not self.uint(1):
            q += 1
        return q

    def gammas(self, n: int) -> list[int]:
        """n Elias gamma codes written split: the n unary lengths L - 1, then the n values' low L - 1 bits."""
        low = [self.unary() for _ in range(n)]
        return [(1 << w) | self.uint(w) for w in low]

    def take(self, n: int) -> bytes:
        """The next n bits, repacked from bit 0: one block's message inside a wrapper's body."""
        return self.uint(n).to_bytes(-(-n // 8), "little")


def body_of(m: Message) -> bytes:
    return m.body.numpy().tobytes()


def f32(word: bytes) -> float:
    return struct.unpack("<f", word)[0]


def adjacent(level: int, y: float) -> bool:
    """level is y rounded down or up (y computed here in float64: allow the codec's fp32 rounding)."""
    return math.floor(y - 1e-4) <= level <= math.ceil(y + 1e-4)


def elias_bits(c, x: torch.Tensor, m: Message) -> int:
    """QSGD Thm 3.2's code, read back with Bits: the fp32 norm, then for the nonzero levels the
    Elias gamma gaps between positions, the sign bits and the Elias gamma levels (each section split).
    The stream must be what x allows: the norm ||x||_p rounded up to fp32, every level one of the two
    adjacent to s|x_i|/norm, signs those of x, and it must end where the header says."""
    nnz, nbits = m.meta
    body = body_of(m)
    norm, r = f32(body[:4]), Bits(body[4:])
    gaps, negative, levels = r.gammas(nnz), [r.uint(1) for _ in range(nnz)], r.gammas(nnz)
    assert r.pos == nbits and len(body) == 4 + -(-nbits // 8)
    exact = float(torch.linalg.vector_norm(x.double(), ord=c.p))
    assert exact <= norm <= exact * (1 + 2**-22)
    pos = [sum(gaps[: j + 1]) - 1 for j in range(nnz)]
    assert pos == sorted(set(pos)) and (not pos or pos[-1] < x.numel())
    level = dict(zip(pos, levels, strict=True))
    for i, v in enumerate(x.double().tolist()):
        assert adjacent(level.get(i, 0), c.s * abs(v) / norm), (i, v, level.get(i))
    assert all(bool(n) == (float(x[i]) < 0) for i, n in zip(pos, negative, strict=True))
    return 32 + sum(gamma(g) + 1 + gamma(v) for g, v in zip(gaps, levels, strict=True))


def sparse_dither_bits(c, x: torch.Tensor, m: Message) -> int:
    """Paper 2's SD, read back with Bits: gamma in 31 bits, n0 in ceil(log2(d + 1)) bits, each
    k_i > 0 in unary (k_i bits), the d - n0 signs of the non-zeros, then the support: rANS words
    of 16 bits (decoded by the reference) and the last d mod 16 flags raw, nothing when n0 is 0
    or d. gamma must be 2 sqrt(nu/d)||x||, each k_i |x_i|/gamma rounded (at random: down or up),
    the signs those of x, and the stream must end where the header says."""
    d, (nbits,) = x.numel(), m.meta
    r = Bits(body_of(m))
    g = f32(struct.pack("<I", r.uint(31)))
    assert math.isclose(g, 2 * math.sqrt(c.nu / d) * float(x.double().norm()), rel_tol=1e-6)  # ||x|| summed in fp32
    n0 = r.uint(d.bit_length())
    k = [r.unary() + 1 for _ in range(d - n0)]
    negative = [r.uint(1) for _ in range(d - n0)]
    support = nbits - r.pos
    flags = [1] * d if n0 == 0 else [0] * d
    if 0 < n0 < d:
        tail = d % 16
        words = np.array([r.uint(16) for _ in range((support - tail) // 16)], dtype=np.uint16)
        patterns = np.zeros(d // 16, np.uint16)
        raw = [r.uint(1) for _ in range(tail)]
        assert rans.decode_reference(words, n0, d, patterns) == (rans.OK, n0 - tail + sum(raw))
        flags = [int(p) >> t & 1 for p in patterns.tolist() for t in range(16)] + raw
    assert r.pos == nbits and sum(flags) == d - n0
    values = iter(zip(k, negative, strict=True))
    for f, v in zip(flags, x.double().tolist(), strict=True):
        ki, neg = next(values) if f else (0, 0)
        assert neg == (ki > 0 and v < 0)
        z = abs(v) / g
        assert adjacent(ki, z) and (c.random or abs(ki - z) <= 0.5 + 1e-4), (ki, z)
    return 31 + d.bit_length() + sum(k) + (d - n0) + support


def spherical_bits(c, x: torch.Tensor, m: Message) -> int:
    """Per block the fp32 norm and the Golomb-Rice code of T - 1 with 2^r ~ ln 2 / P(alpha, n):
    q + 1 + r bits, T the first shared candidate within the cap."""
    total, seed, rho = 0, m.meta[0], math.sqrt(1 - c.alpha)
    for b, xb in enumerate(x.double().split(c.block)):
        n = xb.numel()
        p = cap_probability(c.alpha, n)
        r = max(0, round(math.log2(math.log(2) / p)))
        trials = torch.arange(math.ceil(64 / p))
        hit = (candidates(seed, torch.tensor([b]), trials.unsqueeze(0), n)[0].double() @ (xb / xb.norm())) >= rho
        t = int(torch.nonzero(hit)[0]) + 1
        total += 32 + ((t - 1) >> r) + 1 + r
    return total


def expected_bits(c, x: torch.Tensor, m: Message) -> int:
    d, name = x.numel(), c.name
    fixed = {
        "identity": lambda: 32 * d,
        "fp16": lambda: 16 * d,
        "bf16": lambda: 16 * d,
        "sign": lambda: d,
        "scaled_sign": lambda: d + 32,
        "natural": lambda: 9 * d,
        "natural_round": lambda: 9 * d,
        "adaptive_rand": lambda: 32 + idx(d),
        "terngrad": lambda: 32 + 2 * d,
    }
    if name in fixed:
        return fixed[name]()
    if name == "block_sign":
        nb = len(c.layers.split("+")) if c.bucket == 0 else len(chunks(d, c.bucket // 4))
        return d + 32 * nb
    if name == "topk":
        return k_of(c, d) * (32 + idx(d))
    if name == "randk":
        return 32 * k_of(c, d) if c.shared_seed else k_of(c, d) * (32 + idx(d))
    if name == "hard_threshold":
        return int((x.abs() >= c.lam).sum()) * (32 + idx(d))
    if name in ("qsgd", "natural_dither"):
        if getattr(c, "coding", "fixed") == "elias":
            return elias_bits(c, x, m)
        return 32 + d * (1 + math.ceil(math.log2(c.s + 1)))
    if name == "topk_natural":
        return k_of(c, d) * (9 + idx(d))
    if name == "topk_dither":
        return 32 + k_of(c, d) * (1 + math.ceil(math.log2(c.s + 1)) + idx(d))
    if name == "sparse_dither":
        return sparse_dither_bits(c, x, m)
    if name == "spherical":
        return spherical_bits(c, x, m)
    if name == "powersgd":
        n = math.ceil(math.sqrt(d))
        cols = math.ceil(d / n)
        return 32 * min(c.rank, n, cols) * (n + cols)
    if name == "scaled":
        return expected_bits(c.inner, x, Message(c.inner.name, m.d, m.dtype, m.meta, m.body))
    if name in ("per_layer", "bucket"):
        return block_bits(c, x, m)
    if name == "small_dense":  # 32 bits per coordinate of a tensor under min_size, the inner count of the rest
        sizes = [int(n) for n in c.layers.split("+")]
        large = torch.cat([torch.full((n,), n >= c.min_size) for n in sizes])
        small_bits = 32 * int((~large).sum())
        if not large.any():
            return small_bits
        part = Message(c.inner.name, int(large.sum()), m.dtype, m.meta, m.body[small_bits // 8 :])
        return small_bits + expected_bits(c.inner, x[large], part)
    raise AssertionError(f"no formula for {name}")


def block_bits(c, x: torch.Tensor, m: Message) -> int:
    """The sum of the inner counts, read block by block out of the wrapper's body with Bits. Inner
    fields that depend on x (hard_threshold's nnz, Elias QSGD's nnz and code length, sparse
    dithering's length) open the body as the split Elias gamma codes of v + 1, and the header
    holds the body's length in bits; block b then takes exactly its inner count of bits."""
    inner, d = c.inner, x.numel()
    elias = inner.name == "qsgd" and inner.coding == "elias"
    fields = {"hard_threshold": 1, "sparse_dither": 1}.get(inner.name, 2 if elias else 0)
    r = Bits(body_of(m))
    blocks = x.split(blocks_of(c, d))
    sent = [v - 1 for v in r.gammas(fields * len(blocks))]
    total = sum(gamma(v + 1) for v in sent)
    for b, xb in enumerate(blocks):
        meta = tuple(sent[fields * b : fields * (b + 1)])
        if inner.name == "hard_threshold":
            assert meta == (int((xb.abs() >= inner.lam).sum()),)
        n = meta[0] * (32 + idx(xb.numel())) if inner.name == "hard_threshold" else None
        n = 32 + meta[1] if elias else meta[0] if inner.name == "sparse_dither" else n
        n = expected_bits(inner, xb, None) if n is None else n
        part = Message(inner.name, xb.numel(), m.dtype, meta, torch.tensor(list(r.take(n)), dtype=torch.uint8))
        assert expected_bits(inner, xb, part) == n
        total += n
    assert r.pos == (m.meta[-1] if fields else c.bits(m)) and len(body_of(m)) == -(-r.pos // 8)
    return total


def random_x(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = [1.0, 1e-3, 50.0][seed % 3]
    return scale * torch.randn(d, generator=g) * torch.rand(d, generator=g)


@pytest.mark.parametrize("spec", SPECS)
def test_bits_of_every_message_is_spec_count_and_body_length(spec):
    for d in DIMS:
        c = make(resolve(spec, d))
        for seed in range(3):
            x = random_x(d, 100 * d + seed)
            m = c.encode(x, torch.Generator().manual_seed(seed))
            bits = c.bits(m)
            assert m.body_len == math.ceil(bits / 8), (spec, d, seed)
            assert bits == expected_bits(c, x, m), (spec, d, seed)
            assert c.bits(c.from_bytes(m.to_bytes())) == bits
            assert c.bits(d) in (None, bits)


def test_sparse_dither_d1_is_the_papers_five_bytes():
    m = make("sparse_dither").encode(torch.tensor([0.7]))
    assert make("sparse_dither").bits(m) == 31 + 1 + 2 + 1 and m.body_len == 5  # gamma, n0, k = round(1/(2h)) = 2, sign
