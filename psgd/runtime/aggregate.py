"""The server's running aggregate: each uplink is added as its frame lands, part by part.

``Aggregator.add(w, messages)`` takes the parsed messages of worker w in any arrival order; they
are accumulated (``Compressor.accumulate``: scatter-adds, arithmetic on packed codes, no dense
temporaries) into one preallocated buffer per part strictly in rank order, a worker that lands
early waiting, parsed, for the ranks before it, and two consecutive ranks at a time
(``Compressor.add_pair``: one pass over the buffer for both, the floats of two adds). So the sum
is the same floats whatever the arrival order, under MPI and in the in-process simulation alike:
s = ((0 + c_1) + c_2) + ..., and the mean s / n (each float divided once) a method's server rule
reads. A rule that reads the sum itself (``Method.reads_sums``) divides in its own first pass over
it: e + s / n, the same floats as e + (s / n), without a pass of its own for the division.

A message that fails as it is added (identity's finiteness and dithering's levels are checked by
the copy or add that reads them: frames.parse(check_body=False)) is reported as its sender's malformed frame, whenever
it is added: FrameError, before any server rule reads the aggregate. On a device that defers its
checks (``compress.base.defer_on``: CUDA), the parse records them as 0-dim flags on the device
(``Message.deferred``) and ``read`` reads all of the round's in one sync: the same FrameError, naming
the first sender in rank order whose message failed, without a host round trip per message.

Messages with one support (rand-k from a seed every worker shares: ``Compressor.support``) add
their k values first and are scattered once: the same floats, since every coordinate outside the
support stays 0 and every one inside gets ((0 + v_1) + v_2) + ... either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.compress import Compressor, Message
from psgd.compress.base import Deferred
from psgd.runtime.frames import guarded


@dataclass
class Pending:
    """Values of consecutive messages of one support, summed, not yet scattered."""

    key: object
    message: Message
    values: torch.Tensor


class Aggregator:
    def __init__(self, n: int, d: int, dtype: torch.dtype, device: torch.device) -> None:
        self.n, self.d, self.dtype, self.device = n, d, dtype, device
        self.buffers: list[torch.Tensor] = []
        self.codecs: list[Compressor] = []
        self.pending: list[Pending | None] = []
        self.waiting: dict[int, list[Message]] = {}
        self.ready: list[tuple[int, list[Message]]] = []  # in, in rank order, not yet added
        self.checks: list[tuple[int, int, Deferred]] = []  # (sender, part, check) in rank order
        self.next, self.round = 1, 0

    def start(self, codecs: list[Compressor], round: int) -> None:
        """Begin round ``round``, whose uplinks have one part per codec."""
        while len(self.buffers) < len(codecs):  # allocated once, reused every round
            self.buffers.append(torch.empty(self.d, dtype=self.dtype, device=self.device))
        self.codecs, self.pending, self.waiting, self.next = codecs, [None] * len(codecs), {}, 1
        self.ready, self.checks = [], []
        self.round = round

    def add(self, w: int, messages: list[Message]) -> None:
        """Worker w's parsed messages; added once every lower rank is in, two ranks at a time: a lone
        one waits for the next rank (one pass over the aggregate for both: the work after the last
        frame lands is at most one pair), the last rank's never. FrameError naming the sender of a
        message that fails as it is added."""
        self.waiting[w] = messages
        while self.next in self.waiting:
            self.ready.append((self.next, self.waiting.pop(self.next)))
            self.next += 1
        take = len(self.ready) if self.next > self.n else len(self.ready) // 2 * 2
        ready, self.ready = self.ready[:take], self.ready[take:]
        for j in range(len(self.codecs)):
            self._add_part(j, [(r, ms[j]) for r, ms in ready])
        self.checks.extend((r, j, c) for r, ms in ready for j, m in enumerate(ms) for c in m.deferred or ())

    def _add_part(self, j: int, ready: list[tuple[int, Message]]) -> None:
        """Part j of consecutive ranks' messages, in rank order: two at a time where neither shares
        a support (Compressor.add_pair: one pass over the aggregate for both)."""
        codec, i = self.codecs[j], 0
        while i < len(ready):
            (w, m), pair = ready[i], ready[i + 1 : i + 2]
            if pair and codec.support(m) is None and codec.support(pair[0][1]) is None:
                self._add_pair(j, (w, m), pair[0])
                i += 2
            else:
                guarded(w, self.round, codec, lambda m=m, w=w: self._add(j, w, m))
                i += 1

    def _add_pair(self, j: int, a: tuple[int, Message], b: tuple[int, Message]) -> None:
        """Two messages in one pass; where that fails, the first of the two (in rank order) whose
        own body check fails is the sender named."""
        codec = self.codecs[j]
        self._flush(j)
        try:
            codec.add_pair(a[1], b[1], self.buffers[j], start=a[0] == 1)
        except Exception as e:
            for w, m in (a, b):
                guarded(w, self.round, codec, lambda m=m: codec.check_body(m))
            guarded(a[0], self.round, codec, lambda e=e: _reraise(e))

    def _add(self, j: int, w: int, m: Message) -> None:
        codec, out, pending = self.codecs[j], self.buffers[j], self.pending[j]
        key = codec.support(m)
        if pending is not None and key == pending.key:
            pending.values.add_(codec.values(m))
            return
        self._flush(j)
        if key is not None:
            if w == 1:
                out.zero_()
            self.pending[j] = Pending(key, m, codec.values(m).clone())
        elif w == 1:
            codec.decode_into(m, out)
        else:
            codec.accumulate(m, out)

    def _flush(self, j: int) -> None:
        pending = self.pending[j]
        if pending is not None:
            self.codecs[j].scatter_values(pending.message, pending.values, self.buffers[j])
            self.pending[j] = None

    def read(self, sums: bool = False) -> list[torch.Tensor]:
        """sum_i c_i for each part with ``sums``, else the means (sum_i c_i) / n, once all n workers
        are in. The buffers are reused next round: a server rule reads them, it does not keep them."""
        if self.next != self.n + 1:
            raise RuntimeError(f"aggregate read with {self.next - 1} of {self.n} workers in")
        self._verify()
        for j in range(len(self.codecs)):
            self._flush(j)
        totals = self.buffers[: len(self.codecs)]
        return totals if sums else [b.div_(self.n) for b in totals]

    def _verify(self) -> None:
        """Read the round's deferred checks in one sync; FrameError naming the first sender whose
        message failed (rank order, then part order: the one an immediate check reports)."""
        checks, self.checks = self.checks, []
        if checks and bool(torch.stack([c.bad for _, _, c in checks]).any()):
            w, j, c = next((w, j, c) for w, j, c in checks if bool(c.bad))
            guarded(w, self.round, self.codecs[j], c.verify)


def _reraise(e: Exception):
    raise e
