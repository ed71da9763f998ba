"""Break-even links: the bandwidth B* below which a compressed round beats the uncompressed one.

A round's time, in the model of ``psgd.runtime.link`` (the server's link carries every frame one
after another, as a parameter server's star does), for n workers on a link of B bit/s:

    T(n, B) = worker_s + server_fixed_s + n * server_per_worker_s + 8 n (up_bytes + down_bytes) / B

worker_s is one worker's codec time (workers run in parallel: it counts once), server_fixed_s
the server's work done once a round (its rule, the downlink frame), server_per_worker_s what
each uplink costs it (parse, accumulate). Latency and gradient time are the same in both
rounds (2n frames each) and cancel. With C the compute part and b the bytes, compression wins
when C_c + 8 n b_c / B < C_id + 8 n b_id / B, that is below

    B* = 8 n (b_id - b_c) / (C_c - C_id)   (bit/s)

inf when the compressed round computes no more (it wins on every link), 0 when it sends no
fewer bytes (it never wins).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RoundCost:
    worker_s: float
    server_fixed_s: float
    server_per_worker_s: float
    up_bytes: int  # one uplink frame
    down_bytes: int  # one downlink frame

    def compute_s(self, n: int) -> float:
        return self.worker_s + self.server_fixed_s + n * self.server_per_worker_s

    def link_bytes(self, n: int) -> int:
        """Bytes on the server's link in one round: n uplinks and n downlinks."""
        return n * (self.up_bytes + self.down_bytes)

    def seconds(self, n: int, bandwidth: float) -> float:
        """T(n, B) for a link of ``bandwidth`` bit/s."""
        return self.compute_s(n) + 8 * self.link_bytes(n) / bandwidth


def break_even(compressed: RoundCost, identity: RoundCost, n: int) -> float:
    """B* in bit/s: the compressed round is faster on every link slower than this."""
    saved_bits = 8 * (identity.link_bytes(n) - compressed.link_bytes(n))
    extra_s = compressed.compute_s(n) - identity.compute_s(n)
    if saved_bits <= 0:
        return 0.0
    if extra_s <= 0:
        return math.inf
    return saved_bits / extra_s


def pays(b_star: float) -> str:
    """'always', 'never' or 'below B*': what the figure means, for readers of the JSON."""
    return "always" if math.isinf(b_star) else "never" if b_star == 0 else "below B*"
