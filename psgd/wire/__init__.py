"""Bit-level encoding: packing primitives on tensors and the frame format. Knows no compressor or MPI."""

from psgd.wire.bits import pack_bits, pack_uint, uint_width, unpack_bits, unpack_uint
from psgd.wire.frame import Frame, decode_frame, encode_frame

__all__ = [
    "Frame",
    "decode_frame",
    "encode_frame",
    "pack_bits",
    "pack_uint",
    "uint_width",
    "unpack_bits",
    "unpack_uint",
]
