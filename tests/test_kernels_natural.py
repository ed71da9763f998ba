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
