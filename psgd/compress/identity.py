"""Identity: the uncompressed baseline, 32 bits per coordinate (fp32 on the wire)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.compress.base import (
    FP32_MAX,
    Compressor,
    Message,
    check_fits,
    check_input,
    largest,
    magnitude,
    require_finite,
    require_finite_input,
    require_fits,
)
from psgd.compress.registry import register
from psgd.errors import FrameError
from psgd.kernels.copy import add_finite, copy_finite, pair_finite


@register
@dataclass(frozen=True)
class Identity(Compressor):
    name = "identity"
    unbiased = True
    summary = "fp32 values, no compression"
    klass = "U(0)"
    wire_bits = "32d"

    finite_by_own_pass = True  # the copy into the body checks finiteness (one pass over x)
    defers_body_check = True  # and the server's copy or add of a body checks it (one pass over it)

    def _encode(self, x, generator):
        if x.dtype == torch.float32 and x.is_contiguous():
            values = torch.empty_like(x)
            if not copy_finite(x, values):
                require_finite_input(x)
            return (), values.view(torch.uint8)
        check_input(x)
        if x.dtype == torch.float64:
            check_fits("max |x_i|", float(magnitude(x)), x.dtype)
        return (), x.to(torch.float32, copy=True).view(torch.uint8).reshape(-1)

    def _parse(self, m: Message) -> torch.Tensor:
        """The fp32 values: a view of the body, checked finite unless the message is ``unchecked``
        (or the check recorded, where it defers its checks)."""
        values = m.body.view(torch.float32)
        if not m.unchecked:
            self._check(values, m, m.deferred)
        return values

    def _check(self, values: torch.Tensor, m: Message, deferred: list | None) -> None:
        """FrameError unless every value is finite: one sum (the extremes where the message's dtype
        is narrower: fp16 holds no value above 65504), or the extremes recorded in ``deferred``."""
        if largest(m.dtype) < FP32_MAX:
            require_fits(self.name, values, "value", m.dtype, deferred)
        else:
            require_finite(self.name, values, "value", deferred)

    def check_body(self, m: Message) -> None:
        self._check(self.parsed(m), m, None)

    def _checked(self, m: Message) -> torch.Tensor:
        """The parsed values, checked finite now if the parse left that to their consumer."""
        values = self.parsed(m)
        if m.unchecked:
            self._check(values, m, m.deferred)
            object.__setattr__(m, "unchecked", False)
        return values

    def _fused(self, m: Message, out: torch.Tensor) -> bool:
        """Whether an unchecked fp32 message goes into out by a pass that checks as it reads."""
        return m.unchecked and m.dtype == out.dtype == torch.float32 and out.is_contiguous()

    def _consumed(self, m: Message, finite: bool) -> None:
        if not finite:
            raise FrameError(f"{self.name}: non-finite value")
        object.__setattr__(m, "unchecked", False)

    def _decode(self, m: Message) -> torch.Tensor:
        return self._checked(m).to(m.dtype)

    def _decode_into(self, m: Message, out: torch.Tensor) -> None:
        """out = C(x) by one copy (which checks an unchecked message's values as it reads them)."""
        if self._fused(m, out):
            self._consumed(m, copy_finite(self.parsed(m), out))
        else:
            out.copy_(self._checked(m).to(m.dtype))

    def _accumulate(self, m: Message, out: torch.Tensor, weight: float) -> None:
        if weight == 1.0 and self._fused(m, out):
            self._consumed(m, add_finite(self.parsed(m), out))
        else:
            super()._accumulate(m, out, weight)

    def _add_pair(self, a: Message, b: Message, out: torch.Tensor, start: bool) -> None:
        """out = a + b (start), else (out + a) + b, by one pass over out for fp32 messages into a
        contiguous fp32 buffer on the CPU, which checks unchecked messages' values as it reads them
        (as the copy and the add do); otherwise one message after the other."""
        if not self._paired(a, b, out):
            super()._add_pair(a, b, out, start)
            return
        finite = pair_finite(self.parsed(a), self.parsed(b), out, start)
        for m, ok in zip((a, b), finite, strict=True):
            if m.unchecked:
                self._consumed(m, ok)

    @staticmethod
    def _paired(a: Message, b: Message, out: torch.Tensor) -> bool:
        """Whether a and b go into out by one pass of the pair kernel."""
        fp32 = a.dtype == b.dtype == out.dtype == torch.float32
        return fp32 and out.is_contiguous() and all(t.device.type == "cpu" for t in (a.body, b.body, out))

    def encode_reconstruct(self, x, generator=None, out=None):
        """(encode(x), C(x)) with C(x) = x: for fp32 x the body's own values (read-only, they are
        sent), no copy into ``out``."""
        if x.dtype != torch.float32:
            return super().encode_reconstruct(x, generator, out)
        m = self.encode(x, generator)
        return m, m.body.view(torch.float32)

    def _bits(self, d):
        return 32 * d

    def omega(self, d):
        return 0.0

    def delta(self, d):
        return 1.0
