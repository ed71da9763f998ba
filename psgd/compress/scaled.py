"""``scaled(inner)``: an unbiased C in U(omega) scaled by 1/zeta, zeta = 1 + omega (paper 1, Thm 7).

(1/zeta)C is in B3(zeta): E||C/zeta - x||^2 = E||C||^2/zeta^2 - 2||x||^2/zeta + ||x||^2
<= (1 - 1/zeta)||x||^2 [D]. This makes any unbiased compressor usable where a contractive
one is required (EF14, EF21, LIEC). Same message as the inner compressor (its header fields
and body, under the name ``scaled``); the decoder multiplies by 1/zeta(d) (the inner codec's
accumulate at weight 1/zeta).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.compress.base import Compressor, Message
from psgd.compress.registry import register


def inner_message(c: Compressor, m: Message) -> Message:
    return Message(c.name, m.d, m.dtype, m.meta, m.body)


def parse_inner(c: Compressor, part: Message) -> Message:
    """part (a wrapper's inner message) validated and parsed by c, as c's from_bytes would: a
    wrapper's parse reads its inner messages once, and its decode and accumulate use them."""
    c.parsed(part)
    return part


@register
@dataclass(frozen=True)
class Scaled(Compressor):
    inner: Compressor

    name = "scaled"
    summary = "an unbiased compressor times 1/(1 + omega): contractive"
    klass = "B3(1 + omega)"
    wire_bits = "as the inner compressor"

    def __post_init__(self):
        if not self.inner.unbiased:
            raise ValueError(f"{self.name}: inner must be unbiased (in U(omega)); {self.inner.spec!r} is not")

    def zeta(self, d: int) -> float:
        w = self.inner.omega(d)
        if w is None:
            raise ValueError(f"{self.name}: {self.inner.spec!r} has no omega for d={d}")
        return 1 + w

    def _encode(self, x, generator):
        return self.inner._encode(x, generator)

    def _encode_seeded(self, x, generator, seed):
        return self.inner._encode_seeded(x, generator, seed)

    def meta_layout(self, d):
        return self.inner.meta_layout(d)

    def _parse(self, m: Message) -> Message:
        return parse_inner(self.inner, inner_message(self.inner, m))

    def _decode(self, m: Message) -> torch.Tensor:
        out = torch.zeros(m.d, dtype=m.dtype, device=m.body.device)
        self._accumulate(m, out, 1.0)
        return out

    def _accumulate(self, m: Message, out: torch.Tensor, weight: float) -> None:
        """out += (weight/zeta) C_inner(x): the inner codec's accumulate at that weight."""
        self.inner._accumulate(self.parsed(m), out, weight / self.zeta(m.d))

    def _bits(self, d):
        return self.inner._bits(d)

    def _message_bits(self, d, meta):
        return self.inner._message_bits(d, meta)

    def delta(self, d):
        return self.zeta(d)

    def b1(self, d):
        """lambda C in B1(lambda^2, lambda zeta) for C in U(zeta) (paper 1, Thm 6): B1(1/zeta^2, 1) at 1/zeta."""
        return 1 / self.zeta(d) ** 2, 1.0

    def b2(self, d):
        """lambda C in B2(lambda, lambda zeta): B2(1/zeta, 1) at lambda = 1/zeta."""
        return 1 / self.zeta(d), 1.0
