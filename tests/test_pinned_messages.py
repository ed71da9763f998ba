"""Pinned message bytes: for a fixed x and generator, every codec's message hashes to the value in
tests/pinned_messages.json, whatever path encoded it (the compiled CPU kernels here, the torch
references with PSGD_KERNELS=reference, and on a GPU machine the CUDA path in
test_compress_cuda.py). So a GPU worker's message is checked against bytes a CPU produced, and a
change to any codec's bytes is a visible, deliberate change of this file.

pinned_input's outlier (x[30] = -3e4) takes the norm of the dithering codecs and leaves every other
level 0 with certainty: their messages there do not depend on the draws. So each stochastic spec is
pinned on normal_input too, and the draws are checked to matter: two seeds give other bytes.

PowerSGD's factors (BLAS) come from a matrix product and a QR: their bits are the BLAS's and LAPACK's
(another summation order, another sign of a column), which differ between machines and devices. Its
message is held instead to what no BLAS changes: C(x) = P P^T M for its draws Q, to fp32 accuracy.

Regenerate (after a deliberate format or generator change): PSGD_PIN=1 pytest tests/test_pinned_messages.py
"""

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from compress_specs import SPECS, resolve

from psgd.compress import make
from psgd.compress.randomness import normal

PINS = Path(__file__).with_name("pinned_messages.json")
D = 1000
# the specs whose messages depend on the generator's draws
STOCHASTIC = [
    "randk:ratio=0.3",
    "randk:k=3,shared_seed=false",
    "randk:ratio=0.5,scaled=false",
    "adaptive_rand",
    "terngrad",
    "qsgd:s=1",
    "qsgd:s=5",
    "qsgd:p=inf,s=3",
    "qsgd:s=4,coding=elias",
    "qsgd:p=inf,s=2,coding=elias",
    "natural",
    "natural_dither:s=3",
    "natural_dither:p=2,s=8",
    "topk_natural:ratio=0.3",
    "topk_natural:k=2,scaled=false",
    "topk_dither:ratio=0.3,s=4",
    "sparse_dither:nu=0.3,random=true",
    "spherical:alpha=0.5,block=4",
    "powersgd:rank=2",
    "per_layer(randk:k=1,shared_seed=true, layers=LAYERS)",
    "bucket(qsgd:s=2,coding=elias, size=24)",
    "small_dense(randk:ratio=0.5, min_size=2, layers=LAYERS)",
    "scaled(natural)",
    "scaled(randk:ratio=0.25,shared_seed=false)",
]
BLAS = ["powersgd:rank=2"]
PINNED = [spec for spec in SPECS if spec not in BLAS]
PINNED_DRAWS = [spec for spec in STOCHASTIC if spec not in BLAS]


def pinned_input(d: int = D) -> torch.Tensor:
    """A vector with the cases kernels get wrong: zeros, a negative zero, ties, tiny and large values."""
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    x[::97] = 0.0
    x[5] = -0.0
    x[10:14] = 1.5
    x[20] = 1e-40
    x[30] = -3e4
    return x


def normal_input(d: int = D) -> torch.Tensor:
    """A normal vector with no outlier (every coordinate's level is drawn), a few zeros, a negative
    zero, exact ties (equal values, one of them the largest |x_i|) and subnormals."""
    x = torch.randn(d, generator=torch.Generator().manual_seed(2))
    x[::101] = 0.0
    x[7] = -0.0
    x[40:43] = -x.abs().max()
    x[50:53] = 0.75
    x[60], x[61], x[62] = 1e-40, -1e-45, 3e-39
    return x


def normal_key(spec: str) -> str:
    return f"{spec} (normal_input)"


def digest(spec: str, device: str = "cpu", x: torch.Tensor | None = None, seed: int = 1) -> str:
    c = make(resolve(spec, D))
    x = pinned_input() if x is None else x
    m = c.encode(x.to(device), torch.Generator().manual_seed(seed))
    return hashlib.sha256(m.to_bytes()).hexdigest()


def pins() -> dict:
    return json.loads(PINS.read_text()) if PINS.exists() else {}


@pytest.mark.skipif(os.environ.get("PSGD_PIN") != "1", reason="regenerates the pins (PSGD_PIN=1)")
def test_regenerate_pins():
    pinned = {spec: digest(spec) for spec in PINNED}
    drawn = {normal_key(spec): digest(spec, x=normal_input()) for spec in PINNED_DRAWS}
    PINS.write_text(json.dumps(pinned | drawn, indent=1) + "\n")


def test_every_codec_is_pinned_or_held_to_its_projection():
    assert set(pins()) == set(PINNED) | {normal_key(spec) for spec in PINNED_DRAWS}
    assert set(BLAS) <= set(SPECS) and set(BLAS) <= set(STOCHASTIC)


@pytest.mark.parametrize("paths", ["compiled", "reference"])
@pytest.mark.parametrize("spec", PINNED)
def test_message_bytes_are_pinned(spec, paths, monkeypatch):
    if paths == "reference":
        monkeypatch.setenv("PSGD_KERNELS", "reference")
    assert spec in pins(), f"{spec} has no pinned digest: regenerate with PSGD_PIN=1"
    assert digest(spec) == pins()[spec]


@pytest.mark.parametrize("paths", ["compiled", "reference"])
@pytest.mark.parametrize("spec", PINNED_DRAWS)
def test_draws_are_pinned(spec, paths, monkeypatch):
    if paths == "reference":
        monkeypatch.setenv("PSGD_KERNELS", "reference")
    assert normal_key(spec) in pins(), f"{spec} has no pinned digest on normal_input: regenerate with PSGD_PIN=1"
    assert digest(spec, x=normal_input()) == pins()[normal_key(spec)]


@pytest.mark.parametrize("spec", SPECS)
def test_pins_depend_on_the_draws_exactly_for_stochastic_specs(spec):
    """A stochastic spec's pin on normal_input changes with the seed (the pin checks its draws); any
    other spec's does not (so STOCHASTIC lists every spec that draws)."""
    seeds = {digest(spec, x=normal_input(), seed=seed) for seed in (1, 2)}
    assert (len(seeds) == 2) == (spec in STOCHASTIC)


def projection(spec: str, x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """PowerSGD's C(x) = P P^T M in float64, P an orthonormal basis of M Q for its draws Q."""
    c = make(resolve(spec, D))
    n, cols, r = c._dims(x.numel())
    mat = torch.zeros(n * cols, dtype=torch.float64)
    mat[: x.numel()] = x.double()
    mat = mat.view(n, cols)
    q = normal((cols, r), x, torch.Generator().manual_seed(seed)).double()
    p = torch.linalg.qr(mat @ q).Q
    return (p @ (p.T @ mat)).reshape(-1)[: x.numel()]


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
    ],
)
@pytest.mark.parametrize("x", [pinned_input(), normal_input()], ids=["pinned_input", "normal_input"])
@pytest.mark.parametrize("spec", BLAS)
def test_blas_messages_are_their_projection(spec, x, device):
    """A BLAS codec's message, decoded on a CPU server, is its float64 projection to fp32 accuracy,
    and its layout is the codec's: whatever BLAS made it."""
    c = make(resolve(spec, D))
    m = c.encode(x.to(device), torch.Generator().manual_seed(1))
    got = c.decode(c.from_bytes(bytearray(m.to_bytes()), "cpu", d=D)).double()
    want = projection(spec, x)
    assert 8 * m.body_len == c.bits(m) == 32 * 2 * sum(c._dims(D)[:2])
    assert float((got - want).norm()) <= 1e-5 * float(want.norm())
