"""EF14 error feedback (Seide et al. 2014; Stich et al.; Karimireddy et al.), SPEC 3.2.

Worker i:  p_i = e_i + u_i,  c_i = C_up(p_i),  e_i <- p_i - c_i
           with u_i = g_i (error in gradient units, the DL codes) or u_i = lr_t g_i
           (paper 1's Algorithm 1, error in lr*g units; then the step applies lr = 1).
           With a dense downlink this is MEM-SGD (SPEC 3.9).
Server:    a = (1/n) sum_i c_i.  With an identity downlink it sends a (MEM-SGD, 32d down).
           With a compressed downlink it keeps the global error e_s (DoubleSqueeze-style,
           SPEC 3.8): v = a + e_s, q = C_down(v), e_s <- v - q, and sends q.
           It reads the sum s = sum_i c_i (reads_sums) and divides as it adds: e_s + s / n, the
           floats of e_s + a, one pass over s fewer than forming a first.
All nodes:  x <- SGD step along the decoded downlink.
Wire: up bits(C_up) per worker; down bits(C_down), identical for every worker.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.methods.options import MethodOptions
from psgd.methods.registry import register
from psgd.methods.sgd import SGD, Replica
from psgd.methods.theory import contraction


@dataclass(frozen=True)
class EF14Options(MethodOptions):
    error_units: str = "grad"  # "grad": e in gradient units; "lr": e in lr*g units (paper 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.error_units not in ("grad", "lr"):
            raise ValueError(f"method.error_units must be 'grad' or 'lr', got {self.error_units!r}")
        if self.error_units == "lr" and (self.momentum or self.weight_decay):
            raise ValueError("method.error_units = 'lr' (paper 1's plain EF step) needs momentum = weight_decay = 0")


@dataclass
class WorkerState(Replica):
    error: torch.Tensor


@dataclass
class ServerState(Replica):
    global_error: torch.Tensor | None  # None with an identity downlink


@register
class EF14(SGD):
    name = "ef14"
    Options = EF14Options
    reads_sums = True
    server_state, worker_state = ServerState, WorkerState

    def theory_lr(self):
        """Paper 1's distributed EF theorem (SPEC 3.2), full gradients (B = 0): lr <= 1/(14 (2 delta + B) L)."""
        c = self.constants
        L = c.need_L(self.name)
        if self.keeps_global_error():
            raise ValueError(f"{self.name}: the EF theorem assumes an uncompressed downlink")
        delta = 1 / contraction(self.uplink, c.d, self.name)
        why = f"paper 1, EF with C in B3(delta): lr <= 1/(28 delta L), delta = {delta:g}, L = {L:g}"
        return 1 / (28 * delta * L), why

    def keeps_global_error(self) -> bool:
        """A compressed downlink needs the server's error (DoubleSqueeze-style)."""
        return self.downlink.name != "identity"

    def step_lr(self, round: int) -> float:
        return 1.0 if self.options.error_units == "lr" else self.options.lr_at(round)

    def server_init(self, x0, ctx):
        state, down = super().server_init(x0, ctx)
        if not self.keeps_global_error():
            state.global_error = None
        return state, down

    def worker_step(self, state: WorkerState, down, oracle, ctx):
        self.apply_downlink(state, down, ctx)
        g = oracle(state.x)
        p = state.error.add_(g if self.options.error_units == "grad" else self.options.lr_at(ctx.round) * g)
        msg, _ = self.uplink.encode_feedback(p, ctx.rng("uplink"))  # e <- p - C(p)
        return [msg]

    def server_step(self, state: ServerState, up, ctx):
        e, s = state.global_error, up[0]
        # v = a + e_s formed in e_s's own memory (addition commutes: the same floats), so that
        # e_s <- v - q is an in-place subtraction, not a third vector written; addcdiv's
        # e_s + 1 * s / n rounds s / n once, then the sum: the floats of e_s + a
        v = s.div_(ctx.n) if e is None else e.addcdiv_(s, torch.full((), ctx.n, dtype=s.dtype, device=s.device))
        rng, scratch = ctx.rng("downlink", shared=True), self.scratch(v)
        if e is None:
            msg, q = self.downlink.encode_reconstruct(v, rng, scratch)
        else:  # e_s <- v - q
            msg, q = self.downlink.encode_feedback(v, rng, scratch)
        state.opt.step(state.x, q, self.step_lr(ctx.round))
        return [msg]
