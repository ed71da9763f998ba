"""How long one rank waits for a frame before it declares its peer stalled.

``timeout_s`` in the config fixes it. With 0 (the default) it follows the job: the first wait
covers start-up (the peers load data, build models, compile kernels) and gets FIRST_S; later
waits get the largest of FLOOR_S, FACTOR times the longest wait after the first, and twice
the first wait, so slow rounds, evaluations and checkpoints are never mistaken for a stall.
Workers wait twice as long as the server (``WORKER``): when a worker stalls, the server, which
can name it, speaks first; a worker only gives up on a server that is itself silent. Of the
workers, rank 1 speaks for all: the others wait ``grace`` longer, so that its abort ends them
before they print the same message (they speak only if rank 1 is gone too).
"""

from __future__ import annotations

FIRST_S = 600.0
FLOOR_S = 60.0
FACTOR = 20.0
WORKER = 2.0
GRACE_S = 5.0
GRACE = 0.25


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


def grace(seconds: float, rank: int) -> float:
    """How much longer than rank 1 a worker waits for a silent server."""
    return 0.0 if rank <= 1 else max(GRACE_S, GRACE * seconds)
