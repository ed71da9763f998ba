"""Wrappers (per_layer, bucket, scaled), PowerSGD and spherical compression read a message once
(from_bytes), then decode and accumulate from what they read; a wrapper accumulates each block
into its own slice of out (scaled at weight/zeta), the same floats as out + decode(m) at weight 1."""

import pytest
import torch
from compress_specs import resolve

from psgd.compress import make
from psgd.compress.base import Message

WRAPPED = [
    "per_layer(randk:ratio=0.1, layers=LAYERS)",
    "bucket(randk:k=3,shared_seed=false, size=40)",
    "per_layer(topk:ratio=0.5, layers=LAYERS)",
    "bucket(qsgd:s=2,coding=elias, size=24)",
    "bucket(scaled_sign, size=16)",
    "per_layer(hard_threshold:lam=0.8, layers=LAYERS)",
    "bucket(sparse_dither:nu=0.2, size=40)",
    "per_layer(spherical:alpha=0.5,block=4, layers=LAYERS)",
    "bucket(powersgd:rank=2, size=400)",
    "bucket(scaled(randk:ratio=0.5), size=40)",
    "scaled(natural)",
    "scaled(randk:ratio=0.25,shared_seed=false)",
    "scaled(per_layer(randk:k=2, layers=LAYERS))",
]
ONCE = [
    *(spec for spec in WRAPPED if any(name in spec for name in ("randk", "topk", "spherical", "powersgd"))),
    "powersgd:rank=2",
    "spherical:alpha=0.5,block=4",
    "randk:ratio=0.1",
    "randk:k=3,shared_seed=false",
]
DIMS = [1, 7, 33, 1000]


def vec(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g) * torch.rand(d, generator=g)


def received(spec: str, d: int, seed: int = 0):
    c = make(resolve(spec, d))
    return c, c.from_bytes(c.encode(vec(d, seed), torch.Generator().manual_seed(seed)).to_bytes())


def innermost(c):
    while hasattr(c, "inner"):
        c = c.inner
    return c


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32)


@pytest.mark.parametrize("spec", WRAPPED)
@pytest.mark.parametrize("d", DIMS)
def test_accumulate_adds_the_decode_in_place(spec, d):
    c, m = received(spec, d)
    y = c.decode(m)
    out = vec(d, 99)
    before = out.clone()
    assert c.accumulate(m, out) is out
    assert torch.equal(bits(out), bits(before + y))
    for w in (-1.0, 0.5):
        assert torch.allclose(c.accumulate(m, before.clone(), w), before + w * y, rtol=1e-6, atol=1e-6)
    assert torch.equal(c.decode_into(m, torch.full((d,), 7.0)), y)


@pytest.mark.parametrize("spec", ONCE)
def test_from_bytes_parses_once_for_decode_and_accumulate(spec, monkeypatch):
    """Every codec reads its body in from_bytes only: decode and accumulate never parse again."""
    d = 33
    calls = []
    inner = type(innermost(make(resolve(spec, d))))
    parse = inner._parse
    monkeypatch.setattr(inner, "_parse", lambda self, m: calls.append(m.d) or parse(self, m))
    c, m = received(spec, d)
    parsed = len(calls)
    assert parsed >= 1
    c.decode(m)
    c.accumulate(m, torch.zeros(d), -1.0)
    c.decode_into(m, torch.zeros(d))
    assert len(calls) == parsed


@pytest.mark.parametrize("spec", ["per_layer(randk:k=2, layers=LAYERS)", "bucket(qsgd:s=2,coding=elias, size=24)"])
def test_blocks_parse_to_the_inner_messages(spec):
    d = 33
    c, m = received(spec, d)
    parts = m.parsed
    assert all(isinstance(p, Message) and p.parsed is not None for p in parts)
    assert sum(p.d for p in parts) == d
    assert torch.equal(c.decode(m), torch.cat([c.inner.decode(p) for p in parts]))


def test_scaled_accumulates_the_inner_message_at_weight_over_zeta():
    d = 100
    c, m = received("scaled(randk:ratio=0.1)", d)
    zeta = c.zeta(d)
    part = m.parsed
    for w in (1.0, -1.0, 0.5):
        out, inner_out = vec(d, 1), vec(d, 1)
        c.accumulate(m, out, w)
        c.inner.accumulate(part, inner_out, w / zeta)
        assert torch.equal(bits(out), bits(inner_out))
    assert torch.allclose(c.decode(m), c.inner.decode(part) / zeta, rtol=1e-6, atol=0)
