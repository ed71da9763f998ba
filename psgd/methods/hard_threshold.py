"""EF14 with the hard-threshold sparsifier (Sahu et al. 2021, SPEC 3.3).

Worker i:  s_i = g_i + m_i,  P = {j : |s_ij| >= lam},  send s_i[P],  m_i <- s_i with s_i[P] = 0
Server:    a = (1/n) sum_i s_i[P_i] (scattered); dense a down (32d), or compressed with the
           server's global error when a downlink compressor is set (as EF14).
All nodes: SGD step along a (the paper applies weight decay and Nesterov momentum 0.9 after
           the reduce: momentum = 0.9, nesterov = true).
Wire: up nnz_i (32 + ceil(log2 d)) bits, data-dependent; down 32d (identity).

The threshold comes from the uplink spec (``hard_threshold:lam=...``) or from a target
number of transmitted coordinates per round, ``target_k = k``: lam = 1/(2 sqrt(k)), the
rule of the paper's experiments (run.sh).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from psgd.compress import make
from psgd.methods.ef14 import EF14, EF14Options
from psgd.methods.registry import register

COMPRESSOR = "hard_threshold"


def threshold_for(k: int) -> float:
    """lam = 1/(2 sqrt(k)) for a target of k transmitted coordinates (Sahu et al.)."""
    return 1 / (2 * math.sqrt(k))


@dataclass(frozen=True)
class HardThresholdOptions(EF14Options):
    target_k: int | None = None  # sets the uplink to hard_threshold:lam=1/(2 sqrt(target_k))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.target_k is not None and self.target_k < 1:
            raise ValueError(f"method.target_k must be >= 1, got {self.target_k}")
        if self.target_k is not None and self.uplink != "identity":
            raise ValueError("method.target_k sets the uplink itself: give target_k or uplink, not both")


@register
class HardThreshold(EF14):
    name = "hard_threshold"
    Options = HardThresholdOptions

    def check(self) -> None:
        if self.options.target_k is not None:
            self.uplink = make(f"{COMPRESSOR}:lam={threshold_for(self.options.target_k)!r}")
        if self.uplink.name != COMPRESSOR:
            raise ValueError(
                f"{self.name}: the uplink must be the {COMPRESSOR} compressor; set method.target_k "
                f"or method.uplink = '{COMPRESSOR}:lam=...' (got {self.uplink.spec!r})"
            )

    def theory_lr(self):
        """Sahu et al. 2021, EF with an absolute compressor, ||C(x) - x||^2 <= kappa^2 (hard threshold:
        kappa^2 = d lam^2): gamma <= 1/(4L) (their convex theorem; the nonconvex one needs no smaller step)
        gives (1/T) sum_t E||grad f(x_t)||^2 <= 4 (f(x_0) - f*)/(gamma T) + 2 gamma L sigma^2/n + 2 gamma^2 L^2 kappa^2
        (nonconvex). Status [R]: step and constants are recalled; the theorems' text was not readable here (the search
        corpora hold only each paper's opening (title, abstract, start of the introduction); [S] there: convex and
        nonconvex analyses of EF with the hard threshold, SGD's asymptotic rate and linear speed-up in the convex
        case, no data-heterogeneity term in the nonconvex one). The deterministic form (sigma = 0) is derived here
        from the virtual sequence x - gamma mean e_i, for any gamma <= 1/(2L) ([D], tested at this step)."""
        c = self.constants
        L = c.need_L(self.name)
        if self.keeps_global_error():
            raise ValueError(f"{self.name}: Sahu et al.'s theorems assume an uncompressed downlink")
        return 1 / (4 * L), f"Sahu et al. 2021, EF with hard threshold: lr <= 1/(4 L), L = {L:g}"
