"""Passes over fp32 values that also tell whether every value read was finite: identity's encode
(a copy of x) and the server's sum of identity uplinks (a copy or an add of each body, or of two
bodies at once) check finiteness in the pass they make anyway, not in a read of their own.

The check is an integer OR of "exponent field all ones" (Inf or NaN) over the binary32 bits, a
reduction that vectorises (a float sum would run one add at a time). The kernels that add take
each input twice, as floats and as the same memory's bits (numba has no scalar bit cast).
"""

from __future__ import annotations

import numpy as np
import torch

from psgd.kernels import cpu, device_fn, np_view, run


@device_fn
def _flag(bad, u):
    """bad with bit 0 set where the binary32 bits u are Inf or NaN (exponent field all ones), no
    branch; kept uint32 (numba widens uint32 arithmetic to 64 bits: half the vector lanes)."""
    return np.uint32(bad | ((((u >> np.uint32(23)) & np.uint32(0xFF)) + np.uint32(1)) >> np.uint32(8)))


@cpu
def copy_finite_kernel(src, dst):
    """dst = src (binary32 bits as uint32); True iff no value is Inf or NaN."""
    bad = np.uint32(0)
    for i in range(src.size):
        u = src[i]
        dst[i] = u
        bad = _flag(bad, u)
    return bad == 0


@cpu
def add_finite_kernel(src, src_bits, out):
    """out += src (src_bits: the same memory as binary32 bits); True iff no src value is Inf or NaN."""
    bad = np.uint32(0)
    for i in range(src.size):
        out[i] += src[i]
        bad = _flag(bad, src_bits[i])
    return bad == 0


@cpu
def pair_finite_kernel(a, a_bits, b, b_bits, out, start):
    """out = a + b with ``start``, else out = (out + a) + b, in one pass (a_bits, b_bits: the same
    memory as binary32 bits); whether no a value, and whether no b value, is Inf or NaN. ``start``
    is the same for every i: LLVM makes a vectorised loop of each case, no branch per coordinate."""
    bad_a = np.uint32(0)
    bad_b = np.uint32(0)
    for i in range(out.size):
        first = a[i] if start else out[i] + a[i]
        out[i] = first + b[i]
        bad_a = _flag(bad_a, a_bits[i])
        bad_b = _flag(bad_b, b_bits[i])
    return bad_a == 0, bad_b == 0


def _with_bits(x: torch.Tensor) -> tuple:
    """x's numpy view as floats and as binary32 bits (the same memory)."""
    values = np_view(x)
    return values, values.view(np.uint32)


def _finite(x: torch.Tensor) -> bool:
    """Every x_i finite: one sum, the element check only where the sum overflows."""
    return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())


def _copy_reference(x: torch.Tensor, out: torch.Tensor) -> bool:
    out.copy_(x)
    return _finite(out)


def _add_reference(x: torch.Tensor, out: torch.Tensor) -> bool:
    out.add_(x)
    return _finite(x)


def copy_finite(x: torch.Tensor, out: torch.Tensor) -> bool:
    """out = x (both fp32, contiguous, same size); whether every x_i is finite."""

    def compiled():
        return bool(copy_finite_kernel(np_view(x).view(np.uint32), np_view(out).view(np.uint32)))

    return run(copy_finite_kernel, (x, out), compiled, lambda: _copy_reference(x, out))


def add_finite(x: torch.Tensor, out: torch.Tensor) -> bool:
    """out += x (both fp32, contiguous, same size; the same floats as ``out.add_(x)``); whether every
    x_i is finite."""

    def compiled():
        return bool(add_finite_kernel(*_with_bits(x), np_view(out)))

    return run(add_finite_kernel, (x, out), compiled, lambda: _add_reference(x, out))


def pair_finite(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, start: bool) -> tuple[bool, bool]:
    """out = a + b with ``start``, else (out + a) + b (all fp32, contiguous, same size): the floats of
    ``copy_finite(a, out)`` (``add_finite(a, out)``) then ``add_finite(b, out)``, in one pass over
    out; whether every a_i, and whether every b_i, is finite."""

    def compiled():
        finite_a, finite_b = pair_finite_kernel(*_with_bits(a), *_with_bits(b), np_view(out), bool(start))
        return bool(finite_a), bool(finite_b)

    def reference():
        finite_a = (_copy_reference if start else _add_reference)(a, out)
        return finite_a, _add_reference(b, out)

    return run(pair_finite_kernel, (a, b, out), compiled, reference)
