"""The server's add of an identity uplink: out += x that reports Inf/NaN in x, equal to the
reference (``out.add_(x)``) bit for bit."""

import pytest
import torch
from kernel_checks import same_bits

from psgd.kernels.copy import add_finite


@pytest.mark.parametrize("d", [1, 7, 8, 33, 4099, 100003])
@pytest.mark.parametrize("bad", [None, float("inf"), -float("inf"), float("nan")])
@pytest.mark.parametrize("paths", ["compiled", "reference"])
def test_add_finite_adds_as_torch_does_and_tells_inf_and_nan(d, bad, paths, monkeypatch):
    if paths == "reference":
        monkeypatch.setenv("PSGD_KERNELS", "reference")
    g = torch.Generator().manual_seed(d)
    x, out = torch.randn(d, generator=g), torch.randn(d, generator=g)
    x[0], x[-1] = -0.0, 3.4e38
    if d > 1:
        x[d // 2] = 1e-45  # a subnormal
    if bad is not None:
        x[d // 3] = bad
    want = out.clone().add_(x)
    assert add_finite(x, out) == (bad is None)
    assert same_bits(out, want)
