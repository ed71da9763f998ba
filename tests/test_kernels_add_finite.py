"""The server's add of identity uplinks: out += x that reports Inf/NaN in x, equal to the reference
(``out.add_(x)``) bit for bit; and the pair (two uplinks in one pass), equal bit for bit to the copy
or add of the first then the add of the second, telling which of the two holds Inf/NaN."""

import struct

import pytest
import torch
from kernel_checks import same_bits

from psgd.compress import identity, make
from psgd.errors import FrameError
from psgd.kernels.copy import add_finite, copy_finite, pair_finite


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


def values(d: int, seed: int) -> torch.Tensor:
    """d fp32 values with zeros of both signs, a subnormal and the largest magnitudes."""
    x = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    x[::5], x[seed % 3 :: 7] = -0.0, 0.0
    x[-1] = 3.4e38 if seed % 2 else -3.4e38
    if d > 2:
        x[2] = 1e-45 if seed % 2 else -1e-45
    return x


@pytest.mark.parametrize("d", [1, 7, 8, 9, 15, 16, 17, 4097, 10000])
@pytest.mark.parametrize("start", [True, False])
@pytest.mark.parametrize("where", [None, "a", "b", "both"])
@pytest.mark.parametrize("paths", ["compiled", "reference"])
def test_a_pair_is_the_copy_or_add_then_the_add_bit_for_bit_and_tells_which_is_non_finite(
    d, start, where, paths, monkeypatch
):
    if paths == "reference":
        monkeypatch.setenv("PSGD_KERNELS", "reference")
    bad_a = float("nan") if where in ("a", "both") else None
    bad_b = -float("inf") if where in ("b", "both") else None
    a, b = values(d, 1 + d), values(d, 2 + d)
    if d > 4:
        b[1], b[3] = -a[1], a[3]  # a sum that cancels to +0.0, and one that doubles
    for x, bad, at in ((a, bad_a, d // 3), (b, bad_b, d // 2)):
        if bad is not None:
            x[at] = bad
    base = values(d, 3 + d)
    want = base.clone()
    single = copy_finite if start else add_finite
    want_flags = single(a, want), add_finite(b, want)
    assert want_flags == (bad_a is None, bad_b is None)
    got = base.clone()
    assert pair_finite(a, b, got, start) == want_flags
    assert same_bits(got, want)


@pytest.mark.parametrize("where", [None, "a", "b"])
@pytest.mark.parametrize("start", [True, False])
def test_identity_adds_a_pair_of_unchecked_uplinks_in_one_pass_that_checks_both(where, start, monkeypatch):
    c, d = make("identity"), 1000
    raw = [bytearray(c.encode(values(d, seed)).to_bytes()) for seed in (1, 2)]
    if where is not None:  # the middle value of that body made NaN
        at = len(raw[0]) - 4 * (d - d // 2)
        raw["ab".index(where)][at : at + 4] = struct.pack("<f", float("nan"))
    a, b = (c.from_bytes(r, d=d, check_body=False) for r in raw)
    assert a.unchecked and b.unchecked
    passes = []
    monkeypatch.setattr(identity, "pair_finite", lambda *args: passes.append(1) or pair_finite(*args))
    out = values(d, 3)
    if where is None:
        c.add_pair(a, b, out, start)
        assert not a.unchecked and not b.unchecked
    else:
        with pytest.raises(FrameError, match="identity: non-finite value"):
            c.add_pair(a, b, out, start)
        for m, name in ((a, "a"), (b, "b")):
            if name == where:
                with pytest.raises(FrameError):
                    c.check_body(m)
            else:
                c.check_body(m)
    assert passes == [1]
