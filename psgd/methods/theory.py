"""What the theorems need: the problem's constants and the compressors' class parameters.

``Constants`` travels from a task (``Task.constants()``) or from ``psgd.simulate`` into
``methods.build``; a method's ``theory_lr`` turns it into its theorem's step size. L is the
smoothness of f = (1/n) sum_i f_i, mu its strong convexity (PL) constant, L_i the smoothness
of each worker's f_i (L~ = sqrt(mean L_i^2), EF21's constant; never replaced by L <= L~).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from psgd.compress import Compressor


@dataclass(frozen=True)
class Constants:
    n: int  # workers
    d: int  # dimension
    L: float | None = None
    mu: float | None = None
    L_i: tuple[float, ...] | None = None

    @classmethod
    def of(cls, task) -> Constants:
        """The constants a task knows (n and d always; L, mu, L_i when ``task.constants()`` gives them)."""
        known = task.constants() or {}
        L_i = known.get("L_i")
        return cls(task.n, task.dim, known.get("L"), known.get("mu"), None if L_i is None else tuple(L_i))

    def need_L(self, who: str) -> float:
        if self.L is None:
            raise ValueError(f"{who}: the theorem's step size needs the smoothness constant L, unknown for this task")
        return self.L

    def need_L_tilde(self, who: str) -> float:
        """L~ = sqrt((1/n) sum_i L_i^2). Never replaced by L: L <= L~, so a bound built on L
        could exceed the theorem's."""
        if self.L_i is None:
            raise ValueError(
                f"{who}: the theorem's step size needs the per-worker smoothness constants L_i "
                "(L~ = sqrt(mean L_i^2) >= L), unknown for this task; give L_i or a numeric lr"
            )
        if len(self.L_i) != self.n:
            raise ValueError(f"{who}: L_i has {len(self.L_i)} values for {self.n} workers")
        L_tilde = math.sqrt(sum(v * v for v in self.L_i) / self.n)
        if self.L is not None and L_tilde < self.L * (1 - 1e-9):
            raise ValueError(
                f"{who}: L~ = sqrt(mean L_i^2) = {L_tilde:g} < L = {self.L:g}, impossible when f = mean f_i "
                "and each f_i is L_i-smooth: check L and L_i"
            )
        return L_tilde


def omega(c: Compressor, d: int, who: str) -> float:
    """omega of C in U(omega); refuses a compressor that is not unbiased."""
    w = c.omega(d) if c.unbiased else None
    if w is None:
        raise ValueError(f"{who} needs an unbiased compressor in U(omega); {c.spec!r} is not one")
    return w


def contraction(c: Compressor, d: int, who: str) -> float:
    """alpha = 1/delta_B3: E||C(x) - x||^2 <= (1 - alpha)||x||^2 (EF21's alpha, LIEC's delta)."""
    delta = c.delta(d)
    if delta is None:
        raise ValueError(
            f"{who} needs a contractive compressor in B3(delta); {c.spec!r} is not one "
            "(scale an unbiased compressor by 1/zeta to make it one, paper 1 Theorem 7)"
        )
    return 1.0 / delta
