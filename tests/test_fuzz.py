"""Hostile bytes (issue 10): every mutated or random message and frame is refused with a FrameError,
or decodes to a finite vector of the expected size, within a memory cap and a time cap per case.

For each spec of compress_specs.SPECS and for decode_frame, hypothesis mutates valid messages (bit
flips, truncation, insertion, deletion, header fields set to extreme or wrongly typed values, body
floats set to extremes, random bodies, the dtype code switched) and draws random bytes. Each target
runs in a forked child whose address space is capped at what it holds plus MEMORY_CAP (RLIMIT_AS
in the pytest process would starve torch), with an alarm of CASE_S seconds per case and a hard
limit on the child (a hang in compiled code is reported with the case in flight). The CI budget is
a few hundred cases per target, derandomized; ``PSGD_FUZZ=long`` runs LONG_EXAMPLES per target
(over 100,000 in all) with fresh randomness and prints the counts.
"""

from __future__ import annotations

import json
import math
import os
import resource
import select
import signal
import struct
import sys
import time
import traceback

import msgpack
import pytest
import torch
from compress_specs import SPECS, resolve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psgd.compress import make
from psgd.compress.base import MAX_D
from psgd.errors import FrameError
from psgd.wire.frame import MAGIC, Frame, Kind, decode_frame, encode_frame

LONG = os.environ.get("PSGD_FUZZ") == "long"
EXAMPLES = 4500 if LONG else 120  # per target: 43 targets (the long mode's passing ones alone run > 100,000)
CASE_S = 10.0  # alarm per case (a hang in Python code); hypothesis' deadline is tighter
DEADLINE_MS = 2000
MEMORY_CAP = 1 << 30  # bytes a case may add to the child's address space; a d = 64 decode needs KiB
DIMS = (1, 7, 24, 64)
DTYPES = (torch.float32, torch.float16, torch.float64, torch.bfloat16)

KNOWN: dict[str, str] = {}  # specs whose fuzzing is known to fail, with the reason (none now)

EXTREME_FLOATS = [math.inf, -math.inf, math.nan, 3.4028235e38, -3.4e38, 1e38, 65504.0, 65520.0, 7e4, 1e30, 1e-45, -0.0]
HOSTILE = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([0, 1, 2, 3, 4, -1, 2**31, 2**32, 2**33, 2**63 - 1, 2**64 - 1, -(2**63)]),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(),
    st.text(max_size=6),
    st.binary(max_size=6),
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(0, 3), max_size=2),
)


class CaseTimeout(Exception):
    pass


def random_x(d: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(d, generator=g, dtype=torch.float64) * [1.0, 1e-3, 30.0][seed % 3]).to(dtype)


def message_seeds(spec: str) -> list[tuple]:
    """(codec, d, dtype, header fields, body) of valid messages: each d, each dtype."""
    seeds = []
    for d in DIMS:
        c = make(resolve(spec, d))
        for i, dtype in enumerate(DTYPES):
            m = c.encode(random_x(d, dtype, d + i), torch.Generator().manual_seed(i))
            seeds.append((c, d, dtype, list(msgpack.unpackb(m.header())), m.body.numpy().tobytes()))
    return seeds


def frame_seeds() -> list[tuple]:
    """(sender, round, header fields, parts) of valid frames of every kind."""
    body = make("topk:k=3").encode(random_x(24, torch.float32, 0)).to_bytes()
    frames = [
        Frame(Kind.UP, 3, 1, [0.5, 0.01, 0.02, 0.0, 120], [body, body]),
        Frame(Kind.DOWN, 3, 0, [], [body]),
        Frame(Kind.BYE, -1, 0, [0, "done"], []),
        Frame(Kind.LEDGER, 7, 2, [10, 20, "cpu", b"\0" * 8, b"\0" * 8], []),
        Frame(Kind.ERROR, 1, 1, ["failed"], []),
    ]
    seeds = []
    for f in frames:
        data = encode_frame(f)
        header = msgpack.Unpacker(raw=False)
        header.feed(data[len(MAGIC) :])
        seeds.append((f.sender, None if f.kind == Kind.BYE else f.round, header.unpack(), [bytes(p) for p in f.parts]))
    return seeds


