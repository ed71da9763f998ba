"""Whole jobs under mpirun (3 and 5 ranks): identical to the in-process simulation,
bytes equal to what MPI moved, and bad input ends every rank with one message and exit 2."""

import json
import os
import time

import pytest

from psgd.runtime import checkpoint
from tests.mpi_launch import launch, mpirun

pytestmark = pytest.mark.skipif(mpirun() is None, reason="no mpirun on PATH or in the venv")


def records(folder):
    return [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "ranks, extra",
    [
        (5, []),
        (
            3,
            [
                *("--set", "method.uplink=scaled_sign"),
                *("--set", "method.downlink=topk:ratio=0.2"),
                *("--set", "task.split=label_skew"),
            ],
        ),
        (3, ["--link", "bandwidth=100Mbit,latency=20ms"]),
    ],
)
def test_mpi_run_equals_simulation(ranks, extra, tmp_path):
    common = ["--set", "rounds=25", "--set", "eval_every=10", "--set", "device=cpu", *extra]
    mpi = launch(ranks, ["-m", "psgd.train", "--out", str(tmp_path / "mpi"), *common])
    assert mpi.returncode == 0, mpi.stderr
    sim = launch(1, ["-m", "psgd.train", "--simulate", str(ranks - 1), "--out", str(tmp_path / "sim"), *common])
    assert sim.returncode == 0, sim.stderr
    a, b = records(tmp_path / "mpi"), records(tmp_path / "sim")
    assert len(a) == 25
    if "--link" in extra:  # the server's link holds each of 2 workers' frames both ways: >= 20 ms each
        assert a[-1]["time_s"] >= 25 * 2 * 2 * 0.02 and b[-1]["time_s"] >= 25 * 2 * 2 * 0.02
    for x, y in zip(a, b, strict=True):
        assert x["loss"] == y["loss"]
        for key in ("bytes_up", "bytes_down", "header_up", "header_down"):
            assert x[key] == y[key]
        assert x.get("test_accuracy") == y.get("test_accuracy")
    sa = json.loads((tmp_path / "mpi" / "summary.json").read_text())
    sb = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert sa["mode"] == "mpi" and sa["world_size"] == ranks
    assert sa["bytes_up"] == sb["bytes_up"] and sa["bytes_down"] == sb["bytes_down"]
    assert sa["final_metrics"] == sb["final_metrics"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "bogus=1"], "unknown key 'bogus'"),
        (["--set", "method.uplink=nope"], "unknown compressor 'nope'"),
        (["missing.toml"], "config file not found"),
    ],
)
def test_bad_input_under_mpi_exits_2_with_one_message(args, message, tmp_path):
    proc = launch(3, ["-m", "psgd.train", "--out", str(tmp_path / "x"), *args], timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("psgd: error")]
    assert len(errors) == 1 and message in errors[0], proc.stderr


def test_a_failed_set_up_is_one_message_from_rank_0_and_leaves_no_folder(tmp_path):
    config = tmp_path / "cifar.toml"
    config.write_text(
        f'name = "c"\n[task]\nname = "cifar"\ndata_dir = "{tmp_path / "nowhere"}"\n[method]\nname = "sgd"\n'
    )
    proc = launch(3, ["-m", "psgd.train", str(config), "--out", str(tmp_path / "x")], timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("psgd: error")]
    assert len(errors) == 1 and "no such folder" in errors[0] and "(also on ranks 1, 2)" in errors[0], proc.stderr
    assert not (tmp_path / "x").exists()


def test_world_size_one_is_refused(tmp_path):
    proc = launch(1, ["-m", "psgd.train", "--out", str(tmp_path / "x")], timeout=120)
    assert proc.returncode == 2
    assert "world size 1" in proc.stderr


@pytest.mark.parametrize(
    "fault, uplink",
    [
        ("truncate", "topk:ratio=0.05"),
        ("dtype", "topk:ratio=0.05"),
        ("info", "topk:ratio=0.05"),
        ("kind", "topk:ratio=0.05"),
        ("layers", "per_layer(topk:ratio=0.05)"),
    ],
)
def test_corrupted_frame_under_mpi(fault, uplink, tmp_path, monkeypatch):
    """Any damage to an uplink ends the job with one message naming rank and round: no hang."""
    monkeypatch.setenv("PSGD_FAULT", fault)
    args = ["--out", str(tmp_path / "x"), "--set", "rounds=10", "--set", f"method.uplink={uplink}"]
    proc = launch(3, ["tests/mpi_fault.py", *args], timeout=120)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("psgd: error")]
    assert len(errors) == 1 and "malformed frame from rank 2 in round 3" in errors[0], proc.stderr
    assert len(records(tmp_path / "x")) == 3  # rounds 0..2 were logged before the failure


@pytest.mark.parametrize("how", ["sleep", "stop", "server"])
def test_a_stalled_rank_ends_the_job_with_one_message(how, tmp_path, monkeypatch):
    """A worker that sleeps or is stopped (SIGSTOP) in round 3, or a server that goes silent: after
    timeout_s the job ends, exit status 2, one message naming the rank and round, no hang; the
    checkpoint written before the stall stays loadable."""
    monkeypatch.setenv("PSGD_STALL", how)
    out = tmp_path / "x"
    args = ["--out", str(out), "--set", "rounds=10", "--set", "timeout_s=4", "--set", "checkpoint_every=2"]
    t0 = time.monotonic()
    proc = launch(3, ["tests/mpi_stall.py", *args], timeout=100)
    assert time.monotonic() - t0 < 60, "the job outlived its timeout by far"
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("psgd: error")]
    assert len(errors) == 1, proc.stderr
    if how == "server":
        assert "the server (rank 0) sent nothing for 8 s after round 2" in errors[0]  # workers wait 2x
    else:
        assert "rank 2 sent nothing for 4 s in round 3" in errors[0]
        assert "continue with --resume" in errors[0]
    tensors, meta = checkpoint.load(out / "checkpoint.psgd")
    assert meta["round"] == 2


def test_sigusr1_to_mpirun_checkpoints_at_the_round_boundary_and_exits_3(tmp_path):
    """mpirun forwards SIGUSR1 to every rank: the server ends the round in flight, checkpoints it
    (nothing logged is lost) and every rank exits 3; --resume finishes the run."""
    import signal
    import subprocess
    import sys

    from tests.mpi_launch import ROOT

    out = tmp_path / "x"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = ["-m", "psgd.train", "--out", str(out), "--quiet", "--set", "rounds=100000", "--set", "eval_every=100000"]
    proc = subprocess.Popen(
        [mpirun(), "-n", "3", sys.executable, *args], cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 90
        while not ((out / "rounds.jsonl").exists() and len((out / "rounds.jsonl").read_text().splitlines()) >= 20):
            assert time.monotonic() < deadline and proc.poll() is None, "the job did not start"
            time.sleep(0.2)
        proc.send_signal(signal.SIGUSR1)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("psgd:")]
    assert len(lines) == 1 and "stopped by SIGUSR1 after round" in lines[0], stderr
    stopped_after = int(lines[0].split("after round ")[1].split(";")[0])
    _, meta = checkpoint.load(out / "checkpoint.psgd")
    assert meta["round"] == stopped_after + 1 == len(records(out))
