"""Wrappers that apply any compressor block by block: ``per_layer(inner)`` and ``bucket(inner, size=5MiB)``.

``per_layer(topk:ratio=0.01, layers=784x128+128+1280+10)``: one inner message per layer.
``bucket(scaled_sign, size=5MiB)``: one per byte bucket (consecutive layers up to the limit
when ``layers`` is given, else contiguous chunks of size/4 coordinates); see layout.py for
the block rules and ``with_layers`` (how a method hands the task's layer sizes in).
Blocks are compressed independently with the same generator, in order. An unbiased inner
compressor stays unbiased with omega = max_b omega(d_b); a B3(delta) one gives
max_b delta(d_b) [D: the errors add up block by block].

Wire. The inner header fields that the parameters fix (top-k's and rand-k's k, from ratio
or k and the block size) are derived on both sides, not sent. When the inner codec shares
randomness (rand-k's indices, spherical candidates), the wrapper's header carries one
32-bit seed and block b uses the seed hash(seed, b). The body is the inner bodies back to
back at bit granularity, block b taking exactly bits(message_b) bits, so for an inner codec
whose count is fixed, bits = sum_b bits_inner(d_b) exactly and the body is ceil(bits/8)
bytes. When the inner count depends on x (hard_threshold's nnz, Elias QSGD's nnz and code
length, sparse dithering's and spherical's code lengths), those fields of every block open
the body, each v as the Elias gamma code of v + 1 (2 floor(log2(v + 1)) + 1 bits, counted
in bits), and the header carries the body's length in bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from psgd.compress.base import SEED, SENT, Compressor, Message
from psgd.compress.layout import FIVE_MIB, block_count, blocks, check_bucket
from psgd.compress.randomness import block_seed, draw_seed
from psgd.compress.registry import register
from psgd.compress.scaled import parse_inner
from psgd.errors import FrameError
from psgd.wire import pack_bits
from psgd.wire.codes import BitReader, BitWriter, join_bits, split_bits


class _Blockwise(Compressor):
    def sizes(self, d: int) -> list[int]:
        raise NotImplementedError

    def min_bits(self, d):
        """Every block's message has a bit at least (its count, or a gamma-coded field)."""
        return len(self.sizes(d))

    @property
    def unbiased(self) -> bool:  # type: ignore[override]
        return self.inner.unbiased  # type: ignore[attr-defined]

    def _inner_layout(self, d: int) -> tuple[bool, bool]:
        """(whether the inner codec takes a shared seed, whether its header has fields that depend on x)."""
        layout = self.inner.meta_layout(self.sizes(d)[0])  # type: ignore[attr-defined]
        return SEED in layout, SENT in layout

    def meta_layout(self, d):
        seeded, variable = self._inner_layout(d)
        return (SEED,) * seeded + (SENT,) * variable

    def _encode(self, x, generator):
        return self._encode_seeded(x, generator, None)

    def _encode_seeded(self, x, generator, seed):
        inner: Compressor = self.inner  # type: ignore[attr-defined]
        seeded, variable = self._inner_layout(x.numel())
        if seeded and seed is None:
            seed = draw_seed(generator)
        sent, bodies, nbits, offset = [], [], [], 0
        for b, n in enumerate(self.sizes(x.numel())):  # a loop over blocks, not coordinates
            meta, body = inner._encode_seeded(
                x[offset : offset + n], generator, block_seed(seed, b) if seeded else None
            )
            sent += [v for v, kind in zip(meta, inner.meta_layout(n), strict=True) if kind == SENT]
            bodies.append(body)
            nbits.append(inner._message_bits(n, meta))
            offset += n
        head = BitWriter(x.device)
        if sent:
            head.gammas(torch.tensor(sent, dtype=torch.int64, device=x.device) + 1)
        body = join_bits([head.packed(), *bodies], [head.nbits, *nbits])
        return (*([seed] if seeded else []), *([head.nbits + sum(nbits)] if variable else [])), body

    def _parts(self, m: Message) -> list[Message]:
        """The inner messages of a block message; FrameError when they do not add up."""
        inner: Compressor = self.inner  # type: ignore[attr-defined]
        seeded, variable = self._inner_layout(m.d)
        sizes = self.sizes(m.d)
        layouts = [inner.meta_layout(n) for n in sizes]
        reader = BitReader(m.body, m.meta[-1], self.name) if variable else None
        sent = iter([])
        if reader is not None:
            sent = iter((reader.gammas(sum(lay.count(SENT) for lay in layouts), max_bits=63) - 1).tolist())
        metas, nbits = [], []
        for b, (n, layout) in enumerate(zip(sizes, layouts, strict=True)):
            meta = tuple(block_seed(m.meta[0], b) if k == SEED else next(sent) if k == SENT else k for k in layout)
            try:
                nbits.append(inner._message_bits(n, meta))
            except ValueError as e:
                raise FrameError(f"{self.name}: bad fields for block {b} ({e})") from None
            metas.append(meta)
        if reader is None:
            bodies = split_bits(m.body, nbits, self.name)
        else:
            bodies = [pack_bits(reader.bits(k)) if k else m.body.new_empty(0) for k in nbits]
            reader.finish()
        return [Message(inner.name, n, m.dtype, meta, body) for n, meta, body in zip(sizes, metas, bodies, strict=True)]

    def _parse(self, m: Message) -> list[Message]:
        """The inner messages, each validated and parsed once."""
        return [parse_inner(self.inner, part) for part in self._parts(m)]  # type: ignore[attr-defined]

    def _decode(self, m: Message) -> torch.Tensor:
        return self.decode_into(m, torch.empty(m.d, dtype=m.dtype, device=m.body.device))

    def _decode_into(self, m: Message, out: torch.Tensor) -> None:
        """Block b decodes into its own slice of out (one write each, no zeroing pass)."""
        offset = 0
        for part in self.parsed(m):  # a loop over blocks, not coordinates
            self.inner._decode_into(part, out[offset : offset + part.d])  # type: ignore[attr-defined]
            offset += part.d

    def _accumulate(self, m: Message, out: torch.Tensor, weight: float) -> None:
        """Block b accumulates into its own slice of out: no dense block is made."""
        offset = 0
        for part in self.parsed(m):  # a loop over blocks, not coordinates
            self.inner._accumulate(part, out[offset : offset + part.d], weight)  # type: ignore[attr-defined]
            offset += part.d

    def _bits(self, d):
        counts = [self.inner._bits(n) for n in self.sizes(d)]  # type: ignore[attr-defined]
        return None if None in counts else sum(counts)

    def _message_bits(self, d, meta):
        return meta[-1] if self._inner_layout(d)[1] else self._bits(d)

    def _per_block(self, d: int, what: str) -> list:
        return [getattr(self.inner, what)(n) for n in sorted(set(self.sizes(d)))]  # type: ignore[attr-defined]

    def omega(self, d):
        values = self._per_block(d, "omega")
        return None if None in values or not self.unbiased else max(values)

    def delta(self, d):
        values = self._per_block(d, "delta")
        return None if None in values else max(values)

    def b1(self, d):
        """Sums over blocks: B1(min alpha_b, max beta_b)."""
        return self._worst_pair(d, "b1")

    def b2(self, d):
        """Sums over blocks: B2(min gamma_b, max beta_b)."""
        return self._worst_pair(d, "b2")

    def _worst_pair(self, d: int, what: str) -> tuple[float, float] | None:
        pairs = self._per_block(d, what)
        return None if None in pairs else (min(p[0] for p in pairs), max(p[1] for p in pairs))


