"""bits(message) is the papers' count: checked against formulas written here from SPEC's table
(section 2.14), never the codec's own method, for every compressor, many d and random x."""

import math

import pytest
import torch
from compress_specs import SPECS, resolve

from psgd.compress import make
from psgd.compress.base import Message
from psgd.compress.spherical import candidates, cap_probability

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


def wire_norm(m: Message) -> float:
    return float(m.body[:4].view(torch.float32))


def elias_bits(c, m: Message) -> int:
    """QSGD Thm 3.2's code: the fp32 norm, then per nonzero level the Elias gamma of the gap to the
    previous one, a sign bit and the Elias gamma of the level."""
    y = c.decode(m).double().abs()
    levels = torch.round(y * c.s / wire_norm(m)).long()
    pos = torch.nonzero(levels).view(-1).tolist()
    gaps = [b - a for a, b in zip([-1, *pos], pos, strict=False)]
    return 32 + sum(gamma(g) + 1 + gamma(int(levels[i])) for g, i in zip(gaps, pos, strict=True))


def sparse_dither_bits(c, x: torch.Tensor, m: Message) -> int:
    """Paper 2's SD: gamma in 31 bits, the d signs at log2 3 bits each (29 to 46 bits, the last m
    in ceil(m log2 3)), each k_i > 0 in unary (k_i bits)."""
    d = x.numel()
    g = float(torch.tensor(2 * math.sqrt(c.nu / d) * float(x.double().norm())).float())
    k = torch.round(c.decode(m).double().abs() / g) if g > 0 else torch.zeros(d)
    return 31 + 46 * (d // 29) + math.ceil(d % 29 * math.log2(3)) + int(k.sum())


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
            return elias_bits(c, m)
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
        # the sum of the inner counts; x-dependent block fields as Elias gamma codes of v + 1
        total = 0
        for xb, part in zip(x.split(blocks_of(c, d)), c._parts(m), strict=True):
            inner = expected_bits(c.inner, xb, part)
            total += inner
            if c.inner.name == "hard_threshold":
                total += gamma(int((xb.abs() >= c.inner.lam).sum()) + 1)
            elif c.inner.name == "qsgd" and c.inner.coding == "elias":
                total += gamma(int(torch.count_nonzero(c.inner.decode(part))) + 1) + gamma(inner - 32 + 1)
            elif c.inner.name == "sparse_dither":
                total += gamma(inner + 1)
        return total
    if name == "small_dense":  # 32 bits per coordinate of a tensor under min_size, the inner count of the rest
        sizes = [int(n) for n in c.layers.split("+")]
        large = torch.cat([torch.full((n,), n >= c.min_size) for n in sizes])
        small_bits = 32 * int((~large).sum())
        if not large.any():
            return small_bits
        part = Message(c.inner.name, int(large.sum()), m.dtype, m.meta, m.body[small_bits // 8 :])
        return small_bits + expected_bits(c.inner, x[large], part)
    raise AssertionError(f"no formula for {name}")


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
    assert make("sparse_dither").bits(m) == 31 + 2 + 2 and m.body_len == 5  # gamma, one sign, k = round(1/(2h)) = 2
