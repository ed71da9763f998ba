"""runtime.clock.now: a synchronise before the read on CUDA, a plain read elsewhere."""

import torch

from psgd.runtime import clock


def test_now_reads_perf_counter_on_the_cpu(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", calls.append)
    a = clock.now("cpu")
    b = clock.now(torch.device("cpu"))
    assert a <= b and not calls


def test_now_synchronises_cuda_before_reading(monkeypatch):
    events = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device: events.append(("sync", device)))
    monkeypatch.setattr(clock.time, "perf_counter", lambda: events.append(("read", None)) or 1.5)
    assert clock.now("cuda:0") == 1.5
    assert events == [("sync", torch.device("cuda:0")), ("read", None)]
