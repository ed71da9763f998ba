"""Deferred body checks (compress.base.defer_on, runtime/aggregate.py): where the server's parse
defers (CUDA; forced here on the CPU), a message's checks of its values are 0-dim flags on its
device, read by Aggregator.read in one sync per round. A malformed message is still reported with
the checking parse's FrameError text, naming its sender and round; a valid round's sums are the
immediate path's floats, bit for bit; and the host reads per round are 1, not one per message."""

import itertools
import sys

import numpy as np
import pytest
import torch

import psgd.compress.base as base
from psgd import kernels
from psgd.compress import make
from psgd.compress.randk import shared_subset
from psgd.errors import FrameError
from psgd.kernels import np_view, sparse
from psgd.runtime.aggregate import Aggregator
from psgd.runtime.frames import pack, parse
from psgd.wire import decode_frame, pack_uint, unpack_uint
from psgd.wire.frame import Kind

D, N, ROUND = 1000, 4, 5


def nan_value(body: torch.Tensor) -> None:
    body.view(torch.float32)[D // 2] = float("nan")


def above_fp16(body: torch.Tensor) -> None:
    body.view(torch.float32)[D // 2] = 70000.0  # above 65504: Inf decoded to fp16


def fp16_inf(body: torch.Tensor) -> None:
    body.view(torch.float16)[D // 2] = float("inf")


def exponent_255(body: torch.Tensor) -> None:
    body[D // 2] = 255


def level_31(body: torch.Tensor) -> None:
    body[4:10] = 0xFF  # eight 6-bit codes of level 31 > s = 16


# (spec, the dtype messages decode to, a corruption of one body, the checking parse's text)
MALFORMED = [
    ("identity", torch.float32, nan_value, "identity: non-finite value"),
    ("identity", torch.float16, above_fp16, "identity: non-finite value (in float16)"),
    ("fp16", torch.float32, fp16_inf, "fp16: non-finite value (in fp32)"),
    ("natural", torch.float32, exponent_255, "natural: exponent field 255 beyond fp32"),
    ("qsgd:s=16", torch.float32, level_31, "qsgd: level above s = 16"),
]
# the codecs whose server path reads nothing per message on the device (their scalars are read
# from the bytes as received; sign's scales too, but as a host tensor, which a CPU count cannot tell)
SYNC_FREE = ["identity", "fp16", "bf16", "natural", "qsgd:s=16", "terngrad", "natural_dither"]
VALID = [*SYNC_FREE, "scaled_sign", "topk:ratio=0.05", "randk:ratio=0.1"]
VALID += ["topk_natural:ratio=0.05", "topk_dither:ratio=0.05,s=8"]


@pytest.fixture
def deferring(monkeypatch):
    """The CUDA server's parse on the CPU: every check_body=False parse defers."""
    monkeypatch.setattr(base, "defer_on", lambda device: True)


def frames(
    spec: str, dtype: torch.dtype, bad: tuple = (), device: str = "cpu", shared: bool = False
) -> list[bytearray]:
    """N workers' uplink frames of round ROUND (rank w's at index w - 1); ``bad``: (sender, corruption);
    ``shared``: the workers' generators alike (rand-k's shared seed)."""
    c, out = make(spec), []
    for w in range(1, N + 1):
        x = torch.randn(D, generator=torch.Generator().manual_seed(w)).to(dtype).to(device)
        m = c.encode(x, torch.Generator().manual_seed(0 if shared else w))
        m = c.from_bytes(m.to_bytes(), d=D)  # a CPU body to corrupt
        if bad and bad[0] == w:
            bad[1](m.body)
        out.append(bytearray(pack(Kind.UP, ROUND, w, [], [m])[0]))
    return out


def received(spec: str, dtype: torch.dtype, data: bytearray, w: int, device: str = "cpu"):
    frame = decode_frame(data, sender=w, round=ROUND)
    return parse(frame, [make(spec)], torch.device(device), D, dtype, check_body=False)[0]


def summed(spec: str, dtype: torch.dtype, raw: list, order, device: str = "cpu") -> torch.Tensor:
    agg = Aggregator(N, D, dtype, torch.device(device))
    agg.start([make(spec)], ROUND)
    for w in order:
        agg.add(w, received(spec, dtype, raw[w - 1], w, device))
    return agg.read(sums=True)[0].clone()


@pytest.mark.parametrize("sender", [1, 3])
@pytest.mark.parametrize("spec,dtype,corrupt,text", MALFORMED)
def test_a_malformed_message_is_reported_by_read_as_the_checking_parse_does(
    deferring, spec, dtype, corrupt, text, sender
):
    raw = frames(spec, dtype, (sender, corrupt))
    want = f"malformed frame from rank {sender} in round {ROUND}: {text}"
    with pytest.raises(FrameError) as checked:
        parse(decode_frame(raw[sender - 1], sender=sender, round=ROUND), [make(spec)], "cpu", D, dtype)
    assert str(checked.value) == want
    m = received(spec, dtype, raw[sender - 1], sender)[0]
    assert m.deferred and not m.unchecked  # recorded, not left to the add
    for order in itertools.permutations(range(1, N + 1)):
        agg = Aggregator(N, D, dtype, torch.device("cpu"))
        agg.start([make(spec)], ROUND)
        for w in order:
            agg.add(w, received(spec, dtype, raw[w - 1], w))  # nothing raised while adding
        with pytest.raises(FrameError) as deferred:
            agg.read()
        assert str(deferred.value) == want, order


def test_the_first_sender_in_rank_order_is_named_when_two_fail(deferring):
    raw = frames("natural", torch.float32, (2, exponent_255))
    raw[3] = frames("natural", torch.float32, (4, exponent_255))[3]
    with pytest.raises(FrameError, match="from rank 2 in round 5: natural: exponent field 255"):
        summed("natural", torch.float32, raw, [4, 3, 2, 1])


@pytest.mark.parametrize("spec", VALID)
def test_a_valid_round_sums_the_immediate_paths_floats(monkeypatch, spec):
    dtype = torch.float32
    raw = frames(spec, dtype)
    want = summed(spec, dtype, raw, range(1, N + 1))
    monkeypatch.setattr(base, "defer_on", lambda device: True)
    assert torch.equal(summed(spec, dtype, raw, [3, 1, 4, 2]), want)


@pytest.mark.parametrize("spec", SYNC_FREE)
def test_a_round_reads_the_device_once_not_once_per_message(deferring, monkeypatch, spec):
    assert round_reads(monkeypatch, spec, "cpu") <= 1


def round_reads(monkeypatch, spec: str, device: str, shared: bool = False, draws: int = 0) -> int:
    """Tensor reads to the host while a round of 2N messages is parsed, added and read: 1 where the
    messages recorded checks, else 0, after one per rand-k subset drawn in torch (``draws``;
    asserted). With compiled CPU kernels, their own conversions of 0-dim arguments (psgd.kernels,
    a path CUDA does not take) are not counted; with PSGD_KERNELS=reference every read is, the
    torch kernels' too (CUDA's path)."""
    raw, reads = frames(spec, torch.float32, shared=shared), []
    shared_subset.cache_clear()  # the round's draws are its own, not the frames' parse's

    def counted(real, name):
        def read(t):
            if (
                device != "cpu"
                or not kernels.enabled()
                or not sys._getframe(1).f_globals["__name__"].startswith("psgd.kernels")
            ):
                reads.append(name)
            return real(t)

        return read

    for name in ("item", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name), name))
    agg = Aggregator(N, D, torch.float32, torch.device(device))
    agg.start([make(spec), make(spec)], ROUND)  # two parts per uplink: 2N messages
    deferred = 0
    for w in range(1, N + 1):
        ms = received(spec, torch.float32, raw[w - 1], w) + received(spec, torch.float32, raw[w - 1], w)
        deferred += sum(len(m.deferred) for m in ms)
        agg.add(w, ms)
    agg.read()
    assert reads == ["__int__"] * draws + (["__bool__"] if deferred else []), spec
    assert deferred == 0 or deferred >= 2 * N  # each message's check was recorded
    return len(reads)


def out_of_range(idx: torch.Tensor) -> None:
    idx[-1] = 2**10 - 1  # the widest 10-bit index, >= D


def repeated(idx: torch.Tensor) -> None:
    idx[5] = idx[4]


def repeated_then_out_of_range(idx: torch.Tensor) -> None:
    """Two faults: the first in index order is the one reported."""
    repeated(idx)
    out_of_range(idx)


def sent_indices(k: int, edit):
    """A corruption of a sparse body's k packed indices (10 bits each for d = D)."""

    def corrupt(body: torch.Tensor) -> None:
        idx = unpack_uint(body[4 * k :], k, 10)
        edit(idx)
        body[4 * k :] = pack_uint(idx, 10)

    return corrupt


SPARSE = [("topk:ratio=0.05", 50), ("randk:ratio=0.1,shared_seed=false", 100)]
# (spec, a corruption of its sent indices, the checking parse's text)
BAD_INDICES = [
    (spec, sent_indices(k, edit), f"{spec.split(':')[0]}: {text}")
    for spec, k in SPARSE
    for edit, text in [
        (out_of_range, f"index out of range for d={D}"),
        (repeated, "indices not strictly ascending"),
        (repeated_then_out_of_range, "indices not strictly ascending"),
    ]
]


@pytest.fixture
def torch_kernels(monkeypatch):
    """The torch kernels, CUDA's path, on the CPU."""
    monkeypatch.setenv("PSGD_KERNELS", "reference")


@pytest.mark.parametrize("sender", [1, 3])
@pytest.mark.parametrize("spec,corrupt,text", BAD_INDICES)
def test_bad_sent_indices_are_reported_by_read_as_the_checking_parse(monkeypatch, spec, corrupt, text, sender):
    raw = frames(spec, torch.float32, (sender, corrupt))
    want = f"malformed frame from rank {sender} in round {ROUND}: {text}"
    for env in ("", "reference"):  # the compiled kernel and the torch path check alike
        monkeypatch.setenv("PSGD_KERNELS", env)
        with pytest.raises(FrameError) as checked:
            parse(decode_frame(raw[sender - 1], sender=sender, round=ROUND), [make(spec)], "cpu", D, torch.float32)
        assert str(checked.value) == want
    monkeypatch.setattr(base, "defer_on", lambda device: True)
    assert len(received(spec, torch.float32, raw[sender - 1], sender)[0].deferred) == 2  # indices, values
    for order in ([1, 2, 3, 4], [4, 3, 2, 1], [3, 1, 4, 2]):
        with pytest.raises(FrameError) as deferred:
            summed(spec, torch.float32, raw, order)  # the indices scattered before the read stay in range
        assert str(deferred.value) == want, order


@pytest.mark.parametrize("spec", [s for s, _ in SPARSE] + ["randk:ratio=0.1", "randk:ratio=0.6,scaled=false"])
def test_a_valid_sparse_round_on_the_torch_path_sums_the_immediate_paths_floats(monkeypatch, spec):
    raw = frames(spec, torch.float32, shared=True)
    want = summed(spec, torch.float32, raw, range(1, N + 1))
    monkeypatch.setenv("PSGD_KERNELS", "reference")
    monkeypatch.setattr(base, "defer_on", lambda device: True)
    assert torch.equal(summed(spec, torch.float32, raw, [3, 1, 4, 2]), want)


def test_index_status_is_the_compiled_kernels_status():
    """The torch path's status (a device flag) is the compiled kernel's: the first failing index decides."""
    g = torch.Generator().manual_seed(0)
    for trial in range(500):
        n, d = int(torch.randint(1, 40, (), generator=g)), int(torch.randint(1, 64, (), generator=g))
        idx = torch.randint(0, 64, (n,), generator=g)
        if trial % 2:  # ascending and distinct: only an index >= d fails
            idx = torch.randperm(64, generator=g)[:n].sort().values
        packed = sparse.pack(idx, 6)
        status = sparse._unpack_indices(np_view(packed), n, 6, 0, d, np.empty(n, np.int64), np.empty(0, np.int64))
        assert int(sparse.index_status(idx, d)) == status, (idx.tolist(), d)


@pytest.mark.parametrize("spec", [s for s, _ in SPARSE])
def test_a_sparse_round_on_the_torch_path_reads_the_device_once(deferring, torch_kernels, monkeypatch, spec):
    assert round_reads(monkeypatch, spec, "cpu") == 1


@pytest.mark.parametrize("spec", ["randk:ratio=0.1", "randk:ratio=0.6"])
def test_a_shared_seed_round_draws_its_subset_once(deferring, torch_kernels, monkeypatch, spec):
    """2N messages of one seed: one draw (its one read), then the round's one read of the checks."""
    assert round_reads(monkeypatch, spec, "cpu", shared=True, draws=1) == 2
