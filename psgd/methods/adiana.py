"""ADIANA (Li, Kovalev, Qian, Richtárik 2020) with independent unbiased compressors (He, Huang,
Yuan 2023), SPEC 3.7: DIANA's shifted compression inside Nesterov-type acceleration.

Every node holds y, z, w (identical copies) and forms x^k = theta1 z + theta2 w + (1 - theta1 - theta2) y.
Worker i:  a_i = C_up(grad f_i(x^k) - h_i),  b_i = C_up(grad f_i(w^k) - h_i)     up: 2 bits(C_up)
           h_i <- h_i + alpha b_i
Server:    g = h + (1/n) sum_i a_i,  h <- h + alpha (1/n) sum_i b_i,  broadcast g  down: 32d
All nodes: y' = x - eta g,  z <- beta z + (1 - beta) x + (gamma/eta)(y' - x),
           w <- y (the old y) with probability p, else w;  y <- y'.
The coin is drawn from the run's shared generator of the round, so every node derives it and
nothing is sent for it. a_i and b_i use separate draws of the worker's own generator, so the
compressors are independent across workers, rounds and the two messages (He et al. require it).
(Rand-k's ``shared_seed`` only moves the index set's seed into the header; the seed is still drawn
from the worker's own generator, so it stays independent. ``shared_randomness = true``, which gives
every worker the same draws, is refused.)

Parameters (Li et al., strongly convex theorem): alpha = 1/(1 + omega),
theta2 = 1/2, p = min(1, max(1, sqrt(n/(32 omega)) - 1)/(2(1 + omega))),
eta <= min(1/(2L), n/(64 omega (2 p omega + 1)^2 L)), theta1 = min(1/4, sqrt(eta mu/p)),
gamma = eta/(2(theta1 + eta mu)), beta = 1 - gamma mu. They need mu and L from the task.
Status: the rate is [S] (Li et al.'s abstract, ICML 2020): O~(omega + sqrt(L/mu) + sqrt((omega/n + sqrt(omega/n))
omega L/mu)) rounds, log(1/eps) hidden. The parameters above and the theorem's number are [R]: recalled, the
theorem's text was not readable here (the search corpora hold only each paper's opening), nor He et al.'s
refinement. Tested: linear convergence to the exact optimum and the rate's sqrt(kappa) order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from psgd.methods.base import Method
from psgd.methods.diana import require_unbiased
from psgd.methods.options import MethodOptions
from psgd.methods.registry import register
from psgd.methods.theory import omega


@dataclass(frozen=True)
class ADIANAOptions(MethodOptions):
    prob: float | None = None  # p, the probability that w takes y; None: Li et al.'s choice
    shared_randomness: bool = False  # refused: ADIANA's theory needs independent compressors

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.prob is not None and not 0 < self.prob <= 1:
            raise ValueError(f"method.prob must be in (0, 1], got {self.prob}")


@dataclass
class State:
    y: torch.Tensor
    z: torch.Tensor
    w: torch.Tensor
    h: torch.Tensor  # h_i on a worker, h = (1/n) sum_i h_i on the server


@dataclass(frozen=True)
class Params:
    eta: float
    alpha: float
    p: float
    theta1: float
    theta2: float
    gamma: float
    beta: float


@register
class ADIANA(Method):
    name = "adiana"
    Options = ADIANAOptions

    def __init__(self, options, constants=None) -> None:
        super().__init__(options, constants)
        self.params: Params | None = None if constants is None else self.derive()

    def check(self) -> None:
        o = self.options
        self.require_dense_downlink()
        require_unbiased(self)
        if o.shared_randomness:
            raise ValueError(
                f"{self.name} needs compressors independent across workers and rounds (He, Huang, Yuan 2023); "
                "shared_randomness = true gives every worker the same random draws (e.g. one shared Rand-k set)"
            )
        if o.momentum or o.weight_decay or o.lr_milestones or o.lr_warmup:
            raise ValueError(
                f"{self.name} accelerates by itself: leave momentum, weight_decay, lr_milestones and lr_warmup unset"
            )

    def omega_p(self) -> tuple[float, float]:
        c = self.constants
        w = omega(self.uplink, c.d, self.name)
        p = self.options.prob
        if p is None:
            p = 1.0 if w == 0 else min(1.0, max(1.0, math.sqrt(c.n / (32 * w)) - 1) / (2 * (1 + w)))
        return w, p

    def theory_lr(self):
        """eta of Li et al.'s strongly convex theorem, as recalled ([R], see the module docstring)."""
        c = self.constants
        L = c.need_L(self.name)
        w, p = self.omega_p()
        lr = 1 / (2 * L) if w == 0 else min(1 / (2 * L), c.n / (64 * w * (2 * p * w + 1) ** 2 * L))
        why = f"ADIANA: eta <= min(1/(2L), n/(64 omega (2 p omega + 1)^2 L)), omega = {w:g}, p = {p:g}, n = {c.n}"
        return lr, f"{why}, L = {L:g}"

    def derive(self) -> Params:
        mu = self.constants.mu
        if mu is None:
            raise ValueError(f"{self.name}: the method's parameters need the strong convexity constant mu of the task")
        w, p = self.omega_p()
        eta = self.options.lr_at(0)
        theta1 = min(0.25, math.sqrt(eta * mu / p))
        gamma = eta / (2 * (theta1 + eta * mu))
        return Params(eta, 1 / (1 + w), p, theta1, 0.5, gamma, 1 - gamma * mu)

    def mix(self, s: State) -> torch.Tensor:
        """x^k = theta1 z + theta2 w + (1 - theta1 - theta2) y."""
        q = self.params
        return q.theta1 * s.z + q.theta2 * s.w + (1 - q.theta1 - q.theta2) * s.y

    def advance(self, s: State, g: torch.Tensor, ctx) -> None:
        """The y, z, w updates every node applies with the same g and the same shared coin."""
        q = self.params
        x = self.mix(s)
        y_next = x - q.eta * g
        s.z.mul_(q.beta).add_(x, alpha=1 - q.beta).add_(y_next - x, alpha=q.gamma / q.eta)
        gen = ctx.rng("coin", shared=True)
        if float(torch.rand(1, generator=gen, device=gen.device)) < q.p:
            s.w.copy_(s.y)
        s.y.copy_(y_next)

    def uplink_codecs(self, round: int):
        return [self.uplink, self.uplink]

    def server_init(self, x0, ctx):
        h = torch.zeros_like(x0)
        return State(x0.clone(), x0.clone(), x0.clone(), h), [self.init_codecs()[0].encode(x0)]

    def worker_init(self, init, ctx):
        x0 = init[0]
        return State(x0.clone(), x0.clone(), x0.clone(), torch.zeros_like(x0))

    def worker_step(self, s: State, down, oracle, ctx):
        if down:
            self.advance(s, down[0], replace(ctx, round=ctx.round - 1))
        a = self.uplink.encode(oracle(self.mix(s)) - s.h, ctx.rng("uplink/x"))
        b = self.uplink.encode(oracle(s.w, 1) - s.h, ctx.rng("uplink/w"))
        self.uplink.accumulate(b, s.h, self.params.alpha)
        return [a, b]

    def server_step(self, s: State, up, ctx):
        g = s.h + up[0]
        s.h.add_(up[1], alpha=self.params.alpha)
        msg, direction = self.downlink.encode_reconstruct(g, ctx.rng("downlink", shared=True), self.scratch(g))
        self.advance(s, direction, ctx)
        return [msg]

    def server_model(self, s: State):
        return s.y
