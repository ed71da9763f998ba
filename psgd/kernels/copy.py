"""A copy that also tells whether every value was finite: identity's encode in one pass over x.

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
