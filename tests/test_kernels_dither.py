"""psgd.kernels.dither: the compiled random dithering kernels (fixed-length and Elias codes)
against their torch references, bit for bit (message bytes, decode, accumulate), over sizes,
seeds and edge values; the 32-bit counter draws against psgd.kernels.rng."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

from psgd.compress import make
from psgd.errors import FrameError
from psgd.kernels import rng
from psgd.kernels.dither import width
from psgd.kernels.rng import random24

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


def outputs(c, x: torch.Tensor, seed: int, start: torch.Tensor) -> tuple:
    """(message bytes, decode, decode_into, accumulate at weights 1, -1, 1/2) of the parsed message."""
    raw = c.encode(x, torch.Generator().manual_seed(seed)).to_bytes()
    parsed = c.from_bytes(bytearray(raw))
    accs = [c.accumulate(parsed, start.clone(), w) for w in (1.0, -1.0, 0.5)]
    return raw, c.decode(parsed), c.decode_into(parsed, torch.full((x.numel(),), 7.0)), accs


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


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


def test_random24_is_the_counter_uniform():
    @numba.njit
    def draws(k0, k1, n):
        out = np.empty(n, np.float32)
        for i in range(n):
            out[i] = np.float32(random24(k0, k1, i)) * np.float32(2.0**-24)
        return out

    for key in (0, 1, 2**64 - 1, 0xDEADBEEF12345678):
        assert torch.equal(torch.from_numpy(draws(*rng.split(key), 5000)), rng.uniform_ref(key, 5000))


@pytest.mark.parametrize("spec", ["qsgd:s=16", "natural_dither:s=8", "qsgd:p=inf,s=5"])
def test_level_above_s_refused_on_both_paths(monkeypatch, spec):
    c = make(spec)
    d = 1001
    raw = bytearray(c.encode(torch.randn(d)).to_bytes())
    w = width(c.s)
    i = d - 1  # the last code: level 2^(w-1) - 1 > s, sign 0
    body = len(raw) - (d * w + 7) // 8
    bit = body * 8 + i * w + 1
    for b in range(w - 1):
        raw[(bit + b) // 8] |= 1 << ((bit + b) % 8)
    for mode in ("", "reference"):
        monkeypatch.setenv("PSGD_KERNELS", mode)
        with pytest.raises(FrameError):
            c.from_bytes(bytes(raw))


def test_float64_and_halves_take_the_references():
    for dtype in (torch.float64, torch.float16, torch.bfloat16):
        for spec in ("qsgd:s=16", "natural_dither:s=8", "qsgd:s=16,coding=elias"):
            c = make(spec)
            x = torch.randn(1000, dtype=dtype)
            m = c.from_bytes(c.encode(x, torch.Generator().manual_seed(0)).to_bytes())
            assert c.decode(m).dtype == dtype
            out = torch.ones(1000, dtype=dtype)
            assert torch.equal(c.accumulate(m, out.clone()), out + c.decode(m))
