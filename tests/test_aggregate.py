"""The server's running aggregate (runtime/aggregate.py): the mean of the workers' decoded
uplinks, the same floats whatever order the frames land in, and equal to the plain rank-order
mean of decode(m_i), ((0 + c_1) + c_2 + ...) / n; the sum the same floats before the division (a
rule that reads it, EF14's, forms e + s / n: the floats of e + mean); rand-k messages from one
shared seed are summed on their support first; a non-finite value left unchecked by the parse is
refused as it is added, naming its sender."""

import itertools
from copy import deepcopy

import pytest
import torch

from psgd.compress import make
from psgd.errors import FrameError
from psgd.methods import Context, build
from psgd.methods.ef14 import EF14Options
from psgd.methods.sgd import mean
from psgd.runtime.aggregate import Aggregator
from psgd.runtime.frames import pack, parse
from psgd.wire import decode_frame
from psgd.wire.frame import Kind

D, N = 1000, 4
SPECS = ["identity", "scaled_sign", "natural", "qsgd:s=16", "topk:ratio=0.05", "randk:ratio=0.1", "fp16"]


def messages(spec: str, shared: bool, check_body: bool = True) -> list:
    """N workers' messages; with shared, rand-k draws every worker's indices from one seed;
    check_body=False parses as the server does."""
    c = make(spec)
    xs = [torch.randn(D, generator=torch.Generator().manual_seed(10 + w)) for w in range(N)]
    gens = [torch.Generator().manual_seed(0 if shared else w) for w in range(N)]
    raw = [c.encode(x, g).to_bytes() for x, g in zip(xs, gens, strict=True)]
    return [c.from_bytes(bytearray(b), d=D, check_body=check_body) for b in raw]


def aggregate(spec: str, ms: list, order, sums: bool = False) -> torch.Tensor:
    agg = Aggregator(N, D, torch.float32, torch.device("cpu"))
    agg.start([make(spec), make(spec)], 0)
    for w in order:
        agg.add(w + 1, [ms[w], ms[(w + 1) % N]])  # two parts per uplink
    first, second = agg.read(sums)
    return first.clone(), second.clone()


@pytest.mark.parametrize("check_body", [True, False])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("spec", SPECS)
def test_any_arrival_order_gives_the_rank_order_mean_bit_for_bit(spec, shared, check_body):
    c, ms = make(spec), messages(spec, shared, check_body)
    want = mean([c.decode(m) for m in messages(spec, shared)])
    want2 = mean([c.decode(ms[(w + 1) % N]) for w in range(N)])
    for order in itertools.permutations(range(N)):
        got, got2 = aggregate(spec, ms, order)
        assert torch.equal(got, want) and torch.equal(got2, want2), (spec, order)
        total, _ = aggregate(spec, ms, order, sums=True)
        assert torch.equal(total / N, want), (spec, order)


@pytest.mark.parametrize("downlink", ["natural", "identity"])
@pytest.mark.parametrize("n", [1, 3, 4, 7])
def test_ef14_reads_the_sum_and_steps_as_on_the_mean(downlink, n):
    """EF14's server rule divides the sum as it adds it to its error: e + s / n, the floats of e + mean,
    so its error, downlink and model are those of the rule on the mean, bit for bit."""
    d, g = 5000, torch.Generator().manual_seed(n)
    method = build(EF14Options(uplink="natural", downlink=downlink, lr=0.1))
    assert method.reads_sums
    ctx = Context(0, 0, n, 0, torch.device("cpu"))
    state, _ = method.server_init(torch.randn(d, generator=g), ctx)
    if state.global_error is not None:
        state.global_error.copy_(torch.randn(d, generator=g))
    s = torch.randn(d, generator=g) * n
    e0, x0, opt, mean = state.global_error, state.x.clone(), deepcopy(state.opt), s / n
    v = mean if e0 is None else e0 + mean  # the rule on the mean, written out
    want, q = method.downlink.encode_reconstruct(v.clone(), ctx.rng("downlink", shared=True))
    (got,) = method.server_step(state, [s.clone()], ctx)
    assert got.to_bytes() == want.to_bytes()
    assert e0 is None or torch.equal(state.global_error, v - q)
    opt.step(x0, q, 0.1)
    assert torch.equal(state.x, x0)


def test_shared_seed_randk_is_summed_on_its_support_and_scattered_once(monkeypatch):
    c = make("randk:ratio=0.1")
    ms = messages("randk:ratio=0.1", shared=True)
    assert len({c.support(m) for m in ms}) == 1 and make("identity").support(messages("identity", False)[0]) is None
    scatters = []
    real = type(c).scatter_values
    monkeypatch.setattr(type(c), "scatter_values", lambda self, m, v, out: (scatters.append(1), real(self, m, v, out)))
    agg = Aggregator(N, D, torch.float32, torch.device("cpu"))
    agg.start([c], 0)
    for w, m in enumerate(ms, start=1):
        agg.add(w, [m])
    assert torch.equal(agg.read()[0], mean([c.decode(m) for m in ms])) and len(scatters) == 1


