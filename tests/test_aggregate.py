"""The server's running aggregate (runtime/aggregate.py): the mean of the workers' decoded
uplinks, the same floats whatever order the frames land in, and equal to the plain rank-order
mean of decode(m_i); rand-k messages from one shared seed are summed on their support first."""

import itertools

import pytest
import torch

from psgd.compress import make
from psgd.methods.sgd import mean
from psgd.runtime.aggregate import Aggregator

D, N = 1000, 4
SPECS = ["identity", "scaled_sign", "natural", "qsgd:s=16", "topk:ratio=0.05", "randk:ratio=0.1", "fp16"]


def messages(spec: str, shared: bool) -> list:
    """N workers' messages; with shared, rand-k draws every worker's indices from one seed."""
    c = make(spec)
    xs = [torch.randn(D, generator=torch.Generator().manual_seed(10 + w)) for w in range(N)]
    gens = [torch.Generator().manual_seed(0 if shared else w) for w in range(N)]
    return [c.from_bytes(c.encode(x, g).to_bytes(), d=D) for x, g in zip(xs, gens, strict=True)]


def aggregate(spec: str, ms: list, order) -> torch.Tensor:
    agg = Aggregator(N, D, torch.float32, torch.device("cpu"))
    agg.start([make(spec), make(spec)])
    for w in order:
        agg.add(w + 1, [ms[w], ms[(w + 1) % N]])  # two parts per uplink
    first, second = agg.means()
    return first.clone(), second.clone()


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("spec", SPECS)
def test_any_arrival_order_gives_the_rank_order_mean_bit_for_bit(spec, shared):
    c, ms = make(spec), messages(spec, shared)
    want = mean([c.decode(m) for m in ms])
    want2 = mean([c.decode(ms[(w + 1) % N]) for w in range(N)])
    for order in itertools.permutations(range(N)):
        got, got2 = aggregate(spec, ms, order)
        assert torch.equal(got, want) and torch.equal(got2, want2), (spec, order)


def test_shared_seed_randk_is_summed_on_its_support_and_scattered_once(monkeypatch):
    c = make("randk:ratio=0.1")
    ms = messages("randk:ratio=0.1", shared=True)
    assert len({c.support(m) for m in ms}) == 1 and make("identity").support(messages("identity", False)[0]) is None
    scatters = []
    real = type(c).scatter_values
    monkeypatch.setattr(type(c), "scatter_values", lambda self, m, v, out: (scatters.append(1), real(self, m, v, out)))
    agg = Aggregator(N, D, torch.float32, torch.device("cpu"))
    agg.start([c])
    for w, m in enumerate(ms, start=1):
        agg.add(w, [m])
    assert torch.equal(agg.means()[0], mean([c.decode(m) for m in ms])) and len(scatters) == 1


def test_reading_before_every_worker_is_in_is_refused():
    agg = Aggregator(N, D, torch.float32, torch.device("cpu"))
    agg.start([make("identity")])
    agg.add(2, messages("identity", False)[:1])  # rank 1 missing: nothing can be added yet
    with pytest.raises(RuntimeError, match="0 of 4 workers in"):
        agg.means()
