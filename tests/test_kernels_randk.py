"""Rand-k's index draw: the compiled kernel against its torch reference bit for bit, the draw's
definition (the first k distinct candidates, or the complement of the first d - k), uniformity of
the subsets over seeds, and rand-k's bytes, decodes and accumulates with the kernels on and off."""

import math
from collections import Counter

import pytest
import torch

from psgd import kernels
from psgd.compress import make
from psgd.compress.randk import random_subset
from psgd.compress.randomness import seed_key
from psgd.errors import FrameError
from psgd.kernels import randk
from psgd.kernels.rng import hash_ref
from psgd.wire import pack_uint

pytestmark = pytest.mark.skipif(not kernels.enabled(), reason="compiled kernels unavailable")

DIMS = [1, 2, 7, 8, 9, 31, 33, 1000, 4099, 100003]
KEYS = [0, 1, 2**64 - 1, seed_key(0), seed_key(2**32 - 1), 0x0123456789ABCDEF]
SPECS = ["randk:ratio=0.1", "randk:ratio=0.6,scaled=false", "randk:k=3,shared_seed=false", "randk:ratio=0.01"]


def ks(d: int) -> list[int]:
    """k = 1, about 1%, d/2 and either side of it (where the complement takes over), d - 1 and d."""
    return sorted({1, max(1, d // 100), d // 2 or 1, d // 2 + 1 if d > 1 else 1, max(1, d - 1), d})


def data(kind: str, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "zeros":
        return torch.where(torch.rand(d, generator=g) < 0.5, 0.0, -0.0)
    if kind == "subnormal":
        return torch.randint(-5, 6, (d,), generator=g).float() * 1e-45
    if kind == "huge":  # x d/k stays within fp32 for every k here
        return torch.randn(d, generator=g) * 1e30
    if kind == "ties":
        return torch.randint(-2, 3, (d,), generator=g).float()
    return torch.randn(d, generator=g)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32) if t.dtype == torch.float32 else t


@pytest.mark.parametrize("d", DIMS)
def test_compiled_subset_is_the_reference(d):
    for key in KEYS:
        for k in ks(d):
            s = randk.subset(key, d, k)
            assert torch.equal(s, randk.subset_ref(key, d, k)), (d, k, key)
            assert s.numel() == k and bool((s[1:] > s[:-1]).all()) and int(s[0]) >= 0 and int(s[-1]) < d


def test_torch_draw_is_the_compiled_draw_over_many_keys_and_sizes():
    """The torch draw (CUDA's path, in fixed-size steps) gives the pinned indices: the compiled
    kernel's, whose definition the tests below check."""
    g = torch.Generator().manual_seed(1)
    for _ in range(300):
        key = int(torch.randint(0, 2**62, (), generator=g)) * 4 + 3
        d = int(torch.randint(1, 5000, (), generator=g))
        k = int(torch.randint(1, d + 1, (), generator=g))
        assert torch.equal(randk.subset_ref(key, d, k), randk.subset(key, d, k)), (key, d, k)


def test_a_first_batch_that_falls_short_draws_again(monkeypatch):
    monkeypatch.setattr(randk, "enough", lambda d, m: 1)
    for d in DIMS[:-1]:
        for k in ks(d):
            assert torch.equal(randk.subset_ref(KEYS[3], d, k), randk.subset(KEYS[3], d, k)), (d, k)


@pytest.mark.parametrize("d", [2, 9, 64, 1000, 4099])
def test_the_first_batch_holds_enough_distinct_candidates(d):
    """So that a draw reads the device once: every key tried finds m distinct in its first batch."""
    for key in range(200):
        for k in ks(d):
            m = min(k, d - k)
            n = randk.enough(d, m)
            assert not m or int(randk.first_distinct(randk.candidates_ref(key, 0, n, d, "cpu"), m)[1]) >= m


def test_subset_is_the_first_distinct_candidates_or_their_complement():
    for d in [1, 5, 64, 65, 200]:
        c = randk.candidates_ref(7, 0, 40 * d, d, "cpu").tolist()
        assert min(c) >= 0 and max(c) < d
        order = list(dict.fromkeys(c))  # distinct candidates in draw order
        for k in range(1, d + 1):
            m = min(k, d - k)
            want = sorted(order[:m]) if m == k else sorted(set(range(d)) - set(order[:m]))
            assert randk.subset(7, d, k).tolist() == want


def test_candidates_are_floor_of_the_53_bit_uniform_times_d():
    key, d = 0xDEADBEEF12345678, 11_173_962
    c = randk.candidates_ref(key, 5, 4, d, "cpu").tolist()
    for j, cj in zip(range(5, 9), c, strict=True):
        hi = int(hash_ref(key, torch.tensor(2 * j))) >> 5
        lo = int(hash_ref(key, torch.tensor(2 * j + 1))) >> 6
        assert cj == math.floor(((hi << 26) + lo) * 2.0**-53 * d)


def chi_square(counts: list[int], expected: float) -> float:
    return sum((c - expected) ** 2 / expected for c in counts)


def chi_square_bound(dof: int) -> float:
    """About the 0.9999 quantile of chi-square(dof) (Wilson-Hilferty with z = 3.72): a fair draw
    fails it once in 10^4 runs, and the seeds are fixed."""
    z = 3.72
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


@pytest.mark.parametrize(("d", "k"), [(50, 5), (50, 40), (1000, 10)])
def test_index_frequencies_are_uniform_over_seeds(d, k):
    """Each coordinate is kept with probability k/d: chi-square of the counts over n seeds, d - 1 dof."""
    n = 4000
    counts = torch.zeros(d, dtype=torch.int64)
    for seed in range(n):
        counts[random_subset(d, k, seed)] += 1
    assert int(counts.sum()) == n * k
    # k distinct indices per seed: the counts' covariance is n p (1 - p) d/(d - 1) times a projection of rank d - 1
    stat = chi_square(counts.tolist(), n * k / d) * (d - 1) / (d * (1 - k / d))
    assert stat <= chi_square_bound(d - 1), stat


@pytest.mark.parametrize(("d", "k"), [(6, 2), (6, 4), (7, 3)])
def test_every_subset_is_equally_likely(d, k):
    n = 6000
    seen = Counter(tuple(random_subset(d, k, seed).tolist()) for seed in range(n))
    subsets = math.comb(d, k)
    assert len(seen) == subsets
    assert chi_square(list(seen.values()), n / subsets) <= chi_square_bound(subsets - 1)


def test_nearby_seeds_draw_unrelated_subsets():
    """Seeds differing in one bit share about k^2/d indices, as independent draws do."""
    d, k = 100_000, 1000
    base = set(random_subset(d, k, 0).tolist())
    for seed in [1, 2, 2**31, 2**32 - 1]:
        shared = len(base & set(random_subset(d, k, seed).tolist()))
        assert shared <= 40, (seed, shared)  # mean k^2/d = 10


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kind", ["normal", "zeros", "subnormal", "huge", "ties"])
def test_messages_decodes_and_accumulates_are_the_reference(d, kind, monkeypatch):
    x = data(kind, d, d)
    out0 = data("normal", d, 1)
    for spec in SPECS:
        c = make(spec)
        m = c.encode(x, torch.Generator().manual_seed(d))
        data_bytes = m.to_bytes()
        fast = c.from_bytes(data_bytes)
        results = [c.decode(fast)] + [c.accumulate(fast, out0.clone(), w) for w in (1.0, -1.0, 0.5)]
        monkeypatch.setenv("PSGD_KERNELS", "reference")
        assert c.encode(x, torch.Generator().manual_seed(d)).to_bytes() == data_bytes, (spec, d, kind)
        ref = c.from_bytes(data_bytes)
        expected = [c.decode(ref)] + [c.accumulate(ref, out0.clone(), w) for w in (1.0, -1.0, 0.5)]
        monkeypatch.delenv("PSGD_KERNELS")
        for a, b in zip(results, expected, strict=True):
            assert torch.equal(bits(a), bits(b)), (spec, d, kind)
        assert torch.equal(bits(results[1]), bits(out0 + results[0]))  # weight 1: out + decode(m)


def test_encode_reconstruct_is_the_decode():
    x = data("normal", 4099, 3)
    for spec in SPECS:
        c = make(spec)
        m, rec = c.encode_reconstruct(x, torch.Generator().manual_seed(1))
        assert torch.equal(bits(rec), bits(c.decode(c.from_bytes(m.to_bytes()))))


def test_sent_indices_must_ascend():
    c = make("randk:k=2,shared_seed=false")
    m = c.encode(torch.arange(1.0, 9.0), torch.Generator().manual_seed(0))
    i0, i1 = m.parsed[1].tolist()
    body = torch.cat([m.body[:8], pack_uint(torch.tensor([i1, i0]), 3)])
    with pytest.raises(FrameError, match="randk: indices not strictly ascending"):
        c.from_bytes(m.header() + body.numpy().tobytes())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draws_the_same_subsets_and_bytes():
    for d in [7, 4099, 100003]:
        for k in ks(d):
            assert torch.equal(randk.subset_ref(5, d, k, "cuda").cpu(), randk.subset(5, d, k))
    x = data("normal", 100003, 0)
    for spec in SPECS:
        c = make(spec)
        cpu = c.encode(x, torch.Generator().manual_seed(2))
        gpu = c.encode(x.cuda(), torch.Generator().manual_seed(2))
        assert gpu.to_bytes() == cpu.to_bytes()
        assert torch.equal(c.decode(c.from_bytes(cpu.to_bytes(), "cuda")).cpu(), c.decode(cpu))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_torch_draw_is_the_compiled_draw_over_many_keys():
    g = torch.Generator().manual_seed(2)
    for _ in range(100):
        key, d = int(torch.randint(0, 2**62, (), generator=g)), int(torch.randint(1, 200_000, (), generator=g))
        k = int(torch.randint(1, d + 1, (), generator=g))
        assert torch.equal(randk.subset_ref(key, d, k, "cuda").cpu(), randk.subset(key, d, k)), (key, d, k)