@st.composite
def edited_header(draw, fields: list) -> list:
    """fields with one to three set to hostile values, appended, or removed."""
    fields = list(fields)
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(fields)))
        action = draw(st.sampled_from(["set", "set", "append", "remove"]))
        if action == "set" and i < len(fields):
            fields[i] = draw(HOSTILE)
        elif action == "append":
            fields.append(draw(HOSTILE))
        elif fields:
            fields.pop(min(i, len(fields) - 1))
    return fields


@st.composite
def edited_body(draw, body: bytes) -> bytes:
    """body with fp32 slots set to extremes, bytes replaced at random, or all random."""
    kind = draw(st.sampled_from(["floats", "floats", "bytes", "random"]))
    b = bytearray(body)
    if kind == "random":
        return draw(st.binary(min_size=len(b), max_size=len(b)))
    for _ in range(draw(st.integers(1, 4))):
        if len(b) < 4:
            break
        pos = draw(st.integers(0, len(b) - 4))
        pos -= pos % 4 if kind == "floats" and draw(st.booleans()) else 0
        value = draw(st.one_of(st.sampled_from(EXTREME_FLOATS), st.floats(width=32)))
        b[pos : pos + 4] = struct.pack("<f", value) if kind == "floats" else draw(st.binary(min_size=4, max_size=4))
    return bytes(b)


@st.composite
def edited_bytes(draw, data: bytes) -> bytes:
    """data after one to four bit flips, truncations, insertions or deletions."""
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "flip", "truncate", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(b) - 1)))
        if action == "flip" and b:
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == "truncate":
            del b[pos:]
        elif action == "insert":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del b[pos : pos + draw(st.integers(1, 16))]
    return bytes(b)


@st.composite
def mutated(draw, header_of, seeds: list) -> tuple[int, bytes]:
    """(seed index, bytes): a valid seed edited in its header fields, body and/or bytes, or random bytes."""
    i = draw(st.integers(0, len(seeds) - 1))
    fields, body = seeds[i][-2], seeds[i][-1]
    kind = draw(st.sampled_from(["header", "body", "bytes", "mixed", "random", "random_body"]))
    if kind == "random":
        return i, draw(st.binary(max_size=96))
    if kind in ("header", "mixed"):
        fields = draw(edited_header(fields))
    if kind in ("body", "mixed"):
        body = draw(edited_body(body)) if isinstance(body, bytes) else body
    if kind == "random_body":
        n = len(body) if isinstance(body, bytes) else sum(len(p) for p in body)
        body = draw(st.binary(min_size=max(0, n - 2), max_size=n + 2))
    data = header_of(fields) + (body if isinstance(body, bytes) else b"".join(body))
    if kind in ("bytes", "mixed"):
        data = draw(edited_bytes(data))
    return i, data


def message_header(fields: list) -> bytes:
    return msgpack.packb(fields)


def frame_header(fields: list) -> bytes:
    return MAGIC + msgpack.packb(fields)


def check_message(c, d: int, dtype: torch.dtype, data: bytes, expect_dtype: bool) -> str:
    """The invariant: FrameError, or a message of dimension d whose decode and accumulate are
    finite vectors of d elements (and equal: out = 0 + C(x)). Without d, FrameError or d <= MAX_D."""
    try:
        m = c.from_bytes(data)
        assert 1 <= m.d <= MAX_D
    except FrameError:
        pass
    try:
        m = c.from_bytes(bytearray(data), "cpu", d, dtype if expect_dtype else None)
    except FrameError as e:
        assert str(e), "a FrameError names what is wrong"
        return "refused"
    assert m.d == d and (m.dtype == dtype or not expect_dtype)
    y = c.decode(m)
    assert y.shape == (d,) and y.dtype == m.dtype, (y.shape, y.dtype)
    assert bool(torch.isfinite(y).all()), f"decoded to non-finite values: {y}"
    out = torch.zeros(d, dtype=m.dtype)
    c.accumulate(m, out)
    assert torch.equal(out, y), "accumulate into zeros differs from decode"
    return "decoded"


