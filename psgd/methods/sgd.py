"""Compressed SGD without error feedback (SPEC 3.1): x <- x - lr * C_down((1/n) sum_i C_up(g_i)).

Wire: up C_up(g_i); down C_down(average). With identity both ways this is plain
uncompressed (fp32) parallel SGD. Every node applies the same decoded direction with
the same SGD step, so all replicas of x stay equal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.methods.base import Context, Method, Oracle
from psgd.methods.optim import SGDStep
from psgd.methods.registry import register


@dataclass
class Replica:
    """A node's copy of x and its optimiser buffer."""

    x: torch.Tensor
    opt: SGDStep


def mean(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Average in rank order (fixed order keeps MPI and in-process runs bit-identical)."""
    total = tensors[0].clone()
    for t in tensors[1:]:
        total.add_(t)
    return total.div_(len(tensors))


@register
class SGD(Method):
    name = "sgd"

    def server_init(self, x0, ctx):
        return Replica(x0.clone(), SGDStep(self.options)), [self.init_codecs()[0].encode(x0)]

    def worker_init(self, init, ctx):
        return Replica(init[0].clone(), SGDStep(self.options))

    def step_lr(self, round: int) -> float:
        return self.options.lr_at(round)

    def apply_downlink(self, state: Replica, down: list[torch.Tensor], ctx: Context) -> None:
        """Workers apply the previous round's direction, as the server already did."""
        if down:
            state.opt.step(state.x, down[0], self.step_lr(ctx.round - 1))

    def worker_step(self, state: Replica, down, oracle: Oracle, ctx):
        self.apply_downlink(state, down, ctx)
        return [self.uplink.encode(oracle(state.x), ctx.rng("uplink"))]

    def server_step(self, state: Replica, up, ctx):
        msg = self.downlink.encode(mean([u[0] for u in up]), ctx.rng("downlink", shared=True))
        state.opt.step(state.x, self.downlink.decode(msg), self.step_lr(ctx.round))
        return [msg]

    def server_model(self, state: Replica):
        return state.x
