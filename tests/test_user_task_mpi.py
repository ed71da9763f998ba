"""A user's script under mpirun (tests/user_task/script.py calls psgd.main): the same job as
its --simulate twin, and a bad import path, a forward pass failing on one worker and a
malformed .npz each end every rank with one message naming the rank, exit 2, no hang."""

import json

import numpy as np
import pytest

from tests.mpi_launch import launch, mpirun

pytestmark = pytest.mark.skipif(mpirun() is None, reason="no mpirun on PATH or in the venv")
SCRIPT = "tests/user_task/script.py"
SETS = ["rounds=6", "eval_every=3", "device=cpu", "method.name=ef21", "method.uplink=topk:ratio=0.1",
        "method.downlink=identity", "method.lr=0.05"]  # fmt: skip
JOB = ["--quiet", *(a for s in SETS for a in ("--set", s))]


def errors(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("psgd: error")]


def test_a_users_script_under_mpirun_equals_its_simulation(tmp_path):
    mpi = launch(3, [SCRIPT, *JOB, "--out", str(tmp_path / "mpi")], timeout=180)
    assert mpi.returncode == 0, mpi.stderr
    sim = launch(1, [SCRIPT, *JOB, "--simulate", "2", "--out", str(tmp_path / "sim")], timeout=180)
    assert sim.returncode == 0, sim.stderr
    a, b = ([json.loads(x) for x in (tmp_path / p / "rounds.jsonl").read_text().splitlines()] for p in ("mpi", "sim"))
    keys = ("loss", "bytes_up", "bytes_down", "test_loss", "test_accuracy")
    assert len(a) == 6 and [[r.get(k) for k in keys] for r in a] == [[r.get(k) for k in keys] for r in b]
    assert 'name = "tests.user_task.model:make_task"' in (tmp_path / "mpi" / "config.toml").read_text()


def test_failures_end_every_rank_with_one_message(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((8, 2), np.float32), y_train=np.arange(8), x_test=np.zeros((4, 2), np.float32))
    cases = [
        (["--set", "task.name=no_such_module:make_task"], "no module named 'no_such_module'", "(also on ranks 1, 2)"),
        (["--set", "task.name=npz", "--set", f"task.path={bad}"], "missing y_test", "(also on ranks 1, 2)"),
        (["--set", "task.name=tests.user_task.model:make_failing_task", "--set", "task.split=label_skew"],
         "worker 2 failed in round 0: RuntimeError: this batch breaks the model", ""),
    ]  # fmt: skip
    for i, (args, message, ranks) in enumerate(cases):
        proc = launch(3, ["-m", "psgd.train", *JOB, *args, "--out", str(tmp_path / str(i))], timeout=120)
        assert proc.returncode == 2 and len(errors(proc)) == 1, proc.stderr
        assert message in errors(proc)[0] and ranks in errors(proc)[0], proc.stderr
        assert ranks == "" or not (tmp_path / str(i)).exists()  # a job that fails to set up leaves no folder
