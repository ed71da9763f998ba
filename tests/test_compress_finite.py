"""Finite in, finite out: encode refuses what the wire's fp32 (or the decoded dtype) cannot carry,
never writes a message its decoder rejects or decodes to Inf, and from_bytes refuses non-finite payloads."""

import math
import struct

import pytest
import torch
from compress_specs import SPECS, resolve

from psgd.compress import make
from psgd.compress.base import SENT
from psgd.errors import FrameError, NonFiniteError


def huge(d: int, dtype: torch.dtype, big: float) -> torch.Tensor:
    x = torch.linspace(-1, 1, d, dtype=torch.float64)
    x[0], x[-1] = big, -big
    return x.to(dtype)


CASES = [
    (torch.float32, 3e38),
    (torch.float32, 3.4e38),
    (torch.float32, 1e20),  # ||x||_2 fits fp32, its fp32 sum of squares does not
    (torch.float64, 1e300),
    (torch.float64, 3e38),
    (torch.float16, 6e4),
    (torch.bfloat16, 3e38),
]


# codecs whose every sent value is at most max |x_i| (a coordinate, a mean of |x_i|, a rounding
# down or within the format): they must encode whenever max |x_i| fits the dtype
BOUNDED = ("identity", "topk:", "sign", "scaled_sign", "block_sign", "randk:ratio=0.5,scaled=false", "hard_threshold")
BOUNDED += ("per_layer(topk", "per_layer(hard_threshold", "bucket(scaled_sign")
LARGEST = {"fp32": torch.finfo(torch.float32).max, "float16": 65504.0, "bfloat16": torch.finfo(torch.bfloat16).max}


def justified(e: NonFiniteError, x: torch.Tensor) -> bool:
    """A refusal names the value that does not fit: check that it does not."""
    text, amax = str(e), float(x.double().abs().max())
    if " overflows " in text:  # "x: <what> = <value> overflows <format>"
        value, fmt = float(text.rsplit(" = ", 1)[1].split(" ")[0]), text.rsplit(" ", 1)[1]
        return value >= LARGEST[fmt] * (1 - 1e-3)  # the value is printed to 4 digits
    if "could round to 2^" in text:  # natural compression: max |x_i| beyond 2^e rounds up to 2^(e+1)
        e_max = int(text.split("could round to 2^")[1].split(",")[0]) - 1
        return amax > 2.0**e_max
    if "exceeds the largest finite" in text:  # a cast to fp16/bf16
        return amax > float(text.rsplit(" ", 1)[1])
    return False


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("dtype, big", CASES)
def test_huge_inputs_encode_to_finite_or_are_refused_for_a_stated_reason(spec, dtype, big):
    """Each huge input either encodes to a message that decodes finite, or is refused naming a
    value that really overflows the wire's fp32 or the dtype; codecs that send no value above
    max |x_i| never refuse an x that fits."""
    for d in (3, 40):
        c = make(resolve(spec, d))
        x = huge(d, dtype, big)
        try:
            m = c.encode(x, torch.Generator().manual_seed(d))
        except NonFiniteError as e:
            assert str(e).startswith("x: ") and justified(e, x), (spec, dtype, big, str(e))
            assert not (spec.startswith(BOUNDED) and big <= LARGEST["fp32"]), (spec, dtype, big, str(e))
            continue
        y = c.decode(c.from_bytes(m.to_bytes()))
        assert bool(torch.isfinite(y).all()), (spec, dtype, big, y)


def test_the_audits_examples():
    x = torch.tensor([3e38, -3e38, 1.0])
    for spec in ("scaled_sign", "block_sign", "bucket(scaled_sign, size=12)"):
        c = make(spec)
        y = c.decode(c.from_bytes(c.encode(x).to_bytes()))
        scale = torch.tensor((3e38 + 3e38 + 1) / 3, dtype=torch.float64).to(torch.float32)  # l1/d in float64
        assert torch.equal(y, torch.stack([scale, -scale, scale])), spec
    with pytest.raises(NonFiniteError, match=r"x: \|\|x\|\|_2 = 4.243e\+38 overflows fp32"):
        make("qsgd").encode(x)
    y = make("qsgd:p=inf").decode(make("qsgd:p=inf").encode(x))  # ||x||_inf fits
    assert bool(torch.isfinite(y).all())
    with pytest.raises(NonFiniteError, match=r"x: max \|x_i\| = 1e\+300 overflows fp32"):
        make("identity").encode(torch.tensor([1e300], dtype=torch.float64))
    with pytest.raises(NonFiniteError, match=r"overflows float16"):  # (d/k) x_i decoded in fp16
        make("randk:k=1").encode(torch.full((4,), 2e4, dtype=torch.float16))


