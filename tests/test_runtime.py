"""The in-process runtime: exact byte ledger, wire formulas, determinism, orderly failure."""

import math

import pytest
import torch

from psgd import config
from psgd.compress.topk import index_bits
from psgd.errors import FrameError, PsgdError
from psgd.runtime.frames import pack
from psgd.runtime.server import ServerNode
from psgd.runtime.simulate import run_in_process
from psgd.runtime.transport import LocalTransport
from psgd.runtime.worker import WorkerNode
from psgd.wire.frame import Kind

CPU = torch.device("cpu")


def small(*overrides):
    return config.load(None, ["rounds=12", "eval_every=6", "device=cpu", *overrides])


class CountingTransport(LocalTransport):
    """Counts what crosses, per worker and direction, independently of the server's ledger."""

    def __init__(self, workers, corrupt=None):
        super().__init__(workers)
        self.down = dict.fromkeys(workers, 0)
        self.up = dict.fromkeys(workers, 0)
        self.corrupt = corrupt or (lambda w, data: data)

    def send(self, dest, data):
        self.down[dest] += len(data)
        super().send(dest, data)

    def recv(self, source):
        data = self.corrupt(source, super().recv(source))
        self.up[source] += len(data)
        return data


def run(cfg, n, corrupt=None, checkpoint_path=None):
    workers = {r: WorkerNode(cfg, r, n, CPU) for r in range(1, n + 1)}
    transport = CountingTransport(workers, corrupt)
    server = ServerNode(cfg, n, CPU, checkpoint_path=checkpoint_path)
    return server, workers, transport, server.run(transport)


def test_ledger_totals_equal_what_the_transport_moved():
    server, workers, transport, result = run(small(), 3)
    assert result.summary["bytes_up"] == [transport.up[w] for w in (1, 2, 3)]
    assert result.summary["bytes_down"] == [transport.down[w] for w in (1, 2, 3)]
    for w in (1, 2, 3):  # worker-side counts agree with the server's
        assert workers[w].sent == transport.up[w] and workers[w].received == transport.down[w]
    bye, _ = pack(Kind.BYE, -1, 0, [0, ""])
    for i in range(3):
        rounds_down = sum(r["bytes_down"][i] for r in result.rounds)
        assert result.summary["bytes_down"][i] == rounds_down + len(bye)


def test_mpi_bytes_are_everything_that_crossed_checkpoints_and_evaluation_included(tmp_path):
    """LIEC between syncs fetches the workers' models to evaluate their average; checkpoints
    fetch their states: neither is training traffic, all of it crossed the wire."""
    method = ["method.name=liec", "method.uplink=scaled_sign", "method.downlink=scaled_sign", "method.period=5"]
    cfg = small(*method, "checkpoint_every=4", "eval_every=3")
    server, workers, transport, result = run(cfg, 2, checkpoint_path=tmp_path / "c.psgd")
    s = result.summary
    assert s["mpi_bytes_up"] == [transport.up[w] for w in (1, 2)]
    assert s["mpi_bytes_down"] == [transport.down[w] for w in (1, 2)]
    for key in ("checkpoint_bytes_up", "eval_bytes_up", "checkpoint_bytes_down", "eval_bytes_down"):
        assert min(s[key]) > 0, key
    for i in (0, 1):
        parts = ("bytes_up", "checkpoint_bytes_up", "eval_bytes_up")
        assert s["mpi_bytes_up"][i] == sum(s[k][i] for k in parts)
        assert s["bytes_up"][i] > sum(r["bytes_up"][i] for r in result.rounds)  # + the shut-down LEDGER frame
    for w in (1, 2):  # the workers' own counts of the side traffic agree (checked at shut-down too)
        assert workers[w].side_sent == s["checkpoint_bytes_up"][w - 1] + s["eval_bytes_up"][w - 1]


def test_round_bytes_match_the_compressors_formulas():
    cfg = small("method.uplink=topk:ratio=0.05", "method.downlink=scaled_sign")
    server, _, _, result = run(cfg, 2)
    d = server.task.dim
    k = math.ceil(0.05 * d)
    up_body = 4 * k + math.ceil(k * index_bits(d) / 8)  # k(32 + ceil(log2 d)) bits
    down_body = 4 + math.ceil(d / 8)  # d + 32 bits
    first, later = result.rounds[0], result.rounds[1:]
    assert first["bytes_down"][0] - first["header_down"][0] == 4 * d  # round 0 ships the fp32 model
    for r in result.rounds:
        assert r["bytes_up"][0] - r["header_up"][0] == up_body
        assert r["header_up"][0] < 100
    for r in later:
        assert r["bytes_down"][0] - r["header_down"][0] == down_body
        assert r["header_down"][0] <= 32


def test_runs_are_deterministic():
    a = run_in_process(small(), 2)[1]
    b = run_in_process(small(), 2)[1]
    assert [r["loss"] for r in a.rounds] == [r["loss"] for r in b.rounds]
    assert torch.equal(a.model, b.model)


def test_identity_uplink_is_plain_sgd_bytes():
    cfg = small("method.name=sgd", "method.uplink=identity", "method.downlink=identity", "method.momentum=0.0")
    server, _, _, result = run(cfg, 2)
    d = server.task.dim
    assert all(r["bytes_up"][0] - r["header_up"][0] == 4 * d for r in result.rounds)


def test_corrupted_frame_names_sender_and_round_and_ends_cleanly():

    state = {"n": 0}

    def flip(w, data):
        state["n"] += 1
        if w == 2 and state["n"] == 8:  # round 3's uplink from worker 2 (2 workers, in rank order)
            return data[:-3]
        return data

    with pytest.raises(FrameError, match=r"malformed frame from rank 2 in round 3"):
        run(small(), 2, corrupt=flip)


def test_workers_stop_after_a_failure(monkeypatch):
    cfg = small()
    workers = {r: WorkerNode(cfg, r, 2, CPU) for r in (1, 2)}

    def broken(x, sample=0):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(workers[1], "oracle", type("O", (), {"at_round": lambda self, t: broken, "last_loss": 0})())
    with pytest.raises(PsgdError, match="worker 1 failed in round 0: RuntimeError: disk on fire"):
        ServerNode(cfg, 2, CPU).run(LocalTransport(workers))
    assert all(w.done and w.exit_status == 2 for w in workers.values())


def test_default_job_reaches_the_accuracy_the_readme_promises():
    cfg = config.load(None, ["device=cpu"])
    _, result = run_in_process(cfg, 4)
    assert result.rounds[-1]["test_accuracy"] > 0.95  # README: "reaches > 0.95 test accuracy"
