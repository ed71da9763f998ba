"""Checkpoints: a pickle-free file format, and a resumed run that repeats the
uninterrupted run exactly (losses, bytes, metrics), in process and under MPI. Runs are
split at multiples of eval_every, since a run also evaluates its own last round."""

import json
import pickle

import pytest
import torch

from psgd import config
from psgd.errors import PsgdError
from psgd.runtime import checkpoint, rundir
from psgd.runtime.simulate import run_in_process
from psgd.train import main
from tests.mpi_launch import launch, mpirun

SMALL = ["--set", "eval_every=5", "--set", "device=cpu", "--set", "task.hidden=32"]


def records(folder):
    return [json.loads(line) for line in (folder / "rounds.jsonl").read_text().splitlines()]


def assert_same_run(a, b):
    ra, rb = records(a), records(b)
    assert [r["round"] for r in ra] == [r["round"] for r in rb]
    for x, y in zip(ra, rb, strict=True):
        assert x["loss"] == y["loss"]
        for key in ("bytes_up", "bytes_down", "header_up", "header_down", "test_accuracy", "test_loss"):
            assert x.get(key) == y.get(key), (x["round"], key)
    sa, sb = (json.loads((f / "summary.json").read_text()) for f in (a, b))
    for key in ("bytes_up", "bytes_down", "header_up", "header_down", "final_metrics", "final_loss"):
        assert sa[key] == sb[key], key


def test_format_round_trip_and_validation(tmp_path):
    tensors = {"x": torch.randn(7), "n": torch.arange(3), "b": torch.tensor([1, 2], dtype=torch.uint8)}
    meta = {"round": 4, "nested": {"a": [1, 2]}}
    path = tmp_path / "c.psgd"
    checkpoint.save(path, tensors, meta)
    loaded, m = checkpoint.load(path)
    assert m == meta and all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    data = path.read_bytes()
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x10
    cases = [(b"X" + data[1:], "bad magic"), (data[:-3], "checksum"), (data + b"\0", "checksum"), (flipped, "checksum")]
    for bad, why in cases:
        with pytest.raises(PsgdError, match=why):
            checkpoint.from_bytes(bad)
    (tmp_path / "p.psgd").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(PsgdError, match="not a valid psgd checkpoint"):
        checkpoint.load(tmp_path / "p.psgd")


def test_resume_after_the_end_continues_exactly(tmp_path):
    assert main(["--simulate", "3", "--quiet", "--set", "rounds=24", *SMALL, "--out", str(tmp_path / "full")]) == 0
    assert main(["--simulate", "3", "--quiet", "--set", "rounds=10", *SMALL, "--out", str(tmp_path / "part")]) == 0
    assert (tmp_path / "part" / "checkpoint.psgd").is_file()
    assert main(["--simulate", "3", "--quiet", "--resume", str(tmp_path / "part"), "--set", "rounds=24"]) == 0
    assert_same_run(tmp_path / "full", tmp_path / "part")
    summary = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert all(b > 0 for b in summary["checkpoint_bytes_up"])  # counted, apart from training traffic


class Killed(Exception):
    pass


