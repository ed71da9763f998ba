"""One contiguous buffer for a module's parameters and one for their gradients.

Each parameter (and its .grad) becomes a view into the flat buffers, so a method sees
a single vector of size d and no per-step gather/scatter copies are needed.
"""

from __future__ import annotations

import torch
from torch import nn


def weight_mask(module: nn.Module) -> torch.Tensor:
    """1.0 on the flat coordinates of tensors with >= 2 dimensions, 0.0 on 1-D ones (FlatModule's order)."""
    params = [p for p in module.parameters() if p.requires_grad]
    return torch.cat([torch.full((p.numel(),), float(p.dim() > 1)) for p in params])


class FlatModule:
    def __init__(self, module: nn.Module, device: torch.device | str = "cpu") -> None:
        self.module = module.to(device)
        params = [p for p in self.module.parameters() if p.requires_grad]
        self.dim = sum(p.numel() for p in params)
        self.params = torch.empty(self.dim, device=device)
        self.grads = torch.zeros(self.dim, device=device)
        offset = 0
        for p in params:
            n = p.numel()
            self.params[offset : offset + n].copy_(p.data.view(-1))
            p.data = self.params[offset : offset + n].view_as(p)
            p.grad = self.grads[offset : offset + n].view_as(p)
            offset += n
        self.sizes = [p.numel() for p in params]

    def load(self, x: torch.Tensor) -> None:
        """Make x the module's parameters (copies unless x is already the buffer)."""
        if x.data_ptr() != self.params.data_ptr():
            self.params.copy_(x)

    def zero_grad(self) -> None:
        self.grads.zero_()
