"""Test harness: a psgd job under MPI whose worker 2 sends a damaged uplink in round 3.

PSGD_FAULT picks the damage: truncate (3 bytes short), dtype (the message header's dtype
becomes a msgpack map), info (the telemetry array emptied), kind (a LEDGER frame in place
of the uplink), layers (a per-layer message whose declared d no longer matches its layers).
"""

import io
import os
import sys

import msgpack

from psgd.runtime import transport
from psgd.train import main
from psgd.wire.frame import Frame, Kind, decode_frame, encode_frame

FAULT = os.environ.get("PSGD_FAULT", "truncate")


def damage_message(part: bytes, index: int, value) -> bytes:
    """The message with element ``index`` of its msgpack header replaced by ``value``."""
    unpacker = msgpack.Unpacker(io.BytesIO(part), raw=False)
    header = unpacker.unpack()
    header[index] = value
    return msgpack.packb(header) + part[unpacker.tell() :]


def damage(data: bytes) -> bytes:
    if FAULT == "truncate":
        return data[:-3]
    f = decode_frame(data, sender=2, round=3)
    parts = [bytes(p) for p in f.parts]
    if FAULT == "dtype":
        parts[0] = damage_message(parts[0], 2, {})
    elif FAULT == "layers":
        parts[0] = damage_message(parts[0], 1, 3)
    kind = Kind.LEDGER if FAULT == "kind" else f.kind
    info = [] if FAULT == "info" else f.info
    return encode_frame(Frame(kind, f.round, f.sender, info, parts))


class Damaging(transport.MPITransport):
    sent = 0

    def send(self, dest, data):
        Damaging.sent += 1
        if self.comm.Get_rank() == 2 and Damaging.sent == 4:  # the uplinks of rounds 0..3
            data = damage(data)
        super().send(dest, data)


transport.MPITransport = Damaging
sys.exit(main(sys.argv[1:]))
