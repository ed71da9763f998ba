"""An emulated network link: each frame is held for its transfer time on a link of the
given bandwidth and latency, so wall-clock experiments on one machine behave like a slower
network. The ledger is unchanged: the bytes are the same, only time passes.

Spec: ``bandwidth=1Gbit,latency=50us``; bandwidth in bit/s with k/M/G prefixes (``bit``)
or bytes/s (``B``, e.g. ``100MB``); latency in s, ms or us. Holding time per frame:
latency + 8 * len(frame) / bandwidth, paid by the sender (a NIC sends one frame at a time).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from psgd.errors import ConfigError

_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKMG]?)(bit|b|B)(?:ps|/s)?$")
_TIME = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|ms|us|ns)$")
_PREFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}


@dataclass(frozen=True)
class Link:
    bandwidth: float  # bit/s
    latency: float  # s

    def hold(self, nbytes: int) -> float:
        return self.latency + 8 * nbytes / self.bandwidth


def parse(spec: str) -> Link | None:
    """None for an empty spec; ConfigError naming the bad part otherwise."""
    if not spec.strip():
        return None
    fields = {}
    for item in spec.split(","):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in ("bandwidth", "latency"):
            raise ConfigError(f"link: expected bandwidth=...,latency=..., got {item.strip()!r}")
        if key.strip() in fields:
            raise ConfigError(f"link: {key.strip()} is given twice in {spec!r}")
        fields[key.strip()] = value.strip()
    m = _RATE.match(fields.get("bandwidth", ""))
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"link: bandwidth {fields.get('bandwidth')!r} is not a rate such as 1Gbit or 100MB")
    bits = float(m.group(1)) * _PREFIX[m.group(2)] * (8 if m.group(3) == "B" else 1)
    t = _TIME.match(fields.get("latency", "0s"))
    if not t:
        raise ConfigError(f"link: latency {fields.get('latency')!r} is not a time such as 50us or 2ms")
    return Link(bits, float(t.group(1)) * _SECONDS[t.group(2)])


class EmulatedLink:
    """Wraps a transport: every send waits out its frame's time on the link first; with
    ``hold_receives`` every receive too, once the frame is in. The server's transport holds
    both (under MPI and in process alike), so its link carries every frame one after another,
    as the star topology of a parameter server does and as the report's projection assumes."""

    def __init__(self, inner, link: Link, hold_receives: bool = False) -> None:
        self.inner, self.link, self.hold_receives = inner, link, hold_receives

    def send(self, dest: int, data: bytes) -> None:
        time.sleep(self.link.hold(len(data)))
        self.inner.send(dest, data)

    def recv(self, source: int) -> bytes:
        data = self.inner.recv(source)
        if self.hold_receives:
            time.sleep(self.link.hold(len(data)))
        return data

    def recv_any(self, sources: list[int], timeout: float | None = None) -> tuple[int, bytes]:
        source, data = self.inner.recv_any(sources, timeout)
        if self.hold_receives:
            time.sleep(self.link.hold(len(data)))
        return source, data
