"""Between methods' messages and the wire: build frames from messages, parse them back."""

from __future__ import annotations

import torch

from psgd.compress import Compressor, Message
from psgd.errors import FrameError
from psgd.wire import Frame, encode_frame
from psgd.wire.frame import Kind


def pack(kind: Kind, round: int, sender: int, info: list, messages: list[Message] = ()) -> tuple[bytes, int]:
    """Frame bytes and their header byte count (frame header plus message headers)."""
    parts = [m.to_bytes() for m in messages]
    data = encode_frame(Frame(kind, round, sender, info, parts))
    return data, len(data) - sum(m.body_len for m in messages)


def unpack(frame: Frame, codecs: list[Compressor], device: torch.device) -> tuple[list[torch.Tensor], int]:
    """Decoded dense tensors of a frame's parts and the frame's body byte count."""
    where = f"malformed frame from rank {frame.sender} in round {frame.round}"
    if len(frame.parts) != len(codecs):
        raise FrameError(f"{where}: {len(frame.parts)} parts, expected {len(codecs)}")
    tensors, body = [], 0
    for part, codec in zip(frame.parts, codecs, strict=True):
        try:
            m = codec.from_bytes(part, device)
            tensors.append(codec.decode(m))
        except FrameError as e:
            raise FrameError(f"{where}: {e}") from None
        except Exception as e:  # bytes that pass the header checks but break the codec: still the sender's fault
            raise FrameError(f"{where}: {codec.spec}: {type(e).__name__}: {e}") from None
        body += m.body_len
    return tensors, body
