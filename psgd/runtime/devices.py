"""Which device each rank computes on."""

from __future__ import annotations

import torch

from psgd.errors import ConfigError


def pick(setting: str, rank: int) -> torch.device:
    """'auto': CUDA when present, ranks sharing GPUs round-robin (worker r on GPU (r-1) mod count,
    the server on GPU 0); else CPU. 'cuda' insists on a GPU; 'cpu' never uses one."""
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        raise ConfigError("device = 'cuda' but no CUDA device is available")
    if setting == "cpu" or not available:
        return torch.device("cpu")
    return torch.device("cuda", max(rank - 1, 0) % torch.cuda.device_count())
