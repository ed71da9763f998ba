"""Passes over fp32 values that also tell whether every value read was finite: identity's encode
(a copy of x) and the server's sum of identity uplinks (a copy or an add of each body) check
finiteness in the pass they make anyway, not in a read of their own.

The check is an integer OR of "exponent field all ones" (Inf or NaN) over the binary32 bits, a
reduction that vectorises (a float sum would run one add at a time).
"""

from __future__ import annotations

import numpy as np
import torch

from psgd.kernels import cpu, np_view, run


@cpu
def copy_finite_kernel(src, dst):
    """dst = src (binary32 bits as uint32); True iff no value is Inf or NaN."""
    bad = np.uint32(0)
    for i in range(src.size):
        u = src[i]
        dst[i] = u
        bad |= (((u >> np.uint32(23)) & np.uint32(0xFF)) + np.uint32(1)) >> np.uint32(8)
    return bad == 0


def copy_finite(x: torch.Tensor, out: torch.Tensor) -> bool:
    """out = x (both fp32, contiguous, same size); whether every x_i is finite."""

    def compiled():
        return bool(copy_finite_kernel(np_view(x).view(np.uint32), np_view(out).view(np.uint32)))

    def reference():
        out.copy_(x)
        return bool(torch.isfinite(out.sum())) or bool(torch.isfinite(out).all())

    return run(copy_finite_kernel, (x, out), compiled, reference)


@cpu
def add_finite_kernel(src, src_bits, out):
    """out += src (src_bits: the same memory as binary32 bits); True iff no src value is Inf or NaN."""
    bad = np.uint32(0)
    for i in range(src.size):
        out[i] += src[i]
        bad |= (((src_bits[i] >> np.uint32(23)) & np.uint32(0xFF)) + np.uint32(1)) >> np.uint32(8)
    return bad == 0


def add_finite(x: torch.Tensor, out: torch.Tensor) -> bool:
    """out += x (both fp32, contiguous, same size; the same floats as ``out.add_(x)``); whether every
    x_i is finite."""

    def compiled():
        values = np_view(x)
        return bool(add_finite_kernel(values, values.view(np.uint32), np_view(out)))

    def reference():
        out.add_(x)
        return bool(torch.isfinite(x.sum())) or bool(torch.isfinite(x).all())

    return run(add_finite_kernel, (x, out), compiled, reference)
