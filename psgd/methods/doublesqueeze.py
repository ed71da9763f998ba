"""DoubleSqueeze (Tang et al. 2019), SPEC 3.8: error feedback on both sides of the wire.

Worker i:  v_i = g_i + e_i,  c_i = C_up(v_i),  e_i <- v_i - c_i                 up: bits(C_up)
Server:    v = (1/n) sum_i c_i + e_s,  q = C_down(v),  e_s <- v - q             down: bits(C_down)
All nodes: SGD step (lr, momentum, weight decay as configured) along q.
With scaled sign both ways: d + 32 bits each way. This is EF14 whose server always keeps
the global error e_s (the LIEC code's baseline); it defaults to scaled sign both ways.
"""

from __future__ import annotations

from dataclasses import dataclass

from psgd.methods.ef14 import EF14, EF14Options
from psgd.methods.registry import register


@dataclass(frozen=True)
class DoubleSqueezeOptions(EF14Options):
    uplink: str = "scaled_sign"
    downlink: str = "scaled_sign"


@register
class DoubleSqueeze(EF14):
    name = "doublesqueeze"
    Options = DoubleSqueezeOptions

    def keeps_global_error(self) -> bool:
        return True

    def theory_lr(self):
        """Tang et al. 2019, Theorem 1 (nonconvex, L-smooth, variance sigma^2, compression error
        E||C(v) - v||^2 <= eps^2 on both sides): gamma = 1/(4L + sigma sqrt(T/n) + eps^(2/3) T^(1/3)) gives
        (1/T) sum_t E||grad f(x_t)||^2 = O(sigma/sqrt(nT) + eps^(2/3)/T^(2/3) + 1/T).
        Status [R]: theorem number, step and rate are recalled (SPEC 3.8); the text was not readable here (the search
        corpora hold only each paper's opening (title, abstract, start of the introduction); [S] there: any
        compressor, a better rate than QSGD-type methods without error compensation, linear speed-up). The step
        depends on the horizon T unless sigma = eps = 0; lr = "theory" takes its T-free bound 1/(4L). At that step
        a bound derived here holds ([D], tested with the hard threshold both ways): x - gamma (e_s + mean e_i) runs
        GD along grad f(x), so with full gradients
        (1/T) sum ||grad f(x_t)||^2 <= 4 (f(x_0) - f*)/(gamma T) + 2 gamma^2 L^2 kappa^2, kappa^2 = 4 d lam^2."""
        L = self.constants.need_L(self.name)
        return 1 / (4 * L), f"DoubleSqueeze (Tang et al. 2019, Theorem 1): lr <= 1/(4 L), L = {L:g}"
