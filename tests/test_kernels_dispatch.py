"""The codecs' CUDA path without a GPU: psgd.kernels' dispatchers hand CUDA tensors to the Triton
launchers of psgd.kernels.triton and return their results; everything else takes the CPU path.

``psgd.kernels.triton.available`` is patched to say yes on CPU tensors. With recording fakes in
place of the Triton modules, each dispatcher must call its launcher with its own arguments (and
keep the CPU path where the launcher's conditions fail). Where Triton is installed, the real
launchers run in its interpreter (TRITON_INTERPRET=1, set here when no GPU is present) and every
codec must give the CPU kernels' bytes: message, decode, decode_into and accumulate.
"""

import importlib.util
import os
import sys
import types

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # read when the Triton kernels are defined

from psgd.compress import make  # noqa: E402
from psgd.kernels import natural, signs, topk  # noqa: E402
from psgd.kernels import triton as gpu  # noqa: E402
from psgd.wire import pack_bits  # noqa: E402

LAUNCHERS = {"signs": ("pack_signs", "sign_values"), "natural": ("natural_encode", "natural_into"), "topk": ("top_k",)}
RESULT = object()  # what every fake launcher returns


@pytest.fixture
def launched(monkeypatch) -> list:
    """Triton said available for every tensor, its family modules replaced by fakes that record
    (launcher name, arguments) into the returned list and return RESULT."""
    calls = []

    def fake(name):
        def launcher(*args):
            calls.append((name, args))
            return RESULT

        return launcher

    monkeypatch.setattr(gpu, "available", lambda *tensors: True)
    for family, names in LAUNCHERS.items():
        module = types.SimpleNamespace(**{name: fake(name) for name in names})
        monkeypatch.setitem(sys.modules, f"psgd.kernels.triton.{family}", module)
        monkeypatch.setattr(gpu, family, module, raising=False)  # `from ... import family` reads this first
    return calls


def same_args(call: tuple, name: str, args: tuple) -> bool:
    """The call is name(*args), tensors being the very objects passed."""
    same = [a is b if isinstance(b, torch.Tensor) else a == b for a, b in zip(call[1], args, strict=True)]
    return call[0] == name and len(call[1]) == len(args) and all(same)


def test_pack_signs(launched):
    x, bits = torch.randn(20), torch.empty(3, dtype=torch.uint8)
    assert signs.pack_signs(x, [8, 12], bits, True) is RESULT
    assert signs.pack_signs(x, [20], bits, False) is RESULT
    assert same_args(launched[0], "pack_signs", (x, [8, 12], bits, True))
    assert same_args(launched[1], "pack_signs", (x, [20], bits, False))


def test_sign_values(launched):
    bits, p, out = torch.ones(3, dtype=torch.uint8), torch.tensor([0.5, 2.0]), torch.zeros(20)
    signs.sign_values(bits, [8, 12], p, out, True)
    assert launched == [("sign_values", (bits, [8, 12], p, out, True))] and not out.any()


def test_natural(launched):
    x, body = torch.randn(9), torch.empty(11, dtype=torch.uint8)
    assert natural.natural_encode(x, 5, body) is RESULT
    assert natural.natural_encode(x.half(), None, body) is RESULT
    out = torch.zeros(9)
    natural.natural_into(body, out, 0.5, True)
    assert same_args(launched[0], "natural_encode", (x, 5, body))
    assert launched[1][0] == "natural_encode" and launched[1][1][0].dtype == torch.float16
    assert same_args(launched[2], "natural_into", (body, out, 0.5, True)) and not out.any()


def test_top_k(launched):
    x = torch.randn(30)
    assert topk.top_k(x, 4) is RESULT
    assert same_args(launched[0], "top_k", (x, 4))
    assert topk.top_k(x[::2], 3) is RESULT  # made contiguous for the launcher
    assert launched[1][1][0].is_contiguous() and torch.equal(launched[1][1][0], x[::2])


def test_outside_the_launchers_conditions(launched):
    """float64, non-contiguous or otherwise unsupported inputs keep the CPU path (its results)."""
    x = torch.randn(40, dtype=torch.float64)
    bits = torch.empty(5, dtype=torch.uint8)
    assert torch.equal(signs.pack_signs(x, [40], bits, True), signs.pack_signs_ref(x, [40], True)[1])
    assert torch.equal(bits, pack_bits(x >= 0))
    signs.pack_signs(x.float()[::2], [20], bits[:3], False)  # not contiguous
    out = torch.zeros(40, dtype=torch.float64)
    signs.sign_values(bits, [40], torch.ones(1, dtype=torch.float64), out, False)
    body = torch.empty(45, dtype=torch.uint8)
    natural.natural_encode(x, None, body)
    natural.natural_into(body, out, 1.0, False)
    assert topk.top_k(x, 3)[0].numel() == 3 and topk.top_k(torch.randn(9, dtype=torch.float16), 2)[0].numel() == 2
    assert launched == []


