"""psgd.kernels.dither: the compiled random dithering kernels (fixed-length and Elias codes)
against their torch references, bit for bit (message bytes, decode, accumulate), over sizes,
seeds and edge values; the norm kernel; the CUDA path through the Triton kernels."""

from __future__ import annotations

import math
import os

import numba
import numpy as np
import pytest
import torch
from kernel_checks import outputs, same_bits

from psgd.compress import make
from psgd.compress.dithering import wire_norm
from psgd.errors import FrameError, NonFiniteError
from psgd.kernels import rng
from psgd.kernels.dither import (
    dither_encode_kernel,
    dither_into,
    dither_into_kernel,
    dither_pair_into,
    dither_pair_kernel,
    dither_sparse_kernel,
    width,
)
from psgd.kernels.rng import block_key, random24_in
from psgd.wire.bits import pack_uint

SIZES = [1, 2, 7, 8, 9, 31, 33, 1000, 4099, 100003]
SPECS = [
    "qsgd:s=16",
    "qsgd:p=inf,s=3",
    "qsgd:s=127",
    "terngrad",
    "natural_dither:s=8",
    "natural_dither:p=2,s=5",
    "natural_dither:s=127",
    "qsgd:s=16,coding=elias",
    "qsgd:p=inf,s=3,coding=elias",
    "qsgd:s=3000,coding=elias",
]


