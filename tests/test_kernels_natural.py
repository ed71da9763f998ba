"""psgd.kernels.natural: the compiled natural compression kernels against their torch references,
bit for bit (message bytes, decode, accumulate), over sizes, seeds and edge values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from kernel_checks import outputs, same_bits

from psgd.compress import make
from psgd.compress.natural import natural_code_values, natural_codes
from psgd.errors import FrameError, NonFiniteError
from psgd.kernels import rng

SIZES = [1, 2, 7, 8, 9, 31, 33, 1000, 4099, 100003]


def vector(d: int, seed: int) -> torch.Tensor:
    """Normal draws over many scales, with zeros, negative zeros, subnormals, ties and huge values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g) * torch.exp2(torch.randint(-30, 30, (d,), generator=g).float())
    edges = torch.tensor([0.0, -0.0, 1e-45, -3e-39, 1.5, -0.75, 3.0 * 2.0**100, -(2.0**120), 1.0, 2.0**-126])
    x[: min(d, edges.numel())] = edges[: min(d, edges.numel())]
    return x[torch.randperm(d, generator=g)]


@pytest.mark.parametrize("spec", ["natural", "natural_round"])
@pytest.mark.parametrize("d", SIZES)
def test_compiled_equals_reference(monkeypatch, spec, d):
    c = make(spec)
    for seed in range(3):
        x = vector(d, seed)
        start = torch.randn(d, generator=torch.Generator().manual_seed(seed + 10))

        raw, dec, into, accs = outputs(c, x, seed, start)
        monkeypatch.setenv("PSGD_KERNELS", "reference")
        raw_r, dec_r, into_r, accs_r = outputs(c, x, seed, start)
        monkeypatch.delenv("PSGD_KERNELS")
        assert raw == raw_r
        assert same_bits(dec, dec_r) and same_bits(into, dec_r)
        assert all(same_bits(a, b) for a, b in zip(accs, accs_r, strict=True))
        assert same_bits(accs[0], start + dec_r)  # weight 1: the floats of out + decode


@pytest.mark.parametrize("spec", ["natural", "natural_round"])
@pytest.mark.parametrize("d", SIZES)
def test_encode_reconstruct_is_the_decode_of_its_message(monkeypatch, spec, d):
    """encode_reconstruct's C(x), written by the encoding pass, is decode(encode(x)) bit for bit and
    its message the same bytes, on the compiled and the reference paths."""
    c = make(spec)
    for mode in ("", "reference"):
        monkeypatch.setenv("PSGD_KERNELS", mode)
        for seed in range(2):
            x = vector(d, seed)
            x = x[x.abs() < 2.0**100]  # in range
            m, q = c.encode_reconstruct(x, torch.Generator().manual_seed(seed), torch.full_like(x, 7.0))
            ref = c.encode(x, torch.Generator().manual_seed(seed))
            assert m.to_bytes() == ref.to_bytes()
            assert same_bits(q, c.decode(ref))


@pytest.mark.parametrize("spec", ["natural", "natural_round"])
@pytest.mark.parametrize("d", [*SIZES, 4095, 4096, 4097])
@pytest.mark.parametrize("with_out", [False, True])
def test_encode_feedback_leaves_the_error_by_the_encoding_pass(monkeypatch, spec, d, with_out):
    """encode_feedback's x <- x - C(x), written by the encoding pass, is accumulate(m, x, -1)
    (x.sub_(C(x)) with out) bit for bit and its message encode's bytes, on both paths."""
    c = make(spec)
    for mode in ("", "reference"):
        monkeypatch.setenv("PSGD_KERNELS", mode)
        for seed in range(2):
            x = vector(d, seed)
            x = x[x.abs() < 2.0**100]  # in range
            ref = c.encode(x, torch.Generator().manual_seed(seed))
            want = x.clone()
            if with_out:
                want.sub_(c.decode(ref))
            else:
                c.accumulate(ref, want, -1.0)
            out = torch.full_like(x, 7.0) if with_out else None
            m, q = c.encode_feedback(x, torch.Generator().manual_seed(seed), out)
            assert m.to_bytes() == ref.to_bytes()
            assert same_bits(x, want)
            assert q is out and (q is None or same_bits(q, c.decode(ref)))


