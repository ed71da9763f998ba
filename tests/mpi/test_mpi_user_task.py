"""A user's task (tests/user_task, imported by task.name on every rank) under MPI equals its
in-process simulation: losses, bytes and metrics."""

import pytest
import torch

from psgd import config
from psgd.runtime.simulate import run_in_process
from tests.mpi.test_mpi_rules import MPI, agree, run_under_mpi

pytestmark = pytest.mark.mpi(min_size=2)


def test_a_user_task_under_mpi_equals_its_simulation():
    comm = MPI.COMM_WORLD.Dup()
    cfg = config.from_dict({
        "task": {"name": "tests.user_task.model:make_task", "batch_size": 16, "split": "dirichlet"},
        "method": {"name": "ef21", "uplink": "small_dense(topk:ratio=0.1, min_size=16)", "downlink": "identity",
                   "lr": 0.05},
        "rounds": 8, "eval_every": 4, "device": "cpu",
    })  # fmt: skip
    torch.set_num_threads(1)
    result, ok = run_under_mpi(comm, cfg), True
    if comm.rank == 0:
        _, sim = run_in_process(cfg, comm.size - 1)
        keys = ("loss", "bytes_up", "bytes_down", "test_loss", "test_accuracy")
        ok = [[r.get(k) for k in keys] for r in result.rounds] == [[r.get(k) for k in keys] for r in sim.rounds]
        ok = ok and len(result.rounds) == 8 and "test_accuracy" in result.rounds[-1]
    assert agree(comm, ok)