@pytest.mark.parametrize("spec", ["qsgd:s=4", "natural_dither:p=2,s=4", "qsgd:s=4,coding=elias"])
def test_a_norm_beyond_fp32_squares_is_computed_in_float64(spec):
    x = huge(50, torch.float64, 1.0) * 1e20
    n = torch.linalg.vector_norm(x)
    x32 = x.float()
    c = make(spec)
    m = c.encode(x32, torch.Generator().manual_seed(0))
    wire = m.body[:4].view(torch.float32)
    assert float(wire) >= float(torch.linalg.vector_norm(x32.double())) and math.isclose(float(wire), n, rel_tol=1e-6)
    mean = torch.stack([c.decode(c.encode(x32, torch.Generator().manual_seed(s))).double() for s in range(400)]).mean(0)
    assert float(torch.linalg.vector_norm(mean - x)) < 0.2 * float(n)


def test_sure_bounds_hold_for_huge_inputs():
    x = (huge(48, torch.float64, 1.0) * 1e25).float()
    sq = float(x.double().square().sum())
    for spec, bound in [("sparse_dither:nu=0.1", 0.1), ("spherical:alpha=0.5,block=4", 0.5), ("powersgd", 1.0)]:
        c = make(spec)
        err = float((c.decode(c.encode(x, torch.Generator().manual_seed(0))).double() - x.double()).square().sum())
        assert err <= bound * sq * (1 + 1e-5), spec


def _f32(v: float) -> bytes:
    return struct.pack("<f", v)


def _first_float(bad: float):
    return lambda body: _f32(bad) + body[4:]


def _natural_code(body: bytes) -> bytes:  # exponent field 255 in the first 9-bit code (sign bit first)
    return bytes([body[0] | 0xFE, body[1] | 0x01]) + body[2:]


def _gamma(bad: float):  # the 31-bit scale (fp32 without its sign bit) opens the stream
    def corrupt(body: bytes) -> bytes:
        word = struct.unpack("<I", body[:4])[0]
        return struct.pack("<I", (word & 0x80000000) | struct.unpack("<I", _f32(bad))[0]) + body[4:]

    return corrupt


def corruptions(name: str) -> list:
    """Ways to write a non-finite value into a valid body of codec ``name`` (none for sign)."""
    floats = [_first_float(v) for v in (math.inf, -math.inf, math.nan)]
    return {
        "fp16": [lambda b: b"\x00\x7c" + b[2:], lambda b: b"\x00\xfe" + b[2:]],
        "bf16": [lambda b: b"\x80\x7f" + b[2:], lambda b: b"\xc0\xff" + b[2:]],
        "natural": [lambda b: b"\xff" + b[1:]],
        "natural_round": [lambda b: b"\xff" + b[1:]],
        "topk_natural": [_natural_code],
        "sparse_dither": [_gamma(math.inf), _gamma(math.nan)],
        "sign": [],
    }.get(name, floats)


@pytest.mark.parametrize("spec", SPECS)
def test_from_bytes_refuses_non_finite_payloads(spec):
    d = 24
    c = make(resolve(spec, d))
    inner = c
    while hasattr(inner, "inner"):  # wrappers: the first block's message opens the body
        inner = inner.inner
    x = huge(d, torch.float32, 3.0)
    m = c.encode(x, torch.Generator().manual_seed(0))
    if c.name in ("per_layer", "bucket") and SENT in c.meta_layout(d):
        pytest.skip("the blocks' gamma-coded fields open the body; each block is checked as its inner message")
    body = m.body.numpy().tobytes()
    c.from_bytes(m.to_bytes())
    ways = corruptions(inner.name)
    assert ways or inner.name == "sign"
    for corrupt in ways:
        with pytest.raises(FrameError, match=inner.name):
            c.from_bytes(m.header() + corrupt(body))