@register
@dataclass(frozen=True)
class PerLayer(_Blockwise):
    inner: Compressor
    layers: str | None = None

    name = "per_layer"
    summary = "the inner compressor applied to each layer (layers=784x128+128+...)"
    klass = "as inner, max over layers"
    wire_bits = "sum of the inner counts per layer (+ gamma-coded fields that depend on x)"

    def sizes(self, d):
        if self.layers is None:
            raise ValueError(
                f"{self.name}: needs layers=<sizes joined by '+'>, the model's tensor sizes "
                "(psgd.compress.layout.with_layers sets them from a task)"
            )
        return blocks(self.name, d, 0, self.layers)


@register
@dataclass(frozen=True)
class Bucket(_Blockwise):
    inner: Compressor
    size: int = FIVE_MIB
    layers: str | None = None

    name = "bucket"
    summary = "the inner compressor applied to each byte bucket (size=5MiB; whole layers when layers= is set)"
    klass = "as inner, max over buckets"
    wire_bits = "sum of the inner counts per bucket (+ gamma-coded fields that depend on x)"

    def __post_init__(self):
        check_bucket(self.name, self.size)
        if not self.size:
            raise ValueError(f"{self.name}: size must be > 0 bytes (use per_layer for one block per layer)")

    def sizes(self, d):
        return blocks(self.name, d, self.size, self.layers)

    def min_bits(self, d):
        return block_count(self.name, d, self.size, self.layers)
