"""Compressor.add_pair: two messages added in one pass are the floats of adding them one after the
other (decode_into or accumulate of the first, accumulate of the second), bit for bit, signed zeros
included, for every codec, on the compiled kernels and on the torch references."""

import pytest
import torch
from compress_specs import SPECS, resolve
from kernel_checks import same_bits

from psgd.compress import make

D = 1000


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.randn(D, generator=torch.Generator().manual_seed(3))
    b = torch.randn(D, generator=torch.Generator().manual_seed(4))
    a[::7], b[::11] = 0.0, -0.0  # zeros of both signs meet: 0 + -0 and -0 + -0
    a[5], b[5] = -0.0, -0.0
    b[100:110] = -a[100:110]  # sums that cancel to zero
    return a, b


@pytest.mark.parametrize("paths", ["compiled", "reference"])
@pytest.mark.parametrize("start", [True, False])
@pytest.mark.parametrize("spec", SPECS)
def test_a_pair_is_the_two_adds_bit_for_bit(spec, start, paths, monkeypatch):
    if paths == "reference":
        monkeypatch.setenv("PSGD_KERNELS", "reference")
    c = make(resolve(spec, D))
    x, y = inputs()
    raw = [c.encode(v, torch.Generator().manual_seed(s)).to_bytes() for v, s in ((x, 1), (y, 2))]
    a, b = (c.from_bytes(bytearray(r), d=D, check_body=False) for r in raw)
    base = torch.randn(D, generator=torch.Generator().manual_seed(5))
    base[::13] = -0.0
    want = base.clone()
    if start:
        c.decode_into(a, want)
    else:
        c.accumulate(a, want)
    c.accumulate(b, want)
    a, b = (c.from_bytes(bytearray(r), d=D, check_body=False) for r in raw)  # unchecked again
    got = base.clone()
    assert c.add_pair(a, b, got, start) is got
    assert same_bits(got, want)


@pytest.mark.parametrize("spec", ["identity", "qsgd:s=16", "natural", "scaled_sign"])
def test_a_pair_refuses_a_wrong_size(spec):
    c = make(spec)
    a = c.encode(torch.ones(D))
    with pytest.raises(ValueError, match="add into 999 elements"):
        c.add_pair(a, a, torch.zeros(D - 1), True)
