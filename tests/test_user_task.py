"""A user's own model and data (tests/user_task, outside psgd): psgd.task from a Dataset and
from arrays, import paths and their errors, .npz files and theirs, Dirichlet shards, bf16,
clipping, one worker's failing forward pass, and exact resume of a user task."""

import json

import numpy as np
import pytest
import torch

import psgd
from psgd import config
from psgd.errors import ConfigError, PsgdError
from psgd.runtime.simulate import run_in_process
from psgd.tasks import load_npz, task_class
from psgd.tasks.shards import shards
from tests.user_task.model import images

USER = "tests.user_task.model"


def cfg(task: dict, rounds: int = 6, **top):
    method = {"name": "ef21", "uplink": "topk:ratio=0.1", "downlink": "identity", "lr": 0.05}
    return config.from_dict({"task": {"batch_size": 16, **task}, "method": method, "rounds": rounds,
                             "eval_every": 3, **top})  # fmt: skip


def run(task: dict, n: int = 2, **top):
    return run_in_process(cfg(task, **top), n)[1].rounds


def test_a_dataset_and_the_same_arrays_train_alike_and_report_their_metrics():
    a, b = run({"name": f"{USER}:make_task"}), run({"name": f"{USER}:make_array_task"})
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and a[-1]["loss"] < a[0]["loss"]
    assert [r["bytes_up"] for r in a] == [r["bytes_up"] for r in b]
    assert a[-1]["test_loss"] == b[-1]["test_loss"] and "test_accuracy" in a[-1] and "test_top2" in b[-1]


@pytest.mark.parametrize(
    "name, message",
    [
        ("no_such_package.module:make_task", "no module named 'no_such_package'"),
        (f"{USER}:missing", f"module '{USER}' has no attribute 'missing'"),
        (f"{USER}:not_a_task", "is not a task"),
        ("tests/user_task/nowhere.py:make_task", "no such file"),
        (":make_task", "expected 'package.module:factory'"),
    ],
)
def test_a_bad_import_path_is_one_config_error(name, message):
    with pytest.raises(ConfigError, match=message):
        cfg({"name": name})


def test_a_file_path_imports_the_users_file():
    assert task_class("tests/user_task/model.py:make_task")(cfg({"name": f"{USER}:make_task"}).task, 0, 2).dim == 612


def test_a_forward_pass_failing_on_one_worker_ends_the_run_naming_it():
    with pytest.raises(PsgdError, match="worker 2 failed in round 0: RuntimeError: this batch breaks the model"):
        run({"name": f"{USER}:make_failing_task", "split": "label_skew"})


def test_dirichlet_shards_partition_the_examples_and_skew_the_labels():
    y = torch.from_numpy(images(400, 0)[1])
    parts = shards(y, len(y), 4, "dirichlet", seed=3, alpha=0.1)
    assert torch.equal(torch.sort(torch.cat(parts)).values, torch.arange(len(y)))
    assert all(len(p) for p in parts)
    assert [p.tolist() for p in parts] == [p.tolist() for p in shards(y, len(y), 4, "dirichlet", 3, 0.1)]
    assert min(len(torch.unique(y[p])) for p in parts) < 4  # alpha = 0.1: some worker misses a class


def test_bf16_autocast_and_clipping_act_on_the_workers_gradient():
    base = cfg({"name": f"{USER}:make_task"}).task
    task = task_class(base.name)(base, 0, 2)
    x = task.init_params()
    g = task.oracle(1, torch.device("cpu"))(x)
    for options, check in [
        ({"precision": "bf16"}, lambda h: not torch.equal(h, g) and torch.allclose(h, g, atol=0.05, rtol=0.1)),
        ({"clip_norm": 0.1}, lambda h: abs(float(h.norm()) - 0.1) < 1e-5 and torch.allclose(h * g.norm() / 0.1, g)),
    ]:  # fmt: skip
        other = task_class(base.name)(cfg({"name": base.name, **options}).task, 0, 2)
        h = other.oracle(1, torch.device("cpu"))(x)
        assert h.dtype == torch.float32 and check(h), options


def save(path, **arrays):
    x, y = images(64, 0)
    xt, yt = images(32, 1)
    data = {"x_train": x, "y_train": y, "x_test": xt, "y_test": yt, **arrays}
    np.savez(path, **{k: v for k, v in data.items() if v is not None})
    return str(path)


def test_an_npz_file_trains_with_a_built_in_or_a_users_model(tmp_path):
    path = save(tmp_path / "d.npz")
    mlp = run({"name": "npz", "path": path, "hidden": 16})
    cnn = run({"name": "npz", "path": path, "model": f"{USER}:SmallCNN", "split": "dirichlet"})
    assert mlp[-1]["loss"] < mlp[0]["loss"] and cnn[-1]["loss"] < cnn[0]["loss"]
    assert "test_accuracy" in mlp[-1] and "test_accuracy" in cnn[-1]


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"y_test": None}, "missing y_test"),
        ({"x_train": np.array([{"a": 1}] * 64, dtype=object)}, "cannot be read without unpickling"),
        ({"y_train": np.full(64, -1)}, "label -1"),
        ({"y_test": np.full(32, 9)}, "y_test has label 9"),
        ({"y_train": np.zeros(64, dtype=np.float32)}, "expected integer class labels"),
        ({"x_test": np.zeros((32, 3), dtype=np.float32)}, "x_train examples are"),
        ({"x_train": np.full((64, 1, 8, 8), np.nan, dtype=np.float32)}, "NaN"),
        ({"y_train": np.zeros(63, dtype=np.int64)}, "must have one first dimension"),
    ],
)
def test_a_malformed_npz_is_one_clear_error(tmp_path, arrays, message):
    with pytest.raises(ConfigError, match=message):
        load_npz(save(tmp_path / "bad.npz", **arrays))


def test_a_file_that_is_not_an_npz_is_one_clear_error(tmp_path):
    (tmp_path / "x.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a readable .npz"):
        load_npz(tmp_path / "x.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(ConfigError, match="holds one array"):
        load_npz(tmp_path / "one.npy")


def test_resume_of_a_user_task_is_exact(tmp_path):
    from tests.user_task.model import make_task

    common = ["--simulate", "2", "--quiet", "--set", "method.name=ef21", "--set", "method.uplink=topk:ratio=0.1",
              "--set", "method.downlink=identity", "--set", "method.lr=0.05", "--set", "eval_every=3"]  # fmt: skip
    assert psgd.main(make_task, [*common, "--set", "rounds=6", "--out", str(tmp_path / "full")]) == 0
    assert psgd.main(make_task, [*common, "--set", "rounds=3", "--out", str(tmp_path / "part")]) == 0
    assert psgd.main(make_task, ["--simulate", "2", "--quiet", "--resume", str(tmp_path / "part"),
                                 "--set", "rounds=6"]) == 0  # fmt: skip
    saved = (tmp_path / "part" / "config.toml").read_text()
    assert f'name = "{USER}:make_task"' in saved
    full, part = ([json.loads(line) for line in (tmp_path / p / "rounds.jsonl").read_text().splitlines()]
                  for p in ("full", "part"))  # fmt: skip
    keys = ("round", "loss", "bytes_up", "bytes_down", "test_loss", "test_accuracy")
    assert [[r.get(k) for k in keys] for r in full] == [[r.get(k) for k in keys] for r in part]
