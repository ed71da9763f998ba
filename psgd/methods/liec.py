"""LIEC-SGD (Cheng et al., arXiv 2402.11857), SPEC 3.10: bidirectional compression with the
server's global error and each worker's local immediate error compensation.

Normal round t ((t + 1) % H != 0):
  worker i:  g_i = grad at its own x_i,  c_i = C_up(g_i),  r_i = g_i - c_i (kept for this round only)
                                                                         up: bits(C_up), d + 32 with scaled sign
  server:    m = (1/n) sum_i c_i + e_s,  q = C_down(m),  e_s <- m - q    down: bits(C_down), d + 32
  worker i:  x_i <- SGD step along q + r_i (local compensation; its own momentum buffer)
Sync round ((t + 1) % H == 0), full precision:
  momentum = 0: worker i sends y_i = x_i - lr (g_i + wd x_i)             up: 32d
                server x = (1/n) sum_i y_i - lr e_s, e_s <- 0, sends x   down: 32d
                (= averaging the models, then one SGD step along (1/n) sum g_i + e_s, as the code does)
  momentum > 0: worker i sends [x_i, g_i]                                up: 64d
                server sends [x_bar, G = (1/n) sum_i g_i + e_s], e_s <- 0 down: 64d
                worker i: x_i <- x_bar, then its SGD step along G (its own momentum buffer)
The local models differ between syncs. The server never sees r_i: its model is the last
synchronised average moved along the broadcast q's, and equals (1/n) sum_i x_i right after a sync.
Virtual sequence (momentum = weight decay = 0): x_bar - lr e_s follows plain SGD on the mean gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.compress import make
from psgd.methods.options import MethodOptions
from psgd.methods.registry import register
from psgd.methods.sgd import SGD, Replica
from psgd.methods.theory import contraction

IDENTITY = make("identity")
STRICT = 1 - 1e-9  # Theorem 1's bound is strict: the theory step sits this fraction below it


@dataclass(frozen=True)
class LIECOptions(MethodOptions):
    uplink: str = "scaled_sign"
    downlink: str = "scaled_sign"
    period: int = 32  # H: a full-precision sync every H rounds

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.period < 1:
            raise ValueError(f"method.period must be >= 1, got {self.period}")


@dataclass
class WorkerState(Replica):
    local_error: torch.Tensor  # r_i = g_i - C(g_i) of the current round


@dataclass
class ServerState(Replica):
    global_error: torch.Tensor  # e_s


@register
class LIEC(SGD):
    name = "liec"
    Options = LIECOptions
    server_state, worker_state = ServerState, WorkerState

    def theory_lr(self):
        """Cheng et al. 2024, Theorem 1 (nonconvex, L-smooth, bounded variance, C a delta-contraction,
        ||C(x) - x||^2 <= (1 - delta)||x||^2): the step must satisfy lr < delta/(10 L) (SPEC 3.10, from the
        paper); its bound terms are [R]: the theorem's text was not readable here (the search corpora hold
        only the paper's opening, whose abstract claims nonconvex convergence with linear speed-up).
        delta is the smaller of the two directions' contractions. The inequality is strict, so the
        step is just below delta/(10 L). Independently of the paper ([D], tested): with identical workers and
        full gradients, x - lr e_s runs GD along grad f(x), and at this step, with q = sqrt(1 - delta),
        (1/T) sum_{t<T} ||grad f(x_t)||^2 <= 4 (f(x_0) - f*)/(lr T (1 - 2 (lr L)^2 (q/(1 - q))^2))."""
        c = self.constants
        L = c.need_L(self.name)
        delta = min(contraction(self.uplink, c.d, self.name), contraction(self.downlink, c.d, self.name))
        why = f"LIEC-SGD (Cheng et al. 2024) Theorem 1: lr < delta/(10 L), delta = {delta:g}, L = {L:g}"
        return STRICT * delta / (10 * L), why

    def sync(self, round: int) -> bool:
        return (round + 1) % self.options.period == 0

    def local_models(self, round: int) -> bool:
        return not self.sync(round)

    def parts(self) -> int:
        """Vectors per direction on a sync round: y_i, or (x_i, g_i) when momentum buffers are local."""
        return 2 if self.options.momentum else 1

    def uplink_codecs(self, round: int):
        return [IDENTITY] * self.parts() if self.sync(round) else [self.uplink]

    def downlink_codecs(self, round: int):
        return [IDENTITY] * self.parts() if self.sync(round) else [self.downlink]

    def apply_downlink(self, state: WorkerState, down, ctx) -> None:
        if not down:
            return
        t = ctx.round - 1
        if not self.sync(t):
            state.opt.step(state.x, down[0] + state.local_error, self.step_lr(t))
            return
        state.x.copy_(down[0])
        if self.parts() == 2:
            state.opt.step(state.x, down[1], self.step_lr(t))

    def worker_step(self, state: WorkerState, down, oracle, ctx):
        self.apply_downlink(state, down, ctx)
        g = oracle(state.x)
        if self.sync(ctx.round):
            if self.parts() == 2:
                return [IDENTITY.encode(state.x), IDENTITY.encode(g)]
            y = state.x - self.step_lr(ctx.round) * state.opt.direction(state.x, g)
            return [IDENTITY.encode(y)]
        msg = self.uplink.encode(g, ctx.rng("uplink"))
        self.uplink.accumulate(msg, state.local_error.copy_(g), -1.0)
        return [msg]

    def server_step(self, state: ServerState, up, ctx):
        lr = self.step_lr(ctx.round)
        if self.sync(ctx.round):
            if self.parts() == 2:
                g = up[1].add_(state.global_error)
                msgs = [IDENTITY.encode(up[0]), IDENTITY.encode(g)]
                state.x.copy_(IDENTITY.decode(msgs[0]))
                state.opt.step(state.x, IDENTITY.decode(msgs[1]), lr)
            else:
                msgs = [IDENTITY.encode(up[0].sub_(state.global_error, alpha=lr))]
                state.x.copy_(IDENTITY.decode(msgs[0]))
            state.global_error.zero_()
            return msgs
        m = up[0].add_(state.global_error)
        msg, q = self.downlink.encode_reconstruct(m, ctx.rng("downlink", shared=True), self.scratch(m))
        torch.sub(m, q, out=state.global_error)
        state.opt.step(state.x, q, lr)
        return [msg]
