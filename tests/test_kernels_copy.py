"""Identity's encode kernel: a copy that reports Inf/NaN, equal to the reference bit for bit."""

import pytest
import torch

from psgd.compress import make
from psgd.errors import NonFiniteError
from psgd.kernels.copy import copy_finite


@pytest.mark.parametrize("d", [1, 7, 8, 33, 4099, 100003])
@pytest.mark.parametrize("bad", [None, float("inf"), -float("inf"), float("nan")])
@pytest.mark.parametrize("paths", ["compiled", "reference"])
def test_copy_finite_copies_every_bit_and_tells_inf_and_nan(d, bad, paths, monkeypatch):
    if paths == "reference":
        monkeypatch.setenv("PSGD_KERNELS", "reference")
    x = torch.randn(d, generator=torch.Generator().manual_seed(d))
    x[0], x[-1] = -0.0, 3.4e38
    if d > 1:
        x[d // 2] = 1e-45  # a subnormal
    if bad is not None:
        x[d // 3] = bad
    out = torch.empty_like(x)
    assert copy_finite(x, out) == (bad is None)
    assert torch.equal(out.view(torch.int32), x.view(torch.int32))


def test_identity_refuses_non_finite_input_from_its_copy():
    x = torch.randn(50)
    x[7] = float("nan")
    with pytest.raises(NonFiniteError, match="x: contains NaN or Inf"):
        make("identity").encode(x)
