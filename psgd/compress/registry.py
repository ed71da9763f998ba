"""Build compressors from spec strings: ``topk:ratio=0.01``, ``blockwise(scaled_sign, bucket=5MiB)``.

Grammar: ``name[:key=value,...]`` or ``name(inner_spec[, key=value, ...])`` for wrappers,
whose first dataclass field receives the inner compressor; a key the wrapper does not have
belongs to the inner spec, so ``scaled(randk:ratio=0.1,shared_seed=false)`` reads as meant. Values are typed by the
compressor's dataclass fields; sizes accept KiB/MiB/GiB suffixes.
"""

from __future__ import annotations

import dataclasses
import re
import typing

from psgd.compress.base import Compressor
from psgd.registry import Registry

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB|KB|MB|GB)$")
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "KB": 10**3, "MB": 10**6, "GB": 10**9}

_COMPRESSORS: Registry[type[Compressor]] = Registry("compressor")
register = _COMPRESSORS.register
registered = _COMPRESSORS.registered


def _split_top(s: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def _convert(name: str, field: str, kind: type, raw: str):
    raw = raw.strip()
    try:
        if kind is bool:
            if raw.lower() in ("true", "1", "yes"):
                return True
            if raw.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if kind is int:
            m = _SIZE.match(raw)
            if m:
                return int(float(m.group(1)) * _UNITS[m.group(2)])
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is str:
            return raw
    except ValueError:
        pass
    raise ValueError(f"{name}: parameter {field}={raw!r} is not a valid {kind.__name__}")


def make(spec: str) -> Compressor:
    """Build a compressor from a spec string; unknown names or parameters raise ValueError."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"compressor spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    inner: Compressor | None = None
    inner_spec: str | None = None
    if "(" in spec:
        if not spec.endswith(")"):
            raise ValueError(f"compressor spec {spec!r}: unbalanced parentheses")
        name, args = spec[:-1].split("(", 1)
        pieces = _split_top(args)
        if not pieces or "=" in re.split(r"[:(]", pieces[0])[0]:
            raise ValueError(f"compressor spec {spec!r}: a wrapper needs an inner compressor first")
        inner_spec, pieces = pieces[0], pieces[1:]
    else:
        name, _, args = spec.partition(":")
        pieces = _split_top(args)
    name = name.strip()
    if inner_spec is not None and name in _COMPRESSORS:
        # keys the wrapper does not know continue the inner spec: scaled(randk:ratio=0.1,shared_seed=false)
        own = {f.name for f in dataclasses.fields(_COMPRESSORS.get(name))}  # type: ignore[arg-type]
        extra = [p for p in pieces if p.partition("=")[0].strip() not in own]
        pieces = [p for p in pieces if p not in extra]
        if extra:
            inner_spec += ("," if ":" in inner_spec else ":") + ",".join(extra)
        inner = make(inner_spec)
    cls = _COMPRESSORS.get(name)
    hints = typing.get_type_hints(cls)
    flds = [f for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    kwargs: dict = {}
    if inner is not None:
        if not flds or hints.get(flds[0].name) is not Compressor:
            raise ValueError(f"compressor {name!r} is not a wrapper; use {name}:key=value")
        kwargs[flds[0].name] = inner
    known = {f.name: hints[f.name] for f in flds}
    for piece in pieces:
        key, eq, raw = piece.partition("=")
        key = key.strip()
        if not eq:
            raise ValueError(f"{name}: expected key=value, got {piece!r}")
        if key not in known or known[key] is Compressor:
            names = ", ".join(k for k in known if known[k] is not Compressor) or "none"
            raise ValueError(f"{name}: unknown parameter {key!r}; known: {names}")
        kind = known[key]
        kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
        kwargs[key] = _convert(name, key, kind, raw)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ValueError(f"{name}: {e}") from None
