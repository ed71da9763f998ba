"""Wrappers that apply any compressor block by block: ``per_layer(inner)`` and ``bucket(inner, size=5MiB)``.

``per_layer(topk:ratio=0.01, layers=784x128+128+1280+10)``: one inner message per layer.
``bucket(scaled_sign, size=5MiB)``: one per byte bucket (consecutive layers up to the limit
when ``layers`` is given, else contiguous chunks of size/4 coordinates); see layout.py for
the block rules and ``with_layers`` (how a method hands the task's layer sizes in).
Blocks are compressed independently with the same generator, in order. An unbiased inner
compressor stays unbiased with omega = max_b omega(d_b); a B3(delta) one gives
max_b delta(d_b) [D: the errors add up block by block].
Wire: the inner bodies back to back (each rounded up to whole bytes), preceded, only when
the inner messages have header fields (k, nnz, seeds), by those fields as one msgpack
array; the header holds that array's length and the body length. ``bits`` is the sum of
the inner counts; the body exceeds it by < 1 byte per block plus that array.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack
import torch

from psgd.compress.base import Compressor, Message
from psgd.compress.layout import FIVE_MIB, blocks, check_bucket
from psgd.compress.registry import register
from psgd.errors import FrameError


class _Blockwise(Compressor):
    def sizes(self, d: int) -> list[int]:
        raise NotImplementedError

    @property
    def unbiased(self) -> bool:  # type: ignore[override]
        return self.inner.unbiased  # type: ignore[attr-defined]

    def _encode(self, x, generator):
        metas, bodies, offset = [], [], 0
        for n in self.sizes(x.numel()):  # a loop over blocks, not coordinates
            meta, body = self.inner._encode(x[offset : offset + n], generator)  # type: ignore[attr-defined]
            metas.append(list(meta))
            bodies.append(body)
            offset += n
        head = msgpack.packb(metas) if any(metas) else b""
        if head:
            bodies.insert(0, torch.frombuffer(bytearray(head), dtype=torch.uint8).to(x.device))
        body = torch.cat(bodies)
        return (len(head), body.numel()), body

    def _parts(self, m: Message) -> list[Message]:
        """The inner messages of a block message; FrameError when they do not add up."""
        inner: Compressor = self.inner  # type: ignore[attr-defined]
        head_len, _ = m.meta
        sizes = self.sizes(m.d)
        if head_len:
            try:
                metas = msgpack.unpackb(m.body[:head_len].cpu().numpy().tobytes(), raw=False)
            except Exception as e:
                raise FrameError(f"{self.name}: unreadable block headers ({type(e).__name__})") from None
            if not (isinstance(metas, list) and len(metas) == len(sizes) and all(isinstance(v, list) for v in metas)):
                raise FrameError(f"{self.name}: block headers do not match {len(sizes)} blocks")
        else:
            metas = [[]] * len(sizes)
        parts, offset = [], head_len
        for n, meta in zip(sizes, metas, strict=True):
            if not all(isinstance(v, (int, float)) for v in meta):
                raise FrameError(f"{self.name}: bad block header fields")
            try:
                nbytes = inner.body_bytes(n, tuple(meta))
            except (ValueError, TypeError) as e:
                raise FrameError(f"{self.name}: bad block header fields ({e})") from None
            parts.append(Message(inner.name, n, m.dtype, tuple(meta), m.body[offset : offset + nbytes].clone()))
            offset += nbytes
        if offset != m.body_len:
            raise FrameError(f"{self.name}: blocks take {offset} bytes, the body has {m.body_len}")
        return parts

    def _validate(self, m: Message) -> None:
        for part in self._parts(m):
            self.inner._validate(part)  # type: ignore[attr-defined]

    def _decode(self, m: Message) -> torch.Tensor:
        return torch.cat([self.inner._decode(part) for part in self._parts(m)])  # type: ignore[attr-defined]

    def body_bytes(self, d, meta):
        head_len, body_len = meta
        if not (isinstance(head_len, int) and isinstance(body_len, int) and 0 <= head_len <= body_len):
            raise ValueError(f"head={head_len!r}, body={body_len!r}")
        return body_len

    def _per_block(self, d: int, what: str) -> list:
        return [getattr(self.inner, what)(n) for n in sorted(set(self.sizes(d)))]  # type: ignore[attr-defined]

    def bits(self, d):
        counts = [self.inner.bits(n) for n in self.sizes(d)]  # type: ignore[attr-defined]
        return None if None in counts else sum(counts)

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
    wire_bits = "sum of the inner counts per layer"

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
    wire_bits = "sum of the inner counts per bucket"

    def __post_init__(self):
        check_bucket(self.name, self.size)
        if not self.size:
            raise ValueError(f"{self.name}: size must be > 0 bytes (use per_layer for one block per layer)")

    def sizes(self, d):
        return blocks(self.name, d, self.size, self.layers)