def check_frame(sender: int, round: int | None, data: bytes) -> str:
    try:
        f = decode_frame(bytearray(data), sender, round)
    except FrameError as e:
        assert str(e)
        return "refused"
    assert isinstance(f.kind, Kind) and f.sender == sender and (round is None or f.round == round)
    assert isinstance(f.round, int) and not isinstance(f.round, bool) and isinstance(f.info, list)
    assert sum(len(p) for p in f.parts) <= len(data)
    return "decoded"


def fuzz(seeds: list, header_of, check) -> dict:
    """Runs hypothesis over mutations of seeds under the caps; returns the counts (and the failure)."""
    counts = {"cases": 0, "refused": 0, "decoded": 0}
    failure: list = []

    def alarm(signum, frame):
        raise CaseTimeout(f"case ran past {CASE_S} s")

    signal.signal(signal.SIGALRM, alarm)

    @settings(
        max_examples=EXAMPLES,
        deadline=DEADLINE_MS,
        derandomize=not LONG,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=mutated(header_of, seeds), expect_dtype=st.booleans())
    def run(case, expect_dtype):
        i, data = case
        counts["cases"] += 1
        signal.setitimer(signal.ITIMER_REAL, CASE_S)
        try:
            outcome = check(seeds[i], data, expect_dtype)
        except BaseException:
            failure[:] = [seeds[i], data, expect_dtype]
            raise
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        counts[outcome] += 1

    try:
        run()
    except BaseException:
        seed, data, expect_dtype = failure or (None, b"", None)
        where = f"d={seed[1]}, dtype={seed[2]}" if seed and len(seed) == 5 else f"frame seed {seed[:2] if seed else ''}"
        counts["error"] = (
            f"{traceback.format_exc(limit=-6)}\nfailing case ({where}, expect_dtype={expect_dtype}): {data.hex()}"
        )
    return counts


