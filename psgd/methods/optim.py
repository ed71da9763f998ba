"""The SGD step every node applies to the same direction, so replicas of x stay identical.

x <- x - lr * (m or d), with d = direction + wd * x and m = momentum * m + d
(torch.optim.SGD's rule, heavy-ball or Nesterov). Each node keeps its own buffer;
fed the same directions, all buffers are equal.
"""

from __future__ import annotations

import torch

from psgd.methods.options import MethodOptions


class SGDStep:
    def __init__(self, options: MethodOptions) -> None:
        self.options = options
        self.buf: torch.Tensor | None = None

    def step(self, x: torch.Tensor, direction: torch.Tensor, lr: float) -> None:
        """In-place update of x along direction with step size lr."""
        x.sub_(lr * self.direction(x, direction))

    def direction(self, x: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
        """What multiplies -lr in the step (weight decay and momentum applied; updates the buffer)."""
        o = self.options
        d = direction
        if o.weight_decay:
            d = d + o.weight_decay * x
        if o.momentum:
            if self.buf is None:
                self.buf = d.clone()
            else:
                self.buf.mul_(o.momentum).add_(d)
            d = d + o.momentum * self.buf if o.nesterov else self.buf
        return d

    def state(self) -> dict[str, torch.Tensor]:
        return {} if self.buf is None else {"momentum_buffer": self.buf}

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.buf = state.get("momentum_buffer")
