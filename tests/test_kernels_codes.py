"""Compiled bit codes and sparse dithering against their torch references, bit for bit."""

import pytest
import torch

from psgd.compress import make
from psgd.errors import FrameError
from psgd.wire.codes import BitReader, BitWriter, join_bits, split_bits

SIZES = [0, 1, 2, 7, 63, 64, 65, 1000, 4099]


@pytest.fixture(params=["compiled", "reference"])
def mode(request, monkeypatch):
    if request.param == "reference":
        monkeypatch.setenv("PSGD_KERNELS", "reference")
    return request.param


def ints(n: int, high: int, seed: int, low: int = 0) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=torch.Generator().manual_seed(seed))


def sections(n: int, seed: int) -> list[tuple[str, tuple]]:
    """One of each section, with values up to the limits (bit lengths up to 62, widths 0..63)."""
    widths = ints(n, 64, seed)
    big = torch.where(ints(n, 2, seed + 1).bool(), ints(n, 2**62, seed + 2, 2**62 - 2**20), ints(n, 9, seed + 3, 1))
    return [
        ("gammas", (big,)),
        ("bits", (ints(n, 2, seed + 4).bool(),)),
        ("uints", (ints(n, 2**62, seed + 5), 63)),
        ("unary", (ints(n, 200, seed + 6),)),
        ("varuints", (ints(n, 2**62, seed + 7) & ((1 << widths) - 1), widths)),
        ("rice", (ints(n, 5000, seed + 8), 5)),
        ("uints", (ints(n, 2, seed + 9), 1)),
        ("gammas", (ints(n, 4, seed + 10, 1),)),
        ("uints", (ints(n, 2**13, seed + 11), 13)),
    ]


def write(parts) -> BitWriter:
    w = BitWriter("cpu")
    for name, args in parts:
        getattr(w, name)(*args)
    return w


def read(body, nbits, parts):
    r = BitReader(body, nbits, "t")
    out = []
    for name, args in parts:
        if name == "gammas":
            out.append(r.gammas(args[0].numel(), 63))
        elif name == "bits":
            out.append(r.bits(args[0].numel()))
        elif name == "uints":
            out.append(r.uints(args[0].numel(), args[1]))
        elif name == "unary":
            out.append(r.unary(args[0].numel(), 10**6))
        elif name == "varuints":
            out.append(r.varuints(args[1]))
        else:
            out.append(r.rice(args[0].numel(), args[1], 10**6))
    r.finish()
    return out


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("seed", [0, 1])
def test_sections_compiled_equal_reference(n, seed, monkeypatch):
    parts = sections(n, seed)
    w = write(parts)
    body = w.packed()
    monkeypatch.setenv("PSGD_KERNELS", "reference")
    ref = write(parts)
    assert w.nbits == ref.nbits and torch.equal(body, ref.packed())
    expected = [args[0] for _, args in parts]
    for got in (read(body, w.nbits, parts), read(body.clone(), w.nbits, parts)):
        assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    monkeypatch.delenv("PSGD_KERNELS")
    assert all(torch.equal(a, b) for a, b in zip(read(body, w.nbits, parts), expected, strict=True))


@pytest.mark.parametrize("nbits", [[3, 0, 17], [5, 64, 9, 130], [8, 16, 3], [1]])
def test_join_split_compiled_equal_reference(nbits, monkeypatch):
    parts = [torch.randint(0, 256, (-(-n // 8),), dtype=torch.uint8) for n in nbits]
    body = join_bits(parts, nbits)
    back = split_bits(body, nbits, "t")
    monkeypatch.setenv("PSGD_KERNELS", "reference")
    assert torch.equal(body, join_bits(parts, nbits))
    assert all(torch.equal(a, b) for a, b in zip(back, split_bits(body, nbits, "t"), strict=True))


def malformed_cases():
    w = BitWriter("cpu")
    w.unary(torch.tensor([3, 50]))
    body, n = w.packed(), w.nbits
    g = BitWriter("cpu")
    g.gammas(torch.tensor([2**40, 5]))
    return [
        (body, n, lambda r: r.unary(2, 10), "code value out of range"),
        (body, n, lambda r: r.unary(3, 100), "ends inside a unary code"),
        (body, n, lambda r: r.gammas(3), "ends inside a unary code"),
        (body, n, lambda r: r.gammas(2), "body ends early"),
        (body, n, lambda r: r.rice(2, 9, 100), "body ends early"),
        (body, n, lambda r: r.uints(10, 8), "body ends early"),
        (body, n, lambda r: r.bits(n + 1), "body ends early"),
        (g.packed(), g.nbits, lambda r: r.gammas(2, max_bits=30), "code value out of range"),
        (g.packed(), g.nbits - 1, lambda r: r.gammas(2), "body ends early"),
        (body, n, lambda r: (r.unary(1, 100), r.finish()), "unread bits"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_malformed_streams_raise_frame_errors(case, mode):
    body, n, op, message = malformed_cases()[case]
    with pytest.raises(FrameError, match=message):
        op(BitReader(body, n, "t"))


def inputs(d: int, seed: int) -> list[torch.Tensor]:
    x = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    edge = x.clone()
    edge[::3] = 0.0
    edge[1::5] = -0.0
    edge[2::7] = 1e-42  # subnormal
    edge[0] = 1e37  # huge
    flat = torch.where(x < 0, -1.0, 1.0)  # every k_i = round(1/(2 sqrt(nu))): with nu = 0.006, 16 codes > 64 bits
    return [x, edge, torch.zeros(d), x * 1e-30, flat]


SPECS = [
    "sparse_dither:nu=0.1",
    "sparse_dither:nu=0.1,random=true",
    "sparse_dither:nu=4",
    "sparse_dither:nu=1e-3",
    "sparse_dither:nu=0.006,random=true",
]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("d", [1, 2, 7, 8, 9, 31, 33, 1000, 4099, 100003])
def test_sparse_dither_compiled_equal_reference(spec, d, monkeypatch):
    c = make(spec)
    for seed, x in enumerate(inputs(d, d)):
        m = c.encode(x, torch.Generator().manual_seed(seed))
        data = m.to_bytes()
        out = torch.randn(d, generator=torch.Generator().manual_seed(seed))
        out[::4] = -0.0
        got = [c.decode(m), c.decode(c.from_bytes(bytearray(data), "cpu", d))]
        got += [c.accumulate(c.from_bytes(data), out.clone(), w) for w in (1.0, -1.0, 0.5)]
        got.append(c.decode_into(m, torch.full((d,), 7.0)))
        monkeypatch.setenv("PSGD_KERNELS", "reference")
        ref = c.encode(x, torch.Generator().manual_seed(seed))
        assert ref.meta == m.meta and torch.equal(ref.body, m.body)
        y = c.decode(c.from_bytes(data))
        want = [y, y] + [out.clone().add_(y, alpha=w) for w in (1.0, -1.0, 0.5)] + [y]
        for a, b in zip(got, want, strict=True):
            assert torch.equal(a.view(torch.int32), b.view(torch.int32))
        monkeypatch.delenv("PSGD_KERNELS")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_sparse_dither_other_dtypes_equal_reference(dtype, monkeypatch):
    c = make("sparse_dither:nu=0.1,random=true")
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0)).to(dtype)
    m = c.encode(x, torch.Generator().manual_seed(1))
    y = c.decode(c.from_bytes(m.to_bytes()))
    monkeypatch.setenv("PSGD_KERNELS", "reference")
    assert torch.equal(c.encode(x, torch.Generator().manual_seed(1)).body, m.body)
    assert torch.equal(c.decode(c.from_bytes(m.to_bytes())), y)