def vector(d: int, seed: int) -> torch.Tensor:
    """Normal draws over a few scales, with zeros, negative zeros, subnormals and a tie at the max."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g) * torch.exp2(torch.randint(-8, 8, (d,), generator=g).float())
    edges = torch.tensor([0.0, -0.0, 1e-45, -3e-39, 300.0, -300.0, 0.5, 2.0**-20])
    x[: min(d, edges.numel())] = edges[: min(d, edges.numel())]
    return x[torch.randperm(d, generator=g)]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("d", SIZES)
def test_compiled_equals_reference(monkeypatch, spec, d):
    c = make(spec)
    for seed in range(2):
        x = vector(d, seed) if seed else vector(d, seed) * 0  # all zeros: norm 0
        start = torch.randn(d, generator=torch.Generator().manual_seed(seed + 10))

        raw, dec, into, accs = outputs(c, x, seed, start)
        monkeypatch.setenv("PSGD_KERNELS", "reference")
        raw_r, dec_r, into_r, accs_r = outputs(c, x, seed, start)
        monkeypatch.delenv("PSGD_KERNELS")
        assert raw == raw_r
        assert same_bits(dec, dec_r) and same_bits(into, dec_r) and same_bits(into_r, dec_r)
        assert all(same_bits(a, b) for a, b in zip(accs, accs_r, strict=True))
        assert torch.equal(accs[0], start + dec_r)  # weight 1: the floats of out + decode


@pytest.mark.parametrize("spec", ["qsgd:s=1", "qsgd:s=5", "qsgd:s=16", "qsgd:p=inf,s=1", "qsgd:p=inf,s=5",
                                  "qsgd:p=inf,s=16", "terngrad", "natural_dither:s=8", "natural_dither:p=2,s=5",
                                  "qsgd:s=5,coding=elias"])  # fmt: skip
@pytest.mark.parametrize("d", [1, 33, 4099, 10007])
@pytest.mark.parametrize("mode", ["", "reference"])
def test_encode_reconstruct_is_the_decode_of_its_message(monkeypatch, spec, d, mode):
    """encode_reconstruct's C(x), written by the encoding pass from each block's codes, is
    decode(encode(x)) bit for bit and its message the same bytes, on the compiled and the reference
    paths, for fp32 and the dtypes the references take; with zeros, -0, subnormals, ties at the norm
    and on level boundaries, and x = 0 (norm 0)."""
    monkeypatch.setenv("PSGD_KERNELS", mode)
    c = make(spec)
    s = getattr(c, "s", 1)
    xs = [vector(d, 1), vector(d, 2) * 0, boundaries(s)[:d]]
    xs += [x.to(dtype) for x in xs[:1] for dtype in (torch.float64, torch.float16)]
    for seed, x in enumerate(xs):
        m, q = c.encode_reconstruct(x, torch.Generator().manual_seed(seed), torch.full_like(x, 7.0))
        ref = c.encode(x, torch.Generator().manual_seed(seed))
        dec = c.decode(ref)
        assert m.to_bytes() == ref.to_bytes()
        assert q.dtype == dec.dtype and torch.equal(q.view(torch.uint8), dec.view(torch.uint8))  # bits of any width


@pytest.mark.parametrize("spec", ["qsgd:s=1", "qsgd:s=16", "qsgd:p=inf,s=5", "terngrad", "natural_dither:s=8",
                                  "natural_dither:p=2,s=5", "qsgd:s=5,coding=elias"])  # fmt: skip
@pytest.mark.parametrize("d", [1, 33, 4095, 4096, 4099, 10007])
@pytest.mark.parametrize("with_out", [False, True])
@pytest.mark.parametrize("mode", ["", "reference"])
def test_encode_feedback_leaves_the_error_by_the_encoding_pass(monkeypatch, spec, d, with_out, mode):
    """encode_feedback's x <- x - C(x), written by the encoding pass, is the floats of accumulate(m, x, -1)
    (x.sub_(C(x)) with out) bit for bit and its message encode's bytes, with C(x) into out where given;
    across block edges, for fp32 and the dtypes the references take, and x = 0 (norm 0)."""
    monkeypatch.setenv("PSGD_KERNELS", mode)
    c = make(spec)
    s = getattr(c, "s", 1)
    xs = [vector(d, 1), vector(d, 2) * 0, boundaries(s)[:d]]
    xs += [x.to(dtype) for x in xs[:1] for dtype in (torch.float64, torch.float16)]
    for seed, x in enumerate(xs):
        ref = c.encode(x, torch.Generator().manual_seed(seed))
        want = x.clone()
        if with_out:
            want.sub_(c.decode(ref))
        else:
            c.accumulate(ref, want, -1.0)
        got = x.clone()
        out = torch.full_like(x, 7.0) if with_out else None
        m, q = c.encode_feedback(got, torch.Generator().manual_seed(seed), out)
        assert m.to_bytes() == ref.to_bytes()
        assert torch.equal(got.view(torch.uint8), want.view(torch.uint8))
        assert q is out and (q is None or torch.equal(q.view(torch.uint8), c.decode(ref).view(torch.uint8)))


@pytest.mark.parametrize("spec", ["qsgd:s=16", "natural_dither:p=2,s=5"])
def test_encode_feedback_refuses_an_overflowing_norm_before_touching_x(spec):
    x = torch.full((100,), 3e38)
    before = x.clone()
    with pytest.raises(NonFiniteError, match="overflows fp32"):
        make(spec).encode_feedback(x, torch.Generator().manual_seed(0))
    assert torch.equal(x, before)


def boundaries(s: int) -> torch.Tensor:
    """Magnitudes of norm 1 (p = inf) on and beside every level boundary of uniform and natural
    dithering with s levels, both signs, and the subnormal and tiny values whose s y underflows."""
    k = torch.arange(s + 1, dtype=torch.float32)
    at = torch.cat([k / s, torch.exp2(-k), torch.tensor([2.0**-149, 2.0**-140, 3e-39, 2.0**-126])])
    near = torch.cat([at, torch.nextafter(at, torch.tensor(0.0)), torch.nextafter(at, torch.tensor(1.0))])
    near = near[near <= 1].repeat(40)  # many draws per magnitude
    return torch.cat([torch.ones(1), near, -near, torch.tensor([-0.0, 0.0])])


@pytest.mark.parametrize("spec", ["qsgd:p=inf,s=16", "qsgd:p=inf,s=127", "terngrad", "natural_dither:s=8",
                                  "natural_dither:s=127", "qsgd:p=inf,s=5,coding=elias"])  # fmt: skip
def test_boundaries_compiled_equals_reference(monkeypatch, spec):
    """The kernels' carry forms of the draw, (ceil(Q) + 2^24 - 1 - r) >> 24, against the reference's
    u < frac on exact level boundaries, one ulp either side and where s y is subnormal."""
    c = make(spec)
    x = boundaries(c.s)
    for seed in range(3):
        raw = c.encode(x, torch.Generator().manual_seed(seed)).to_bytes()
        monkeypatch.setenv("PSGD_KERNELS", "reference")
        assert c.encode(x, torch.Generator().manual_seed(seed)).to_bytes() == raw
        monkeypatch.delenv("PSGD_KERNELS")
    assert not (dither_encode_kernel.broken or dither_sparse_kernel.broken)  # the compiled path ran


def draws24(seed: int, d: int) -> torch.Tensor:
    """r(i) = u(i) 2^24 (float64) of the key that an encode with Generator seed draws."""
    return rng.uniform_ref(rng.draw_key(torch.Generator().manual_seed(seed)), d).double() * 2**24


@pytest.mark.parametrize("spec", ["qsgd:p=inf,s=16", "qsgd:p=inf,s=5", "terngrad", "natural_dither:s=8",
                                  "qsgd:p=inf,s=5,coding=elias"])  # fmt: skip
def test_draws_on_the_fractions(monkeypatch, spec):
    """x_i placed so that the fraction each u(i) is compared with is u(i) or half a 2^-24 step either
    side (uniform: s y = level + (r(i) + delta) 2^-24; natural: y = 2^(level - s)(1 + (r(i) + 2 delta)
    2^-24), or (r(i) + delta) 2^(-s-23) below 2^(1-s)): rounding up on a tie or one step off shows."""
    c, d, seed = make(spec), 3000, 4
    r = draws24(seed, d)
    delta = torch.tensor([-0.5, 0.0, 0.5], dtype=torch.float64).repeat(d)[:d]
    level = (torch.arange(d) % c.s).double()
    if c.natural:
        above = torch.exp2(level - c.s) * (1 + (r + 2 * delta) * 2.0**-24)
        y = torch.where(level == 0, (r + delta) * 2.0 ** (-c.s - 23), above)
    else:
        y = (level * 2**24 + r + delta) / (c.s * 2**24)
    x = (y * torch.where(torch.arange(d) % 2 == 0, 1.0, -1.0)).float()
    x[0] = 1.0  # ||x||_inf = 1: y_i = |x_i|
    raw = c.encode(x, torch.Generator().manual_seed(seed)).to_bytes()
    monkeypatch.setenv("PSGD_KERNELS", "reference")
    assert c.encode(x, torch.Generator().manual_seed(seed)).to_bytes() == raw


def test_block_draws_are_the_reference():
    """random24_in with block_key (the encode kernels' draws) is random24 for every counter of a
    block, blocks up to the last 32-bit word."""
    for key in (0, 2**64 - 1, 0xDEADBEEF12345678):
        for start in (0, 4096, 2**16 - 4096, 2**31 - 4096, 2**32 - 4096):
            assert torch.equal(
                torch.from_numpy(block_draws(*rng.split(key), start)), rng.uniform_ref(key, 4096, start=start)
            )


@numba.njit
def block_draws(k0, k1, start):
    r = np.empty(4096, np.float32)
    at, kb = np.int32(start), block_key(k0, start)
    for j in range(4096):
        r[j] = np.float32(random24_in(kb, k1, at + j)) * np.float32(2.0**-24)
    return r


@pytest.mark.parametrize("p", [2.0, math.inf])
def test_norm_kernel(monkeypatch, p):
    """||x||_p: the float64 sum of squares (or the max) of the compiled kernel is the reference's
    fp32 wire norm, NaN for NaN input, +0 for zeros of either sign."""
    cases = [vector(d, seed) for d in SIZES for seed in range(3)]
    cases += [
        torch.tensor([-0.0, 0.0, -0.0]),
        torch.tensor([1e-45]),
        torch.tensor([3e38, -3e38]),
        torch.full((77,), -2.5),
    ]
    for x in cases:
        exact, norm = wire_norm(x, p)
        monkeypatch.setenv("PSGD_KERNELS", "reference")
        exact_r, norm_r = wire_norm(x, p)
        monkeypatch.delenv("PSGD_KERNELS")
        assert exact.dtype == torch.float64 and same_bits(norm, norm_r)
        assert float(exact) == pytest.approx(float(exact_r), rel=1e-14) and not math.copysign(1, float(exact)) < 0
        assert float(norm) >= float(torch.linalg.vector_norm(x.double(), ord=p))  # rounded up
    for bad in (float("nan"), float("inf")):
        x = torch.ones(100)
        x[57] = bad
        assert not math.isfinite(float(wire_norm(x, p)[0]))


def test_cuda_path_takes_the_triton_kernels(monkeypatch):
    """On CUDA the dispatchers launch psgd.kernels.triton.dither; without a GPU that runs in Triton's
    interpreter on CPU tensors, available() forced: the same bytes and floats as the CPU kernels."""
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are defined
    pytest.importorskip("triton")
    from psgd.kernels import triton as gpu

    device = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
    expected = {}
    for spec in ("qsgd:s=16", "terngrad", "natural_dither:s=8"):
        for d in (9, 1000):
            expected[spec, d] = outputs(
                make(spec), vector(d, 1), 1, torch.randn(d, generator=torch.Generator().manual_seed(2))
            )
    if device == "cpu":
        monkeypatch.setattr(gpu, "available", lambda t: True)
    for (spec, d), (raw, dec, into, accs) in expected.items():
        c = make(spec)
        start = torch.randn(d, generator=torch.Generator().manual_seed(2))
        m = c.encode(vector(d, 1).to(device), torch.Generator(device).manual_seed(1))
        assert m.to_bytes() == raw
        parsed = c.from_bytes(bytearray(raw), device)
        assert same_bits(c.decode(parsed).cpu(), dec)
        assert same_bits(c.decode_into(parsed, torch.full((d,), 7.0, device=device)).cpu(), into)
        for w, acc in zip((1.0, -1.0, 0.5), accs, strict=True):
            assert same_bits(c.accumulate(parsed, start.to(device, copy=True), w).cpu(), acc)


@pytest.mark.parametrize("i", [0, 4999, 9000])  # the first, a middle (chunk 1) and the last code
@pytest.mark.parametrize("spec", ["qsgd:s=16", "natural_dither:s=8", "qsgd:p=inf,s=5"])
def test_level_above_s_refused_on_both_paths(monkeypatch, spec, i):
    """A code of level 2^(w-1) - 1 > s is refused by the checking parse, and, where the parse leaves
    the check to the pass that reads the codes (check_body=False, as the server parses), by each
    decode and add, with the same FrameError."""
    c = make(spec)
    d = 9001
    raw = bytearray(c.encode(torch.randn(d)).to_bytes())
    w = width(c.s)
    body = len(raw) - (d * w + 7) // 8
    bit = body * 8 + i * w + 1
    for b in range(w - 1):
        raw[(bit + b) // 8] |= 1 << ((bit + b) % 8)
    for mode in ("", "reference"):
        monkeypatch.setenv("PSGD_KERNELS", mode)
        with pytest.raises(FrameError) as checked:
            c.from_bytes(bytes(raw))
        assert "level above s" in str(checked.value)
        for consume in (c.decode, lambda m: c.decode_into(m, torch.empty(d)), lambda m: c.accumulate(m, torch.ones(d))):
            m = c.from_bytes(bytes(raw), check_body=False)
            with pytest.raises(FrameError) as deferred:
                consume(m)
            assert str(deferred.value) == str(checked.value)
        m = c.from_bytes(bytes(raw[:body] + c.encode(torch.randn(d)).to_bytes()[body:]), check_body=False)
        assert m.unchecked
        c.accumulate(m, torch.zeros(d))
        assert not m.unchecked  # checked by the add: a second decode does not check again


def test_float64_and_halves_take_the_references():
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        for spec in ("qsgd:s=16", "natural_dither:s=8", "qsgd:s=16,coding=elias"):
            c = make(spec)
            x = torch.randn(1000, dtype=dtype)
            m = c.from_bytes(c.encode(x, torch.Generator().manual_seed(0)).to_bytes())
            assert c.decode(m).dtype == dtype
            out = torch.ones(1000, dtype=dtype)
            assert torch.equal(c.accumulate(m, out.clone()), out + c.decode(m))


def random_body(d: int, s: int, top: int, g: torch.Generator) -> torch.Tensor:
    """A fixed-length body of d codes at width(s): levels in [0, top], the largest top (at a random place), both
    signs on every level (zero too: -0.0 values)."""
    levels = torch.randint(0, top + 1, (d,), generator=g)
    levels[int(torch.randint(0, d, (1,), generator=g))] = top
    return pack_uint(levels << 1 | torch.randint(0, 2, (d,), generator=g), width(s))


@pytest.mark.parametrize("start", [True, False])
@pytest.mark.parametrize("d", [1, 7, 8, 9, 4095, 4096, 4097, 10000])
@pytest.mark.parametrize("spec", ["terngrad", "qsgd:p=inf,s=3", "qsgd:s=16", "natural_dither:s=8",
                                  "natural_dither:p=2,s=5", "qsgd:s=127", "natural_dither:s=127"])  # fmt: skip
def test_pair_kernel_is_the_two_single_kernels(monkeypatch, spec, d, start):
    """dither_pair_into (one pass over out) is dither_into of a (decode with start, else add) then of b (add),
    bit for bit, signed zeros included (-0 codes, -0 in out, a norm of -0), at widths 2 to 8 and sizes around
    the blocks; it returns each body's largest level, above s too; the torch references' floats as well."""
    c = make(spec)
    w = width(c.s)
    g = torch.Generator().manual_seed(d * 2 + start)
    n = 2 ** (w - 1)  # levels a code can hold
    for norms in ((1.5, 0.3), (-0.0, 2.0**-100), (0.0, 7.0)):
        tops = [int(t) for t in torch.randint(0, n, (2,), generator=g)]
        bodies = [random_body(d, c.s, top, g) for top in tops]
        tables = [c.level_values(n, torch.tensor([norm]), torch.float32) for norm in norms]
        base = torch.randn(d, generator=g)
        base[torch.randint(0, 2, (d,), generator=g).bool()] = -0.0
        base[::5] = 0.0
        want = base.clone()
        singles = (
            dither_into(bodies[0], c.s, c.natural, tables[0], want, 1.0, add=not start),
            dither_into(bodies[1], c.s, c.natural, tables[1], want, 1.0, add=True),
        )
        got = base.clone()
        assert dither_pair_into(*bodies, c.s, c.natural, *tables, got, start) == singles == tuple(tops)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))
        monkeypatch.setenv("PSGD_KERNELS", "reference")
        ref = base.clone()
        assert dither_pair_into(*bodies, c.s, c.natural, *tables, ref, start) == singles
        monkeypatch.delenv("PSGD_KERNELS")
        assert torch.equal(ref.view(torch.int32), want.view(torch.int32))
    assert not (dither_pair_kernel.broken or dither_into_kernel.broken)  # the compiled paths ran


@pytest.mark.parametrize("spec", ["qsgd:s=16", "natural_dither:s=8", "terngrad"])
@pytest.mark.parametrize("mode", ["", "reference"])
def test_a_pair_checks_both_levels(monkeypatch, spec, mode):
    """add_pair of messages parsed unchecked (as the server parses) refuses a level above s in either, with the
    FrameError of the checking parse, and marks the messages it checked as checked."""
    monkeypatch.setenv("PSGD_KERNELS", mode)
    c = make(spec)
    d = 9001
    good = c.encode(torch.randn(d)).to_bytes()
    bad = bytearray(good)
    w = width(c.s)
    bit = (len(good) - (d * w + 7) // 8) * 8 + 5000 * w + 1  # level bits of code 5000 (block 1)
    for b in range(w - 1):
        bad[(bit + b) // 8] |= 1 << ((bit + b) % 8)
    if c.s + 1 < 2 ** (w - 1):
        with pytest.raises(FrameError) as checked:
            c.from_bytes(bytes(bad))
        for order in ((bad, good), (good, bad)):
            a, b = (c.from_bytes(bytes(r), check_body=False) for r in order)
            with pytest.raises(FrameError) as paired:
                c.add_pair(a, b, torch.zeros(d), start=True)
            assert str(paired.value) == str(checked.value)
    a, b = (c.from_bytes(r, check_body=False) for r in (good, c.encode(torch.randn(d)).to_bytes()))
    assert a.unchecked and b.unchecked
    c.add_pair(a, b, torch.zeros(d), start=False)
    assert not (a.unchecked or b.unchecked)
