"""The codec interface every compressor implements, and the message it produces.

A message is ``msgpack([codec, d, dtype, *meta]) + body``: a header of a few bytes
(at most 32) and a packed body whose length is the papers' bit count rounded up to
whole bytes. The body stays on the encoding device until ``to_bytes``.

Finite in, finite out: encode refuses NaN/Inf input, and a finite x whose scales or values
would overflow the wire's fp32 or the dtype x decodes to (both NonFiniteError: the run
diverged); from_bytes refuses a payload that holds a non-finite value (FrameError).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import msgpack
import numpy as np
import torch

from psgd.errors import FrameError, NonFiniteError
from psgd.wire.frame import is_int

DTYPES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
DTYPE_OF_CODE = {v: k for k, v in DTYPES.items()}
MAX_MESSAGE_HEADER = 32
MAX_D = 2**31  # the largest dimension a message may declare when the receiver does not say which it expects
FP32_MAX = torch.finfo(torch.float32).max
SEED = "seed"  # in a meta layout: a 32-bit seed the decoder shares (not counted in bits, as SPEC says)
SENT = "sent"  # in a meta layout: a count or length that depends on x


def defer_on(device: str | torch.device) -> bool:
    """Whether a receiver on device records its checks of message bodies (Deferred) for one read
    per round instead of reading each: on CUDA a read stalls the copy and compute queue once per
    message; on the CPU a check is a cheap pass fused into the one that consumes the values."""
    return torch.device(device).type == "cuda"


@dataclass(frozen=True)
class Deferred:
    """A check of a message's values computed on its device, not yet read: ``bad`` a 0-dim bool
    tensor, ``text()`` the FrameError's text when it holds (called only then: it may read the device)."""

    bad: torch.Tensor
    text: Callable[[], str]

    def verify(self) -> None:
        """FrameError if the check failed (one read of ``bad``)."""
        if bool(self.bad):
            raise FrameError(self.text())


def require(deferred: list | None, bad: torch.Tensor, text: Callable[[], str]) -> None:
    """FrameError(text()) if bad holds: read now, or recorded unread in ``deferred`` (Message.deferred)."""
    check = Deferred(bad, text)
    if deferred is None:
        check.verify()
    else:
        deferred.append(check)


@dataclass(frozen=True, eq=False)
class Message:
    """One compressed vector: header fields plus a packed uint8 body.

    ``parsed`` holds what a codec read out of the body once (by ``from_bytes`` when it validated
    the body, or by the encoder when it had the parts at hand): ``decode`` and ``accumulate``
    use it instead of parsing again. It never crosses the wire. ``unchecked``: a check of the body's
    values (identity's finiteness, dithering's levels <= s) is still to be made
    (``from_bytes(check_body=False)``): the codec's pass that consumes them makes it and raises
    FrameError. ``deferred``: where the parse defers (``defer_on`` the body's device, check_body=False),
    the list its checks of the body's values go to (Deferred), for the receiver to read all of a
    round's at once (runtime/aggregate.py); None: they raise as they are made. ``host``: the body's
    bytes as received (a host tensor), while the parse reads its scalars (norms, scales) from them.
    """

    codec: str
    d: int
    dtype: torch.dtype
    meta: tuple
    body: torch.Tensor
    parsed: Any = field(default=None, repr=False)
    unchecked: bool = field(default=False, repr=False)
    deferred: list | None = field(default=None, repr=False)
    host: torch.Tensor | None = field(default=None, repr=False)

    def header(self) -> bytes:
        return msgpack.packb([self.codec, self.d, DTYPES[self.dtype], *self.meta])

    @property
    def header_len(self) -> int:
        return len(self.header())

    @property
    def body_len(self) -> int:
        return self.body.numel()

    def to_bytes(self) -> bytes:
        """Exactly what crosses the wire: header then body."""
        return b"".join(self.pieces())

    def pieces(self) -> tuple:
        """(header, body as a host buffer): what to_bytes joins, for a frame to copy just once."""
        return self.header(), self.body.cpu().numpy()


