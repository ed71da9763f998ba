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
