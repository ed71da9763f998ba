"""Bit-packing of boolean and k-bit integer tensors into uint8 tensors.

Bit order is little-endian within a byte: element j of a block of 8 is bit j.
Integers of width w are laid out element after element, least significant bit first,
so n values of width w take exactly ceil(n*w/8) bytes. CPU tensors use numpy's C
packers; other devices use vectorised torch ops, so packing never leaves the device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

_SHIFTS: dict[torch.device, torch.Tensor] = {}


def uint_width(max_value: int) -> int:
    """Bits needed to write every integer in [0, max_value]: ceil(log2(max_value + 1)), at least 1."""
    return max(1, int(max_value).bit_length())


def _shifts(device: torch.device) -> torch.Tensor:
    if device not in _SHIFTS:
        _SHIFTS[device] = torch.arange(8, device=device, dtype=torch.uint8)
    return _SHIFTS[device]


def pack_bits(bits: torch.Tensor) -> torch.Tensor:
    """Pack a 1-D bool tensor of n elements into ceil(n/8) uint8 bytes on the same device."""
    if bits.device.type == "cpu":
        packed = np.packbits(bits.numpy(), bitorder="little")
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
        bits = np.unpackbits(packed.numpy(), count=n, bitorder="little")
        return torch.from_numpy(bits).bool()
    bits = (packed.unsqueeze(1) >> _shifts(packed.device)) & 1
    return bits.view(-1)[:n].bool()


def pack_uint(values: torch.Tensor, width: int) -> torch.Tensor:
    """Pack non-negative integers < 2**width, width bits each, into ceil(n*width/8) bytes."""
    if not 1 <= width <= 63:
        raise ValueError(f"width must be in [1, 63], got {width}")
    v = values.to(torch.int64)
    if width == 8:
        return v.to(torch.uint8)
    weights = torch.arange(width, device=v.device, dtype=torch.int64)
    bits = ((v.unsqueeze(1) >> weights) & 1).bool().view(-1)
    return pack_bits(bits)


def unpack_uint(packed: torch.Tensor, n: int, width: int) -> torch.Tensor:
    """Inverse of pack_uint: n integers of the given width, as int64."""
    if not 1 <= width <= 63:
        raise ValueError(f"width must be in [1, 63], got {width}")
    if packed.numel() < math.ceil(n * width / 8):
        raise ValueError(f"need {math.ceil(n * width / 8)} bytes for {n} x {width} bits")
    if width == 8:
        return packed[:n].to(torch.int64)
    bits = unpack_bits(packed, n * width).view(n, width).to(torch.int64)
    weights = torch.arange(width, device=packed.device, dtype=torch.int64)
    return (bits << weights).sum(dim=1)
