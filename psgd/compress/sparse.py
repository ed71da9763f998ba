"""The decoder side shared by sparse compressors whose header carries k: scatter k values."""

from __future__ import annotations

import torch

from psgd.compress.base import Message
from psgd.compress.topk import unpack_sparse


def scatter_sparse(m: Message, k: int) -> torch.Tensor:
    """Dense x_hat from a body of k fp32 values then k packed indices."""
    values, idx = unpack_sparse(m.body, k, m.d)
    out = torch.zeros(m.d, dtype=m.dtype, device=m.body.device)
    out[idx] = values.to(m.dtype)
    return out
