"""Compressed SGD without error feedback (SPEC 3.1): x <- x - lr * C_down((1/n) sum_i C_up(g_i + xi_i)).

Wire: up C_up(g_i + xi_i), bits(C_up) per worker; down C_down(average), bits(C_down) (32d
with identity). With identity both ways this is plain uncompressed (fp32) parallel SGD.
Every node applies the same decoded direction with the same SGD step, so all replicas of
x stay equal.

``perturbation = r`` adds xi_i ~ N(0, (r^2/d) I) (E||xi_i||^2 = r^2) to each worker's
gradient before compression: the perturbed compressed SGD of Avdiukhin & Yaroslavtsev
(2021) for escaping saddle points, with RandomK (``randk``) as their compressor. Where the
noise enters and its schedule are [R] in SPEC 3.1; here it is constant and worker-side,
drawn from the worker's own generator (never sent, nothing extra on the wire).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from psgd.methods.base import Context, Method, Oracle
from psgd.methods.optim import SGDStep
from psgd.methods.options import MethodOptions
from psgd.methods.registry import register
from psgd.methods.theory import contraction, omega


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


@dataclass(frozen=True)
class SGDOptions(MethodOptions):
    perturbation: float = 0.0  # r: radius of the worker-side Gaussian perturbation (0: none)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.perturbation < 0:
            raise ValueError(f"method.perturbation must be >= 0, got {self.perturbation}")


@register
class SGD(Method):
    name = "sgd"
    Options = SGDOptions

    def theory_lr(self):
        """Paper 1's CGD table (SPEC 3.1), single node, full gradient: U(zeta): 1/(zeta L); B3(delta): 1/L."""
        c = self.constants
        L = c.need_L(self.name)
        if self.downlink.name != "identity":
            raise ValueError(f"{self.name}: the CGD theorems assume an uncompressed downlink")
        if self.uplink.unbiased:
            w = omega(self.uplink, c.d, self.name)
            return 1 / ((1 + w) * L), f"paper 1, CGD with C in U(zeta): lr = 1/(zeta L), zeta = {1 + w:g}, L = {L:g}"
        if c.n > 1:
            raise ValueError(
                f"{self.name}: no theorem covers distributed CGD with a biased compressor ({self.uplink.spec}); "
                "it can diverge (paper 1's n = d = 3 Top-1 example): use ef14 or ef21"
            )
        delta = 1 / contraction(self.uplink, c.d, self.name)
        return 1 / L, f"paper 1, CGD with C in B3(delta): lr = 1/L, delta = {delta:g}, L = {L:g}"

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
        g = oracle(state.x)
        r = self.options.perturbation
        if r:
            noise = torch.randn(g.numel(), generator=ctx.rng("perturbation"), device=g.device, dtype=g.dtype)
            g = g + (r / math.sqrt(g.numel())) * noise
        return [self.uplink.encode(g, ctx.rng("uplink"))]

    def server_step(self, state: Replica, up, ctx):
        msg = self.downlink.encode(mean([u[0] for u in up]), ctx.rng("downlink", shared=True))
        state.opt.step(state.x, self.downlink.decode(msg), self.step_lr(ctx.round))
        return [msg]

    def server_model(self, state: Replica):
        return state.x
