"""Sparse dithering at the paper's count (SPEC 2.11, issue 12): the support within 0.1% of
log2 C(d, n0) plus a few bytes, the whole message's count, compiled == reference, malformed bodies."""

import math

import numpy as np
import pytest
import torch

from psgd.compress import make
from psgd.compress.base import Message
from psgd.errors import FrameError
from psgd.kernels import rans, rng
from psgd.wire.codes import BitReader, BitWriter

SLACK = 160  # bits: two 64-bit final rANS states, (1/2) log2(2 pi d p q) <= 11 bits (d <= 10^6), the raw tail


def log2_binomial(d: int, n0: int) -> float:
    """log2 C(d, n0) from math.lgamma, independently of the codec."""
    return (math.lgamma(d + 1) - math.lgamma(n0 + 1) - math.lgamma(d - n0 + 1)) / math.log(2)


def vector(d: int, n0: int, seed: int, heavy: bool) -> torch.Tensor:
    """n0 exact zeros among d (random places), the rest normal or heavy-tailed (Cauchy-like)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g)
    if heavy:
        x = x / torch.rand(d, generator=g).clamp_min(1e-3)
    x[torch.randperm(d, generator=g)[:n0]] = 0.0
    return x


def parts(c, x: torch.Tensor, m: Message) -> tuple[int, int, int]:
    """(n0, sum k_i, support bits) read off a message: the support is what follows gamma, n0,
    the unary codes and the signs."""
    d, (nbits,) = x.numel(), m.meta
    dense = c._parse_reference(m)
    n0 = int((dense.k == 0).sum())
    return n0, int(dense.k.sum()), nbits - 31 - d.bit_length() - int(dense.k.sum()) - (d - n0)


def densities(d: int) -> list[int]:
    """Zero counts for x (the codec's n0 also counts the k_i rounded to 0)."""
    return sorted({0, 1, d - 1, d, d // 2, d // 10, d - d // 10, d // 1000, d - d // 1000} & set(range(d + 1)))


@pytest.mark.parametrize("spec", ["sparse_dither:nu=0.1", "sparse_dither:nu=0.5", "sparse_dither:nu=0.1,random=true"])
@pytest.mark.parametrize("d", [1, 2, 15, 16, 17, 1000, 10**5, 10**6])
def test_support_at_the_enumerative_count(spec, d):
    c = make(spec)
    for n0 in densities(d):
        for heavy in (False, True):
            x = vector(d, n0, d + n0, heavy)
            m = c.encode(x, torch.Generator().manual_seed(n0))
            zeros, k, support = parts(c, x, m)
            assert support <= 1.001 * log2_binomial(d, zeros) + SLACK, (d, n0, zeros, support)
            assert support == 0 or 0 < zeros < d  # nothing for the support when n0 is 0 or d
            assert c.bits(m) == 31 + d.bit_length() + support + (d - zeros) + k
            assert m.body_len == -(-c.bits(m) // 8)


@pytest.mark.parametrize("d, p", [(10**6, 1e-6), (10**6, 1e-5), (10**6, 0.5), (10**6, 1 - 1e-5), (10**6, 1 - 1e-6)])
def test_support_near_p_0_and_1(d, p):
    """Quantised frequencies cost little at every share of zeros, one zero or one non-zero included."""
    c = make("sparse_dither:nu=0.1")
    x = vector(d, round(p * d), 3, False)
    zeros, _, support = parts(c, x, c.encode(x))
    assert support <= 1.001 * log2_binomial(d, zeros) + SLACK


@pytest.mark.parametrize("d", [17, 1000, 4099, 100003])
def test_round_trip_and_class_bound(d):
    for spec in ["sparse_dither:nu=0.1", "sparse_dither:nu=0.5", "sparse_dither:nu=0.3,random=true"]:
        c = make(spec)
        x = vector(d, d // 7, d, True)
        m = c.encode(x, torch.Generator().manual_seed(0))
        y = c.decode(c.from_bytes(m.to_bytes()))
        dense = c._parse_reference(m)
        want = torch.where(dense.neg, -1.0, 1.0) * dense.k.float() * dense.gamma
        assert torch.equal(y, want)
        if not c.random:  # C(nu): ||C(x) - x||^2 <= nu ||x||^2 surely
            assert float((y.double() - x.double()).square().sum()) <= c.nu * float(x.double().square().sum()) * (
                1 + 1e-6
            )


def edited(c, d: int, edit) -> bytes:
    """A message of d coordinates with its body's bits edited."""
    m = c.encode(vector(d, d // 3, d, False), torch.Generator().manual_seed(0))
    w = BitWriter("cpu")
    w.bits(edit(BitReader(m.body, m.meta[0], "t").bits(m.meta[0]).clone()))
    return Message(c.name, d, torch.float32, (w.nbits,), w.packed()).to_bytes()


@pytest.mark.parametrize("paths", ["compiled", "reference"])
@pytest.mark.parametrize("d", [40, 5000])
def test_malformed_bodies(d, paths, monkeypatch):
    if paths == "reference":
        monkeypatch.setenv("PSGD_KERNELS", "reference")
    c = make("sparse_dither:nu=0.1")
    head = 31 + d.bit_length()

    def at(where, value):
        def edit(b):
            b[where] = value
            return b

        return edit

    def flip(i):
        def edit(b):
            b[i] = ~b[i]
            return b

        return edit

    cases = [
        (at(slice(31, head), True), "zeros in d"),  # n0 > d
        (at(slice(23, 31), True), "bad scale"),
        (lambda b: b[:-1], "support|body ends"),  # truncated
        (lambda b: torch.cat([b, torch.zeros(16, dtype=torch.bool)]), "support"),  # a word too many
        (lambda b: torch.cat([b, torch.ones(1, dtype=torch.bool)]), "support|16-bit words"),
        (flip(-20), "support"),  # a flipped bit in the rANS words
        (at(slice(head, None), False), "ends inside a unary code"),
    ]
    for edit, message in cases:
        with pytest.raises(FrameError, match=message):
            c.from_bytes(edited(c, d, edit))


def test_rans_kernels_equal_references():
    """The compiled rANS coder (selects, no branches) writes the reference's words, and its decoder
    gives the reference's status, zeros and patterns on whole, bit-flipped, cut and random words."""
    rng = np.random.default_rng(0)
    for trial in range(400):
        d = int(rng.integers(16, 2000))
        n0 = int(rng.integers(1, d))
        patterns = ((rng.random((d // 16, 16)) < 1 - n0 / d) @ (1 << np.arange(16))).astype(np.uint16)
        words = rans.encode_support(patterns, n0, d).copy()
        assert np.array_equal(words, rans.encode_reference(patterns, n0, d))
        if trial % 4 == 1:
            words[rng.integers(0, words.size)] ^= np.uint16(1 << int(rng.integers(0, 16)))
        elif trial % 4 == 2:
            words = words[: rng.integers(0, words.size)]
        elif trial % 4 == 3:
            words = rng.integers(0, 2**16, rng.integers(0, 2 * patterns.size + 8)).astype(np.uint16)
        src = np.concatenate([words, np.zeros(2, np.uint16)])
        got, want = np.zeros_like(patterns), np.zeros_like(patterns)
        status = rans.decode_support(src, words.size, n0, d, got)
        assert status == rans.decode_reference(words, n0, d, want)
        assert status[0] != rans.OK or np.array_equal(got, want)
        if trial % 4 == 0:
            assert status[0] == rans.OK and np.array_equal(got, patterns)


def boundary_levels(d: int, u: torch.Tensor) -> torch.Tensor:
    """z_i = |x_i| gamma^-1 at and beside the draws' edges: u_i itself (k_i = 0, one ulp up 1),
    m + u_i rounded and its neighbours, half-integers (ties), a subnormal; all below 127 but in
    block 1 (of 2048), which holds 126.5 ... 300 too (the kernel's exact path for k_i >= 127)."""
    i = torch.arange(d)
    m = (i % 120).float()
    up, down = torch.full((d,), math.inf), torch.zeros(d)
    near = (m + u.double()).float()
    menu = [u, u.nextafter(up), u.nextafter(down), near, near.nextafter(up), near.nextafter(down), m + 0.5]
    z = torch.stack(menu + [torch.full((d,), 1e-42)])[i % 8, i]
    z[2048 : 2048 + 8] = torch.tensor([126.5, 126.99999, 127.0, 127.5, 128.5, 200.0, 300.25, 127.00001])
    return z


@pytest.mark.parametrize("random", [False, True])
def test_levels_at_the_draws_edges(random):
    """The compiled k_i (an integer carry in 32-bit lanes, clamped at 127, then exact) equal the
    reference's floor(z) + (u < z - floor(z)) and round(z) on exact boundaries (gamma = 1: z = |x|)."""
    c = make(f"sparse_dither:nu=1e-3,random={str(random).lower()}")  # k_max ~ 1100: no clamp
    d, key = 3 * 2048 + 37, 0xDEADBEEF12345678
    z = boundary_levels(d, rng.uniform_ref(key, d))
    x = torch.where(torch.arange(d) % 3 == 0, -z, z)
    gamma = torch.tensor(1.0)
    got, want = c._encode_compiled(x, gamma, key), c._encode_reference(x, gamma, key)
    assert got[0] == want[0] and torch.equal(got[1], want[1])
