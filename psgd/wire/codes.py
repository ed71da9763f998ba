"""Variable-length codes on tensors: a bit writer and a bit reader.

A variable-length body is a sequence of sections written at bit granularity and packed
once, so its length is the exact sum of the code lengths rounded up to whole bytes.
Prefix codes (unary, Elias gamma, Golomb-Rice) are written *split*: all the unary parts
of a section first, then all the fixed-width remainders. The length is the same as the
interleaved code, but decoding is vectorised: the positions of the ones in the unary
part give every code length at once, with no sequential scan over the stream.
"""

from __future__ import annotations

import itertools

import torch

from psgd.errors import FrameError
from psgd.wire.bits import pack_bits, pack_uint, segment_ids, unpack_bits, unpack_uint


def bit_length(values: torch.Tensor) -> torch.Tensor:
    """floor(log2 v) + 1 for integers 1 <= v < 2**53 (0 for v = 0), as int64."""
    return torch.frexp(values.to(torch.float64)).exponent.to(torch.int64)


def _spread(widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a run of fields of the given widths: each bit's field and its place in the field."""
    field = segment_ids(widths)
    start = torch.cumsum(widths, 0) - widths
    return field, torch.arange(field.numel(), device=widths.device) - start[field]


class BitWriter:
    """Collects sections of bits on one device; ``packed()`` returns ceil(nbits/8) bytes."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.parts: list[torch.Tensor] = []
        self.nbits = 0

    def bits(self, b: torch.Tensor) -> None:
        self.parts.append(b.to(self.device, torch.bool).reshape(-1))
        self.nbits += b.numel()

    def uints(self, values: torch.Tensor, width: int) -> None:
        """Each value in ``width`` bits, least significant first."""
        if width and values.numel():
            self.bits(unpack_bits(pack_uint(values, width), values.numel() * width))

    def varuints(self, values: torch.Tensor, widths: torch.Tensor) -> None:
        """Value i in widths[i] bits (widths may be 0), least significant first."""
        if values.numel():
            field, place = _spread(widths)
            self.bits((values.to(torch.int64)[field] >> place) & 1)

    def unary(self, q: torch.Tensor) -> None:
        """Each q >= 0 as q zeros then a one: q + 1 bits."""
        ends = torch.cumsum(q.to(torch.int64) + 1, 0)
        out = torch.zeros(int(ends[-1]) if q.numel() else 0, dtype=torch.bool, device=self.device)
        out[ends - 1] = True
        self.bits(out)

    def gammas(self, values: torch.Tensor) -> None:
        """Elias gamma of each v >= 1, split: unary(L-1) parts, then the L-1 low bits (L = bit length)."""
        low = bit_length(values) - 1
        self.unary(low)
        self.varuints(values - (1 << low), low)

    def rice(self, values: torch.Tensor, r: int) -> None:
        """Golomb-Rice code with parameter 2**r of each v >= 0, split: unary quotients, then r-bit remainders."""
        v = values.to(torch.int64)
        self.unary(v >> r)
        self.uints(v & ((1 << r) - 1), r)

    def packed(self) -> torch.Tensor:
        if not self.parts:
            return torch.empty(0, dtype=torch.uint8, device=self.device)
        return pack_bits(torch.cat(self.parts))


class BitReader:
    """Reads the sections a BitWriter wrote; running past the end raises FrameError."""

    def __init__(self, body: torch.Tensor, nbits: int, what: str):
        if body.numel() * 8 < nbits:
            raise FrameError(f"{what}: body shorter than {nbits} bits")
        self.stream = unpack_bits(body, nbits)
        self.pos = 0
        self.what = what

    def _take(self, n: int) -> torch.Tensor:
        if n < 0 or self.pos + n > self.stream.numel():
            raise FrameError(f"{self.what}: body ends early")
        out = self.stream[self.pos : self.pos + n]
        self.pos += n
        return out

    def bits(self, n: int) -> torch.Tensor:
        return self._take(n)

    def uints(self, n: int, width: int) -> torch.Tensor:
        if not (width and n):
            return torch.zeros(n, dtype=torch.int64, device=self.stream.device)
        return unpack_uint(pack_bits(self._take(n * width)), n, width)

    def varuints(self, widths: torch.Tensor) -> torch.Tensor:
        field, place = _spread(widths)
        chunk = self._take(field.numel()).to(torch.int64) << place
        return torch.zeros(widths.numel(), dtype=torch.int64, device=chunk.device).index_add_(0, field, chunk)

    def unary(self, n: int, max_value: int) -> torch.Tensor:
        """n unary codes; a code above max_value is malformed."""
        if n == 0:
            return torch.zeros(0, dtype=torch.int64, device=self.stream.device)
        ones = torch.nonzero(self.stream[self.pos :]).view(-1)[:n]
        if ones.numel() < n:
            raise FrameError(f"{self.what}: body ends inside a unary code")
        q = torch.diff(ones, prepend=ones.new_full((1,), -1)) - 1
        if int(q.max()) > max_value:
            raise FrameError(f"{self.what}: code value out of range")
        self.pos += int(ones[-1]) + 1
        return q

    def gammas(self, n: int, max_bits: int = 62) -> torch.Tensor:
        low = self.unary(n, max_bits - 1)
        return (1 << low) | self.varuints(low)

    def rice(self, n: int, r: int, max_quotient: int) -> torch.Tensor:
        q = self.unary(n, max_quotient)
        return (q << r) | self.uints(n, r)

    def finish(self) -> None:
        """The body must be consumed exactly."""
        if self.pos != self.stream.numel():
            raise FrameError(f"{self.what}: {self.stream.numel() - self.pos} unread bits")


TRITS_PER_GROUP = 29  # 3^29 < 2^46: 46/29 = 1.5862 bits per trit, 0.08% above log2(3)
TRIT_GROUP_BITS = 46
_POW3 = [3**j for j in range(TRITS_PER_GROUP)]


def group_bits(m: int) -> int:
    """ceil(m log2 3): bits of one base-3 integer of m digits (46 for a full group of 29)."""
    return (3**m - 1).bit_length()


def trit_bits(n: int, tight: bool = False) -> int:
    """Bits that pack_trits uses for n trits: ceil(n/29) groups of 46 bits, or with ``tight`` a
    last group of m < 29 trits in ceil(m log2 3) bits."""
    full, m = divmod(n, TRITS_PER_GROUP)
    if not tight:
        return TRIT_GROUP_BITS * (full + (m > 0))
    return TRIT_GROUP_BITS * full + group_bits(m)


def _powers(m: int, device: torch.device) -> torch.Tensor:
    return torch.tensor(_POW3[:m], dtype=torch.int64, device=device)


def pack_trits(writer: BitWriter, trits: torch.Tensor, tight: bool = False) -> None:
    """Base-3 digits (0, 1, 2), 29 to a 46-bit integer; the last group zero-padded, or with
    ``tight`` its m digits in ceil(m log2 3) bits: trit_bits(n, tight) bits in all."""
    t = trits.to(torch.int64)
    full, m = divmod(t.numel(), TRITS_PER_GROUP)
    if m and not tight:
        full, m, t = full + 1, 0, torch.cat([t, t.new_zeros(TRITS_PER_GROUP - m)])
    head = t[: full * TRITS_PER_GROUP].view(-1, TRITS_PER_GROUP)
    writer.uints((head * _powers(TRITS_PER_GROUP, t.device)).sum(1), TRIT_GROUP_BITS)
    if m:
        writer.uints((t[full * TRITS_PER_GROUP :] * _powers(m, t.device)).sum().reshape(1), group_bits(m))


def _digits(reader: BitReader, groups: torch.Tensor, m: int) -> torch.Tensor:
    """The m low base-3 digits of each group; a group >= 3^m is malformed."""
    if groups.numel() and int(groups.max()) >= 3**m:
        raise FrameError(f"{reader.what}: base-3 group out of range")
    return (groups.unsqueeze(1) // _powers(m, groups.device) % 3).view(-1)


def unpack_trits(reader: BitReader, n: int, tight: bool = False) -> torch.Tensor:
    """Inverse of pack_trits: n base-3 digits as int64; a group out of range or non-zero padding is malformed."""
    full, m = divmod(n, TRITS_PER_GROUP)
    if not tight:
        trits = _digits(reader, reader.uints(-(-n // TRITS_PER_GROUP), TRIT_GROUP_BITS), TRITS_PER_GROUP)
        if bool(trits[n:].any()):
            raise FrameError(f"{reader.what}: non-zero base-3 padding")
        return trits[:n]
    head = _digits(reader, reader.uints(full, TRIT_GROUP_BITS), TRITS_PER_GROUP)
    return torch.cat([head, _digits(reader, reader.uints(1 if m else 0, group_bits(m)), m)])


def join_bits(parts: list[torch.Tensor], nbits: list[int]) -> torch.Tensor:
    """The first nbits[i] bits of each packed part, back to back, packed: ceil(sum / 8) bytes.
    While every part but the last ends on a byte boundary the bytes are concatenated as they are."""
    if all(n % 8 == 0 for n in nbits[:-1]):
        return torch.cat([p[: -(-n // 8)] for p, n in zip(parts, nbits, strict=True)])
    return pack_bits(torch.cat([unpack_bits(p, n) for p, n in zip(parts, nbits, strict=True)]))


def split_bits(body: torch.Tensor, nbits: list[int], what: str) -> list[torch.Tensor]:
    """Inverse of join_bits: each part packed on its own (the last keeps the body's padding bits)."""
    if all(n % 8 == 0 for n in nbits[:-1]):
        ends = [0, *itertools.accumulate(-(-n // 8) for n in nbits)]
        return [body[a:b].clone() for a, b in itertools.pairwise(ends)]
    reader = BitReader(body, sum(nbits), what)
    return [pack_bits(reader.bits(n)) for n in nbits]
