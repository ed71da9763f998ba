"""``small_dense(inner, min_size=1024)``: tensors of fewer than min_size coordinates (biases,
norm scales and shifts) are sent as fp32, the others by the inner compressor, as the PowerSGD
hook leaves small tensors uncompressed (Vogels et al. 2019, torch's powerSGD_hook). The layer
sizes come from the task (``layers=``, set by ``with_layers``); the inner compressor sees the
large tensors back to back as one vector (a per-layer inner, ``small_dense(per_layer(topk))``,
gets their sizes).

Wire. The body is the small coordinates in flat order as fp32 (32 bits each), then the inner
body of the large ones; the header fields are the inner codec's for d_large. So bits =
32 d_small + bits_inner(d_large), and every byte of the dense part is counted as any other.
Class: the error is the inner codec's on the large part alone, so C keeps the inner class at
d_large: U(omega_inner(d_large)) when unbiased, B3(delta_inner(d_large)) [D: ||C(x) - x||^2 =
||C(x_L) - x_L||^2 <= (1 - 1/delta)||x_L||^2 <= (1 - 1/delta)||x||^2].
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from psgd.compress.base import Compressor, Message, require_fits
from psgd.compress.identity import Identity
from psgd.compress.layout import blocks, with_layers
from psgd.compress.registry import register
from psgd.compress.scaled import parse_inner


@functools.lru_cache(maxsize=64)
def _split(name: str, d: int, layers: str | None, min_size: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """(flat indices of the small tensors, of the large ones, the large tensors' sizes)."""
    if layers is None:
        raise ValueError(
            f"{name}: needs layers=<sizes joined by '+'>, the model's tensor sizes "
            "(psgd.compress.layout.with_layers sets them from a task)"
        )
    sizes = blocks(name, d, 0, layers)
    small = torch.cat([torch.full((n,), n < min_size, dtype=torch.bool) for n in sizes])  # a loop over layers
    return small.nonzero().squeeze(1), (~small).nonzero().squeeze(1), [n for n in sizes if n >= min_size]


@register
@dataclass(frozen=True)
class SmallDense(Compressor):
    inner: Compressor
    min_size: int = 1024
    layers: str | None = None

    name = "small_dense"
    summary = "tensors under min_size coordinates as fp32, the others by the inner compressor (layers from the task)"
    klass = "as inner at d_large"
    wire_bits = "32 d_small + inner bits of the large tensors"

    def __post_init__(self):
        if self.min_size < 0:
            raise ValueError(f"{self.name}: min_size must be >= 0 coordinates, got {self.min_size}")

    def _split(self, d: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Compressor]:
        small, large, sizes = _split(self.name, d, self.layers, self.min_size)
        return small.to(device), large.to(device), with_layers(self.inner, sizes) if sizes else self.inner

    def _sizes(self, d: int) -> tuple[int, int]:
        small, large, _ = _split(self.name, d, self.layers, self.min_size)
        return small.numel(), large.numel()

    @property
    def unbiased(self) -> bool:  # type: ignore[override]
        return self.inner.unbiased

    def meta_layout(self, d):
        _, d_large = self._sizes(d)
        return self._split(d, torch.device("cpu"))[2].meta_layout(d_large) if d_large else ()

    def _encode(self, x, generator):
        small, large, inner = self._split(x.numel(), x.device)
        dense = Identity()._encode(x[small], generator)[1] if small.numel() else x.new_empty(0, dtype=torch.uint8)
        if not large.numel():
            return (), dense
        meta, body = inner._encode(x[large], generator)
        return meta, torch.cat([dense, body])

    def _parse(self, m: Message) -> tuple[torch.Tensor, Message | None]:
        """(the small tensors' fp32 values, the large ones' inner message, parsed once)."""
        d_small, d_large = self._sizes(m.d)
        values = m.body[: 4 * d_small].view(torch.float32)
        require_fits(self.name, values, "value", m.dtype)
        if not d_large:
            return values, None
        inner = self._split(m.d, m.body.device)[2]
        return values, parse_inner(inner, Message(inner.name, d_large, m.dtype, m.meta, m.body[4 * d_small :]))

    def _decode(self, m: Message) -> torch.Tensor:
        out = torch.zeros(m.d, dtype=m.dtype, device=m.body.device)
        self._accumulate(m, out, 1.0)
        return out

    def _accumulate(self, m: Message, out: torch.Tensor, weight: float) -> None:
        """The dense part by one index_add; the large part through a d_large buffer (its
        coordinates are not contiguous in x), which the inner codec accumulates into."""
        small, large, inner = self._split(m.d, out.device)
        values, part = self.parsed(m)
        out.index_add_(0, small, values.to(out.dtype), alpha=weight)
        if part is not None:
            buf = torch.zeros(part.d, dtype=out.dtype, device=out.device)
            inner._accumulate(part, buf, weight)
            out.index_add_(0, large, buf)

    def _bits(self, d):
        d_small, d_large = self._sizes(d)
        inner = self._split(d, torch.device("cpu"))[2]._bits(d_large) if d_large else 0
        return None if inner is None else 32 * d_small + inner

    def _message_bits(self, d, meta):
        d_small, d_large = self._sizes(d)
        return 32 * d_small + (self._split(d, torch.device("cpu"))[2]._message_bits(d_large, meta) if d_large else 0)

    def omega(self, d):
        _, d_large = self._sizes(d)
        return self.inner.omega(d_large) if d_large else 0.0

    def delta(self, d):
        _, d_large = self._sizes(d)
        return self.inner.delta(d_large) if d_large else 1.0