def check_input(x: torch.Tensor, finite: bool = True) -> None:
    """Reject what no compressor can encode, naming the parameter; ``finite=False`` leaves NaN/Inf
    to the codec (one whose own first pass tells, see Compressor.finite_by_own_pass)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in DTYPES:
        raise ValueError(f"x: dtype must be a float type, got {x.dtype}")
    if x.dim() != 1:
        raise ValueError(f"x: expected a 1-D tensor, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError("x: empty tensor")
    # a finite sum proves every entry finite in one read; overflowing sums take the exact check
    if finite and not bool(torch.isfinite(x.sum())):
        require_finite_input(x)


def require_finite_input(x: torch.Tensor) -> None:
    """NonFiniteError if x holds NaN or Inf (the exact element check)."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError("x: contains NaN or Inf")


def largest(dtype: torch.dtype) -> float:
    """The largest magnitude a message may carry: fp32 on the wire, and the dtype it decodes to, hold it."""
    return min(FP32_MAX, torch.finfo(dtype).max)


def check_fits(what: str, value: float, dtype: torch.dtype) -> None:
    """Refuse to encode a scale or value (computed in float64) that would overflow the wire's
    fp32 or the decoded dtype: a finite x that big means the run diverged (NonFiniteError)."""
    if not value <= largest(dtype):
        raise NonFiniteError(f"x: {what} = {value:.4g} overflows {narrowest(dtype)}")


def narrowest(dtype: torch.dtype) -> str:
    """The format that bounds ``largest(dtype)``: fp32 (the wire) or the decoded dtype."""
    return "fp32" if largest(dtype) == FP32_MAX else str(dtype).removeprefix("torch.")


def require_fits(name: str, values: torch.Tensor, what: str, dtype: torch.dtype, deferred: list | None = None) -> None:
    """FrameError unless every received value is finite and stays finite decoded to dtype: the
    values' extremes (one read) within ``largest(dtype)``; recorded in ``deferred`` where given."""
    if values.numel():
        text = f"{name}: non-finite {what} (in {narrowest(dtype)})"
        # compared in float64, as a Python float is: in the values' dtype the bound may round to Inf
        require(deferred, ~(magnitude(values).double() <= largest(dtype)), lambda: text)


def magnitude(x: torch.Tensor) -> torch.Tensor:
    """max |x_i| from one read of x (``x.abs().max()`` writes a dense temporary first); NaN if any is."""
    lo, hi = torch.aminmax(x)
    return torch.maximum(-lo, hi)


def require_finite(name: str, values: torch.Tensor, what: str, deferred: list | None = None) -> None:
    """FrameError unless every received value is finite. A finite sum in the values' own dtype
    proves it in one cheap read (3x faster than a float64 sum on the CPU); a sum that
    overflows takes the exact element check. With ``deferred``, the extremes' check (exact, one
    read) is recorded there."""
    if deferred is not None:
        if values.numel():
            require(deferred, ~torch.isfinite(magnitude(values)), lambda: f"{name}: non-finite {what}")
        return
    if not values.numel() or bool(torch.isfinite(values.sum())):
        return
    if not bool(torch.isfinite(values).all()):
        raise FrameError(f"{name}: non-finite {what}")


