"""Compressor.encode_feedback: the message of encode(x) and x <- x - C(x) in place, bit for bit
(signed zeros included): without ``out`` the floats of ``accumulate(m, x, -1)``, with it C(x) as
encode_reconstruct writes it into ``out`` and x.sub_(C(x)); for every codec, on the compiled kernels
and on the torch references."""

import pytest
import torch
from compress_specs import SPECS, resolve
from kernel_checks import same_bits

from psgd.compress import make

D = 1000


def vector() -> torch.Tensor:
    x = torch.randn(D, generator=torch.Generator().manual_seed(7))
    x[::9] = 0.0
    x[4::9] = -0.0
    x[50] = 1e-40
    return x


@pytest.mark.parametrize("paths", ["compiled", "reference"])
@pytest.mark.parametrize("with_out", [False, True])
@pytest.mark.parametrize("spec", SPECS)
def test_feedback_is_the_error_update_bit_for_bit(spec, with_out, paths, monkeypatch):
    if paths == "reference":
        monkeypatch.setenv("PSGD_KERNELS", "reference")
    c = make(resolve(spec, D))
    want = vector()
    if with_out:
        m, decoded = c.encode_reconstruct(want, torch.Generator().manual_seed(1), torch.full((D,), 7.0))
        want.sub_(decoded)
    else:
        m = c.encode(want, torch.Generator().manual_seed(1))
        c.accumulate(m, want, -1.0)
    x = vector()
    out = torch.full((D,), 7.0) if with_out else None
    got, q = c.encode_feedback(x, torch.Generator().manual_seed(1), out)
    assert got.to_bytes() == m.to_bytes()
    assert same_bits(x, want)
    if with_out:
        assert same_bits(q, decoded)
    else:
        assert q is None
