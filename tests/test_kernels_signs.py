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


# the pair kernel: every d the words (64 coordinates) and bytes split differently, one block or
# blocks whose ends fall inside bytes; both messages' scales drawn from signed zeros, negatives
# (the wire allows any finite fp32) and values whose sums overflow to Inf
PAIR_DS = (1, 7, 31, 32, 33, 63, 64, 65, 127, 128, 129, 4095, 4096, 4097, 10000)
PAIR_SCALES = (0.0, -0.0, 1.0, -1.0, 0.75, 1e-45, 3e38)


def layouts(d: int) -> list[list[int]]:
    """One block; blocks of 20 and 36 (ends mid-byte and mid-word); uneven blocks up to 100."""
    split = [[k] * (d // k) + ([d % k] if d % k else []) for k in (20, 36)]
    g = torch.Generator().manual_seed(d)
    uneven, left = [], d
    while left:
        uneven.append(min(left, int(torch.randint(1, 100, (1,), generator=g))))
        left -= uneven[-1]
    return [[d], *split, uneven]


def message(d: int, blocks: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sign bits, one fp32 scale per block from PAIR_SCALES or random)."""
    g = torch.Generator().manual_seed(seed)
    bits = pack_bits(vector(d, seed) >= 0)
    picks = torch.tensor(PAIR_SCALES)[torch.randint(len(PAIR_SCALES), (blocks,), generator=g)]
    scales = torch.where(torch.rand(blocks, generator=g) < 0.5, picks, torch.randn(blocks, generator=g))
    return bits, scales


def base(d: int, seed: int) -> torch.Tensor:
    """An aggregate to add into: random, signed zeros, the values' negations (sums that cancel)."""
    out = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    out[::5], out[1::7], out[2::11] = -0.0, 0.0, 1.0
    return out


@pytest.mark.parametrize("start", [True, False])
def test_pair_is_the_two_single_kernels_bit_for_bit(start, monkeypatch, one_thread):
    for d in PAIR_DS:
        for sizes in layouts(d):
            for seed in range(3):
                (bits_a, pa), (bits_b, pb) = message(d, len(sizes), 2 * seed), message(d, len(sizes), 2 * seed + 1)
                if seed == 0:  # the same scales, the same message twice
                    bits_b, pb = bits_a, pa
                want = base(d, seed)
                signs.sign_values(bits_a, sizes, pa, want, add=not start)
                signs.sign_values(bits_b, sizes, pb, want, add=True)
                got = base(d, seed)
                signs.sign_pair(bits_a, pa, bits_b, pb, sizes, got, add=not start)
                assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (d, sizes, seed)
                monkeypatch.setenv("PSGD_KERNELS", "reference")
                ref = base(d, seed)
                signs.sign_pair(bits_a, pa, bits_b, pb, sizes, ref, add=not start)
                monkeypatch.delenv("PSGD_KERNELS")
                assert torch.equal(ref.view(torch.int32), want.view(torch.int32)), (d, sizes, seed)


@pytest.mark.parametrize("start", [True, False])
@pytest.mark.parametrize("spec", SIGNS)
def test_codec_pair_is_one_pass_of_the_two_adds(spec, start, monkeypatch, one_thread):
    """add_pair on fp32 CPU messages of different scales (a signed zero among them) runs the pair
    kernel alone, and gives the floats of decode_into / accumulate then accumulate."""
    c = make(spec)
    for d in (1, 12, 65, 4100):
        x, y = vector(d, 5), -vector(d, 6)
        y[: d // 2] = 0.0  # a block of zeros: scale +0
        raws = [bytearray(c.encode(v).to_bytes()) for v in (x, y)]
        if c.scaled:
            at = len(raws[1]) - (d + 7) // 8 - 4  # the last scale, before the sign bits
            raws[1][at : at + 4] = bytes.fromhex("00000080")
        a, b = (c.from_bytes(r, d=d, check_body=False) for r in raws)
        if c.scaled:
            assert str(c.parsed(b)[0][-1].item()) == "-0.0"
        want = base(d, 1)
        c.decode_into(a, want) if start else c.accumulate(a, want)
        c.accumulate(b, want)
        got = base(d, 1)
        with monkeypatch.context() as m:
            m.setattr("psgd.compress.sign.sign_values", lambda *args, **kw: pytest.fail("a second pass"))
            m.setattr(signs, "put_values_ref", lambda *args, **kw: pytest.fail("the reference"))
            c.add_pair(a, b, got, start)
        assert torch.equal(got.view(torch.int32), want.view(torch.int32)), (spec, d)


def test_codec_pair_of_other_dtypes_adds_one_after_the_other(one_thread):
    c = make("scaled_sign")
    x = vector(100, 2).clamp(-6e4, 6e4)
    for dtype in (torch.float64, torch.float16):
        a, b = c.encode(x.to(dtype)), c.encode(-x.to(dtype))
        want = c.accumulate(b, c.decode(a))
        assert torch.equal(c.add_pair(a, b, torch.full((100,), 7.0, dtype=dtype), True), want)
