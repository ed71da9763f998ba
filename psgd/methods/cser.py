"""CSER, communication-efficient SGD with error reset (Xie et al. 2020), the baseline of LIEC-SGD's
comparison (SPEC 3.10, period H = 8 there); here with a parameter server.

Each worker keeps its own model x_i and a local error e_i (how far x_i is from the common model).
Every round, worker i:  delta_i = lr (SGD direction of g_i at x_i: momentum, weight decay, local)
                        c_i = C_up(delta_i),  r_i = delta_i - c_i                    up: bits(C_up)
  server:               a = (1/n) sum_i c_i                                         down: 32d
  worker i:             x_i <- x_i - a - r_i,  e_i <- e_i - r_i
Every H-th round (error reset), worker i also sends C_reset(e_i) (after this round's step);
  server:               b = (1/n) sum_i C_reset(e_i)                                up: + bits(C_reset)
  worker i:             x_i <- x_i - e_i + b + s_i,  e_i <- s_i,  s_i = e_i - C_reset(e_i)  down: + 32d
With C_reset = identity the reset averages the models exactly and zeroes the errors.
x_i - e_i is the same on every node; it is the server's model (the exact average after a reset
with the identity).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.compress import Compressor, make
from psgd.methods.base import Method
from psgd.methods.optim import SGDStep
from psgd.methods.options import MethodOptions
from psgd.methods.registry import register


@dataclass(frozen=True)
class CSEROptions(MethodOptions):
    period: int = 8  # H: error reset every H rounds
    reset_uplink: str = "identity"  # C_reset, the compressor of the errors on reset rounds

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.period < 1:
            raise ValueError(f"method.period must be >= 1, got {self.period}")


@dataclass
class WorkerState:
    x: torch.Tensor  # x_i
    opt: SGDStep
    error: torch.Tensor  # e_i
    residual: torch.Tensor  # r_i of the current round
    reset_residual: torch.Tensor  # s_i of the current reset round


@dataclass
class ServerState:
    x: torch.Tensor  # the common x_i - e_i


@register
class CSER(Method):
    name = "cser"
    Options = CSEROptions

    def check(self) -> None:
        self.require_dense_downlink()
        self.reset_codec: Compressor = make(self.options.reset_uplink)

    def theory_lr(self):
        """Xie et al. 2020, Theorem 1 (CSER, nonconvex, L-smooth, bounded variance and second moment of the
        gradients, delta-approximate C_up and C_reset): eta <= 1/(2L) gives
        (1/T) sum_t E||grad f(x_bar_t)||^2 = O((f(x_0) - f*)/(eta T) + eta L sigma^2/n + eta^2 L^2 H^2 G^2 (1 - delta)),
        x_bar the mean of the local models. Status [R]: the theorem number, step and bound are recalled; the text was
        not readable here (the search corpora hold only each paper's opening (title, abstract, start of the
        introduction); [S] there: the abstract's claim of convergence for smooth nonconvex problems). Of the steps
        recalled (1/L, 1/(2L)) the smaller is used. Tested: the 1/T term and the floor's growth with H, as orders
        only."""
        L = self.constants.need_L(self.name)
        return 1 / (2 * L), f"CSER (Xie et al. 2020, Theorem 1): lr <= 1/(2 L), L = {L:g}"

    def reset(self, round: int) -> bool:
        return (round + 1) % self.options.period == 0

    def uplink_codecs(self, round: int):
        return [self.uplink, self.reset_codec] if self.reset(round) else [self.uplink]

    def downlink_codecs(self, round: int):
        return [self.downlink] * (2 if self.reset(round) else 1)

    def server_init(self, x0, ctx):
        return ServerState(x0.clone()), [self.init_codecs()[0].encode(x0)]

    def worker_init(self, init, ctx):
        x = init[0].clone()
        zeros = torch.zeros_like
        return WorkerState(x, SGDStep(self.options, self.decay_mask), zeros(x), zeros(x), zeros(x))

    def local_models(self, round: int) -> bool:
        """x_i = server x + e_i: equal only after a reset with the identity (all e_i = 0)."""
        return not (self.reset(round) and self.reset_codec.name == "identity")

    def apply_downlink(self, s: WorkerState, down, ctx) -> None:
        if down:
            s.x.sub_(down[0]).sub_(s.residual)
            if len(down) == 2:
                s.x.sub_(s.error).add_(down[1]).add_(s.reset_residual)
                s.error.copy_(s.reset_residual)

    def worker_step(self, s: WorkerState, down, oracle, ctx):
        self.apply_downlink(s, down, ctx)
        g = oracle(s.x)
        delta = self.options.lr_at(ctx.round) * s.opt.direction(s.x, g)
        msg = self.uplink.encode(delta, ctx.rng("uplink"))
        self.uplink.accumulate(msg, s.residual.copy_(delta), -1.0)
        s.error.sub_(s.residual)
        if not self.reset(ctx.round):
            return [msg]
        reset = self.reset_codec.encode(s.error, ctx.rng("reset"))
        self.reset_codec.accumulate(reset, s.reset_residual.copy_(s.error), -1.0)
        return [msg, reset]

    def server_step(self, s: ServerState, up, ctx):
        msgs = [self.downlink.encode(up[0])]
        if self.reset(ctx.round):
            msgs.append(self.downlink.encode(up[1]))
        self.downlink.accumulate(msgs[0], s.x, -1.0)
        if len(msgs) == 2:
            self.downlink.accumulate(msgs[1], s.x)
        return msgs

    def server_model(self, s: ServerState):
        return s.x
