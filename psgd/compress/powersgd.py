"""PowerSGD rank r (Vogels, Karimireddy, Jaggi 2019), one power-iteration step, for comparison.

x (padded with zeros) is viewed as an n x m matrix M, n = ceil(sqrt(d)), m = ceil(d/n).
With Q ~ N(0, 1)^(m x r) from the caller's generator: P = orth(M Q) (QR), Q' = M^T P, and
C(x) = P Q'^T = P P^T M, flattened back to d. A codec has no state, so there is no warm
start across rounds (the paper reuses Q; methods that want it keep their own state).
Biased. C is an orthogonal projection of M's columns, so ||C(x) - x|| <= ||x|| surely, but
no fixed delta holds (no B3 class). Wire: P and Q' in fp32: 32 r(n + m) bits, r <= min(n, m).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from psgd.compress.base import Compressor, Message, check_fits, largest, narrowest, require_finite
from psgd.compress.randomness import normal
from psgd.compress.registry import register
from psgd.errors import FrameError


def shape(d: int) -> tuple[int, int]:
    n = math.isqrt(d - 1) + 1
    return n, -(-d // n)


@register
@dataclass(frozen=True)
class PowerSGD(Compressor):
    rank: int = 1

    name = "powersgd"
    summary = "rank-r approximation of x as a sqrt(d) x sqrt(d) matrix, one power iteration"
    klass = "biased, ||C(x) - x|| <= ||x||"
    wire_bits = "32 r(n + m), n m >= d"

    def __post_init__(self):
        if not (isinstance(self.rank, int) and self.rank >= 1):
            raise ValueError(f"{self.name}: rank must be an integer >= 1, got {self.rank!r}")

    def _dims(self, d: int) -> tuple[int, int, int]:
        n, m = shape(d)
        return n, m, min(self.rank, n, m)

    def _encode(self, x, generator):
        d = x.numel()
        n, m, r = self._dims(d)
        norm = float(torch.linalg.vector_norm(x, dtype=torch.float64))
        check_fits("||x||_2", norm, x.dtype)  # bounds the decoded |C(x)_i|: C is a projection
        # fp32 squares of M Q ~ ||x|| sqrt(m) overflow from ~1e19: large inputs work in float64
        work = torch.float64 if x.dtype == torch.float64 or norm > 2.0**40 else torch.float32
        mat = torch.zeros(n * m, dtype=work, device=x.device)
        mat[:d] = x
        mat = mat.view(n, m)
        q = normal((m, r), mat, generator).to(work)
        p = torch.linalg.qr(mat @ q).Q
        q = mat.T @ p
        return (), torch.cat([p.reshape(-1), q.reshape(-1)]).to(torch.float32).view(torch.uint8)

    def _parse(self, m: Message) -> tuple[torch.Tensor, torch.Tensor]:
        """The fp32 factors (P, Q'), finite, with |C(x)_ij| = |<P_i, Q'_j>| <= max_i ||P_i|| max_j ||Q'_j||
        (Cauchy-Schwarz) within the message's dtype, so that decode cannot overflow. An encoder's P has
        orthonormal columns (rows of norm <= 1) and ||Q'_j|| <= ||x||, which it checked: its bound is ||x||."""
        n, cols, r = self._dims(m.d)
        f = m.body.view(torch.float32)
        require_finite(self.name, f, "factor")
        p, q = f[: n * r].view(n, r), f[n * r :].view(cols, r)
        rows = [float(torch.linalg.vector_norm(t.to(torch.float64), dim=1).max()) for t in (p, q)]
        if not rows[0] * rows[1] <= largest(m.dtype):
            raise FrameError(f"{self.name}: factors whose product may exceed {narrowest(m.dtype)}")
        return p, q

    def _decode(self, m: Message) -> torch.Tensor:
        p, q = self.parsed(m)
        work = torch.float64 if m.dtype == torch.float64 else torch.float32
        return (p.to(work) @ q.to(work).T).reshape(-1)[: m.d].to(m.dtype)

    def _bits(self, d):
        n, m, r = self._dims(d)
        return 32 * r * (n + m)
