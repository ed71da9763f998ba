"""Compressed SGD without error feedback (SPEC 3.1): x <- x - lr * C_down((1/n) sum_i C_up(g_i + xi_i)).

Wire: up C_up(g_i + xi_i), bits(C_up) per worker; down C_down(average), bits(C_down) (32d
with identity). With identity both ways this is plain uncompressed (fp32) parallel SGD.
Every node applies the same decoded direction with the same SGD step, so all replicas of
x stay equal.

``lr = "theory"`` follows paper 1's CGD table (single node): ``theory_class`` = U, B1, B2 or B3
names the class whose theorem sets the step, "best" (default) the class with the fastest rate.

``perturbation = r`` adds xi_i ~ N(0, (r^2/d) I) (E||xi_i||^2 = r^2) to each worker's
gradient before compression: the perturbed compressed SGD of Avdiukhin & Yaroslavtsev
(2021) for escaping saddle points, with RandomK (``randk``) as their compressor. Where the
noise enters and its schedule are [R] in SPEC 3.1; here it is constant and worker-side,
drawn from the worker's own generator (never sent, nothing extra on the wire).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields

import torch

from psgd.compress import Compressor
from psgd.methods.base import Context, Method, Oracle
from psgd.methods.optim import SGDStep
from psgd.methods.options import MethodOptions
from psgd.methods.registry import register
from psgd.methods.theory import omega


def mean(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Average in list order (a fixed order keeps runs bit-identical)."""
    total = tensors[0].clone()
    for t in tensors[1:]:
        total.add_(t)
    return total.div_(len(tensors))


@dataclass
class Replica:
    """A node's copy of x and its optimiser buffer."""

    x: torch.Tensor
    opt: SGDStep


# paper 1's CGD table (SPEC 3.1), single node, full gradient, mu-strongly convex L-smooth f:
# class -> (lr, rho); every rho is 1 - r mu/L, r the class's rate constant
CGD_TABLE = {
    "U": ("1/(zeta L)", "1 - mu/(zeta L)"),
    "B3": ("1/L", "1 - mu/(delta L)"),
    "B2": ("1/(beta L)", "1 - gamma mu/(beta L)"),
    "B1": ("1/(beta L)", "1 - alpha mu/(beta^2 L)"),
}
THEORY_CLASSES = ("best", "U", "B1", "B2", "B3")


@dataclass(frozen=True)
class SGDOptions(MethodOptions):
    perturbation: float = 0.0  # r: radius of the worker-side Gaussian perturbation (0: none)
    theory_class: str = "best"  # lr = "theory": the CGD theorem of class U, B1, B2 or B3, or the best rate

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.perturbation < 0:
            raise ValueError(f"method.perturbation must be >= 0, got {self.perturbation}")
        if self.theory_class not in THEORY_CLASSES:
            choices = ", ".join(THEORY_CLASSES)
            raise ValueError(f"method.theory_class must be one of {choices}, got {self.theory_class!r}")


def cgd_classes(c: Compressor, d: int) -> dict[str, tuple[float, float, str]]:
    """The classes of CGD_TABLE that C is known to be in: class -> (lr L, r, its parameters),
    lr = (lr L)/L and rho = 1 - r mu/L. U needs C unbiased."""
    out = {}
    w = c.omega(d) if c.unbiased else None
    if w is not None:
        out["U"] = (1 / (1 + w), 1 / (1 + w), f"zeta = {1 + w:g}")
    delta = c.delta(d)
    if delta is not None:
        out["B3"] = (1.0, 1 / delta, f"delta = {delta:g}")
    b2 = c.b2(d)
    if b2 is not None:
        out["B2"] = (1 / b2[1], b2[0] / b2[1], f"gamma = {b2[0]:g}, beta = {b2[1]:g}")
    b1 = c.b1(d)
    if b1 is not None:
        out["B1"] = (1 / b1[1], b1[0] / b1[1] ** 2, f"alpha = {b1[0]:g}, beta = {b1[1]:g}")
    return out


@register
class SGD(Method):
    name = "sgd"
    Options = SGDOptions
    server_state: type[Replica] = Replica  # subclasses: Replica plus their own tensors, zero at the start
    worker_state: type[Replica] = Replica

    def theory_lr(self):
        """Paper 1's CGD table (SPEC 3.1), single node, full gradient: U(zeta): 1/(zeta L);
        B1(alpha, beta), B2(gamma, beta): 1/(beta L); B3(delta): 1/L. ``theory_class`` picks the
        class, "best" the one with the fastest rate (ties: the order of CGD_TABLE).

        SPEC gives no distributed CGD theorem: for n > 1 only an exact uplink (omega = 0, i.e. GD) is
        covered. An unbiased C_i leaves variance (omega/n^2) sum_i ||grad f_i(x*)||^2 > 0 at x*
        (a noise floor, no linear rate); a biased one can diverge."""
        c = self.constants
        L = c.need_L(self.name)
        if self.downlink.name != "identity":
            raise ValueError(f"{self.name}: the CGD theorems assume an uncompressed downlink")
        if c.n > 1 and not self.uplink.unbiased:
            raise ValueError(
                f"{self.name}: no theorem covers distributed CGD with a biased compressor ({self.uplink.spec}); "
                "it can diverge (paper 1's n = d = 3 Top-1 example): use ef14 or ef21"
            )
        if c.n > 1 and omega(self.uplink, c.d, self.name) > 0:
            raise ValueError(
                f"{self.name}: the CGD theorems (SPEC 3.1) are single-node; with n = {c.n} workers the "
                f"unbiased {self.uplink.spec} leaves variance (omega/n^2) sum_i ||grad f_i(x*)||^2 at x* "
                "(no linear rate): use diana, adiana or ef21, or a numeric lr"
            )
        classes = cgd_classes(self.uplink, c.d)
        if not classes:
            raise ValueError(f"{self.name}: {self.uplink.spec!r} is in none of the classes U, B1, B2, B3")
        want = self.options.theory_class
        if want == "best":
            want = max(classes, key=lambda k: classes[k][1])
        elif want not in classes:
            raise ValueError(
                f"{self.name}: no known {want} parameters for {self.uplink.spec!r} (it is in {', '.join(classes)})"
            )
        lr_L, _, params = classes[want]
        lr, rho = CGD_TABLE[want]
        return lr_L / L, f"paper 1, CGD with C in {want}({params}): lr = {lr}, rho = {rho}, L = {L:g}"

    def replica(self, cls: type[Replica], x: torch.Tensor) -> Replica:
        """cls with x, its SGD step, and zeros like x in every further field without a default."""
        zeros = [torch.zeros_like(x) for f in fields(cls)[2:] if f.default is MISSING]
        return cls(x, SGDStep(self.options, self.decay_mask), *zeros)

    def server_init(self, x0, ctx):
        return self.replica(self.server_state, x0.clone()), [self.init_codecs()[0].encode(x0)]

    def worker_init(self, init, ctx):
        return self.replica(self.worker_state, init[0].clone())

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
            noise = torch.randn(g.numel(), generator=ctx.rng("perturbation"), dtype=g.dtype).to(g.device)
            g = g + (r / math.sqrt(g.numel())) * noise
        return [self.uplink.encode(g, ctx.rng("uplink"))]

    def server_step(self, state: Replica, up, ctx):
        msg, direction = self.downlink.encode_reconstruct(up[0], ctx.rng("downlink", shared=True), self.scratch(up[0]))
        state.opt.step(state.x, direction, self.step_lr(ctx.round))
        return [msg]

    def server_model(self, state: Replica):
        return state.x
