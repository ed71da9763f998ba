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

import numpy as np
import torch

from psgd import kernels
from psgd.errors import FrameError
from psgd.kernels import codes as kc
from psgd.kernels import np_view
from psgd.wire.bits import pack_bits, pack_uint, segment_ids, unpack_bits, unpack_uint


def bit_length(values: torch.Tensor) -> torch.Tensor:
    """floor(log2 v) + 1 for integers 0 <= v < 2**63 (0 for v = 0), as int64. From 2**52 on the top
    bits are shifted down first, so that the float64 conversion cannot round up to a power of 2."""
    v = values.to(torch.int64)
    big = v >= 2**52
    return torch.frexp(torch.where(big, v >> 11, v).to(torch.float64)).exponent.to(torch.int64) + 11 * big


def _spread(widths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a run of fields of the given widths: each bit's field and its place in the field."""
    field = segment_ids(widths)
    start = torch.cumsum(widths, 0) - widths
    return field, torch.arange(field.numel(), device=widths.device) - start[field]


def _ints(t: torch.Tensor):
    """A numpy view of an integer tensor for the kernels (booleans as bytes)."""
    t = t.reshape(-1).contiguous()
    return np_view(t.view(torch.uint8) if t.dtype == torch.bool else t)


class BitWriter:
    """Collects sections of bits on one device; ``packed()`` returns ceil(nbits/8) bytes.

    On the CPU with compiled kernels the sections go straight into one growing buffer of packed
    words; otherwise (CUDA, the reference) each is a bool tensor, packed once at the end.
    """

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.parts: list[torch.Tensor | list] = []  # bool tensors, or [words, nbits] of compiled sections
        self.nbits = 0

    def _section(self, kernel, tensors: tuple[torch.Tensor, ...], args: tuple, reference, size: int) -> None:
        """Append one section of about ``size`` bits: ``kernel(words, nbits, *views of tensors, *args)``
        when it can run (on a CPU writer), else ``reference()``."""

        def fast():
            if not (self.parts and isinstance(self.parts[-1], list)):
                self.parts.append([kc.new_words(size), 0])
            part = self.parts[-1]
            if part[0].size * 64 < part[1] + size:  # grown once here rather than doubled in the kernel
                part[0] = np.concatenate([part[0], kc.new_words(part[0].size * 64 + size)])
            words, nbits = kernel(part[0], part[1], *(_ints(t) for t in tensors), *args)
            self.nbits += nbits - part[1]
            part[:] = words, nbits

        if self.device.type != "cpu":
            return reference()
        return kernels.run(kernel, tensors, fast, reference)

    def _append(self, b: torch.Tensor) -> None:
        self.parts.append(b)
        self.nbits += b.numel()

    def bits(self, b: torch.Tensor) -> None:
        b = b.to(self.device, torch.bool).reshape(-1)
        self._section(kc.write_bits, (b,), (), lambda: self._append(b), b.numel())

    def uints(self, values: torch.Tensor, width: int) -> None:
        """Each value in ``width`` bits, least significant first."""
        if width and values.numel():
            self._section(
                kc.write_uints,
                (values,),
                (width,),
                lambda: self._append(unpack_bits(pack_uint(values, width), values.numel() * width)),
                values.numel() * width,
            )

    def varuints(self, values: torch.Tensor, widths: torch.Tensor) -> None:
        """Value i in widths[i] bits (widths may be 0), least significant first."""

        def reference():
            field, place = _spread(widths)
            self._append(((values.to(torch.int64)[field] >> place) & 1).bool())

        if values.numel():
            self._section(kc.write_varuints, (values, widths), (), reference, 8 * values.numel())

    def unary(self, q: torch.Tensor) -> None:
        """Each q >= 0 as q zeros then a one: q + 1 bits."""

        def reference():
            ends = torch.cumsum(q.to(torch.int64) + 1, 0)
            out = torch.zeros(int(ends[-1]) if q.numel() else 0, dtype=torch.bool, device=self.device)
            out[ends - 1] = True
            self._append(out)

        self._section(kc.write_codes, (q,), (0, kc.UNARY, kc.new_words(0)), reference, 4 * q.numel())

    def gammas(self, values: torch.Tensor) -> None:
        """Elias gamma of each v >= 1, split: unary(L-1) parts, then the L-1 low bits (L = bit length)."""

        def reference():
            low = bit_length(values) - 1
            self.unary(low)
            self.varuints(values - (1 << low), low)

        n = values.numel()
        self._section(kc.write_codes, (values,), (0, kc.GAMMA, kc.new_words(2 * n)), reference, 4 * n)

    def rice(self, values: torch.Tensor, r: int) -> None:
        """Golomb-Rice code with parameter 2**r of each v >= 0, split: unary quotients, then r-bit remainders."""

        def reference():
            v = values.to(torch.int64)
            self.unary(v >> r)
            self.uints(v & ((1 << r) - 1), r)

        n = values.numel()
        self._section(kc.write_codes, (values,), (r, kc.RICE, kc.new_words(r * n)), reference, (r + 2) * n)

    def packed(self) -> torch.Tensor:
        if not self.parts:
            return torch.empty(0, dtype=torch.uint8, device=self.device)
        if all(isinstance(p, torch.Tensor) for p in self.parts):
            return pack_bits(torch.cat(self.parts))  # type: ignore[arg-type]
        if len(self.parts) == 1:
            return _bytes(*self.parts[0])
        packed = [pack_bits(p) if isinstance(p, torch.Tensor) else _bytes(*p) for p in self.parts]
        return join_bits(packed, [p.numel() if isinstance(p, torch.Tensor) else p[1] for p in self.parts])


def _bytes(words: np.ndarray, nbits: int) -> torch.Tensor:
    """The packed bytes of the first nbits of a word buffer (a view)."""
    return torch.from_numpy(words.view(np.uint8)[: -(-nbits // 8)])


class BitReader:
    """Reads the sections a BitWriter wrote; running past the end raises FrameError.

    On the CPU with compiled kernels it reads the body as words (one copy of the body); otherwise
    (CUDA, the reference) as a bool tensor of its bits. Either is made on first use.
    """

    def __init__(self, body: torch.Tensor, nbits: int, what: str):
        if body.numel() * 8 < nbits:
            raise FrameError(f"{what}: body shorter than {nbits} bits")
        self.body = body
        self.nbits = nbits
        self.pos = 0
        self.what = what
        self._stream: torch.Tensor | None = None
        self._words: np.ndarray | None = None

    @property
    def stream(self) -> torch.Tensor:
        """The body's nbits as booleans (the reference's form)."""
        if self._stream is None:
            self._stream = unpack_bits(self.body, self.nbits)
        return self._stream

    @property
    def words(self) -> np.ndarray:
        """The body's nbits as words (the kernels' form)."""
        if self._words is None:
            self._words = kc.words_of(self.body, self.nbits)
        return self._words

    def _read(self, kernel, fast, reference):
        return kernels.run(kernel, (self.body,), fast, reference)

    def _check(self, status: int) -> None:
        if status != kc.OK:
            raise FrameError(f"{self.what}: {kc.STATUS[status]}")

    def _take(self, n: int) -> int:
        """The position of the next n bits, consumed."""
        if n < 0 or self.pos + n > self.nbits:
            raise FrameError(f"{self.what}: body ends early")
        self.pos += n
        return self.pos - n

    def bits(self, n: int) -> torch.Tensor:
        pos = self._take(n)

        def fast():
            out = np.empty(n, dtype=np.bool_)
            kc.read_bits(self.words, pos, out)
            return torch.from_numpy(out)

        return self._read(kc.read_bits, fast, lambda: self.stream[pos : pos + n])

    def uints(self, n: int, width: int) -> torch.Tensor:
        if not (width and n):
            return torch.zeros(n, dtype=torch.int64, device=self.body.device)
        pos = self._take(n * width)

        def fast():
            out = np.empty(n, dtype=np.int64)
            kc.read_uints(self.words, pos, out, width)
            return torch.from_numpy(out)

        return self._read(
            kc.read_uints, fast, lambda: unpack_uint(pack_bits(self.stream[pos : pos + n * width]), n, width)
        )

    def varuints(self, widths: torch.Tensor) -> torch.Tensor:
        def fast():
            total = int(widths.sum())
            pos = self._take(total)
            out = np.empty(widths.numel(), dtype=np.int64)
            kc.read_varuints(self.words, pos, _ints(widths), out)
            return torch.from_numpy(out)

        def reference():
            field, place = _spread(widths)
            pos = self._take(field.numel())
            chunk = self.stream[pos : pos + field.numel()].to(torch.int64) << place
            return torch.zeros(widths.numel(), dtype=torch.int64, device=chunk.device).index_add_(0, field, chunk)

        return self._read(kc.read_varuints, fast, reference)

    def _codes(self, n: int, max_q: int, r: int, code: int) -> torch.Tensor:
        """n split prefix codes by the compiled reader."""
        out = np.empty(n, dtype=np.int64)
        pos, status = kc.read_codes(self.words, self.pos, self.nbits, out, max_q, r, code)
        self._check(status)
        self.pos = pos
        return torch.from_numpy(out)

    def unary(self, n: int, max_value: int) -> torch.Tensor:
        """n unary codes; a code above max_value is malformed."""

        def reference():
            if n == 0:
                return torch.zeros(0, dtype=torch.int64, device=self.body.device)
            ones = torch.nonzero(self.stream[self.pos :]).view(-1)[:n]
            if ones.numel() < n:
                raise FrameError(f"{self.what}: body ends inside a unary code")
            q = torch.diff(ones, prepend=ones.new_full((1,), -1)) - 1
            if int(q.max()) > max_value:
                raise FrameError(f"{self.what}: code value out of range")
            self.pos += int(ones[-1]) + 1
            return q

        return self._read(kc.read_codes, lambda: self._codes(n, max_value, 0, kc.UNARY), reference)

    def gammas(self, n: int, max_bits: int = 62) -> torch.Tensor:
        def reference():
            low = self.unary(n, max_bits - 1)
            return (1 << low) | self.varuints(low)

        return self._read(kc.read_codes, lambda: self._codes(n, max_bits - 1, 0, kc.GAMMA), reference)

    def rice(self, n: int, r: int, max_quotient: int) -> torch.Tensor:
        def reference():
            q = self.unary(n, max_quotient)
            return (q << r) | self.uints(n, r)

        return self._read(kc.read_codes, lambda: self._codes(n, max_quotient, r, kc.RICE), reference)

    def finish(self) -> None:
        """The body must be consumed exactly."""
        if self.pos != self.nbits:
            raise FrameError(f"{self.what}: {self.nbits - self.pos} unread bits")


def join_bits(parts: list[torch.Tensor], nbits: list[int]) -> torch.Tensor:
    """The first nbits[i] bits of each packed part, back to back, packed: ceil(sum / 8) bytes.
    While every part but the last ends on a byte boundary the bytes are concatenated as they are."""
    if all(n % 8 == 0 for n in nbits[:-1]):
        return torch.cat([p[: -(-n // 8)] for p, n in zip(parts, nbits, strict=True)])

    def fast():
        words, total = kc.new_words(sum(nbits)), 0
        for p, n in zip(parts, nbits, strict=True):
            words, total = kc.write_packed(words, total, np_view(p.contiguous()), n)
        return _bytes(words, total)

    return kernels.run(
        kc.write_packed,
        tuple(parts),
        fast,
        lambda: pack_bits(torch.cat([unpack_bits(p, n) for p, n in zip(parts, nbits, strict=True)])),
    )


def split_bits(body: torch.Tensor, nbits: list[int], what: str) -> list[torch.Tensor]:
    """Inverse of join_bits: each part packed on its own (the last keeps the body's padding bits)."""
    if all(n % 8 == 0 for n in nbits[:-1]):
        ends = [0, *itertools.accumulate(-(-n // 8) for n in nbits)]
        return [body[a:b].clone() for a, b in itertools.pairwise(ends)]
    reader = BitReader(body, sum(nbits), what)

    def fast():
        parts = []
        for n in nbits:
            out = np.empty(-(-n // 8), dtype=np.uint8)
            kc.read_packed(reader.words, reader._take(n), out, n)
            parts.append(torch.from_numpy(out))
        return parts

    return reader._read(kc.read_packed, fast, lambda: [pack_bits(reader.bits(n)) for n in nbits])
