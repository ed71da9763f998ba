"""Triton kernels (the CUDA path) against the torch references, bit for bit.

On a machine with a GPU the kernels run on CUDA and the references on the CPU, so the test also
says: same bytes on every device. Without one they run in Triton's interpreter on CPU tensors
(TRITON_INTERPRET=1, set here when no GPU is present). Skipped where Triton is not installed.
"""

import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the kernels are defined, below
pytest.importorskip("triton")

from psgd.compress.dithering import natural_level_values, natural_levels, normalized, uniform_levels, wire_norm  # noqa: E402
from psgd.kernels import rng, topk  # noqa: E402
from psgd.kernels import triton as tk  # noqa: E402
from psgd.kernels.natural import fields_ref, values_ref  # noqa: E402
from psgd.kernels.triton import dither, natural, signs  # noqa: E402
from psgd.kernels.triton import rng as trng  # noqa: E402
from psgd.kernels.triton import topk as ttopk  # noqa: E402
from psgd.wire import pack_bits, pack_uint, uint_width, unpack_bits, unpack_uint  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1" else "cpu"
DS = (1, 7, 8, 9, 33, 1000, 4099)  # every tail of a byte and of a 1024-coordinate block
SHORT = (9, 1000)  # for the further variants (the interpreter takes ~0.1 s per block)
KEYS = (0, 0xDEADBEEF12345678, 2**64 - 1)
WEIGHTS = (1.0, -1.0, 0.5)


def vector(d: int, seed: int, spread: int = 0) -> torch.Tensor:
    """Normal draws (times 10^[-spread, spread]) with edge values up front: -0, +0, subnormals, ties, a large one."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g)
    if spread:
        x *= 10.0 ** torch.randint(-spread, spread + 1, (d,), generator=g)
    edges = torch.tensor([-0.0, 0.0, 1e-45, -3e-39, 0.75, -0.75, 0.75, 1e30])[:d]
    x[: edges.numel()] = edges
    return x


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bits (so -0.0 != 0.0), wherever a lives."""
    a = a.cpu()
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    )


def on_device(t: torch.Tensor) -> torch.Tensor:
    return t.to(DEVICE, copy=True)  # a new tensor even on the CPU: kernels write into some


def test_available():
    x = torch.zeros(3)
    assert not tk.available(x)  # CPU tensors take the numba kernels
    if torch.cuda.is_available():
        assert tk.available(x.cuda())


def test_available_reference(monkeypatch):
    monkeypatch.setenv("PSGD_KERNELS", "reference")
    assert not tk.available(torch.zeros(3, device=DEVICE))


def test_uniform():
    for d in DS:
        assert same(trng.uniform(KEYS[1], d, DEVICE), rng.uniform_ref(KEYS[1], d))
    for key in KEYS:
        for start in (4000, 2**16 - 50):  # within a block key's 2^16 counters and across two
            assert same(trng.uniform(key, 100, DEVICE, start=start), rng.uniform_ref(key, 100, start=start))


def test_pack_signs():
    for d in DS:
        x = vector(d, d, spread=3)
        check_pack_signs(x, [d])
    for d in SHORT:
        for sizes in block_layouts(d):
            check_pack_signs(vector(d, len(sizes), spread=3), sizes)
    bits = torch.empty(2, dtype=torch.uint8, device=DEVICE)
    x = torch.tensor([0.0, -0.0] * 5)
    assert float(signs.pack_signs(on_device(x), [10], bits, l1=True)) == 0 and same(bits, pack_bits(x >= 0))


