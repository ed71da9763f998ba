"""Compressors as codecs: ``make(spec)`` builds one, ``available()`` lists them.

Each compressor is one file; importing it registers it.
"""

from psgd.compress import identity, scaled_sign, topk  # noqa: F401  (registration)
from psgd.compress.base import Compressor, Message
from psgd.compress.registry import make, registered


def available() -> list[dict]:
    """Every registered compressor: name, parameters, whether it is unbiased, and a summary."""
    import dataclasses

    rows = []
    for name, cls in sorted(registered().items()):
        params = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        rows.append({"name": name, "params": params, "unbiased": cls.unbiased, "summary": cls.summary})
    return rows


__all__ = ["Compressor", "Message", "available", "make"]
