"""Compressors as codecs: ``make(spec)`` builds one, ``available()`` lists them.

Each compressor is one file (a family differing in one parameter shares one); importing it
registers it. ``python -m psgd.compress`` prints the table of ``available()``.
"""

from psgd.compress import (  # noqa: F401  (registration)
    adaptive_rand,
    block_sign,
    blocks,
    cast,
    dithering,
    hard_threshold,
    identity,
    natural,
    powersgd,
    randk,
    scaled,
    scaled_sign,
    sign,
    small_dense,
    sparse_dither,
    spherical,
    topk,
    topk_compose,
)
from psgd.compress.base import Compressor, Message
from psgd.compress.layout import with_layers
from psgd.compress.registry import make, registered


def available() -> list[dict]:
    """Every registered compressor: name, parameters, class (SPEC section 1), bits on the wire, summary."""
    import dataclasses

    rows = []
    for name, cls in sorted(registered().items()):
        params = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unbiased = cls.unbiased if isinstance(cls.unbiased, bool) else "per parameters"
        rows.append(
            {
                "name": name,
                "params": params,
                "class": cls.klass,
                "bits": cls.wire_bits,
                "unbiased": unbiased,
                "summary": cls.summary,
            }
        )
    return rows


__all__ = ["Compressor", "Message", "available", "make", "with_layers"]
