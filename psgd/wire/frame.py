"""The frame: what one MPI Send carries.

Layout: the 4-byte magic ``PSGD``, then one msgpack array
``[version, kind, round, sender, info, part_lengths]``, then the parts back to back.
Each part is one compressor message (its own small msgpack header plus packed body).
msgpack is self-delimiting and carries only ints, floats, strings and lists here, so
decoding untrusted bytes can fail but never execute anything; there is no pickle.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import msgpack

from psgd.errors import FrameError

MAGIC = b"PSGD"
VERSION = 1
MAX_HEADER_BYTES = 4096
MAX_PARTS = 256


class Kind(enum.IntEnum):
    DOWN = 0  # server -> worker: the round's downlink messages
    UP = 1  # worker -> server: the round's uplink messages and telemetry
    BYE = 2  # server -> worker: stop; info = [status, text]
    LEDGER = 3  # worker -> server at shut-down: the worker's own byte counts
    ERROR = 4  # worker -> server: the worker failed; info = [text]
    SNAPSHOT = 5  # server -> worker: send your state for a checkpoint (not training traffic)
    STATE = 6  # worker -> server: one part, the worker's state blob
    RESTORE = 7  # server -> worker: one part, a state blob to resume from
    EVAL = 8  # server -> worker: one part, the pending DOWN frame; reply with your model (not training traffic)
    MODEL = 9  # worker -> server: one part, the worker's model (raw bytes of its dtype), for evaluation


KINDS = frozenset(k.value for k in Kind)


def is_int(v) -> bool:
    """An integer header field (of a frame or a message): bool is not one, nor a float."""
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Frame:
    kind: Kind
    round: int
    sender: int
    info: list = field(default_factory=list)
    parts: list = field(default_factory=list)  # each a bytes-like, or (to encode) a tuple of them, joined

    @property
    def body_len(self) -> int:
        return sum(part_len(p) for p in self.parts)


def part_len(part) -> int:
    """Bytes of a part given as one buffer or as a tuple of buffers (a message header and its body)."""
    return sum(memoryview(b).nbytes for b in part) if isinstance(part, tuple) else memoryview(part).nbytes


def encode_frame(frame: Frame) -> bytes:
    """Serialise a frame; the result is exactly what is handed to MPI. Parts given as tuples of
    buffers (e.g. a message header and a numpy view of its body) are copied once, here."""
    return b"".join(frame_pieces(frame))


def frame_pieces(frame: Frame) -> list:
    """The buffers whose concatenation is the encoded frame: magic, header, then the parts."""
    header = msgpack.packb(
        [VERSION, int(frame.kind), frame.round, frame.sender, frame.info, [part_len(p) for p in frame.parts]]
    )
    pieces = [MAGIC, header]
    for p in frame.parts:
        pieces.extend(p if isinstance(p, tuple) else (p,))
    return pieces


def frame_overhead(data: bytes) -> int:
    """Bytes of a valid encoded frame that are not parts: magic plus frame header."""
    unpacker = msgpack.Unpacker(max_buffer_size=MAX_HEADER_BYTES)
    unpacker.feed(data[len(MAGIC) : len(MAGIC) + MAX_HEADER_BYTES])
    unpacker.unpack()
    return len(MAGIC) + unpacker.tell()


def decode_frame(data: bytes | bytearray | memoryview, sender: int, round: int | None) -> Frame:
    """Parse and validate a frame received from ``sender`` in ``round`` (None: any round).

    Raises FrameError naming the sender and round on any malformation.
    """

    def bad(why: str) -> FrameError:
        where = f"round {round}" if round is not None else "set-up/shut-down"
        return FrameError(f"malformed frame from rank {sender} in {where}: {why}")

    view = memoryview(data).cast("B")  # parts are slices of it: no copy of the body
    if len(view) < len(MAGIC) + 1:
        raise bad(f"only {len(view)} bytes")
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise bad(f"bad magic {bytes(view[: len(MAGIC)])!r}")
    unpacker = msgpack.Unpacker(max_buffer_size=MAX_HEADER_BYTES, raw=False, strict_map_key=True)
    unpacker.feed(view[len(MAGIC) : len(MAGIC) + MAX_HEADER_BYTES])
    try:
        header = unpacker.unpack()
    except Exception as e:  # msgpack raises several types for truncated or invalid input
        raise bad(f"unreadable header ({type(e).__name__})") from None
    offset = len(MAGIC) + unpacker.tell()
    if not (isinstance(header, list) and len(header) == 6):
        raise bad("header is not a 6-element array")
    version, kind, frame_round, frame_sender, info, lengths = header
    if not (is_int(version) and version == VERSION):
        raise bad(f"version {version!r}, expected {VERSION}")
    if not (is_int(kind) and kind in KINDS):
        raise bad(f"unknown kind {kind!r}")
    if not (is_int(frame_sender) and frame_sender == sender):
        raise bad(f"declares sender {frame_sender!r}")
    if not (is_int(frame_round) and (round is None or frame_round == round)):
        raise bad(f"declares round {frame_round!r}")
    if not isinstance(info, list):
        raise bad("info is not an array")
    if not (isinstance(lengths, list) and len(lengths) <= MAX_PARTS):
        raise bad("part lengths are not an array")
    if not all(is_int(n) and n >= 0 for n in lengths):
        raise bad("part lengths must be non-negative integers")
    if offset + sum(lengths) != len(view):
        raise bad(f"declares {sum(lengths)} body bytes, carries {len(view) - offset}")
    parts, pos = [], offset
    for n in lengths:
        parts.append(view[pos : pos + n])  # zero-copy slices
        pos += n
    return Frame(Kind(kind), frame_round, frame_sender, info, parts)
