"""EF21 (Richtárik, Sokolov, Fatkhullin 2021), SPEC 3.4, and its momentum versions EF21-SGDM and
EF21-SGD2M (Fatkhullin, Tyurin, Richtárik, NeurIPS 2023), SPEC 3.5.

Round 0 (initialisation, uncompressed):  worker i sends g_i^0 = v_i^0                  up: 32d
                                          server g^0 = (1/n) sum_i g_i^0
Round t >= 1, worker i:  x^t <- x^{t-1} - lr g^{t-1}  (the broadcast direction)
                         v_i = grad f_i(x^t)                                    (EF21)
                         v_i <- (1 - eta) v_i + eta grad f_i(x^t; xi)           (EF21-SGDM)
                         u_i <- (1 - eta) u_i + eta v_i, compress u_i instead   (EF21-SGD2M)
                         c_i = C_up(v_i - g_i),  g_i <- g_i + c_i               up: bits(C_up)
Server (every round):    g <- g + (1/n) sum_i c_i,  x <- x - lr g,  broadcast g down: 32d
With the momentum versions v_i^0 = u_i^0 = the mean of ``init_batches`` minibatch gradients at x^0.
Every node applies the same decoded g with the same SGD step, so all copies of x stay equal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from psgd.compress import make
from psgd.methods.options import MethodOptions
from psgd.methods.registry import register
from psgd.methods.sgd import SGD, Replica, mean
from psgd.methods.theory import contraction

IDENTITY = make("identity")


@dataclass
class WorkerState(Replica):
    g: torch.Tensor  # g_i: the worker's gradient estimate, known to the server
    v: torch.Tensor | None = None  # momentum v_i (EF21-SGDM)
    u: torch.Tensor | None = None  # second momentum u_i (EF21-SGD2M)


@dataclass
class ServerState(Replica):
    g: torch.Tensor  # g = (1/n) sum_i g_i


def ef21_step(alpha: float, L: float, L_tilde: float | None, mu: float | None) -> tuple[float, str]:
    """EF21's step size (SPEC 3.4) for an alpha-contraction: theta = 1 - sqrt(1 - alpha),
    beta = (1 - alpha)/theta; nonconvex: 1/(L + L~ sqrt(beta/theta));
    PL: min{1/(L + L~ sqrt(2 beta/theta)), theta/(2 mu)}. L~ may be None only when alpha = 1
    (beta = 0: the L~ term vanishes, EF21 is GD)."""
    theta = 1 - math.sqrt(1 - alpha)
    beta = (1 - alpha) / theta
    consts = f"alpha = {alpha:g}, theta = {theta:g}, beta = {beta:g}, L = {L:g}"
    spread = 0.0  # L~ sqrt(beta/theta)
    if beta:
        spread = L_tilde * math.sqrt(beta / theta)
        consts += f", L~ = {L_tilde:g}"
    if mu is None:
        return 1 / (L + spread), f"EF21 nonconvex: lr <= 1/(L + L~ sqrt(beta/theta)), {consts}"
    lr = min(1 / (L + math.sqrt(2) * spread), theta / (2 * mu))
    return lr, f"EF21 under PL: lr <= min(1/(L + L~ sqrt(2 beta/theta)), theta/(2 mu)), {consts}, mu = {mu:g}"


@register
class EF21(SGD):
    name = "ef21"
    Options = MethodOptions
    server_state, worker_state = ServerState, WorkerState

    def check(self) -> None:
        self.require_dense_downlink()

    def theory_lr(self):
        """EF21's theorem needs L~ = sqrt(mean L_i^2), i.e. the task's L_i, whenever C compresses (alpha < 1)."""
        c = self.constants
        alpha = contraction(self.uplink, c.d, self.name)
        L = c.need_L(self.name)
        return ef21_step(alpha, L, c.need_L_tilde(self.name) if alpha < 1 else None, c.mu)

    def uplink_codecs(self, round: int):
        return [IDENTITY] if round == 0 else [self.uplink]

    def tracked(self, state: WorkerState, oracle, round: int) -> torch.Tensor:
        """The vector g_i tracks: the full local gradient for EF21."""
        return oracle(state.x)

    def worker_step(self, state: WorkerState, down, oracle, ctx):
        self.apply_downlink(state, down, ctx)
        target = self.tracked(state, oracle, ctx.round)
        if ctx.round == 0:
            msg = IDENTITY.encode(target)
            state.g.copy_(IDENTITY.decode(msg))  # what the server receives, to the bit
        else:
            msg = self.uplink.encode(target - state.g, ctx.rng("uplink"))
            self.uplink.accumulate(msg, state.g)
        return [msg]

    def server_step(self, state: ServerState, up, ctx):
        c = up[0]
        if ctx.round == 0:
            state.g.copy_(c)
        else:
            state.g.add_(c)
        msg, direction = self.downlink.encode_reconstruct(
            state.g, ctx.rng("downlink", shared=True), self.scratch(state.g)
        )
        state.opt.step(state.x, direction, self.step_lr(ctx.round))
        return [msg]


@dataclass(frozen=True)
class EF21SGDMOptions(MethodOptions):
    eta: float = 0.1  # momentum weight: v <- (1 - eta) v + eta grad f_i(x; xi)
    init_batches: int = 1  # B_init: minibatches averaged into v_i^0 = g_i^0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.eta <= 1:
            raise ValueError(f"method.eta must be in (0, 1], got {self.eta}")
        if self.init_batches < 1:
            raise ValueError(f"method.init_batches must be >= 1, got {self.init_batches}")


@register
class EF21SGDM(EF21):
    name = "ef21_sgdm"
    Options = EF21SGDMOptions
    double = False  # EF21-SGD2M: a second momentum u_i on top of v_i

    def theory_lr(self):
        """Fatkhullin, Tyurin, Richtárik, NeurIPS 2023 (EF21-SGDM; EF21-SGD2M has its own theorem), nonconvex,
        L-smooth f, L_i-smooth f_i, bounded variance sigma^2, C an alpha-contraction:
        gamma <= min(alpha/(20 L~), eta/(7 L)) gives
        (1/T) sum_t E||grad f(x^t)||^2 = O(Lambda^0/(gamma T) + eta^2 sigma^2/alpha^2 + eta sigma^2/n).
        Status [R]: the theorem numbers, the constants 20 and 7 and the rate's form are recalled; the theorems' text
        was not readable here (the search corpora hold only each paper's opening (title, abstract, start of the
        introduction); [S] there: the abstract's claims, convergence under smoothness and bounded variance only, no
        large batches, double momentum better still). Of the constants recalled the smaller are used; EF21-SGD2M takes
        the same step. Tested: the O(1/T) order at this step with full gradients (the sigma = 0 form).
        With alpha = 1 (no compression, g_i = v_i) the alpha/(20 L~) term, which pays for C's error, is dropped."""
        c = self.constants
        alpha, eta = contraction(self.uplink, c.d, self.name), self.options.eta
        L = c.need_L(self.name)
        consts = f"alpha = {alpha:g}, eta = {eta:g}, L = {L:g}"
        if alpha == 1:
            return eta / (7 * L), f"Fatkhullin et al. 2023, {self.name}, alpha = 1: lr <= eta/(7 L), {consts}"
        L_tilde = c.need_L_tilde(self.name)
        lr = min(alpha / (20 * L_tilde), eta / (7 * L))
        why = f"Fatkhullin et al. 2023, {self.name}: lr <= min(alpha/(20 L~), eta/(7 L))"
        return lr, f"{why}, {consts}, L~ = {L_tilde:g}"

    def tracked(self, state: WorkerState, oracle, round: int) -> torch.Tensor:
        eta = self.options.eta
        if round == 0:
            b = self.options.init_batches
            state.v = mean([oracle(state.x, j) for j in range(b)])
            state.u = state.v.clone() if self.double else None
        else:
            state.v.mul_(1 - eta).add_(oracle(state.x), alpha=eta)
            if self.double:
                state.u.mul_(1 - eta).add_(state.v, alpha=eta)
        return state.u if self.double else state.v

    def worker_init(self, init, ctx):
        state = super().worker_init(init, ctx)
        state.v = torch.zeros_like(state.x)  # shapes for checkpoints; set in round 0
        state.u = torch.zeros_like(state.x) if self.double else None
        return state


@register
class EF21SGD2M(EF21SGDM):
    name = "ef21_sgd2m"
    double = True
