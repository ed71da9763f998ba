"""What the kernel tests compare between the compiled and the reference paths."""

import torch


def outputs(c, x: torch.Tensor, seed: int, start: torch.Tensor) -> tuple:
    """(message bytes, decode, decode_into, accumulate at weights 1, -1, 1/2) of the parsed message."""
    raw = c.encode(x, torch.Generator().manual_seed(seed)).to_bytes()
    parsed = c.from_bytes(bytearray(raw))
    accs = [c.accumulate(parsed, start.clone(), w) for w in (1.0, -1.0, 0.5)]
    return raw, c.decode(parsed), c.decode_into(parsed, torch.full((x.numel(),), 7.0)), accs


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))