def test_reading_before_every_worker_is_in_is_refused():
    agg = Aggregator(N, D, torch.float32, torch.device("cpu"))
    agg.start([make("identity")], 0)
    agg.add(2, messages("identity", False)[:1])  # rank 1 missing: nothing can be added yet
    with pytest.raises(RuntimeError, match="0 of 4 workers in"):
        agg.read()


def nan(body: torch.Tensor) -> None:
    body.view(torch.float32)[D // 2] = float("nan")


def inf(body: torch.Tensor) -> None:
    body.view(torch.float32)[D // 2] = float("inf")


def level_31(body: torch.Tensor) -> None:
    body[4 + D // 2] = 0xFF  # a 6-bit code of all ones: level 31 > s = 16


@pytest.mark.parametrize("sender", [1, 2, 3, 4])  # first or second of a pair added in one pass, or alone
@pytest.mark.parametrize(
    ("spec", "damage", "text"),
    [
        ("identity", nan, "identity: non-finite value"),
        ("identity", inf, "identity: non-finite value"),
        ("qsgd:s=16", level_31, "qsgd: level above s = 16"),
    ],
)
def test_a_bad_uplink_is_refused_naming_its_sender_in_any_arrival_order(spec, damage, text, sender):
    """The server leaves identity's finiteness and dithering's levels to the add (frames.parse(check_body=False)):
    the error is the one the checking parse gives, naming the sender, whichever frame lands last and
    whether its message is added alone or in one pass with another's (Aggregator pairs them)."""
    c = make(spec)
    frames = []
    for w in range(1, N + 1):
        x = torch.randn(D, generator=torch.Generator().manual_seed(w))
        m = c.encode(x, torch.Generator().manual_seed(w))
        if w == sender:
            damage(m.body)
        frames.append(bytearray(pack(Kind.UP, 5, w, [], [m])[0]))
    with pytest.raises(FrameError) as checked:
        parse(decode_frame(bytes(frames[sender - 1]), sender=sender, round=5), [c], "cpu", D, torch.float32)
    assert str(checked.value) == f"malformed frame from rank {sender} in round 5: {text}"
    for order in itertools.permutations(range(1, N + 1)):
        agg = Aggregator(N, D, torch.float32, torch.device("cpu"))
        agg.start([c], 5)
        with pytest.raises(FrameError) as added:
            for w in order:
                frame = decode_frame(frames[w - 1], sender=w, round=5)
                agg.add(w, parse(frame, [c], "cpu", D, torch.float32, check_body=False)[0])
        assert str(added.value) == str(checked.value), order


@pytest.mark.parametrize(("n", "pairs", "singles"), [(1, 0, 1), (2, 1, 0), (3, 1, 1), (4, 2, 0), (5, 2, 1)])
def test_frames_in_rank_order_are_added_two_at_a_time(n, pairs, singles, monkeypatch):
    """A lone ready rank waits for the next one, so in-order arrivals still make pairs (one pass over
    the aggregate for two uplinks); the last rank is added as it lands."""
    calls = {"pair": 0, "single": 0}
    c = make("qsgd:s=16")
    monkeypatch.setattr(
        type(c), "_add_pair", lambda self, a, b, out, start: calls.__setitem__("pair", calls["pair"] + 1)
    )
    single = type(c)._accumulate
    monkeypatch.setattr(
        type(c), "_accumulate", lambda *a: (calls.__setitem__("single", calls["single"] + 1), single(*a))
    )
    monkeypatch.setattr(type(c), "_decode_into", lambda self, m, out: calls.__setitem__("single", calls["single"] + 1))
    agg = Aggregator(n, D, torch.float32, torch.device("cpu"))
    agg.start([c], 0)
    m = c.encode(torch.randn(D))
    for w in range(1, n + 1):
        agg.add(w, [m])
        assert calls["pair"] + calls["single"] <= w  # nothing added twice, nothing before its turn
    assert calls == {"pair": pairs, "single": singles}


@pytest.mark.parametrize("bad", [1, 2])
def test_a_pair_without_a_pair_kernel_names_the_message_that_failed(bad, monkeypatch):
    """Two messages of a codec with no pair kernel are added one after the other; whichever breaks
    (here: its decode raises), the sender named is its own, found by check_body (a decode alone)."""
    c = make("topk:ratio=0.05")
    ms = messages("topk:ratio=0.05", False)[:2]
    broken = ms[bad - 1]
    real = type(c)._decode
    monkeypatch.setattr(
        type(c),
        "_decode",
        lambda self, m: (_ for _ in ()).throw(ValueError("broken")) if m is broken else real(self, m),
    )
    monkeypatch.setattr(type(c), "_accumulate", lambda self, m, out, w: out.add_(self._decode(m), alpha=w))
    monkeypatch.setattr(type(c), "_decode_into", lambda self, m, out: out.copy_(self._decode(m)))
    agg = Aggregator(2, D, torch.float32, torch.device("cpu"))
    agg.start([c], 7)
    agg.add(1, [ms[0]])
    text = f"malformed frame from rank {bad} in round 7: topk:ratio=0.05: ValueError: broken"
    with pytest.raises(FrameError, match=text):
        agg.add(2, [ms[1]])