def test_fields_and_signs_read_from_the_body():
    x = torch.tensor([3.0, -0.0, 0.0, -5.0, 1e-45, 6.0, -1.0, 2.0, -7.0])
    m = make("natural_round").encode(x)
    assert m.body[:9].tolist() == [129, 0, 0, 129, 0, 130, 127, 128, 130]
    assert np.unpackbits(m.body[9:].numpy(), count=9, bitorder="little").tolist() == [0, 1, 0, 1, 0, 0, 1, 0, 1]
    assert make("natural_round").decode(m).tolist() == [4.0, -0.0, 0.0, -4.0, 0.0, 8.0, -1.0, 2.0, -8.0]


def test_stochastic_rounding_draws_the_counter_uniforms():
    """C_nat rounds x_i = 1 + m 2^-23 up iff u(i) 2^23 < m, u the draws of the key taken from the generator."""
    d = 4099
    x = 1 + torch.randint(0, 2**23, (d,), generator=torch.Generator().manual_seed(1)).float() * 2.0**-23
    m = make("natural").encode(x, torch.Generator().manual_seed(5))
    u = rng.uniform_ref(rng.draw_key(torch.Generator().manual_seed(5)), d)
    up = u * 2.0**23 < (x - 1) * 2.0**23
    assert torch.equal(m.body[:d].long(), 127 + up.long())


