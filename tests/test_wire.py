"""Bit packing and the frame format: exact sizes, round trips, and clear errors on bad bytes."""

import math

import msgpack
import pytest
import torch

from psgd.errors import FrameError
from psgd.wire import Frame, decode_frame, encode_frame, pack_bits, pack_uint, unpack_bits, unpack_uint
from psgd.wire.frame import MAGIC, Kind


@pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 64, 1000, 4097])
def test_pack_bits_round_trip_and_size(n):
    bits = torch.rand(n, generator=torch.Generator().manual_seed(n)) < 0.5
    packed = pack_bits(bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(n / 8)
    assert torch.equal(unpack_bits(packed, n), bits)


def test_pack_bits_is_little_endian():
    bits = torch.tensor([True, False, False, False, False, False, False, False, False, True])
    assert pack_bits(bits).tolist() == [1, 2]


@pytest.mark.parametrize("width", [1, 2, 3, 5, 8, 13, 24, 33])
@pytest.mark.parametrize("n", [1, 5, 17, 1000])
def test_pack_uint_round_trip_and_size(n, width):
    g = torch.Generator().manual_seed(n * 100 + width)
    values = torch.randint(0, 2**width, (n,), generator=g)
    packed = pack_uint(values, width)
    assert packed.numel() == math.ceil(n * width / 8)
    assert torch.equal(unpack_uint(packed, n, width), values)


def test_unpack_rejects_short_buffers():
    with pytest.raises(ValueError):
        unpack_bits(torch.zeros(1, dtype=torch.uint8), 9)
    with pytest.raises(ValueError):
        unpack_uint(torch.zeros(2, dtype=torch.uint8), 3, 7)


def sample_frame():
    return Frame(Kind.UP, 12, 3, [0.5, 1.0], [b"abc", b"", b"defgh"])


def test_frame_round_trip():
    f = sample_frame()
    data = encode_frame(f)
    assert data.startswith(MAGIC)
    assert len(data) == len(MAGIC) + len(msgpack.packb([1, 1, 12, 3, [0.5, 1.0], [3, 0, 5]])) + 8
    g = decode_frame(data, sender=3, round=12)
    assert g == f


@pytest.mark.parametrize(
    "mutate, why",
    [
        (lambda d: b"XXXX" + d[4:], "bad magic"),
        (lambda d: d[:-1], "declares 8 body bytes"),
        (lambda d: d + b"!", "declares 8 body bytes"),
        (lambda d: d[:3], "only 3 bytes"),
        (lambda d: MAGIC + b"\xc1" + d[5:], "unreadable header"),
        (lambda d: MAGIC + msgpack.packb([9, 1, 12, 3, [], []]), "version 9"),
        (lambda d: MAGIC + msgpack.packb([1, 77, 12, 3, [], []]), "unknown kind"),
        (lambda d: MAGIC + msgpack.packb([1, 1, 12, 3, [], [-1]]), "non-negative"),
        (lambda d: MAGIC + msgpack.packb({"a": 1}), "6-element array"),
    ],
)
def test_malformed_frames_name_sender_and_round(mutate, why):
    data = mutate(encode_frame(sample_frame()))
    with pytest.raises(FrameError, match=f"from rank 3 in round 12: .*{why}"):
        decode_frame(data, sender=3, round=12)


def test_frame_from_wrong_sender_or_round_is_refused():
    data = encode_frame(sample_frame())
    with pytest.raises(FrameError, match="declares sender 3"):
        decode_frame(data, sender=2, round=12)
    with pytest.raises(FrameError, match="declares round 12"):
        decode_frame(data, sender=3, round=13)


def test_frame_decoding_never_unpickles():
    import pickle

    evil = MAGIC + pickle.dumps(["x"])
    with pytest.raises(FrameError):
        decode_frame(evil, sender=1, round=0)