def test_available_false_keeps_the_cpu_path(launched, monkeypatch):
    monkeypatch.setattr(gpu, "available", lambda *tensors: False)
    x = torch.randn(20)
    bits = torch.empty(3, dtype=torch.uint8)
    signs.pack_signs(x, [20], bits, True)
    out = torch.empty(20)
    signs.sign_values(bits, [20], torch.ones(1), out, False)
    assert torch.equal(out, torch.where(x >= 0, 1.0, -1.0))
    body = torch.empty(23, dtype=torch.uint8)
    natural.natural_encode(x, 7, body)
    natural.natural_into(body, out, 1.0, True)
    assert torch.equal(topk.top_k(x, 5)[0], topk.top_k_ref(x, 5)[0])
    assert launched == []


def test_available_on_cpu_tensors():
    assert not gpu.available(torch.zeros(3)) and not gpu.available(torch.zeros(3), torch.zeros(1))


CODECS = {  # spec: the Triton launchers its encode and decode go through
    "sign": {"pack_signs", "sign_values"},
    "scaled_sign": {"pack_signs", "sign_values"},
    "block_sign:bucket=20": {"pack_signs", "sign_values"},
    "block_sign:bucket=0": {"pack_signs", "sign_values"},
    "natural": {"natural_encode", "natural_into"},
    "natural_round": {"natural_encode", "natural_into"},
    "topk:ratio=0.1": {"top_k"},
    "topk:k=1": {"top_k"},
}
DS = (1, 9, 1000, 4099)  # a byte's tail, a 1024-coordinate block's tail (the interpreter is slow)


def vector(d: int, seed: int) -> torch.Tensor:
    """Normal draws over many magnitudes, with -0, +0, subnormals, ties and a large value up front."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(d, generator=g) * 10.0 ** torch.randint(-6, 7, (d,), generator=g)
    edges = torch.tensor([-0.0, 0.0, 1e-45, -3e-39, 0.75, -0.75, 0.75, 1e30])[:d]
    x[: edges.numel()] = edges
    return x


def outputs(spec: str, x: torch.Tensor, seed: int) -> list[bytes]:
    """Bytes of the message, decode, decode_into and accumulate (weights 1, -1, 0.5) of its parsed form."""
    c = make(spec)
    raw = c.encode(x, torch.Generator().manual_seed(seed)).to_bytes()
    m = c.from_bytes(bytearray(raw))
    start = torch.randn(x.numel(), generator=torch.Generator().manual_seed(seed + 1))
    dense = [c.decode(m), c.decode_into(m, torch.full_like(x, 7.0))]
    dense += [c.accumulate(m, start.clone(), w) for w in (1.0, -1.0, 0.5)]
    return [raw, *(t.view(torch.uint8).numpy().tobytes() for t in dense)]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
@pytest.mark.parametrize("spec", CODECS)
def test_triton_path_gives_the_cpu_bytes(spec, monkeypatch, one_thread):
    used = set()

    def counted(module, name):
        launcher = getattr(module, name)

        def run(*args):
            used.add(name)
            return launcher(*args)

        return run

    for family, names in LAUNCHERS.items():
        module = importlib.import_module(f"psgd.kernels.triton.{family}")
        for name in names:
            monkeypatch.setattr(module, name, counted(module, name))
    halves = (torch.float16, torch.bfloat16) if spec.startswith("natural") else ()  # the encoder reads them too
    for d, dtype in [*((d, torch.float32) for d in DS), *((1000, dtype) for dtype in halves)]:
        x = vector(d, d).clamp(-3e4, 3e4).to(dtype)
        if dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1":
            x[x.abs() < 2.0**-126] = 0.0  # the interpreter widens bf16 subnormals wrongly (a GPU, exactly)
        cpu = outputs(spec, x, d)
        assert not used
        with monkeypatch.context() as patch:
            patch.setattr(gpu, "available", lambda *tensors: True)
            assert outputs(spec, x, d) == cpu, (spec, d, dtype)
        assert used == (CODECS[spec] if dtype == torch.float32 else {"natural_encode"})
        used.clear()