def check_pack_signs(x: torch.Tensor, sizes: list[int]) -> None:
    bits = torch.empty((x.numel() + 7) // 8, dtype=torch.uint8, device=DEVICE)
    assert signs.pack_signs(on_device(x), sizes, bits, l1=False) is None and same(bits, pack_bits(x >= 0))
    bits.zero_()
    l1 = signs.pack_signs(on_device(x), sizes, bits, l1=True)
    assert same(bits, pack_bits(x >= 0))
    l1_ref = torch.stack([torch.linalg.vector_norm(b, 1, dtype=torch.float64) for b in x.split(sizes)])
    assert torch.allclose(l1.cpu(), l1_ref, rtol=1e-14, atol=0)
    n = torch.tensor(sizes, dtype=torch.float64)
    assert same((l1.cpu() / n).to(torch.float32), (l1_ref / n).to(torch.float32)), sizes  # the scales on the wire


def block_layouts(d: int) -> list[list[int]]:
    """One block, ragged blocks, blocks of 5 and a short last one, single coordinates then one big block."""
    ragged = [s for s in (d // 3, d - d // 3 - 1, 1) if s]
    fives = [5] * (d // 5) + ([d % 5] if d % 5 else [])
    return [[d], ragged, fives, [1] * min(d, 40) + ([d - 40] if d > 40 else [])]


def check_sign_values(d: int, sizes: list[int], weight: float) -> None:
    x = vector(d, len(sizes))
    bits = pack_bits(x >= 0)
    l1 = torch.stack([torch.linalg.vector_norm(b, 1, dtype=torch.float64) for b in x.split(sizes)])
    p = (weight * l1 / torch.tensor(sizes, dtype=torch.float64)).to(torch.float32)
    value = p.repeat_interleave(torch.tensor(sizes))
    dense = torch.where(unpack_bits(bits, d), value, -value)  # psgd.kernels.signs.sign_values_ref
    out = torch.empty(d, device=DEVICE)
    signs.sign_values(on_device(bits), sizes, on_device(p), out, False)
    assert same(out, dense)
    base = vector(d, 4)
    out = on_device(base)
    signs.sign_values(on_device(bits), sizes, on_device(p), out, True)
    assert same(out, base + dense)


def test_sign_values():
    for d in DS:
        check_sign_values(d, [d], 1.0)
    for d in SHORT:
        for sizes in block_layouts(d):
            for weight in WEIGHTS:
                check_sign_values(d, sizes, weight)


def natural_vector(d: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Values over 60 decades (within what cannot round past the dtype's largest power of two)."""
    top = 3e4 if dtype == torch.float16 else 1.5e38
    return vector(d, seed, spread=30).clamp(-top, top).to(dtype)


def check_natural_encode(x: torch.Tensor, key: int | None) -> None:
    d = x.numel()
    field, negative = fields_ref(x, None if key is None else rng.uniform_ref(key, d))
    body = torch.empty(d + (d + 7) // 8, dtype=torch.uint8, device=DEVICE)
    assert natural.natural_encode(on_device(x), key, body) == float(x.abs().max())
    assert same(body, torch.cat([field.to(torch.uint8), pack_bits(negative)])), (d, x.dtype, key)


def test_natural_encode():
    for d in DS:
        check_natural_encode(natural_vector(d, d), KEYS[1])
        check_natural_encode(natural_vector(d, d), None)
    for d in SHORT:
        for dtype in (torch.float16, torch.bfloat16):
            check_natural_encode(natural_vector(d, 1, dtype), KEYS[1])
        for key in (KEYS[0], KEYS[2]):
            check_natural_encode(natural_vector(d, 2), key)


def check_values_ref(d: int, weight: float, add: bool) -> None:
    field, negative = fields_ref(natural_vector(d, 5), rng.uniform_ref(KEYS[1], d))
    body = torch.cat([field.to(torch.uint8), pack_bits(negative)])
    dense = values_ref(body[:d], unpack_bits(body[d:], d), torch.float32)
    base = vector(d, 6)
    out = on_device(base)
    natural.natural_into(on_device(body), out, weight, add)
    assert same(out, base.add_(dense, alpha=weight) if add else dense)


def test_values_ref():
    for d in DS:
        check_values_ref(d, 1.0, False)
        check_values_ref(d, 1.0, True)
    for d in SHORT:
        check_values_ref(d, -1.0, True)
        check_values_ref(d, 0.5, True)


LEVELS = [(1, False), (2, False), (16, False), (127, False), (1, True), (3, True), (8, True), (127, True)]


def dither_reference(x: torch.Tensor, p: float, s: int, nat: bool, key: int):
    """(wire norm, packed codes) of psgd.compress.dithering's fixed-length coding."""
    _, norm = wire_norm(x, p)
    levels = (natural_levels if nat else uniform_levels)(normalized(x, norm), s, rng.uniform_ref(key, x.numel()))
    return norm, pack_uint((levels << 1) | (x < 0), 1 + uint_width(s))


def dither_vector(d: int, seed: int, spread: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return vector(d, seed, spread).clamp(-1e4, 1e4).to(dtype)  # fp32 squares stay finite


def check_dither_encode(x: torch.Tensor, p: float, s: int, nat: bool, key: int) -> None:
    norm, expected = dither_reference(x, p, s, nat, key)
    codes = torch.empty(expected.numel(), dtype=torch.uint8, device=DEVICE)
    dither.dither_encode(on_device(x), on_device(torch.where(norm > 0, 1 / norm, 0)), key, s, nat, codes)
    assert same(codes, expected), (x.numel(), x.dtype, p, s, nat, key)


@pytest.mark.parametrize("s,nat", LEVELS)
def test_dither_encode(s, nat):
    for d in SHORT:
        check_dither_encode(dither_vector(d, s), 2.0, s, nat, KEYS[1])
    check_dither_encode(dither_vector(1000, s, spread=6), float("inf"), s, nat, KEYS[2])


def test_dither_encode_sizes_and_dtypes():
    for d in DS:
        check_dither_encode(dither_vector(d, d), 2.0, 16, False, KEYS[1])
    for dtype in (torch.float16, torch.bfloat16):
        check_dither_encode(dither_vector(1000, 3, dtype=dtype), 2.0, 8, True, KEYS[1])
    check_dither_encode(torch.zeros(9), 2.0, 4, False, KEYS[1])  # norm 0: every level 0


def check_dither_values(d: int, s: int, nat: bool, weight: float, add: bool) -> None:
    norm, codes = dither_reference(dither_vector(d, 7), 2.0, s, nat, KEYS[1])
    levels = torch.arange(2 ** uint_width(s))
    table = natural_level_values(levels, s, torch.float32) * norm if nat else levels.to(torch.float32) * (norm / s)
    c = unpack_uint(codes, d, 1 + uint_width(s))
    dense = torch.where((c & 1).bool(), -table[c >> 1], table[c >> 1])
    base = vector(d, 8)
    out = on_device(base)
    dither.dither_into(on_device(codes), s, on_device(table), out, weight, add)
    assert same(out, base.add_(dense, alpha=weight) if add else dense), (d, s, nat, weight, add)
    assert dither.max_level(on_device(codes), d, s) == int((c >> 1).max())


@pytest.mark.parametrize("s,nat", LEVELS)
def test_dither_values(s, nat):
    check_dither_values(1000, s, nat, 1.0, False)
    check_dither_values(1000, s, nat, 0.5, True)


def test_dither_values_sizes():
    for d in DS:
        check_dither_values(d, 16, False, 1.0, True)
    check_dither_values(9, 8, True, -1.0, True)
    codes = pack_uint(torch.tensor([1, 0, 7 << 1, 5]), 4)  # a level above s = 5 that a frame may carry
    assert dither.max_level(on_device(codes), 4, 5) == 7


def top_k_input(kind: str, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(d)
    if kind == "normal":
        return torch.randn(d, generator=g)
    if kind == "ties":  # few distinct values, zeros as -0.0 among them
        x = torch.randint(-3, 4, (d,), generator=g).float()
        return x.where(x != 0, -0.0)
    if kind == "zeros":
        return torch.tensor([0.0, -0.0]).repeat(d)[:d]
    return vector(d, 10, spread=30)


def check_top_k(x: torch.Tensor, k: int) -> None:
    idx, val = ttopk.top_k(on_device(x), k)
    idx_ref, val_ref = topk.top_k_ref(x, k)
    assert same(idx, idx_ref) and same(val, val_ref), (x.numel(), k)


def test_top_k():
    for d in DS:
        check_top_k(top_k_input("normal", d), d // 3 + 1)
    for kind in ("ties", "zeros", "wide"):
        for k in (1, 334, 1000):
            check_top_k(top_k_input(kind, 1000), k)
    check_top_k(top_k_input("ties", 4099), 2000)


COMPILE = """
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from psgd.kernels.triton import dither, natural, rng, signs, topk

X, U8, F32 = "*fp32", "*u8", "*fp32"
CASES = [  # (kernel, argument types, constants); n = 1 is a constant at run time, as Triton specialises it
    (rng._uniform, dict(out_ptr=F32, n="i32", start="i32", k0="i64", k1="i32"), {}),
    (signs._pack, dict(x_ptr=X, bits_ptr=U8, l1_ptr="*fp64", n="i32"), dict(L1=True)),
    (signs._block_l1, dict(x_ptr=X, ends_ptr="*i64", partial_ptr="*fp64", chunks="i32"), {}),
    (signs._sign_values, dict(bits_ptr=U8, ends_ptr="*i64", p_ptr=F32, out_ptr=F32, n="i32", nblocks="i32"),
     dict(STEPS=3, ADD=True)),
    (natural._encode, dict(x_ptr="*fp16", field_ptr=U8, sign_ptr=U8, top_ptr="*i32", n=1, k0="i64", k1="i32"),
     dict(STOCHASTIC=True)),
    (natural._natural_into, dict(body_ptr=U8, out_ptr=F32, n="i32", weight="fp32"), dict(ADD=True)),
    (dither._encode, dict(x_ptr="*bf16", inv_ptr=F32, out_ptr=U8, n="i32", k0="i32", k1="i64", s="i32",
                          first="fp32", below="fp32"), dict(NATURAL=True, WIDTH=5)),
    (dither._dither_into, dict(codes_ptr=U8, table_ptr=F32, out_ptr=F32, n=1, weight="fp32"), dict(ADD=True, WIDTH=6)),
    (dither._max_level, dict(codes_ptr=U8, top_ptr="*i32", n="i32"), dict(WIDTH=3)),
    (topk._histogram, dict(x_ptr=X, prefix_ptr="*i32", hist_ptr="*i32", n="i32"), dict(SHIFT=16)),
    (topk._count, dict(x_ptr=X, t_ptr="*i32", above_ptr="*i32", ties_ptr="*i32", n="i32"), {}),
    (topk._write, dict(x_ptr=X, t_ptr="*i32", need_ptr="*i32", ties_before_ptr="*i32", kept_before_ptr="*i32",
                       idx_ptr="*i64", val_ptr=F32, n="i32"), {}),
]
for fn, types, constants in CASES:
    constants = {**{k: v for k, v in types.items() if isinstance(v, int)}, **constants, "BLOCK": 1024}
    signature = {**types, **dict.fromkeys(constants, "constexpr")}
    names = list(signature)
    src = ASTSource(fn=fn, signature=signature, constexprs={(names.index(k),): v for k, v in constants.items()})
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(enable_fp_fusion=False)).asm["ptx"]
    assert "fma.rn.f32" not in ptx, fn  # the CPU rounds products before sums
"""


@pytest.mark.skipif(DEVICE == "cuda", reason="the other tests compile and run every kernel on the GPU")
def test_compiles_for_cuda():
    """Every kernel compiles to an H100/H200 (sm_90) binary without a GPU: the interpreter is laxer
    about types than the compiler."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    subprocess.run([sys.executable, "-c", COMPILE], env=env, check=True, timeout=600)
