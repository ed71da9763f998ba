"""Compiled fp16/bf16 widening against torch, bit for bit: the widening of every fp16 bit pattern
(NaN payloads aside) and of a sweep of bf16 ones; accumulate with weight 1 and -1 (the numba kernel)
and 0.5 (torch's chunks) against the reference across vector-width edges, with signed zeros,
subnormals and the extremes; the pair kernel against the two single adds, start True and False;
and the codecs' add_pair and accumulate on both paths."""

import numpy as np
import pytest
import torch
from kernel_checks import same_bits

from psgd import kernels
from psgd.compress import make
from psgd.kernels import cast

DTYPES = (torch.float16, torch.bfloat16)
SIZES = (1, 7, 8, 9, 15, 16, 17, 4097, 100003)
EDGES = (0.0, -0.0, 2.0**-24, -(2.0**-24), 2.0**-20, 3 * 2.0**-17, 2.0**-14, -(2.0**-14), 65504.0, -65504.0, 1.0, -1.0)

pytestmark = pytest.mark.skipif(kernels.numba is None, reason="numba not installed")

if kernels.numba is not None:

    @kernels.numba.njit
    def widen_all(h, out, half, flip):
        for i in range(h.size):
            out[i] = cast.fp16_value(h[i], flip) if half else cast.bf16_value(h[i], flip)


def patterns(dtype: torch.dtype) -> torch.Tensor:
    """Every 16-bit pattern as values of dtype."""
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_widening_every_pattern(dtype):
    """fp16: all 65536 patterns exhaustively (finite and infinite exact, NaN stays NaN); bf16 too (a
    shift: the sweep costs nothing more)."""
    values = patterns(dtype)
    want = values.to(torch.float32)
    nan = want.isnan()
    assert int(nan.sum()) == (2046 if dtype == torch.float16 else 254)
    for flip, sign in ((0, 1.0), (0x8000, -1.0)):  # the sign flip is the weight -1
        got = np.empty(values.numel(), np.float32)
        widen_all(cast.bits(values), got, dtype == torch.float16, np.uint32(flip))
        got = torch.from_numpy(got)
        assert same_bits(got[~nan], sign * want[~nan])
        assert bool(got[nan].isnan().all())


def vector(d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """Values over many magnitudes (subnormals to 65504), the edges up front (and again at the end)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g) * 2.0 ** torch.randint(-26, 15, (d,), generator=g).float()
    x = x.clamp(-65504.0, 65504.0).to(dtype)
    edges = torch.tensor(EDGES).to(dtype)
    k = min(d, edges.numel())
    x[:k] = edges[:k]
    x[d - k :] = edges[:k].flip(0)
    return x


def base(d: int, seed: int) -> torch.Tensor:
    """An fp32 aggregate with signed zeros and values that cancel some widened ones."""
    g = torch.Generator().manual_seed(seed)
    out = torch.randn(d, generator=g) * 2.0 ** torch.randint(-30, 16, (d,), generator=g).float()
    out[::5] = -0.0
    out[1::7] = 0.0
    return out


def reference_add(values: torch.Tensor, out: torch.Tensor, weight: float) -> torch.Tensor:
    cast.add_widened_ref(values, out, weight)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", SIZES)
def test_accumulate_equals_reference(dtype, d, one_thread):
    v = vector(d, dtype, d)
    start = base(d, d + 1)
    start[: d // 2] = -v[: d // 2].float()  # exact cancellations: +0 from x + -x
    for w in (1.0, -1.0, 0.5):
        got = start.clone()
        cast.add_widened(v, got, w)
        assert same_bits(got, reference_add(v, start.clone(), w)), (dtype, d, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_weights_take_their_paths(dtype, monkeypatch):
    """Weights +-1 run the kernel, any other weight torch's chunks (a fused multiply-add there)."""
    calls = []
    kernel = cast.add_kernel
    monkeypatch.setattr(cast, "add_chunks", lambda *a: calls.append(a[2]))
    v, out = vector(100, dtype, 0), base(100, 1)
    for w in (1.0, -1.0, 0.5, 0.3):
        cast.add_widened(v, out, w)
    assert calls == [0.5, 0.3] and not kernel.broken


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_accumulate_and_weight_half(dtype, one_thread):
    d = 2 * cast.CHUNK + 9
    v = vector(d, dtype, 3)
    start = base(d, 4)
    for w in (1.0, -1.0, 0.5, 0.3):
        got = start.clone()
        cast.add_widened(v, got, w)
        assert same_bits(got, reference_add(v, start.clone(), w)), (dtype, w)


@pytest.mark.parametrize("start", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", SIZES)
def test_pair_is_the_two_adds(dtype, d, start, one_thread):
    a, b = vector(d, dtype, 2 * d), vector(d, dtype, 2 * d + 1)
    b[: d // 3] = -a[: d // 3]  # pairs that cancel to zero
    first = base(d, d)
    want = first.clone()
    if start:
        want.copy_(a)
    else:
        cast.add_widened_ref(a, want, 1.0)
    cast.add_widened_ref(b, want, 1.0)
    got = first.clone()
    cast.add_widened_pair(a, b, got, start)
    assert same_bits(got, want)
    assert not cast.pair_kernel.broken


@pytest.mark.parametrize("paths", ["compiled", "reference"])
@pytest.mark.parametrize("start", [True, False])
@pytest.mark.parametrize("spec", ["fp16", "bf16"])
def test_codec_pair_and_accumulate(spec, start, paths, monkeypatch, one_thread):
    """The codec's add_pair equals decode_into/accumulate of one message then accumulate of the other;
    accumulate at +-1 equals out + decode(m) (the reference); PSGD_KERNELS=reference forces torch."""
    if paths == "reference":
        monkeypatch.setenv("PSGD_KERNELS", "reference")
        for kernel in (cast.add_kernel, cast.pair_kernel):
            monkeypatch.setattr(kernel, "jit", None)  # would raise if called
    c = make(spec)
    d = 4097
    x = vector(d, torch.float32, 5)
    y = vector(d, torch.float32, 6)
    a, b = (c.from_bytes(bytearray(c.encode(v).to_bytes())) for v in (x, y))
    first = base(d, 7)
    want = first.clone()
    if start:
        c.decode_into(a, want)
    else:
        c.accumulate(a, want)
    c.accumulate(b, want)
    got = first.clone()
    assert c.add_pair(a, b, got, start) is got
    assert same_bits(got, want)
    for w in (1.0, -1.0):
        acc = c.accumulate(a, first.clone(), w)
        assert same_bits(acc, first.clone().add_(c.decode(a), alpha=w))


def test_other_dtypes_take_torch():
    """fp64 aggregates and non-contiguous out fall back to the references."""
    v = vector(33, torch.float16, 8)
    out64 = base(33, 9).double()
    want = out64.clone().add_(v.double())
    cast.add_widened(v, out64, 1.0)
    assert torch.equal(out64, want)
    wide = base(66, 10)
    want = wide.clone()
    want[::2].add_(v.float())
    cast.add_widened(v, wide[::2], 1.0)
    assert same_bits(wide, want)
    pair = wide.clone()
    want = wide.clone()
    want[::2].add_(v.float()).add_(v.float())
    cast.add_widened_pair(v, v, pair[::2], False)
    assert same_bits(pair, want)
