"""Every compressor as a codec: exact body sizes, round trips through bytes, determinism, bad bytes."""

import math

import pytest
import torch
from compress_specs import SPECS, resolve

from psgd.compress import available, make
from psgd.compress.base import MAX_MESSAGE_HEADER
from psgd.errors import FrameError

DIMS = [1, 2, 7, 8, 9, 31, 100, 257]


def vector(d: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(d, generator=g, dtype=torch.float64) * torch.rand(d, generator=g, dtype=torch.float64)).to(
        dtype
    )


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_every_registered_name_is_exercised():
    named = {s.split(":")[0].split("(")[0] for s in SPECS}
    assert named == {r["name"] for r in available()}


@pytest.mark.parametrize("spec", SPECS)
def test_round_trip_sizes_and_determinism(spec):
    for d in DIMS:
        c = make(resolve(spec, d))
        x = vector(d, d)
        m = c.encode(x, gen(d))
        data = m.to_bytes()
        assert m.header_len <= MAX_MESSAGE_HEADER
        assert len(data) == m.header_len + m.body_len
        bits = c.bits(d)
        if bits is not None and not c.name.startswith(("per_layer", "bucket")):
            assert m.body_len == math.ceil(bits / 8), (spec, d)
        back = c.from_bytes(data)
        y = c.decode(back)
        assert y.dtype == x.dtype and y.shape == x.shape
        assert torch.equal(y, c.decode(m)), (spec, d)
        assert bool(torch.isfinite(y).all())
        assert c.encode(x, gen(d)).to_bytes() == data, f"{spec}: not deterministic under a seed"


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_round_trip(spec, dtype):
    d = 40
    c = make(resolve(spec, d))
    x = vector(d, 1, dtype)
    m = c.encode(x, gen())
    y = c.decode(c.from_bytes(m.to_bytes()))
    assert y.dtype == dtype and torch.equal(y, c.decode(m))


@pytest.mark.parametrize("spec", SPECS)
def test_malformed_bytes_name_the_codec(spec):
    d = 33
    c = make(resolve(spec, d))
    data = c.encode(vector(d, 2), gen()).to_bytes()
    for bad in (data[:-1], data + b"\0", data[:3], b"\xc1" + data[1:], b""):
        with pytest.raises(FrameError, match=c.name):
            c.from_bytes(bad)
    other = make("identity").encode(vector(d, 2)).to_bytes()
    if c.name != "identity":
        with pytest.raises(FrameError, match=f"{c.name}: message is for codec 'identity'"):
            c.from_bytes(other)


def test_zero_vector_round_trips_to_zero():
    for spec in SPECS:
        d = 20
        c = make(resolve(spec, d))
        x = torch.zeros(d)
        y = c.decode(c.from_bytes(c.encode(x, gen()).to_bytes()))
        if c.name in ("sign", "block_sign", "scaled_sign"):
            continue  # sign(0) = +1 by convention; scaled by ||0||_1 = 0 except for plain sign
        assert torch.equal(y, x), spec


@pytest.mark.parametrize(
    "spec, corrupt, why",
    [
        ("topk:k=3", lambda b: b[:-3] + b"\xff\xff\xff", "index out of range"),
        ("randk:k=3,shared_seed=false", lambda b: b[:-3] + b"\xff\xff\xff", "index out of range"),
        ("qsgd:s=2", lambda b: b[:-1] + b"\xff", "level above s"),
        ("qsgd:s=4,coding=elias", lambda b: b[:-2] + b"\x00\x00", "qsgd"),
        ("sparse_dither:nu=0.1", lambda b: b[:-1] + b"\x00", "sparse_dither"),
        ("spherical:block=4", lambda b: b[:-1] + b"\x00", "spherical"),
        ("natural_dither:s=2", lambda b: b[:-1] + b"\xff", "level above s"),
    ],
)
def test_corrupted_bodies_are_refused(spec, corrupt, why):
    c = make(spec)
    data = c.encode(vector(61, 3), gen()).to_bytes()
    with pytest.raises(FrameError, match=why):
        c.decode(c.from_bytes(corrupt(data)))


def test_header_of_the_largest_dimension_fits():
    d = 2**31
    for spec in ["qsgd:s=4,coding=elias", "sparse_dither", "spherical", "natural_dither", "hard_threshold:lam=1"]:
        c = make(spec)
        meta = {"qsgd": (d, 40 * d), "sparse_dither": (60 * d,), "spherical": (2**32 - 1, 40 * d)}.get(c.name, (d,))
        import msgpack

        assert len(msgpack.packb([c.name, d, 0, *meta])) <= MAX_MESSAGE_HEADER


def test_natural_refuses_an_infinite_exponent():
    c = make("natural")
    m = c.encode(torch.ones(9), gen())
    body = bytearray(m.body.numpy().tobytes())
    body[0] = 255
    with pytest.raises(FrameError, match="natural: exponent field 255"):
        c.from_bytes(m.header() + bytes(body))
