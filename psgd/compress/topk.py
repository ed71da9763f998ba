"""Top-k (greedy sparsification), SPEC 2.2: keep the k largest |x_i|.

Body: k fp32 values, then k indices at ceil(log2 d) bits each, packed: k(32 + IDX) bits.
Indices are sent in ascending order, so the message does not depend on the device; among
coordinates tied at the k-th largest |x_i| the lowest indices are kept (psgd.kernels.topk).
Biased, deterministic; B1(k/d, 1), B2(k/d, 1), B3(d/k), contraction delta = k/d.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

from psgd.compress.base import Compressor, check_fits, require, require_finite
from psgd.compress.registry import register
from psgd.compress.sparse import Scattered, sent_values
from psgd.kernels.sparse import pack, unpack_indices
from psgd.kernels.topk import top_k


def index_bits(d: int) -> int:
    """IDX = ceil(log2 d): bits to name one of d coordinates (0 when d = 1)."""
    return (d - 1).bit_length()


def resolve_k(name: str, d: int, ratio: float | None, k: int | None) -> int:
    """k from exactly one of ratio (fraction of d, rounded up) or k (clipped to d)."""
    if (ratio is None) == (k is None):
        raise ValueError(f"{name}: give exactly one of ratio or k")
    if ratio is not None:
        return max(1, math.ceil(ratio * d))
    return min(k, d)


def check_ratio_k(name: str, ratio: float | None, k: int | None) -> None:
    if ratio is not None and not 0 < ratio <= 1:
        raise ValueError(f"{name}: ratio must be in (0, 1], got {ratio}")
    if k is not None and k < 1:
        raise ValueError(f"{name}: k must be >= 1, got {k}")
    if (ratio is None) == (k is None):
        raise ValueError(f"{name}: give exactly one of ratio or k")


def check_sent(values: torch.Tensor, scale: float = 1.0) -> None:
    """Values sent in fp32 and decoded (times scale) in their own dtype must fit both
    (unscaled, only float64 values can overflow)."""
    if values.numel() and (scale != 1 or values.dtype == torch.float64):
        what = "max |x_i|" if scale == 1 else f"{scale:.4g} max |x_i|"
        check_fits(what, scale * float(values.abs().max()), values.dtype)


def pack_sparse(values: torch.Tensor, idx: torch.Tensor, d: int) -> torch.Tensor:
    """Body of a sparse message: fp32 values then indices packed at index_bits(d) bits."""
    check_sent(values)
    parts = [values.to(torch.float32).contiguous().view(torch.uint8)]
    if index_bits(d):
        parts.append(pack(idx, index_bits(d)))
    return torch.cat(parts)


def unpack_sparse(
    body: torch.Tensor, k: int, d: int, name: str = "sparse", deferred: list | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp32 values, indices) of a sparse body; FrameError unless the indices are ascending and < d
    (where the indices are unpacked on the device, the check recorded in ``deferred`` if given)."""
    values = body[: 4 * k].view(torch.float32)
    if index_bits(d):
        defer = None if deferred is None else functools.partial(require, deferred)
        idx, _ = unpack_indices(name, body[4 * k :], k, index_bits(d), d, defer=defer)
    else:
        idx = torch.zeros(k, dtype=torch.int64, device=body.device)
    return values, idx


def sparse_bits(k: int, d: int) -> int:
    """k fp32 values and k indices: k(32 + IDX)."""
    return k * (32 + index_bits(d))


def validate_sparse(
    name: str, body: torch.Tensor, k: int, d: int, dtype: torch.dtype, deferred: list | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A sparse body's (values in dtype, indices): FrameError unless the values are finite in dtype
    (one sum) and the indices name coordinates of x, strictly ascending (as every encoder sends
    them); the checks recorded in ``deferred`` where given (Message.deferred)."""
    values, idx = unpack_sparse(body, k, d, name, deferred)
    values = values.to(dtype)
    require_finite(name, values, "value", deferred)
    return values, idx


@register
@dataclass(frozen=True)
class TopK(Scattered, Compressor):
    ratio: float | None = None
    k: int | None = None

    name = "topk"
    summary = "k largest |x_i|: fp32 values + ceil(log2 d)-bit indices"
    klass = "B1(k/d, 1), B2(k/d, 1), B3(d/k)"
    wire_bits = "k(32 + IDX)"

    def __post_init__(self):
        check_ratio_k(self.name, self.ratio, self.k)

    def _encode_parsed(self, x, generator):
        d = x.numel()
        k = resolve_k(self.name, d, self.ratio, self.k)
        idx, values = top_k(x, k)
        return (k,), pack_sparse(values, idx, d), (sent_values(values, x.dtype), idx)

    def _parse(self, m):
        return validate_sparse(self.name, m.body, m.meta[0], m.d, m.dtype, m.deferred)

    def meta_layout(self, d):
        return (resolve_k(self.name, d, self.ratio, self.k),)

    def _bits(self, d):
        return sparse_bits(resolve_k(self.name, d, self.ratio, self.k), d)

    def delta(self, d):
        return d / resolve_k(self.name, d, self.ratio, self.k)

    def b1(self, d):
        """B1(k/d, 1) [S: P1 poster]: ||C(x)||^2 = <C(x), x> >= (k/d)||x||^2."""
        return resolve_k(self.name, d, self.ratio, self.k) / d, 1.0

    def b2(self, d):
        """B2(k/d, 1) [S: P1 poster]."""
        return self.b1(d)
