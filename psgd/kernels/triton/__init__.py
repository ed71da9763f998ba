"""Triton kernels: the CUDA path of the codecs, each reproducing its torch reference (and the CPU
kernels) byte for byte, so a message is the same bytes on every device.

One file per family (rng, signs, natural, dither, topk); each launcher takes torch tensors on one
CUDA device (CPU tensors under ``TRITON_INTERPRET=1``, which is how the tests run them) and writes
into buffers the caller allocated. The family modules import Triton: import them only after
``available(x)`` said yes.
"""

from __future__ import annotations

import functools
import os

import torch

BLOCK = 1024  # coordinates per program (a multiple of 8: a block's sign bits fill whole bytes)


@functools.cache
def _importable() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001  (any import failure means: no Triton path)
        return False
    return True


def available(t: torch.Tensor, *others: torch.Tensor) -> bool:
    """Run t's codec through these kernels: t on CUDA with fewer than 2^31 - BLOCK coordinates (the
    kernels index with int32), the tensors ``others`` on t's device, Triton importable,
    PSGD_KERNELS != "reference"."""
    return (
        t.device.type == "cuda"
        and t.numel() < 2**31 - BLOCK
        and all(o.device == t.device for o in others)
        and os.environ.get("PSGD_KERNELS", "") != "reference"
        and _importable()
    )