class Compressor(ABC):
    """A codec C: encode(x) -> message, decode(message) -> x_hat (dense).

    Subclasses are frozen dataclasses (their fields are the spec's parameters) and
    implement ``_encode``, ``_decode`` and ``_bits`` (or, when x changes the count,
    ``meta_layout`` and ``_message_bits``). Every body is ``ceil(bits(message) / 8)`` bytes.

    The hot path, for codecs that implement them (defaults go through ``_decode``):
      * ``_parse(m)``: read and validate the body once; ``from_bytes`` stores the result in
        ``m.parsed`` (an encoder may set it too), which ``_decode`` and ``_accumulate`` use;
      * ``_accumulate(m, out, weight)``: out += weight * C(x) without a dense temporary
        (a scatter-add for sparse codecs, arithmetic on packed codes for dense ones): how the
        server aggregates uplinks as they arrive, and how error feedback takes C(x) off its error;
      * ``encode_reconstruct(x, generator, out)``: the message and C(x), decoded from the form the
        encoder attached where it keeps one (no second read of the body), into ``out`` if given
        (read-only: it may be the body itself); ``encode_feedback`` also takes C(x) off x in place
        (error feedback's new error), in the encoding pass where the codec can.
    """

    name: ClassVar[str]
    unbiased: ClassVar[bool] = False  # an instance property where it depends on the parameters
    summary: ClassVar[str] = ""
    klass: ClassVar[str] = ""  # the class of SPEC section 1, e.g. "U(d/k - 1)" or "B3(d/k)"
    wire_bits: ClassVar[str] = ""  # the bit count on the wire, e.g. "k(32 + IDX)"
    # True where _encode itself refuses NaN/Inf input from a pass it makes anyway (dithering's
    # float64 norm, natural's max |x_i|, identity's copy) with require_finite_input: encode skips
    # check_input's pass
    finite_by_own_pass: ClassVar[bool] = False
    # True where the parse's check of the body's values is a read of its own that the decode or
    # add consuming them can make instead (identity's finiteness, dithering's levels <= s):
    # from_bytes(check_body=False) leaves it to them
    defers_body_check: ClassVar[bool] = False

    @property
    def spec(self) -> str:
        """The spec string ``make`` turns back into this compressor (unset parameters left out)."""
        inner = [getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), Compressor)]
        params = [
            f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)  # type: ignore[arg-type]
            if getattr(self, f.name) is not None and not isinstance(getattr(self, f.name), Compressor)
        ]
        if inner:
            return f"{self.name}({', '.join([inner[0].spec, *params])})"
        return f"{self.name}:{','.join(params)}" if params else self.name

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> Message:
        return self._message(x, generator)

    def _message(self, x: torch.Tensor, generator: torch.Generator | None, *extra) -> Message:
        """encode's message, ``_encode`` given extra arguments (where a codec's encoding pass also
        writes C(x), or takes it off x: encode_reconstruct, encode_feedback)."""
        check_input(x, finite=not self.finite_by_own_pass)
        meta, body = self._encode(x, generator, *extra)
        return Message(self.name, x.numel(), x.dtype, tuple(meta), body)

    def decode(self, m: Message) -> torch.Tensor:
        """C(x) as a dense tensor of the message's dtype, on the body's device."""
        return self._decode(m)

    def accumulate(self, m: Message, out: torch.Tensor, weight: float = 1.0) -> torch.Tensor:
        """out += weight * decode(m), in place, and return out (out has m.d elements).
        With weight 1 the sum is the same floats as ``out + decode(m)``."""
        if out.numel() != m.d:
            raise ValueError(f"{self.name}: accumulate into {out.numel()} elements, message has d = {m.d}")
        self._accumulate(m, out, float(weight))
        return out

    def add_pair(self, a: Message, b: Message, out: torch.Tensor, start: bool) -> torch.Tensor:
        """out = C(a) + C(b) with ``start``, else (out + C(a)) + C(b): the floats of decode_into(a, out)
        (accumulate(a, out)) then accumulate(b, out), in one pass over out where the codec has a pair
        kernel (the server's aggregate of n uplinks: half the passes over it). Checks a parse left to
        the add (``unchecked``) are made; FrameError if either message fails (``check_body`` tells which)."""
        for m in (a, b):
            if out.numel() != m.d:
                raise ValueError(f"{self.name}: add into {out.numel()} elements, message has d = {m.d}")
        self._add_pair(a, b, out, start)
        return out

    def _add_pair(self, a: Message, b: Message, out: torch.Tensor, start: bool) -> None:
        """By default, one message after the other."""
        if start:
            self._decode_into(a, out)
        else:
            self._accumulate(a, out, 1.0)
        self._accumulate(b, out, 1.0)

    def check_body(self, m: Message) -> None:
        """FrameError (or what its own add would raise) unless m, read alone, can be added: which of two
        messages added in one pass failed (only after a failure). By default a decode; codecs whose
        parse leaves checks to the add (``defers_body_check``) make those checks instead."""
        self.decode(m)

    def support(self, m: Message):
        """A key that is equal for two messages exactly when their values sit at the same indices
        (rand-k drawn from one shared seed), so that a sum of them can add their values first and
        scatter once (``values``); None for every other codec."""
        return None

    def values(self, m: Message) -> torch.Tensor:
        """The values (in m's dtype) a message with a ``support`` scatters, weight 1."""
        raise NotImplementedError(f"{self.name}: no shared support")

    def scatter_values(self, m: Message, values: torch.Tensor, out: torch.Tensor) -> None:
        """out += values at m's support (values in m's dtype, summed over messages of that support)."""
        raise NotImplementedError(f"{self.name}: no shared support")

    def decode_into(self, m: Message, out: torch.Tensor) -> torch.Tensor:
        """out = decode(m), written into an existing buffer (out has m.d elements)."""
        if out.numel() != m.d:
            raise ValueError(f"{self.name}: decode into {out.numel()} elements, message has d = {m.d}")
        self._decode_into(m, out)
        return out

    def _decode_into(self, m: Message, out: torch.Tensor) -> None:
        """out = C(x) (size checked). By default zeros, then accumulate; codecs that can write each
        coordinate once override it."""
        out.zero_()
        self._accumulate(m, out, 1.0)

    def encode_reconstruct(
        self, x: torch.Tensor, generator: torch.Generator | None = None, out: torch.Tensor | None = None
    ) -> tuple[Message, torch.Tensor]:
        """(encode(x), C(x)), C(x) being the decode of that message bit for bit (error feedback and
        the server's step need both), written into ``out`` when given (a buffer the caller reuses:
        a fresh d-vector costs page faults every round), or a view of the body where that holds
        C(x) as is (identity): read C(x), never write it."""
        m = self.encode(x, generator)
        return m, (self.decode(m) if out is None else self.decode_into(m, out))

    def encode_feedback(
        self, x: torch.Tensor, generator: torch.Generator | None = None, out: torch.Tensor | None = None
    ) -> tuple[Message, torch.Tensor | None]:
        """(encode(x), C(x) or None) with x <- x - C(x) in place: error feedback's new error. Without
        ``out`` (a worker), the floats of ``accumulate(m, x, -1)``; with it (the server's step needs
        C(x)), C(x) written there as ``encode_reconstruct`` writes it and the floats of ``x.sub_(C(x))``
        (the two differ at most in the sign of a zero). Codecs whose encoding pass makes C(x)
        override it to write x - C(x) in that pass (no second pass over x)."""
        if out is None:
            m = self.encode(x, generator)
            self.accumulate(m, x, -1.0)
            return m, None
        m, q = self.encode_reconstruct(x, generator, out)
        x.sub_(q)
        return m, q

    def _accumulate(self, m: Message, out: torch.Tensor, weight: float) -> None:
        y = self._decode(m)
        if weight == 1.0:
            out.add_(y)
        else:
            out.add_(y, alpha=weight)

    def parsed(self, m: Message):
        """m's parsed body: what from_bytes or the encoder stored, else parsed now (and kept)."""
        if m.parsed is None:
            object.__setattr__(m, "parsed", self._parse(m))
        return m.parsed

    def _parse(self, m: Message):
        """Read and validate m's body (FrameError on contents no encoder writes); the result
        is kept in m.parsed for decode and accumulate. By default nothing to read: None."""
        return None

    def from_bytes(
        self,
        data: bytes,
        device: str | torch.device = "cpu",
        d: int | None = None,
        dtype: torch.dtype | None = None,
        check_body: bool = True,
    ) -> Message:
        """Parse and validate bytes produced by ``to_bytes``; malformed bytes raise FrameError, never
        another exception. ``d`` and ``dtype``, when given, are the size and dtype the receiver
        expects: a message of another size or dtype is refused before its body is read (without
        ``d``, a dimension above MAX_D is). Every size is checked against the body's length before
        anything is allocated, and a body that would decode to a non-finite value is refused.
        The body is read in place where ``data`` is writable. ``check_body=False`` leaves the
        value check of a codec that ``defers_body_check`` to the decode or accumulate that
        consumes the message (a receiver that sums messages as they land: runtime/aggregate.py),
        which then raises the FrameError; on a device that defers (``defer_on``), every such check of
        the codecs on the server's path is recorded in ``Message.deferred`` instead of read."""
        unpacker = msgpack.Unpacker(max_buffer_size=MAX_MESSAGE_HEADER * 2, raw=False)
        unpacker.feed(bytes(data[: MAX_MESSAGE_HEADER * 2]))
        try:
            header = unpacker.unpack()
        except Exception as e:
            raise FrameError(f"{self.name}: unreadable message header ({type(e).__name__})") from None
        offset = unpacker.tell()
        if not (isinstance(header, list) and len(header) >= 3):
            raise FrameError(f"{self.name}: message header is not an array")
        codec, header_d, dtype_code, *meta = header
        if codec != self.name:
            raise FrameError(f"{self.name}: message is for codec {codec!r}")
        if not (is_int(header_d) and header_d >= 1):
            raise FrameError(f"{self.name}: bad dimension {header_d!r}")
        if d is not None and header_d != d:
            raise FrameError(f"{self.name}: message of dimension {header_d}, expected {d}")
        if header_d > MAX_D:
            raise FrameError(f"{self.name}: dimension {header_d} above {MAX_D} (the receiver did not give d)")
        d = header_d
        if not (is_int(dtype_code) and dtype_code in DTYPE_OF_CODE):
            raise FrameError(f"{self.name}: bad dtype code {dtype_code!r}")
        if dtype is not None and DTYPE_OF_CODE[dtype_code] != dtype:
            raise FrameError(f"{self.name}: message of dtype {DTYPE_OF_CODE[dtype_code]}, expected {dtype}")
        nbytes = len(data) - offset
        try:
            if 8 * nbytes < self.min_bits(d):  # before the fields: no per-block work for a huge d in a short body
                raise ValueError(f"d={d} needs at least {self.min_bits(d)} bits, the body has {8 * nbytes}")
            self.check_meta(d, tuple(meta))
            expected = self.body_bytes(d, tuple(meta))
        except (ValueError, TypeError, ArithmeticError) as e:
            raise FrameError(f"{self.name}: bad header fields ({e})") from None
        if nbytes != expected:
            raise FrameError(f"{self.name}: body has {nbytes} bytes, header implies {expected}")
        host = body_tensor(data, offset, expected)
        defer = not check_body and defer_on(device)
        unchecked = self.defers_body_check and not check_body and not defer
        m = Message(
            codec, d, DTYPE_OF_CODE[dtype_code], tuple(meta), host.to(device, non_blocking=True),
            unchecked=unchecked, deferred=[] if defer else None, host=host,
        )  # fmt: skip
        object.__setattr__(m, "parsed", self._parse(m))
        object.__setattr__(m, "host", None)  # the transport reuses that memory
        return m

    def min_bits(self, d: int) -> int:
        """A lower bound on the bits of every message of dimension d, from arithmetic alone:
        from_bytes checks it first, so a huge d in a short body is refused before any work in d."""
        return 0

    @abstractmethod
    def _encode(self, x: torch.Tensor, generator: torch.Generator | None) -> tuple[tuple, torch.Tensor]:
        """Return (header meta fields, packed uint8 body) for a validated x."""

    @abstractmethod
    def _decode(self, m: Message) -> torch.Tensor:
        """Dense reconstruction on the body's device, in the message's dtype."""

    def _encode_seeded(self, x: torch.Tensor, generator: torch.Generator | None, seed: int | None):
        """``_encode`` with the shared seed given (a wrapper derives one per block); codecs whose
        meta_layout holds SEED override it, the others ignore the seed."""
        return self._encode(x, generator)

    def meta_layout(self, d: int) -> tuple:
        """The header fields of a message of dimension d: an int where the parameters and d fix
        it (top-k's k), SEED for a shared seed, SENT for a field that depends on x (an nnz, a
        code length). Wrappers send only the SENT ones for each block."""
        return ()

    def check_meta(self, d: int, meta: tuple) -> None:
        """ValueError unless meta fits meta_layout(d)."""
        layout = self.meta_layout(d)
        if len(meta) != len(layout):
            raise ValueError(f"{len(meta)} header fields, expected {len(layout)}")
        for v, want in zip(meta, layout, strict=True):
            if not is_int(v):
                raise ValueError(f"header field {v!r} is not an integer")
            if want == SEED and not 0 <= v < 2**32:
                raise ValueError(f"seed={v}")
            if want == SENT and v < 0:
                raise ValueError(f"negative header field {v}")
            if isinstance(want, int) and v != want:
                raise ValueError(f"header field {v} where the parameters give {want} for d={d}")

    def body_bytes(self, d: int, meta: tuple) -> int:
        """Exact body length in bytes for a message with this header: ceil(bits / 8)."""
        return packed_bytes(self._message_bits(d, meta))

    def bits(self, of: int | Message) -> int | None:
        """The papers' bit count (SPEC 2.14) of the body: exact for one message, whatever the codec;
        for a dimension d, the count of every message when x does not change it (else None)."""
        if isinstance(of, Message):
            return self._message_bits(of.d, of.meta)
        return self._bits(of)

    def _bits(self, d: int) -> int | None:
        """Bits of every message of dimension d, or None when they depend on x."""
        return None

    def _message_bits(self, d: int, meta: tuple) -> int:
        """Bits of a message with this header (d and meta already fit meta_layout; ValueError on
        a field no encoder writes). By default the fixed count."""
        n = self._bits(d)
        if n is None:
            raise NotImplementedError(f"{self.name}: a count that depends on x needs _message_bits")
        return n

    def omega(self, d: int) -> float | None:
        """Variance parameter of U(omega) for unbiased compressors: E||C(x)-x||^2 <= omega ||x||^2."""
        return None

    def delta(self, d: int) -> float | None:
        """B3(delta) parameter: E||C(x)-x||^2 <= (1 - 1/delta)||x||^2 (None when not contractive).

        By default an unbiased C in U(omega) with omega < 1 is in B3(1/(1 - omega)).
        """
        w = self.omega(d) if self.unbiased else None
        return 1 / (1 - w) if w is not None and w < 1 else None

    def b1(self, d: int) -> tuple[float, float] | None:
        """(alpha, beta) of B1: alpha||x||^2 <= E||C(x)||^2 <= beta <E C(x), x> (None when unknown).

        By default from paper 1's equivalences (SPEC 1): U(zeta) => B1(1, zeta), B3(delta) => B1(1/(4 delta^2), 2).
        """
        zeta = self._zeta(d)
        if zeta is not None:
            return 1.0, zeta
        delta = self.delta(d)
        return None if delta is None else (1 / (4 * delta**2), 2.0)

    def b2(self, d: int) -> tuple[float, float] | None:
        """(gamma, beta) of B2: max(gamma||x||^2, E||C(x)||^2/beta) <= <E C(x), x> (None when unknown).

        By default from paper 1's equivalences (SPEC 1): U(zeta) => B2(1, zeta), B3(delta) => B2(1/(2 delta), 2).
        """
        zeta = self._zeta(d)
        if zeta is not None:
            return 1.0, zeta
        delta = self.delta(d)
        return None if delta is None else (1 / (2 * delta), 2.0)

    def _zeta(self, d: int) -> float | None:
        """zeta = 1 + omega of U(zeta) for an unbiased C, else None."""
        w = self.omega(d) if self.unbiased else None
        return None if w is None else 1 + w


def body_tensor(data, offset: int, n: int) -> torch.Tensor:
    """The n body bytes of data from offset as a uint8 tensor: a view where data is writable
    (a bytearray or a view of one, as transports deliver), else one copy."""
    if not n:
        return torch.empty(0, dtype=torch.uint8)
    view = memoryview(data)
    if view.readonly:
        view = memoryview(bytearray(view[offset : offset + n]))
        offset = 0
    return torch.frombuffer(view, dtype=torch.uint8, count=n, offset=offset)


def head_floats(m: Message, n: int) -> np.ndarray:
    """The n fp32 values the body starts with, read on the host: from the bytes as received (no
    read of the device), else from the body."""
    src = m.host if m.host is not None else m.body[: 4 * n].cpu()
    return src[: 4 * n].numpy().view(np.float32).copy()  # aligned, and apart from memory the transport reuses


def fp32_bytes(n: int) -> int:
    return 4 * n


def packed_bytes(nbits: int) -> int:
    return math.ceil(nbits / 8)
