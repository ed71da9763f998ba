"""Widening narrow floats (fp16, bf16) into a wider buffer: out += weight * v, without a dense temporary.

torch adds mixed dtypes slowly on the CPU (about six copies' time for fp16 into fp32) and widening
the whole vector first allocates d fresh elements, so the CPU path widens chunks that stay in cache
into one small buffer and adds each with torch's own ``add_``: the same floats as the reference,
``out.add_(v.to(out.dtype), alpha=weight)``, which is also the CUDA path.
"""

from __future__ import annotations

import torch

CHUNK = 2**18  # elements widened at a time: 1 MiB of fp32, within L2


def add_widened_ref(values: torch.Tensor, out: torch.Tensor, weight: float) -> None:
    """out += weight * values (widened to out's dtype): the plain-torch reference (any device)."""
    out.add_(values.to(out.dtype), alpha=weight)


def add_widened(values: torch.Tensor, out: torch.Tensor, weight: float) -> None:
    """out += weight * values, in place, one pass over out and values."""
    n = values.numel()
    if out.device.type != "cpu" or n <= CHUNK:
        add_widened_ref(values, out, weight)
        return
    wide = torch.empty(CHUNK, dtype=out.dtype)
    for start in range(0, n, CHUNK):  # a loop over chunks, not coordinates
        chunk = wide[: min(CHUNK, n - start)]
        chunk.copy_(values[start : start + CHUNK])
        out[start : start + CHUNK].add_(chunk, alpha=weight)
