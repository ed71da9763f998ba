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
        assert m.body_len == math.ceil(c.bits(m) / 8), (spec, d)
        assert c.bits(d) in (None, c.bits(m)), (spec, d)
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


MLP = "64x128+128+128x10+10"  # digits_mlp, d = 9610


@pytest.mark.parametrize(
    "spec, bits",
    [  # k per layer = ceil(0.01 n): 82, 2, 13, 1; IDX = 13, 7, 11, 4
        (f"per_layer(topk:ratio=0.01, layers={MLP})", 82 * 45 + 2 * 39 + 13 * 43 + 1 * 36),
        (f"per_layer(randk:ratio=0.01, layers={MLP})", 32 * (82 + 2 + 13 + 1)),
        (f"per_layer(randk:ratio=0.01,shared_seed=false, layers={MLP})", 82 * 45 + 2 * 39 + 13 * 43 + 1 * 36),
        (f"per_layer(scaled_sign, layers={MLP})", 9610 + 4 * 32),
        (f"bucket(natural, size=4KiB, layers={MLP})", 9 * 9610),
    ],
)
def test_wrapper_body_is_the_sum_of_the_inner_counts(spec, bits):
    """Nothing but the inner bodies travels: k from ratio and block size, block seeds from one seed."""
    c = make(spec)
    x = vector(9610, 5)
    m = c.encode(x, gen(5))
    assert c.bits(9610) == c.bits(m) == bits and m.body_len == math.ceil(bits / 8)
    assert m.header_len <= MAX_MESSAGE_HEADER
    back = c.from_bytes(m.to_bytes())
    assert torch.equal(c.decode(back), c.decode(m))


def test_wrapper_blocks_match_the_inner_compressor_on_each_block():
    x = vector(60, 1)
    c = make("per_layer(topk:k=3, layers=20+40)")
    y = c.decode(c.encode(x))
    assert torch.equal(y, torch.cat([make("topk:k=3").decode(make("topk:k=3").encode(b)) for b in x.split([20, 40])]))
    c = make("per_layer(randk:k=5,scaled=false, layers=30+30)")
    y = c.decode(c.from_bytes(c.encode(x, gen(2)).to_bytes()))
    kept = [set(torch.nonzero(b).view(-1).tolist()) for b in y.split([30, 30])]
    assert all(len(k) == 5 for k in kept) and kept[0] != kept[1]  # one seed, a different subset per block
    seeds = {c.encode(x, gen(s)).meta[0] for s in range(5)}
    assert len(seeds) == 5


def test_wrapper_with_fields_that_depend_on_x():
    """hard_threshold's nnz per block opens the body as Elias gamma codes of nnz + 1."""
    x = vector(60, 3)
    c = make("per_layer(hard_threshold:lam=0.5, layers=20+40)")
    m = c.encode(x)
    nnz = [int((b.abs() >= 0.5).sum()) for b in x.split([20, 40])]
    gamma = sum(2 * (v + 1).bit_length() - 1 for v in nnz)
    assert c.bits(m) == gamma + nnz[0] * (32 + 5) + nnz[1] * (32 + 6)
    assert m.meta == (c.bits(m),) and c.bits(60) is None
    y = c.decode(c.from_bytes(m.to_bytes()))
    assert torch.equal(y, torch.where(x.abs() >= 0.5, x, 0))


@pytest.mark.parametrize("spec", SPECS)
def test_decode_into_a_buffer_of_another_size_is_refused(spec):
    c = make(resolve(spec, 40))
    m = c.encode(torch.randn(40, generator=torch.Generator().manual_seed(0)), torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="decode into 39 elements, message has d = 40"):
        c.decode_into(m, torch.zeros(39))
    assert torch.equal(c.decode_into(m, torch.full((40,), 7.0)), c.decode(m))
