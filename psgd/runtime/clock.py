"""Wall-clock reads that mean what they say on any device: on CUDA, kernels run asynchronously,
so a plain ``time.perf_counter()`` after a launch times the launch, not the work (a round's
``encode_s`` would then hold the backward pass). ``now(device)`` waits for the device first."""

from __future__ import annotations

import time

import torch


def now(device: torch.device | str) -> float:
    """time.perf_counter() once every kernel queued on ``device`` has finished (CUDA: synchronise)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