def test_resume_after_a_kill_drops_the_rounds_past_the_checkpoint(tmp_path):
    overrides = ["rounds=20", "checkpoint_every=7", "eval_every=5", "device=cpu", "task.hidden=32"]
    cfg = config.load(None, overrides)
    folder = rundir.RunDir(tmp_path / "killed", cfg)

    def kill_at_16(record, cfg):
        if record["round"] == 16:
            raise Killed

    with pytest.raises(Killed):
        run_in_process(cfg, 3, log=folder.log, progress=kill_at_16, checkpoint_path=folder.path / "checkpoint.psgd")
    with open(folder.path / "rounds.jsonl", "a") as f:
        f.write('{"round": 17, "lo')  # a torn line, as a kill mid-write leaves
    assert checkpoint.load(folder.path / "checkpoint.psgd")[1]["round"] == 14
    assert main(["--simulate", "3", "--quiet", "--resume", str(folder.path)]) == 0
    assert (
        main(
            ["--simulate", "3", "--quiet", *(a for o in overrides for a in ("--set", o)), "--out", str(tmp_path / "u")]
        )
        == 0
    )
    assert_same_run(tmp_path / "u", folder.path)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "method.lr=0.5"], "--resume cannot change method"),
        (["--set", "rounds=3"], "beyond rounds = 3"),
        (["--out", "elsewhere"], "give no CONFIG and no --out"),
    ],
)
def test_resume_refuses_what_would_break_the_run(args, message, tmp_path, capsys):
    assert main(["--simulate", "2", "--quiet", "--set", "rounds=5", *SMALL, "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    assert main(["--simulate", "2", "--quiet", "--resume", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_resume_without_a_checkpoint_is_one_clear_error(tmp_path, capsys):
    assert main(["--simulate", "2", "--quiet", "--resume", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    (tmp_path / "config.toml").write_text(config.to_toml(config.load(None)))
    assert main(["--simulate", "2", "--quiet", "--resume", str(tmp_path)]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


@pytest.mark.skipif(mpirun() is None, reason="no mpirun on PATH or in the venv")
def test_resume_under_mpi_equals_the_uninterrupted_run(tmp_path):
    train = ["-m", "psgd.train", "--quiet"]
    full = launch(4, [*train, "--set", "rounds=16", *SMALL, "--out", str(tmp_path / "full")])
    assert full.returncode == 0, full.stderr
    part = launch(4, [*train, "--set", "rounds=5", *SMALL, "--out", str(tmp_path / "part")])
    assert part.returncode == 0, part.stderr
    resumed = launch(4, [*train, "--resume", str(tmp_path / "part"), "--set", "rounds=16"])
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(tmp_path / "full", tmp_path / "part")


def test_a_damaged_checkpoint_is_one_clear_error_on_resume(tmp_path, capsys):
    """Truncated or flipped: --resume ends with one message and exit 2, never a traceback or a wrong resume."""
    assert main(["--simulate", "2", "--quiet", "--set", "rounds=6", *SMALL, "--out", str(tmp_path / "r")]) == 0
    path = tmp_path / "r" / "checkpoint.psgd"
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[-100] ^= 1
    for damaged in (good[: len(good) // 2], bytes(flipped)):
        path.write_bytes(damaged)
        capsys.readouterr()
        assert main(["--simulate", "2", "--quiet", "--resume", str(tmp_path / "r"), "--set", "rounds=8"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "checksum mismatch: the file is truncated or corrupted" in err[0], err


@pytest.mark.parametrize("failing", ["checkpoint", "rounds"])
def test_a_failed_write_is_one_message_and_keeps_what_was_written(failing, tmp_path, capsys, monkeypatch):
    """A full disk (OSError ENOSPC) mid-run, at the second checkpoint (after round 5) or at round 4's
    record: one message, exit 2; the previous checkpoint still loads and rounds.jsonl keeps every
    earlier record."""
    import errno
    import os

    def full():
        raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "checkpoint":
        real_fsync, fsyncs = os.fsync, []

        def fsync(fd):
            fsyncs.append(fd)
            if len(fsyncs) == 2:
                full()
            real_fsync(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    else:
        real_log = rundir.RunDir.log

        class Full:  # the log file, once the disk is full
            def __init__(self, f):
                self.f = f

            def write(self, text):
                full()

            def __getattr__(self, name):
                return getattr(self.f, name)

        def log(self, record):
            if record["round"] == 4:
                self.rounds = Full(self.rounds)
            real_log(self, record)

        monkeypatch.setattr(rundir.RunDir, "log", log)
    out = tmp_path / "r"
    args = ["--simulate", "2", "--quiet", "--set", "rounds=9", "--set", "checkpoint_every=3", *SMALL]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0], err
    _, meta = checkpoint.load(out / "checkpoint.psgd")
    assert meta["round"] == 3
    assert [r["round"] for r in records(out)] == list(range(6 if failing == "checkpoint" else 4))
    assert not (out / "checkpoint.tmp").exists()


def test_a_signal_stops_at_the_round_boundary_with_a_checkpoint_and_loses_nothing(tmp_path, capsys, monkeypatch):
    """SIGUSR1 during round 4 (as SLURM's time-limit warning): the run finishes round 4, writes a
    checkpoint at round 5 (a SIGTERM arriving while it is written changes nothing) and exits 3;
    --resume then repeats the uninterrupted run exactly."""
    import os
    import signal

    import psgd.train as train

    args = ["--simulate", "2", "--quiet", "--set", "rounds=12", *SMALL]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    real_progress, real_to_bytes = train.Progress.__call__, checkpoint.to_bytes

    def progress(self, record, cfg):
        if record["round"] == 4:
            os.kill(os.getpid(), signal.SIGUSR1)
        real_progress(self, record, cfg)

    def to_bytes(tensors, meta):
        os.kill(os.getpid(), signal.SIGTERM)  # a second signal while the checkpoint is written
        return real_to_bytes(tensors, meta)

    monkeypatch.setattr(train.Progress, "__call__", progress)
    monkeypatch.setattr(checkpoint, "to_bytes", to_bytes)
    part = tmp_path / "part"
    assert main([*args, "--out", str(part)]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and f"stopped by SIGUSR1 after round 4; checkpoint written: continue with --resume {part}" in err[0]
    )
    assert checkpoint.load(part / "checkpoint.psgd")[1]["round"] == 5 and len(records(part)) == 5
    monkeypatch.undo()
    assert main(["--simulate", "2", "--quiet", "--resume", str(part)]) == 0
    assert_same_run(tmp_path / "full", part)