def test_stochastic_rounding_on_the_draws(monkeypatch):
    """x_i = 1 + m 2^-23 with 2m = r(i) - 1, r(i) or r(i) + 1 (r the 24-bit draw): the compiled
    carry (|x| << 1) + 2^24 - 1 - r rounds up exactly where the reference's u < frac does."""
    d = 3000
    r = (rng.uniform_ref(rng.draw_key(torch.Generator().manual_seed(6)), d).double() * 2**24).long()
    m = ((r + torch.tensor([-1, 0, 1]).repeat(d)[:d]).clamp(0, 2**24 - 1) // 2).double()
    x = (1 + m * 2.0**-23).float()
    raw = make("natural").encode(x, torch.Generator().manual_seed(6)).to_bytes()
    monkeypatch.setenv("PSGD_KERNELS", "reference")
    assert make("natural").encode(x, torch.Generator().manual_seed(6)).to_bytes() == raw


def test_codes_for_topk_compose_round_trip():
    x = vector(1000, 3)
    x = x[x.abs() < 2.0**100]
    codes = natural_codes(x, None)
    c = make("natural_round")
    assert torch.equal(natural_code_values(codes, x.dtype), c.decode(c.encode(x)))


@pytest.mark.parametrize("stochastic", [True, False])
def test_range_refused_on_both_paths(monkeypatch, stochastic):
    spec = "natural" if stochastic else "natural_round"
    big = torch.tensor([1.0, 2.0**127 * (1.0 + 2.0**-23 if stochastic else 1.5)])
    for mode in ("", "reference"):
        monkeypatch.setenv("PSGD_KERNELS", mode)
        with pytest.raises(NonFiniteError):
            make(spec).encode(big)


def test_field_255_refused():
    raw = bytearray(make("natural").encode(torch.ones(9)).to_bytes())
    raw[-3] = 255  # the last exponent field
    with pytest.raises(FrameError):
        make("natural").from_bytes(raw)


# around the kernels' steps (32 coordinates a sign word) and the encoder's blocks (4096)
PAIR_SIZES = [1, 7, 8, 9, 31, 32, 33, 63, 64, 65, 4095, 4096, 4097, 10000]
EDGES = [0.0, -0.0, 2.0**-126, -(2.0**-126), 1e-45, -1e-45, 3e-39, -3e-39, 1.0, -1.0, 2.0**127, -(2.0**127)]


def pair_bodies(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two bodies whose values meet every way: fields from a few exponents (0: zeros of both signs,
    1: the smallest normal, whose sums and differences with subnormal aggregates stay subnormal, 254:
    the largest, whose sums overflow to Inf) and random signs, so that many pairs cancel exactly."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.tensor([0, 0, 1, 1, 2, 126, 127, 128, 150, 254], dtype=torch.uint8)
    bodies = []
    for _ in range(2):
        fields = levels[torch.randint(0, levels.numel(), (d,), generator=g)]
        signs = torch.randint(0, 256, ((d + 7) // 8,), generator=g, dtype=torch.uint8)
        bodies.append(torch.cat([fields, signs]))
    return bodies[0], bodies[1]


def aggregate(d: int, seed: int) -> torch.Tensor:
    """An fp32 aggregate of zeros of both signs, subnormals and normals."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g) * torch.exp2(torch.randint(-140, 0, (d,), generator=g).float())
    edges = torch.tensor(EDGES)
    picks = torch.rand(d, generator=g) < 0.5
    x[picks] = edges[torch.randint(0, edges.numel(), (int(picks.sum()),), generator=g)]
    return x


def int_bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)


@pytest.mark.parametrize("start", [True, False])
@pytest.mark.parametrize("d", PAIR_SIZES)
def test_pair_kernel_is_the_two_single_kernels(monkeypatch, d, start):
    """natural_pair_kernel(a, b) is natural_into_kernel of a (decode or add) then of b (add), bit for bit,
    signed zeros included; and so are the dispatcher's compiled and reference paths."""
    from psgd.kernels import np_view
    from psgd.kernels.natural import natural_add_pair, natural_into_kernel, natural_pair_kernel

    for seed in range(3):
        a, b = pair_bodies(d, seed)
        base = aggregate(d, seed + 100)
        singles = base.clone()
        natural_into_kernel(np_view(a), np_view(singles), np.float32(1.0), not start)
        natural_into_kernel(np_view(b), np_view(singles), np.float32(1.0), True)
        pair = base.clone()
        natural_pair_kernel(np_view(a), np_view(b), np_view(pair), not start)
        assert torch.equal(int_bits(pair), int_bits(singles))
        dispatched = base.clone()
        natural_add_pair(a, b, dispatched, start)
        assert torch.equal(int_bits(dispatched), int_bits(singles))
        monkeypatch.setenv("PSGD_KERNELS", "reference")
        reference = base.clone()
        natural_add_pair(a, b, reference, start)
        monkeypatch.delenv("PSGD_KERNELS")
        assert torch.equal(int_bits(reference), int_bits(singles))


@pytest.mark.parametrize("start", [True, False])
@pytest.mark.parametrize("spec", ["natural", "natural_round"])
def test_add_pair_of_messages_that_cancel(spec, start):
    """Received messages of x and -x (and of vectors with zeros of both signs and subnormals): the pair
    is decode_into (accumulate) of the first then accumulate of the second, bit for bit."""
    c, d = make(spec), 4097
    x = vector(d, 7)
    x = x[x.abs() < 2.0**100]
    d = x.numel()
    for y in (-x, vector(d, 8).clamp(-(2.0**100), 2.0**100)):
        raw = [c.encode(v, torch.Generator().manual_seed(s)).to_bytes() for v, s in ((x, 1), (y, 2))]
        a, b = (c.from_bytes(bytearray(r), d=d, check_body=False) for r in raw)
        base = aggregate(d, 9)
        want = base.clone()
        c.decode_into(a, want) if start else c.accumulate(a, want)
        c.accumulate(b, want)
        got = base.clone()
        c.add_pair(a, b, got, start)
        assert torch.equal(int_bits(got), int_bits(want))


def test_add_pair_of_float64_messages_takes_the_two_adds():
    """fp64 messages (no pair kernel): the two adds, one after the other."""
    c, d = make("natural_round"), 1000
    a, b = (c.encode(vector(d, s).double().clamp(-1e30, 1e30)) for s in (1, 2))
    base = aggregate(d, 3).double()
    want = c.accumulate(b, c.accumulate(a, base.clone()))
    assert torch.equal(c.add_pair(a, b, base.clone(), False).view(torch.int64), want.view(torch.int64))
