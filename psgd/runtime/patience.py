"""How long one rank waits for a frame before it declares its peer stalled.

``timeout_s`` in the config fixes it. With 0 (the default) it follows the job: the first wait
covers start-up (the peers load data, build models, compile kernels) and gets FIRST_S; later
waits get the largest of FLOOR_S, FACTOR times the longest wait after the first, and twice
the first wait, so slow rounds, evaluations and checkpoints are never mistaken for a stall.
Workers wait twice as long as the server (``WORKER``): when a worker stalls, the server, which
can name it, speaks first; a worker only gives up on a server that is itself silent.
"""

from __future__ import annotations

FIRST_S = 600.0
FLOOR_S = 60.0
FACTOR = 20.0
WORKER = 2.0


class Patience:
    def __init__(self, timeout_s: float, scale: float = 1.0) -> None:
        self.fixed, self.scale = timeout_s, scale
        self.first: float | None = None  # the first wait, once over
        self.slowest = 0.0

    def seconds(self) -> float:
        if self.fixed:
            return self.scale * self.fixed
        if self.first is None:
            return self.scale * FIRST_S
        return self.scale * max(FLOOR_S, FACTOR * self.slowest, 2 * self.first)

    def observe(self, waited: float) -> None:
        if self.first is None:
            self.first = waited
        else:
            self.slowest = max(self.slowest, waited)
