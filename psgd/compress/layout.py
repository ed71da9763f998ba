"""How a flat vector splits into blocks: by layer (the model's tensors) or by byte bucket.

Layer sizes travel in the spec as ``layers=784x128+128+1280+10`` (``+`` between tensors,
``x`` inside a shape); ``with_layers(c, sizes)`` sets them on a built compressor (and on
the outermost one that takes layers), which is how a method hands a task's ``FlatModule.sizes`` in.
Buckets follow torch's ``_take_tensors`` (the LIEC code's blockwise sign): consecutive
layers join a bucket while it stays within the byte limit, a layer larger than the limit
is a bucket of its own; sizes count fp32 bytes (4 per coordinate). Without layers a
bucket is a contiguous chunk of limit/4 coordinates.
"""

from __future__ import annotations

import dataclasses
import math

from psgd.compress.base import Compressor

FIVE_MIB = 5 * 2**20  # the LIEC code's bucket size (10 blocks for ResNet-18)


def parse_layers(name: str, layers: str) -> list[int]:
    """``"784x128+128"`` -> [100352, 128]; a bad term raises ValueError naming ``layers``."""
    sizes = []
    for term in layers.split("+"):
        try:
            dims = [int(v) for v in term.strip().split("x")]
        except ValueError:
            raise ValueError(f"{name}: layers={layers!r} must be sizes joined by '+', e.g. 784x128+128") from None
        if not dims or min(dims) < 1:
            raise ValueError(f"{name}: layers={layers!r} has an empty layer")
        sizes.append(math.prod(dims))
    return sizes


def blocks(name: str, d: int, bucket: int | None, layers: str | None) -> list[int]:
    """Block sizes (summing to d) for a byte bucket limit and/or the layer sizes."""
    if layers is None:
        if not bucket:
            return [d]
        n = max(1, bucket // 4)
        return [n] * (d // n) + ([d % n] if d % n else [])
    sizes = parse_layers(name, layers)
    if sum(sizes) != d:
        raise ValueError(f"{name}: layers sum to {sum(sizes)} but x has d = {d}")
    if not bucket:
        return sizes
    out, cur = [], 0
    for n in sizes:  # a loop over layers, not coordinates
        if cur and 4 * (cur + n) > bucket:
            out.append(cur)
            cur = 0
        cur += n
    return [*out, cur]


def block_count(name: str, d: int, bucket: int | None, layers: str | None) -> int:
    """len(blocks(name, d, bucket, layers)), by arithmetic where the blocks are chunks of a bucket
    (a received d can be large: its list is built only once the body is known to hold it)."""
    if layers is None:
        return -(-d // max(1, bucket // 4)) if bucket else 1
    return len(blocks(name, d, bucket, layers))


def check_bucket(name: str, bucket: int | None) -> None:
    if bucket is not None and bucket < 0:
        raise ValueError(f"{name}: bucket must be a size in bytes >= 0, got {bucket}")
    if bucket is not None and 0 < bucket < 4:
        raise ValueError(f"{name}: bucket={bucket} bytes holds no fp32 coordinate")


def with_layers(c: Compressor, sizes: list[int]) -> Compressor:
    """A copy of c that knows the model's layer sizes: set on the outermost compressor with a
    ``layers`` parameter (a per-layer wrapper's inner compressor sees one layer at a time)."""
    names = [f.name for f in dataclasses.fields(c)]  # type: ignore[arg-type]
    if "layers" in names:
        if c.layers is not None:  # type: ignore[attr-defined]  # the spec's own layers= wins
            return c
        return dataclasses.replace(c, layers="+".join(str(int(n)) for n in sizes))  # type: ignore[type-var]
    for f in names:
        if isinstance(getattr(c, f), Compressor):
            return dataclasses.replace(c, **{f: with_layers(getattr(c, f), sizes)})  # type: ignore[type-var]
    return c
