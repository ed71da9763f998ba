"""What sparse codecs share once a body is read: k values in the message's dtype at k ascending
indices. Decode scatters them into zeros, accumulate adds weight times them in place, and the
encoder, which has both parts at hand, attaches them to its message so that error feedback's
``accumulate(m, error, -1)`` never reads the body back.
"""

from __future__ import annotations

import torch

from psgd.compress.base import Message, check_input
from psgd.kernels.sparse import scatter


def sent_values(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The values a decoder reads: rounded to the wire's fp32, then in the message's dtype."""
    return values.to(torch.float32).to(dtype)


class Scattered:
    """Mixin for a Compressor whose parsed form is (values in the message dtype, indices ascending):
    subclasses implement ``_encode_parsed(x, generator) -> (meta, body, parsed)`` and ``_parse``."""

    def _encode_parsed(self, x: torch.Tensor, generator) -> tuple[tuple, torch.Tensor, tuple]:
        raise NotImplementedError

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Message:
        check_input(x)
        meta, body, parsed = self._encode_parsed(x, generator)
        return Message(self.name, x.numel(), x.dtype, tuple(meta), body, parsed)  # type: ignore[attr-defined]

    def _encode(self, x, generator):
        meta, body, _ = self._encode_parsed(x, generator)
        return meta, body

    def _decode(self, m: Message) -> torch.Tensor:
        values, idx = self.parsed(m)  # type: ignore[attr-defined]
        out = torch.zeros(m.d, dtype=m.dtype, device=m.body.device)
        scatter(out, idx, values, add=False)
        return out

    def _accumulate(self, m: Message, out: torch.Tensor, weight: float) -> None:
        values, idx = self.parsed(m)  # type: ignore[attr-defined]
        scatter(out, idx, values, weight)
