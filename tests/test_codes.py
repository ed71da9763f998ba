"""Variable-length codes: exact lengths, round trips, and malformed streams refused."""

import math

import pytest
import torch

from psgd.errors import FrameError
from psgd.wire.bits import segment_ids
from psgd.wire.codes import BitReader, BitWriter, bit_length


def ints(n: int, high: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=torch.Generator().manual_seed(seed))


def test_bit_length():
    v = torch.tensor([0, 1, 2, 3, 4, 255, 256, 2**40])
    assert bit_length(v).tolist() == [int(x).bit_length() for x in v.tolist()]


def test_segment_ids_match_repeat_interleave():
    w = torch.tensor([0, 2, 0, 0, 3, 1, 0])
    assert torch.equal(segment_ids(w), torch.repeat_interleave(torch.arange(7), w))
    assert segment_ids(torch.zeros(3, dtype=torch.int64)).numel() == 0


@pytest.mark.parametrize("n", [1, 5, 100])
def test_sections_round_trip_with_exact_lengths(n):
    q = ints(n, 20, 1)
    g = ints(n, 1000, 2) + 1
    r = ints(n, 300, 3)
    u = ints(n, 2**13, 4)
    b = ints(n, 2, 5).bool()
    widths = ints(n, 9, 6)
    v = ints(n, 2**8, 7) & ((1 << widths) - 1)
    w = BitWriter("cpu")
    w.unary(q)
    w.gammas(g)
    w.rice(r, 4)
    w.uints(u, 13)
    w.bits(b)
    w.varuints(v, widths)
    gamma_len = int((2 * bit_length(g) - 1).sum())
    rice_len = int(((r >> 4) + 1 + 4).sum())
    expected = int((q + 1).sum()) + gamma_len + rice_len + 13 * n + n + int(widths.sum())
    assert w.nbits == expected
    body = w.packed()
    assert body.numel() == math.ceil(expected / 8)
    rd = BitReader(body, w.nbits, "test")
    assert torch.equal(rd.unary(n, 100), q)
    assert torch.equal(rd.gammas(n), g)
    assert torch.equal(rd.rice(n, 4, 100), r)
    assert torch.equal(rd.uints(n, 13), u)
    assert torch.equal(rd.bits(n), b)
    assert torch.equal(rd.varuints(widths), v)
    rd.finish()


def test_gamma_codes_match_the_textbook_lengths():
    w = BitWriter("cpu")
    w.gammas(torch.tensor([1, 2, 3, 4, 9]))
    assert w.nbits == 1 + 3 + 3 + 5 + 7


def test_empty_sections():
    w = BitWriter("cpu")
    w.unary(torch.zeros(0, dtype=torch.int64))
    w.gammas(torch.zeros(0, dtype=torch.int64))
    assert w.nbits == 0 and w.packed().numel() == 0
    r = BitReader(w.packed(), 0, "test")
    assert r.unary(0, 5).numel() == 0
    r.finish()


def test_malformed_streams():
    w = BitWriter("cpu")
    w.unary(torch.tensor([3, 50]))
    body = w.packed()
    with pytest.raises(FrameError, match="t: code value out of range"):
        BitReader(body, w.nbits, "t").unary(2, 10)
    with pytest.raises(FrameError, match="ends inside a unary code"):
        BitReader(body, w.nbits, "t").unary(3, 100)
    with pytest.raises(FrameError, match="body ends early"):
        BitReader(body, w.nbits, "t").uints(10, 8)
    with pytest.raises(FrameError, match="unread bits"):
        r = BitReader(body, w.nbits, "t")
        r.unary(1, 100)
        r.finish()
    with pytest.raises(FrameError, match="shorter than"):
        BitReader(body, 8 * body.numel() + 1, "t")
