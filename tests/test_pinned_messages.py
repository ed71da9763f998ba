"""Pinned message bytes: for a fixed x and generator, every codec's message hashes to the value in
tests/pinned_messages.json, whatever path encoded it (the compiled CPU kernels here, the torch
references with PSGD_KERNELS=reference, and on a GPU machine the CUDA path in
test_compress_cuda.py). So a GPU worker's message is checked against bytes a CPU produced, and a
change to any codec's bytes is a visible, deliberate change of this file.

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

PINS = Path(__file__).with_name("pinned_messages.json")
D = 1000


def pinned_input(d: int = D) -> torch.Tensor:
    """A vector with the cases kernels get wrong: zeros, a negative zero, ties, tiny and large values."""
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    x[::97] = 0.0
    x[5] = -0.0
    x[10:14] = 1.5
    x[20] = 1e-40
    x[30] = -3e4
    return x


def digest(spec: str, device: str = "cpu") -> str:
    c = make(resolve(spec, D))
    m = c.encode(pinned_input().to(device), torch.Generator().manual_seed(1))
    return hashlib.sha256(m.to_bytes()).hexdigest()


def pins() -> dict:
    return json.loads(PINS.read_text()) if PINS.exists() else {}


@pytest.mark.skipif(os.environ.get("PSGD_PIN") != "1", reason="regenerates the pins (PSGD_PIN=1)")
def test_regenerate_pins():
    PINS.write_text(json.dumps({spec: digest(spec) for spec in SPECS}, indent=1) + "\n")


@pytest.mark.parametrize("paths", ["compiled", "reference"])
@pytest.mark.parametrize("spec", SPECS)
def test_message_bytes_are_pinned(spec, paths, monkeypatch):
    if paths == "reference":
        monkeypatch.setenv("PSGD_KERNELS", "reference")
    assert spec in pins(), f"{spec} has no pinned digest: regenerate with PSGD_PIN=1"
    assert digest(spec) == pins()[spec]
