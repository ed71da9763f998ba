"""The top-k family's compiled kernels against their torch references, bit for bit: selection
(top-k, threshold, inverse CDF), index packing, scatter, and the codecs' bytes, decodes and accumulates."""

import numpy as np
import pytest
import torch

from psgd import kernels
from psgd.compress import make
from psgd.errors import FrameError
from psgd.kernels import sparse, topk
from psgd.wire import pack_uint, unpack_uint

pytestmark = pytest.mark.skipif(not kernels.enabled(), reason="compiled kernels unavailable")

DIMS = [1, 2, 7, 8, 9, 31, 33, 1000, 4099, 100003]


def data(kind: str, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        return torch.randn(d, generator=g)
    if kind == "ties":  # few distinct magnitudes, both signs and both zeros
        x = torch.randint(-3, 4, (d,), generator=g).float()
        return torch.where(torch.rand(d, generator=g) < 0.5, x, -x)
    if kind == "zeros":
        return torch.where(torch.rand(d, generator=g) < 0.5, 0.0, -0.0)
    if kind == "subnormal":
        return torch.randint(-5, 6, (d,), generator=g).float() * 1e-45
    return torch.randn(d, generator=g) * 3e38 / 5  # huge


KINDS = ["normal", "ties", "zeros", "subnormal", "huge"]


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bits (so -0.0 differs from 0.0)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return torch.equal(a.view(torch.int32), b.view(torch.int32)) if a.dtype == torch.float32 else torch.equal(a, b)


def ks(d: int) -> list[int]:
    return sorted({1, max(1, d // 100), max(1, d // 3), d})


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kind", KINDS)
def test_top_k_is_the_reference(d, kind):
    for seed in range(2):
        x = data(kind, d, seed)
        for k in ks(d):
            idx, values = topk.top_k(x, k)
            ref_idx, ref_values = topk.top_k_ref(x, k)
            assert torch.equal(idx, ref_idx) and same(values, ref_values), (d, kind, k)


@pytest.mark.parametrize("kind", KINDS)
def test_top_k_keeps_the_largest_and_the_lowest_ties(kind):
    """k ascending indices; every kept |x| >= every dropped |x|; among ties at the threshold the lowest indices."""
    x = data(kind, 4099, 7)
    a = x.abs()
    for k in ks(4099):
        idx, values = topk.top_k(x, k)
        assert idx.numel() == k and bool((idx[1:] > idx[:-1]).all()) and same(values, x[idx])
        dropped = torch.ones(4099, dtype=torch.bool)
        dropped[idx] = False
        if k < 4099:
            t = a[idx].min()
            assert bool((a[dropped] <= t).all())
            tied_dropped = torch.nonzero(dropped & (a == t)).view(-1)
            tied_kept = idx[a[idx] == t]
            assert not tied_dropped.numel() or int(tied_kept.max()) < int(tied_dropped.min())


def test_top_k_from_a_sampled_floor_and_when_the_sample_misleads():
    """From 2^17 coordinates a strided sample (stride n >> 15 = 4 here) sets a floor: exact whether
    the floor holds, leaves fewer than k above it, or far more than the sample promised."""
    d = 2**17 + 5
    normal = data("normal", d, 9)
    fewer = normal.clone()
    fewer[::4][:400] = 1e3  # the sample's top is denser than x's: 400 < k above the floor
    more = torch.full((d,), 1e-30)
    more[::4][:400] = 2.0
    more[1::4] = 2.001  # unsampled, in the floor's bin: far more than the sample promised
    for x in (normal, fewer, more):
        for k in (1, 100, 1000, 3000):
            idx, values = topk.top_k(x, k)
            ref_idx, ref_values = topk.top_k_ref(x, k)
            assert torch.equal(idx, ref_idx) and same(values, ref_values), k


def test_top_k_of_other_dtypes_takes_the_reference():
    x = data("ties", 1000, 3).double()
    idx, values = topk.top_k(x, 10)
    assert torch.equal(idx, topk.top_k_ref(x, 10)[0]) and values.dtype == torch.float64


@pytest.mark.parametrize("d", DIMS)
def test_at_least_is_the_reference(d):
    for kind in KINDS:
        x = data(kind, d, 1)
        # a lam fp32 cannot hold: both round it to fp32 as torch's comparison does
        for lam in (0.0, 1.0, float(np.float32(0.5)) + 1e-12, 1e-45, 1e38):
            idx, values = topk.at_least(x, lam)
            ref_idx, ref_values = topk.at_least_ref(x, lam)
            assert torch.equal(idx, ref_idx) and same(values, ref_values), (d, kind, lam)


@pytest.mark.parametrize("d", DIMS)
def test_inverse_cdf_is_the_reference(d):
    for kind in ["normal", "ties", "zeros", "huge"]:
        for dtype in (torch.float32, torch.float64):
            x = data(kind, d, 2).to(dtype)
            for u in [0.0, 0.25, 0.5, 1 - 2**-53, *torch.rand(8, generator=torch.Generator().manual_seed(d)).tolist()]:
                u = torch.tensor([u], dtype=torch.float64)
                assert torch.equal(topk.inverse_cdf(x, u), topk.inverse_cdf_ref(x, u)), (d, kind, dtype)


@pytest.mark.parametrize("width", [1, 3, 8, 13, 24, 31, 32, 33, 41, 56])
def test_pack_and_unpack_are_pack_uint(width):
    g = torch.Generator().manual_seed(width)
    for n in (1, 7, 8, 9, 1000, 4099):
        v = torch.randint(0, 2**width, (n,), generator=g, dtype=torch.int64)
        packed = sparse.pack(v, width)
        assert torch.equal(packed, pack_uint(v, width))
        assert torch.equal(unpack_uint(packed, n, width), v)
        # as indices << shift | codes: sorted distinct indices only
        shift = width // 2
        idx = torch.unique(v >> shift)
        joint = (idx << shift) | (torch.arange(idx.numel()) % (1 << shift))
        got = sparse.unpack_indices("t", sparse.pack(joint, width), idx.numel(), width, 2**width, shift)
        assert torch.equal(got[0], idx) and torch.equal(got[1], joint & ((1 << shift) - 1) if shift else got[1])


@pytest.mark.parametrize("reference", [False, True])
def test_unpack_refuses_indices_no_encoder_writes(monkeypatch, reference):
    if reference:
        monkeypatch.setenv("PSGD_KERNELS", "reference")
    for idx, why in (([1, 2, 9], "out of range"), ([1, 3, 3], "strictly ascending"), ([4, 2, 5], "strictly ascending")):
        packed = pack_uint(torch.tensor(idx), 4)
        with pytest.raises(FrameError, match=f"t: .*{why}"):
            sparse.unpack_indices("t", packed, 3, 4, 9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scatter_is_the_reference(dtype):
    g = torch.Generator().manual_seed(0)
    for d in DIMS:
        idx = torch.unique(torch.randint(0, d, (max(1, d // 3),), generator=g))
        values = (torch.randn(idx.numel(), generator=g) * 1e3).to(dtype)
        values[0] = -0.0
        base = torch.randn(d, generator=g).to(dtype)
        for weight, add in ((1.0, False), (1.0, True), (-1.0, True), (0.5, True), (0.3, True)):
            a, b = base.clone(), base.clone()
            sparse.scatter(a, idx, values, weight, add)
            sparse._scatter_ref(b, idx, values, weight, add)
            assert torch.equal(a, b) and torch.equal(a.signbit(), b.signbit()), (d, weight, add)


SPECS = [
    "topk:ratio=0.01",
    "topk:ratio=0.3",
    "topk:k=1",
    "topk_natural:ratio=0.05",
    "topk_natural:ratio=0.3,scaled=false",
    "topk_dither:ratio=0.05,s=4",
    "hard_threshold:lam=0.8",
    "adaptive_rand",
]


def run(spec: str, x: torch.Tensor):
    """(bytes, decode, accumulates with weights 1, -1, 0.5, the encoder's own accumulate, its C(x))."""
    c = make(spec)
    m = c.encode(x, torch.Generator().manual_seed(5))
    r = c.from_bytes(m.to_bytes())
    base = torch.linspace(-1, 1, x.numel(), dtype=x.dtype)
    acc = [c.accumulate(r, base.clone(), w) for w in (1.0, -1.0, 0.5)]
    own = c.accumulate(m, base.clone(), -1.0)
    _, rec = c.encode_reconstruct(x, torch.Generator().manual_seed(5))
    return m.to_bytes(), c.decode(r), acc, own, rec


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("d", DIMS)
def test_codecs_are_the_reference(monkeypatch, spec, d):
    for kind in ("normal", "ties"):
        for dtype in (torch.float32, torch.float64):
            x = data(kind, d, 4).to(dtype)
            data_bytes, y, acc, own, rec = run(spec, x)
            monkeypatch.setenv("PSGD_KERNELS", "reference")
            ref_bytes, ref_y, ref_acc, ref_own, ref_rec = run(spec, x)
            monkeypatch.delenv("PSGD_KERNELS")
            assert data_bytes == ref_bytes and same(y, ref_y) and same(rec, ref_rec) and same(own, ref_own)
            assert all(same(a, b) for a, b in zip(acc, ref_acc, strict=True))
            # the encoder's parts are the decoder's: C(x) from either, accumulate(m, e, -1) from either
            assert same(rec, y) and same(own, acc[1])
            assert same(acc[0], torch.linspace(-1, 1, d, dtype=dtype) + y)


@pytest.mark.parametrize("spec", ["topk:ratio=0.1", "topk_dither:ratio=0.1", "hard_threshold:lam=0.5"])
def test_bodies_read_in_place_at_any_alignment(spec):
    c = make(spec)
    x = data("normal", 1000, 6)
    m = c.encode(x, torch.Generator().manual_seed(0))
    for pad in range(4):  # the body starts at every offset mod 4 of a writable receive buffer
        r = c.from_bytes(memoryview(bytearray(pad) + bytearray(m.to_bytes()))[pad:])
        assert same(c.decode(r), c.decode(m)) and same(
            c.accumulate(r, torch.ones(1000)), c.accumulate(m, torch.ones(1000))
        )