def in_child(fn, limit_s: float) -> dict:
    """fn() in a forked child with its address space capped at its current size plus MEMORY_CAP;
    its dict result, or an "error" entry when it failed, died or ran past limit_s."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(r)
        try:
            torch.set_num_threads(1)
            with open("/proc/self/statm") as f:
                size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            resource.setrlimit(resource.RLIMIT_AS, (size + MEMORY_CAP, resource.RLIM_INFINITY))
            result = fn()
        except BaseException:
            result = {"error": traceback.format_exc()}
        data = json.dumps(result).encode()
        while data:
            data = data[os.write(w, data) :]
        os._exit(0)
    os.close(w)
    chunks, end = [], time.monotonic() + limit_s
    try:
        while True:
            ready, _, _ = select.select([r], [], [], max(0.0, end - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return {"error": f"ran past {limit_s} s (a hang in compiled code?)"}
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(r)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        return {"error": f"the child died (wait status {status}): out of memory or a crash in compiled code"}
    return json.loads(b"".join(chunks))


def report(target: str, counts: dict) -> None:
    if LONG:
        print(f"\nfuzz {target}: {counts['cases']} cases, {counts['refused']} refused, {counts['decoded']} decoded")
        if "error" in counts:
            print("  " + "\n  ".join(line for line in counts["error"].splitlines()[-3:]))
    assert "error" not in counts, f"{target}: {counts['error']}"
    assert counts["cases"] >= EXAMPLES and counts["refused"] + counts["decoded"] == counts["cases"], counts


def known(spec: str):
    return pytest.param(spec, marks=pytest.mark.xfail(reason=KNOWN[spec], strict=False)) if spec in KNOWN else spec


@pytest.mark.parametrize("spec", [known(s) for s in SPECS])
def test_messages_are_refused_or_decode_finite(spec):
    report(spec, fuzz_messages(spec))


def fuzz_messages(spec: str) -> dict:
    seeds = message_seeds(spec)
    for c, d, _, fields, body in seeds:  # warm the kernels up before the fork: each child inherits them
        c.decode(c.from_bytes(message_header(fields) + body, "cpu", d))

    def check(seed, data, expect_dtype):
        c, d, dtype, _, _ = seed
        return check_message(c, d, dtype, data, expect_dtype)

    return in_child(lambda: fuzz(seeds, message_header, check), limit_s=60 + 0.5 * EXAMPLES)


def test_frames_are_refused_or_well_formed():
    seeds = frame_seeds()
    check = lambda seed, data, expect_dtype: check_frame(seed[0], seed[1], data)  # noqa: E731
    report("decode_frame", in_child(lambda: fuzz(seeds, frame_header, check), limit_s=60 + 0.5 * EXAMPLES))


def message(codec: str, d, dtype_code, *meta, body: bytes = b"") -> bytes:
    return msgpack.packb([codec, d, dtype_code, *meta]) + body


def f32(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


# (spec, bytes, expected d, expected dtype): each must be refused with a FrameError matching the last entry
ISSUE_EXAMPLES = [
    ("identity", message("identity", True, 0, body=f32(1)), None, None, "bad dimension True"),
    ("identity", message("identity", 1, {}, body=f32(1)), None, None, "bad dtype code"),
    ("identity", message("identity", 1, [0], body=f32(1)), 1, None, "bad dtype code"),
    ("identity", message("identity", 1, True, body=f32(1)), 1, None, "bad dtype code"),
    ("topk:k=1", message("topk", 4, 0, True, body=f32(1) + b"\0"), 4, None, "not an integer"),
    ("identity", message("identity", 2**63, 0), None, None, "above"),
    ("identity", message("identity", 2**64 - 1, 0), 4, None, "expected 4"),
    ("identity", message("identity", 1, 0, body=f32(1)), 1, torch.float64, "expected torch.float64"),
    ("hard_threshold:lam=1", message("hard_threshold", 2**27, 0, 0), 1000, None, "expected 1000"),
    ("hard_threshold:lam=1", message("hard_threshold", 2**40, 0, 0), None, None, "above"),
    ("qsgd:s=4,coding=elias", message("qsgd", 2**51, 0, 0, 0, body=f32(1)), None, None, "above"),
    ("bucket(scaled_sign, size=16)", message("bucket", 2**33, 0, body=bytes(12)), None, None, "above"),
    ("bucket(scaled_sign, size=16)", message("bucket", 2**31, 0, body=bytes(12)), None, None, "at least"),
    ("block_sign:bucket=20", message("block_sign", 2**31, 0, body=bytes(12)), None, None, "at least"),
    ("identity", message("identity", 1, 2, body=f32(1e5)), 1, None, r"non-finite value \(in float16\)"),
    ("bf16", message("bf16", 1, 2, body=b"\x00\x48"), 1, None, r"non-finite value \(in float16\)"),
    ("randk:k=1", message("randk", 4, 0, 1, 7, body=f32(1e38)), 4, None, "non-finite value"),
    ("randk:k=1", message("randk", 4, 2, 1, 7, body=f32(2e4)), 4, None, "non-finite value"),
    ("powersgd", message("powersgd", 4, 0, body=f32(1, 1e30, 1e30, 1)), 4, None, "exceed fp32"),
    ("topk_natural:k=1", message("topk_natural", 4, 2, 1, body=bytes([0x90, 0x01])), 4, None, "non-finite value"),
    ("spherical:block=4", message("spherical", 4, 2, 7, 1, body=f32(1e5) + b"\0"), 4, None, "bad block norm"),
    ("scaled_sign", message("scaled_sign", 8, 2, body=f32(1e5) + b"\0"), 8, None, "non-finite scale"),
]


def test_the_issues_examples_are_refused():
    """Each of the issue's crashes, bombs and decodes to Inf is a FrameError naming its cause, under the caps."""

    def run():
        import re

        wrong = []
        for spec, data, d, dtype, match in ISSUE_EXAMPLES:
            try:
                make(spec).from_bytes(data, "cpu", d, dtype)
                wrong.append(f"{spec}: accepted {data.hex()}")
            except FrameError as e:
                if not re.search(match, str(e)):
                    wrong.append(f"{spec}: {e!r} does not say {match!r}")
            except Exception as e:
                wrong.append(f"{spec}: {type(e).__name__}: {e}")
        return {"wrong": wrong}

    result = in_child(run, limit_s=60)
    assert result.get("wrong") == [], result
