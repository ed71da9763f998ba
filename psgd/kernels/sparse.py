"""The wire side of sparse codecs: pack and unpack k-bit integers (indices, or codes joined with
indices), and scatter k values into a dense vector (set, or add times a weight).

Packed integers use the layout of ``psgd.wire.pack_uint`` (element after element, least
significant bit first), whose torch code is the reference. Unpacking checks what an encoder
always writes: indices (the integer shifted right by the code bits) strictly ascending and < d.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from psgd import kernels
from psgd.errors import FrameError
from psgd.kernels import cpu, np_view
from psgd.wire import pack_uint, unpack_uint

MAX_WIDTH = 56  # a 64-bit accumulator holds one value plus the 7 bits still waiting to be written


@cpu
def _pack(values, width, out):
    acc, held, p = 0, 0, 0
    for v in values:
        acc |= v << held
        held += width
        if held >= 32:  # four bytes at a time: a quarter of the trips of a byte loop
            out[p] = acc & 0xFF
            out[p + 1] = (acc >> 8) & 0xFF
            out[p + 2] = (acc >> 16) & 0xFF
            out[p + 3] = (acc >> 24) & 0xFF
            acc >>= 32
            held -= 32
            p += 4
        while width > 32 and held >= 8:  # at most 7 bits left, so that the next value fits in 64
            out[p] = acc & 0xFF
            acc >>= 8
            held -= 8
            p += 1
    while held > 0:
        out[p] = acc & 0xFF
        acc >>= 8
        held -= 8
        p += 1


def pack(values: torch.Tensor, width: int) -> torch.Tensor:
    """Non-negative int64 values < 2^width, width bits each: ceil(n width / 8) bytes (pack_uint's layout)."""
    if width > MAX_WIDTH or values.dtype != torch.int64:
        return pack_uint(values, width)

    def fast():
        out = torch.empty(math.ceil(values.numel() * width / 8), dtype=torch.uint8)
        _pack(np_view(values.contiguous()), width, np_view(out))
        return out

    return kernels.run(_pack, (values,), fast=fast, reference=lambda: pack_uint(values, width))


@cpu
def _unpack_indices(packed, n, width, shift, d, idx, codes):
    """Unpack n integers; idx = v >> shift, codes = low shift bits (when shift > 0).
    Returns 0, or 1 for an index >= d, 2 for indices not strictly ascending."""
    mask = (1 << width) - 1
    acc, held, p, last = 0, 0, 0, -1
    fill = min(width, 32)  # below this many bits held, four more bytes fit in 64
    for j in range(n):
        if held < fill and p + 4 <= packed.size:  # four bytes at a time
            word = np.int64(packed[p]) | np.int64(packed[p + 1]) << 8
            acc |= (word | np.int64(packed[p + 2]) << 16 | np.int64(packed[p + 3]) << 24) << held
            held += 32
            p += 4
        while held < width:
            acc |= np.int64(packed[p]) << held
            held += 8
            p += 1
        v = acc & mask
        acc >>= width
        held -= width
        i = v >> shift
        if i >= d:
            return 1
        if i <= last:
            return 2
        last = i
        idx[j] = i
        if shift:
            codes[j] = v & ((1 << shift) - 1)
    return 0


def index_status(idx: torch.Tensor, d: int) -> torch.Tensor:
    """_unpack_indices' status as a 0-dim tensor, with no read of the device: 0, or at the first
    index that fails, 1 (>= d) or 2 (not above the one before)."""
    if not idx.numel():
        return idx.new_zeros(())
    above = idx >= d
    bad = above.clone()
    bad[1:] |= idx[1:] <= idx[:-1]
    code = torch.where(bad, 2 - above.long(), 0)
    return code.take(bad.to(torch.uint8).argmax())  # argmax takes the first maximum (no index by a tensor: a read)


def index_error(name: str, d: int, status: int) -> str:
    """The FrameError's text for a nonzero status."""
    return f"{name}: index out of range for d={d}" if status == 1 else f"{name}: indices not strictly ascending"


def _unpack_indices_ref(packed: torch.Tensor, n: int, width: int, shift: int, d: int):
    joint = unpack_uint(packed, n, width)
    idx = joint >> shift
    return index_status(idx, d), idx, joint & ((1 << shift) - 1) if shift else joint.new_zeros(0)


def unpack_indices(
    name: str,
    packed: torch.Tensor,
    n: int,
    width: int,
    d: int,
    shift: int = 0,
    defer: Callable[[torch.Tensor, Callable[[], str]], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, codes): n integers of width bits, each an index << shift | a shift-bit code,
    unpacked from pack's layout (codes empty when shift = 0). FrameError unless the indices
    are < d and strictly ascending. With ``defer`` (a receiver that reads its checks once per
    round: compress.base.require), the torch path (CUDA's) hands it the check as a 0-dim flag
    and its text instead of reading it, and clamps the indices below d, so that a scatter of a
    malformed message before the flag is read stays in bounds."""

    def reference():
        return _unpack_indices_ref(packed, n, width, shift, d)

    def fast():
        idx = torch.empty(n, dtype=torch.int64)
        codes = torch.empty(n if shift else 0, dtype=torch.int64)
        status = _unpack_indices(np_view(packed.contiguous()), n, width, shift, d, np_view(idx), np_view(codes))
        return status, idx, codes

    if width > MAX_WIDTH or not n:
        status, idx, codes = reference()
    else:
        status, idx, codes = kernels.run(_unpack_indices, (packed,), fast=fast, reference=reference)
    if defer is not None and isinstance(status, torch.Tensor):
        defer(status != 0, lambda: index_error(name, d, int(status)))
        return idx.clamp_(max=d - 1), codes
    if status := int(status):
        raise FrameError(index_error(name, d, status))
    return idx, codes


@cpu
def _scatter(out, idx, values, weight, add):
    if add:
        for j in range(idx.size):
            out[idx[j]] += weight * values[j]
    else:
        for j in range(idx.size):
            out[idx[j]] = values[j]


def _scatter_ref(out: torch.Tensor, idx: torch.Tensor, values: torch.Tensor, weight: float, add: bool) -> None:
    if not add:
        out[idx] = values
    elif weight == 1.0:
        out.index_add_(0, idx, values)
    else:
        out.index_add_(0, idx, values * weight)


def scatter(out: torch.Tensor, idx: torch.Tensor, values: torch.Tensor, weight: float = 1.0, add: bool = True) -> None:
    """out[idx] += weight * values (weight * values rounded in out's dtype, as torch multiplies),
    or out[idx] = values when add is False. idx distinct; values in out's dtype."""
    if out.dtype not in (torch.float32, torch.float64) or not out.is_contiguous():
        return _scatter_ref(out, idx, values, weight, add)

    def fast():
        a = np_view(out)
        _scatter(a, np_view(idx), np_view(values.contiguous()), a.dtype.type(weight), add)

    kernels.run(_scatter, (out, idx, values), fast=fast, reference=lambda: _scatter_ref(out, idx, values, weight, add))
