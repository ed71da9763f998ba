"""Hard-threshold sparsifier (Sahu et al. 2021, SPEC 2.4): C_lam(x)_i = x_i 1{|x_i| >= lam}.

Deterministic and biased; not in B3(delta) for any fixed delta but an "absolute" compressor,
||C_lam(x) - x||^2 <= d lam^2 [D]. The number kept, nnz, depends on x and rides in the
header. Wire: nnz(32 + ceil(log2 d)) bits (fp32 values, then packed ascending indices).
lam has no default: lam = 0 would send every coordinate at 32 + IDX bits, more than identity.
"""

from __future__ import annotations

from dataclasses import dataclass

from psgd.compress.base import SENT, Compressor
from psgd.compress.registry import register
from psgd.compress.sparse import Scattered, sent_values
from psgd.compress.topk import pack_sparse, sparse_bits, validate_sparse
from psgd.kernels.topk import at_least


@register
@dataclass(frozen=True)
class HardThreshold(Scattered, Compressor):
    lam: float | None = None

    name = "hard_threshold"
    summary = "x_i where |x_i| >= lam (Sahu et al. use lam = 1/(2 sqrt(k)))"
    klass = "absolute: ||C(x) - x||^2 <= d lam^2"
    wire_bits = "nnz(32 + IDX)"

    def __post_init__(self):
        if self.lam is None:
            raise ValueError(
                f"{self.name}: lam is required, e.g. {self.name}:lam=0.01 (Sahu et al. use lam = 1/(2 sqrt(k)) "
                "for k coordinates a round; method hard_threshold sets it from method.target_k)"
            )
        if not self.lam >= 0:
            raise ValueError(f"{self.name}: lam must be >= 0, got {self.lam}")

    def _encode_parsed(self, x, generator):
        idx, values = at_least(x, self.lam)
        return (idx.numel(),), pack_sparse(values, idx, x.numel()), (sent_values(values, x.dtype), idx)

    def _parse(self, m):
        return validate_sparse(self.name, m.body, m.meta[0], m.d, m.dtype)

    def meta_layout(self, d):
        return (SENT,)

    def _message_bits(self, d, meta):
        (nnz,) = meta
        if nnz > d:
            raise ValueError(f"nnz={nnz} for d={d}")
        return sparse_bits(nnz, d)
