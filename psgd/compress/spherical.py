"""Spherical Compression (paper 2, SPEC 2.12), applied to small blocks.

For a block x_b with u = x_b/||x_b||: candidates c^1, c^2, ... uniform on the sphere of radius
rho = sqrt(1 - alpha) are drawn from a seed the decoder shares; T is the first t with
||c^t - u||^2 <= alpha (equivalently <c^t/rho, u> >= rho: a cap with sin^2 = alpha), and
C(x)_b = ||x_b|| c^T. Biased with a sure bound: ||C(x) - x||^2 <= alpha ||x||^2, the class
C(alpha), B3(1/(1 - alpha)).
T is geometric with success probability P(alpha, n) = 1/2 I_alpha((n-1)/2, 1/2) (n the block
size), so E T = 1/P ~ alpha^(-n/2): keep blocks small (default 8). T - 1 is Golomb-Rice
coded with 2^r ~ ln 2/P, about -log2 P + 2 bits (the paper: < -log2 P + 3).
Wire: a 32-bit seed in the header; per block the fp32 norm, then Rice(T - 1) written split:
32B + sum_b (q_b + 1 + r_b) bits, data-dependent, the exact length in the header. A last
block shorter than ``block`` has its own P and r. Candidate t of block b is a counter-based
draw of (seed, b, t, coordinate), so the decoder regenerates c^T alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from psgd.compress.base import SEED, SENT, Compressor, Message, check_fits, largest
from psgd.compress.randomness import draw_seed, hash_key, hash_normal
from psgd.compress.registry import register
from psgd.errors import FrameError
from psgd.wire.codes import BitReader, BitWriter

MAX_EXPECTED_TRIALS = 2**20
_BATCH = 2**21  # candidate coordinates generated per search step


def cap_probability(alpha: float, n: int) -> float:
    """P(alpha, n) = 1/2 I_alpha((n-1)/2, 1/2): a uniform point of S^(n-1) within angle asin(sqrt(alpha))."""
    if n == 1:
        return 0.5
    from scipy.special import betainc

    return 0.5 * float(betainc((n - 1) / 2, 0.5, alpha))


def rice_parameter(p: float) -> int:
    """Rice parameter r with 2^r near the best Golomb modulus ln 2 / p of a geometric(p) variable."""
    return max(0, round(math.log2(math.log(2) / p)))


def candidates(seed: int, block: torch.Tensor, trial: torch.Tensor, n: int) -> torch.Tensor:
    """Unit vectors c^trial / rho of the given blocks (block and trial broadcast), shape (..., n), float64."""
    state = hash_key(seed, block, trial).unsqueeze(-1)
    g = hash_normal(state, torch.arange(n, device=block.device))
    return g / torch.linalg.vector_norm(g, dim=-1, keepdim=True)


@register
@dataclass(frozen=True)
class Spherical(Compressor):
    alpha: float = 0.5
    block: int = 8

    name = "spherical"
    summary = "paper 2's spherical compression on blocks: norm + Golomb-Rice index of a shared random point"
    klass = "C(alpha), B3(1/(1-alpha))"
    wire_bits = "32B + sum_b Rice(T_b - 1)"

    def __post_init__(self):
        if not 0 < self.alpha < 1:
            raise ValueError(f"{self.name}: alpha must be in (0, 1), got {self.alpha}")
        if not (isinstance(self.block, int) and self.block >= 1):
            raise ValueError(f"{self.name}: block must be an integer >= 1, got {self.block!r}")
        trials = 1 / cap_probability(self.alpha, self.block)
        if trials > MAX_EXPECTED_TRIALS:
            raise ValueError(
                f"{self.name}: alpha={self.alpha}, block={self.block} needs {trials:.3g} trials per block "
                f"on average (at most {MAX_EXPECTED_TRIALS}); use a smaller block or a larger alpha"
            )

    def _groups(self, d: int) -> list[tuple[int, int, int]]:
        """(first block index, number of blocks, block size) of the full blocks and the tail."""
        full, tail = divmod(d, self.block)
        out = [(0, full, self.block)] if full else []
        return [*out, (full, 1, tail)] if tail else out

    def _search(self, seed: int, u: torch.Tensor, first: int) -> torch.Tensor:
        """T for each row of u (unit vectors, or zero rows, whose T is 1)."""
        nb, n = u.shape
        rho = math.sqrt(1 - self.alpha)
        p = cap_probability(self.alpha, n)
        t = torch.ones(nb, dtype=torch.int64, device=u.device)
        pending = torch.nonzero(u.abs().sum(1) > 0).view(-1)
        start, limit = 0, math.ceil(64 / p)  # P(T > 64/p) ~ e^-64
        while pending.numel():
            if start > limit:
                raise RuntimeError(f"{self.name}: no candidate within {limit} trials")
            width = max(1, min(math.ceil(2 / p), _BATCH // (n * pending.numel())))
            trial = torch.arange(start, start + width, device=u.device)
            c = candidates(seed, (pending + first).unsqueeze(1), trial.unsqueeze(0), n)
            ok = (c * u[pending].unsqueeze(1)).sum(-1) >= rho
            found = ok.any(1)
            t[pending[found]] = start + ok[found].to(torch.int8).argmax(1) + 1
            pending, start = pending[~found], start + width
        return t

    def _encode(self, x, generator):
        return self._encode_seeded(x, generator, None)

    def _encode_seeded(self, x, generator, seed):
        if seed is None:
            seed = draw_seed(generator)
        x64 = x.to(torch.float64)
        norms, out = [], BitWriter(x.device)
        for first, nb, n in self._groups(x.numel()):
            xb = x64[first * self.block : first * self.block + nb * n].view(nb, n)
            norm = torch.linalg.vector_norm(xb, dim=1)
            check_fits("max_b ||x_b||", float(norm.max()), x.dtype)  # decoded |C(x)_i| <= rho ||x_b||
            u = xb / torch.where(norm > 0, norm, 1).unsqueeze(1)
            out.rice(self._search(seed, u, first) - 1, rice_parameter(cap_probability(self.alpha, n)))
            norms.append(norm.to(torch.float32))
        head = torch.cat(norms).view(torch.uint8)
        return (seed, out.nbits), torch.cat([head, out.packed()])

    def _parse(self, m: Message) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(the block norms, T_b - 1 for each group of blocks): norms finite and >= 0, Rice codes within bounds."""
        groups = self._groups(m.d)
        nblocks = sum(nb for _, nb, _ in groups)
        norms = m.body[: 4 * nblocks].view(torch.float32)
        lo, hi = torch.aminmax(norms)  # |C(x)_i| <= ||x_b||: finite in the message's dtype (NaN fails both)
        if not (float(lo) >= 0 and float(hi) <= largest(m.dtype)):
            raise FrameError(f"{self.name}: bad block norm")
        r = BitReader(m.body[4 * nblocks :], m.meta[1], self.name)
        trials = []
        for _, nb, n in groups:
            p = cap_probability(self.alpha, n)
            trials.append(r.rice(nb, rice_parameter(p), math.ceil(64 / p)))  # T - 1, the 0-based trial
        r.finish()
        return norms, trials

    def _decode(self, m: Message) -> torch.Tensor:
        norms, trials = self.parsed(m)
        rho = math.sqrt(1 - self.alpha)
        parts = []
        for (first, nb, n), trial in zip(self._groups(m.d), trials, strict=True):
            c = candidates(m.meta[0], torch.arange(first, first + nb, device=trial.device), trial, n)
            parts.append((c * (rho * norms[first : first + nb].to(torch.float64)).unsqueeze(1)).view(-1))
        return torch.cat(parts).to(m.dtype)

    def meta_layout(self, d):
        return (SEED, SENT)

    def _message_bits(self, d, meta):
        nblocks = sum(nb for _, nb, _ in self._groups(d))
        if meta[1] < nblocks:  # a Rice code takes a bit at least
            raise ValueError(f"nbits={meta[1]} for {nblocks} blocks")
        return 32 * nblocks + meta[1]

    def delta(self, d):
        return 1 / (1 - self.alpha)
