"""Bit-packing of boolean and k-bit integer tensors into uint8 tensors.

Bit order is little-endian within a byte: element j of a block of 8 is bit j.
Integers of width w are laid out element after element, least significant bit first,
so n values of width w take exactly ceil(n*w/8) bytes. Booleans on the CPU use numpy's
C packers; everything else is vectorised torch, so packing never leaves the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_SHIFTS: dict[torch.device, torch.Tensor] = {}
_SMALL = 2**15  # bits up to which k-bit integers are packed through a bit tensor


def uint_width(max_value: int) -> int:
    """Bits needed to write every integer in [0, max_value]: ceil(log2(max_value + 1)), at least 1."""
    return max(1, int(max_value).bit_length())


def _shifts(device: torch.device) -> torch.Tensor:
    if device not in _SHIFTS:
        _SHIFTS[device] = torch.arange(8, device=device, dtype=torch.uint8)
    return _SHIFTS[device]


def segment_ids(lengths: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """For consecutive segments of the given lengths (zeros allowed): each element's segment.

    Same as repeat_interleave(arange(n), lengths), by a cumulative sum of start markers
    (torch's repeat_interleave has a large fixed cost on the CPU).
    """
    lengths = lengths.to(torch.int64)
    if total is None:
        total = int(lengths.sum())
    starts = torch.cumsum(lengths, 0) - lengths
    marks = torch.zeros(total + 1, dtype=torch.int64, device=lengths.device)
    marks.index_add_(0, starts, torch.ones_like(starts))
    return torch.cumsum(marks[:total], 0) - 1


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack a 1-D bool tensor of n elements into ceil(n/8) uint8 bytes on the same device."""
    if bits.device.type == "cpu":
        packed = np.packbits(bits.contiguous().numpy(), bitorder="little")
        return torch.from_numpy(packed)
    n = bits.numel()
    pad = (-n) % 8
    b = bits.to(torch.uint8)
    if pad:
        b = torch.cat([b, b.new_zeros(pad)])
    return (b.view(-1, 8) << _shifts(b.device)).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of pack_bits: the first n bits of a uint8 tensor as a bool tensor."""
    if packed.numel() * 8 < n:
        raise ValueError(f"need {n} bits, have {packed.numel() * 8}")
    if packed.device.type == "cpu":
        bits = np.unpackbits(packed.contiguous().numpy(), count=n, bitorder="little")
        return torch.from_numpy(bits).view(torch.bool)
    bits = (packed[: math.ceil(n / 8)].unsqueeze(1) >> _shifts(packed.device)) & 1
    return bits.view(-1)[:n].bool()


def _check_width(width: int) -> None:
    if not 1 <= width <= 63:
        raise ValueError(f"width must be in [1, 63], got {width}")


def _lane_dtype(width: int) -> torch.dtype:
    """Narrowest integer type that holds a w-bit value shifted left by up to 7 bits."""
    return torch.uint8 if width <= 8 else torch.int32 if width <= 24 else torch.int64


def pack_uint(values: torch.Tensor, width: int) -> torch.Tensor:
    """Pack non-negative integers < 2**width, width bits each, into ceil(n*width/8) bytes.

    Eight values of w bits fill exactly w bytes, so the values are viewed as rows of 8
    and each of the w output bytes is assembled from the (at most ceil(8/w) + 1) values
    that overlap it: a few vectorised shifts per byte instead of one tensor per bit.
    """
    _check_width(width)
    if width == 1:
        return pack_bits(values.bool())
    n = values.numel()
    if n * width <= _SMALL:  # a few elementwise ops beat the per-byte loop's fixed cost
        shifts = torch.arange(width, device=values.device)
        return pack_bits(((values.to(torch.int64).unsqueeze(1) >> shifts) & 1).bool().view(-1))
    v = values.to(_lane_dtype(width))
    if width == 8:
        return v
    pad = (-n) % 8
    if pad:
        v = torch.cat([v, v.new_zeros(pad)])
    rows = v.view(-1, 8)
    out = torch.empty(rows.shape[0], width, dtype=torch.uint8, device=v.device)
    for byte in range(width):
        first, last = 8 * byte // width, min(7, (8 * byte + 7) // width)
        acc = None
        for j in range(first, last + 1):
            shift = 8 * byte - j * width
            term = rows[:, j] >> shift if shift >= 0 else rows[:, j] << -shift
            acc = term if acc is None else acc | term
        out[:, byte] = acc.to(torch.uint8) if width <= 8 else (acc & 0xFF).to(torch.uint8)
    return out.view(-1)[: math.ceil(n * width / 8)]


def unpack_uint(packed: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """Inverse of pack_uint: n integers of the given width, as int64."""
    _check_width(width)
    nbytes = math.ceil(n * width / 8)
    if packed.numel() < nbytes:
        raise ValueError(f"need {nbytes} bytes for {n} x {width} bits")
    if width == 1:
        return unpack_bits(packed, n).to(torch.int64)
    if width == 8:
        return packed[:n].to(torch.int64)
    if n * width <= _SMALL:
        bits = unpack_bits(packed, n * width).view(n, width).to(torch.int64)
        return (bits << torch.arange(width, device=packed.device)).sum(1)
    p = packed[:nbytes]
    pad = (-nbytes) % width
    if pad:
        p = torch.cat([p, p.new_zeros(pad)])
    lane = _lane_dtype(width)
    rows = p.view(-1, width).to(lane)
    out = torch.empty(rows.shape[0], 8, dtype=lane, device=p.device)
    mask = (1 << width) - 1
    for j in range(8):
        first, last = j * width // 8, (j * width + width - 1) // 8
        acc = None
        for byte in range(first, last + 1):
            shift = 8 * byte - j * width
            term = rows[:, byte] << shift if shift >= 0 else rows[:, byte] >> -shift
            acc = term if acc is None else acc | term
        out[:, j] = acc & mask
    return out.view(-1)[:n].to(torch.int64)
