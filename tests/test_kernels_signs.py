"""Compiled sign-family kernels and the fp16/bf16 chunked widening against their torch references,
bit for bit: message bytes, decode, decode_into, accumulate (weights 1, -1, 0.5, 0.3); plus
accumulate(m, out) == out + decode(m) and the l1 scale that an fp32 sum would overflow."""

import pytest
import torch

from psgd.compress import make
from psgd.kernels import cast, signs
from psgd.wire import pack_bits

DS = (1, 2, 7, 8, 9, 31, 33, 1000, 4099, 100003)
SIGNS = ("sign", "scaled_sign", "block_sign:bucket=20", "block_sign:bucket=36", "block_sign:bucket=0")
WEIGHTS = (1.0, -1.0, 0.5, 0.3)


def vector(d: int, seed: int) -> torch.Tensor:
    """Normal draws over many magnitudes with edge values up front: -0, +0, subnormals, ties, huge."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g) * 10.0 ** torch.randint(-6, 7, (d,), generator=g)
    edges = torch.tensor([-0.0, 0.0, 1e-45, -3e-39, 0.75, -0.75, 0.75, 3e38, -3e38])[:d]
    x[: edges.numel()] = edges
    return x


def bits_of(t: torch.Tensor) -> bytes:
    return t.contiguous().view(torch.uint8).numpy().tobytes()


def run_codec(spec: str, x: torch.Tensor, seed: int) -> list[bytes]:
    """Bytes of: the message, decode, decode_into, accumulate for each weight (into random buffers)."""
    c = make(spec)
    m = c.from_bytes(bytearray(c.encode(x).to_bytes()))
    out = [m.to_bytes(), bits_of(c.decode(m)), bits_of(c.decode_into(m, torch.full_like(x, 7.0)))]
    g = torch.Generator().manual_seed(seed)
    for w in WEIGHTS:
        out.append(bits_of(c.accumulate(m, torch.randn(x.numel(), generator=g), w)))
    return out


@pytest.mark.parametrize("spec", SIGNS)
def test_compiled_equals_reference(spec, monkeypatch, one_thread):
    for d in DS:
        for seed in range(2):
            x = vector(d, seed)
            compiled = run_codec(spec, x, seed)
            monkeypatch.setenv("PSGD_KERNELS", "reference")
            reference = run_codec(spec, x, seed)
            monkeypatch.delenv("PSGD_KERNELS")
            assert compiled == reference, (spec, d, seed)


@pytest.mark.parametrize("spec", [*SIGNS, "identity", "fp16", "bf16"])
def test_accumulate_is_out_plus_decode(spec, one_thread):
    c = make(spec)
    for d in (9, 4099, cast.CHUNK + 9):
        x = vector(d, 3).clamp(-6e4, 6e4)
        m = c.from_bytes(bytearray(c.encode(x).to_bytes()))
        out = torch.randn(d)
        assert torch.equal(c.accumulate(m, out.clone()), out + c.decode(m))
        assert torch.equal(c.accumulate(m, out.clone(), -1.0), out - c.decode(m))
        assert torch.equal(c.decode_into(m, out), c.decode(m))


def test_pack_signs_kernel(one_thread):
    for d in DS:
        x = vector(d, 1)
        sizes = [5] * (d // 5) + ([d % 5] if d % 5 else [])
        bits = torch.empty((d + 7) // 8, dtype=torch.uint8)
        l1 = signs.pack_signs(x, sizes, bits, True)
        assert torch.equal(bits, pack_bits(x >= 0))  # -0.0 is >= 0: bit 1
        ref_bits, ref_l1 = signs.pack_signs_ref(x, sizes, True)
        assert torch.equal(bits, ref_bits)
        assert torch.allclose(l1, ref_l1, rtol=1e-15, atol=0)  # float64 sums in another order
        assert signs.pack_signs(x, [d], bits, False) is None and torch.equal(bits, ref_bits)


def test_scale_of_huge_values_does_not_overflow(one_thread):
    x = torch.full((1000,), 3e38)
    x[::2] *= -1
    for spec in ("scaled_sign", "block_sign:bucket=400"):
        c = make(spec)
        y = c.decode(c.encode(x))
        assert torch.equal(y.abs(), torch.full_like(x, 3e38)) and torch.equal(y.sign(), x.sign())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_add_widened_equals_reference(dtype, one_thread):
    for d in (1, 33, cast.CHUNK, cast.CHUNK + 1, 2 * cast.CHUNK + 9):
        v = vector(d, 2).clamp(-6e4, 6e4).to(dtype)
        base = torch.randn(d, generator=torch.Generator().manual_seed(d))
        for w in WEIGHTS:
            fast, ref = base.clone(), base.clone()
            cast.add_widened(v, fast, w)
            cast.add_widened_ref(v, ref, w)
            assert bits_of(fast) == bits_of(ref), (dtype, d, w)


@pytest.mark.parametrize("spec", ["scaled_sign", "block_sign:bucket=20", "identity", "fp16", "bf16"])
def test_parsed_once(spec, monkeypatch):
    c = make(spec)
    x = vector(100, 0).clamp(-6e4, 6e4)
    m = c.from_bytes(bytearray(c.encode(x).to_bytes()))
    assert m.parsed is not None
    monkeypatch.setattr(type(c), "_parse", lambda self, m: pytest.fail("parsed again"))
    c.accumulate(m, c.decode(m))
    c.decode_into(m, torch.empty(100))


@pytest.mark.parametrize(("spec", "value"), [("fp16", "inf"), ("bf16", "nan"), ("identity", "inf")])
def test_non_finite_payload_refused(spec, value):
    c = make(spec)
    m = c.encode(torch.ones(10))
    m.body.view(c.target if spec != "identity" else torch.float32)[3] = float(value)
    with pytest.raises(Exception, match="non-finite"):
        c.from_bytes(bytearray(m.to_bytes()))
