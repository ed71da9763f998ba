"""Multi-rank tests, run by ``mpirun -n 3|5 python -m pytest --with-mpi tests/mpi``.

Every rank runs each test; results are combined with an Allreduce so that all ranks
pass or fail together (a rank that failed alone would hang the others' next collective).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from psgd import config
from psgd.runtime.server import ServerNode
from psgd.runtime.simulate import run_in_process
from psgd.runtime.transport import MPITransport
from psgd.runtime.worker import WorkerNode

MPI = pytest.importorskip("mpi4py.MPI")
pytestmark = pytest.mark.mpi(min_size=2)
CPU = torch.device("cpu")
CONFIGS = sorted(str(p) for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.toml"))


def agree(comm, ok: bool) -> bool:
    """True on every rank iff ok on every rank."""
    flag = np.array([1 if ok else 0], dtype=np.int32)
    comm.Allreduce(MPI.IN_PLACE, flag, op=MPI.MIN)
    return bool(flag[0])


def run_under_mpi(comm, cfg):
    """Rank 0 runs the server, the others are workers; returns the server's result on rank 0."""
    transport = MPITransport(comm)
    if comm.rank == 0:
        return ServerNode(cfg, comm.size - 1, CPU).run(transport)
    node = WorkerNode(cfg, comm.rank, comm.size - 1, CPU)
    while not node.done:
        reply = node.handle(transport.recv(0))
        if reply is not None:
            transport.send(0, reply)
    return None


def test_transport_moves_exact_bytes():
    comm = MPI.COMM_WORLD.Dup()
    transport, ok = MPITransport(comm), True
    sizes = [1, 7, 4096, 1 << 20]
    if comm.rank == 0:
        for w in range(1, comm.size):
            for n in sizes:
                transport.send(w, bytes([w % 256]) * n)
            got = [transport.recv(w) for _ in sizes]
            ok = ok and [len(g) for g in got] == sizes and all(set(g) == {(w + 1) % 256} for g in got)
    else:
        got = [transport.recv(0) for _ in sizes]
        ok = [len(g) for g in got] == sizes and all(set(g) == {comm.rank % 256} for g in got)
        for n in sizes:
            transport.send(0, bytes([(comm.rank + 1) % 256]) * n)
    assert agree(comm, ok)
    comm.Free()


@pytest.mark.parametrize("overrides", [[], ["method.uplink=scaled_sign", "method.downlink=identity"]])
def test_default_rules_under_mpi_equal_in_process(overrides):
    comm = MPI.COMM_WORLD.Dup()
    cfg = config.load(None, ["rounds=10", "eval_every=5", "device=cpu", *overrides])
    result, ok = run_under_mpi(comm, cfg), True
    if comm.rank == 0:
        _, sim = run_in_process(cfg, comm.size - 1)
        ok = len(result.rounds) == cfg.rounds == len(sim.rounds) and (
            [r["loss"] for r in result.rounds] == [r["loss"] for r in sim.rounds]
            and [r["bytes_up"] for r in result.rounds] == [r["bytes_up"] for r in sim.rounds]
            and result.summary == sim.summary
            and torch.equal(result.model, sim.model)
        )
    assert agree(comm, ok)
    comm.Free()


@pytest.mark.parametrize("path", CONFIGS, ids=[Path(p).stem for p in CONFIGS])
def test_every_config_under_mpi_equals_in_process(path):
    comm = MPI.COMM_WORLD.Dup()
    cfg = config.load(path, ["rounds=6", "eval_every=3", "device=cpu"])
    result, ok = run_under_mpi(comm, cfg), True
    if comm.rank == 0:
        _, sim = run_in_process(cfg, comm.size - 1)
        ok = result.summary == sim.summary and torch.equal(result.model, sim.model)
        ok = ok and len(result.rounds) == cfg.rounds == len(sim.rounds)
        ok = ok and [r["loss"] for r in result.rounds] == [r["loss"] for r in sim.rounds]
    assert agree(comm, ok)
    comm.Free()
