"""CIFAR tasks: the python-format folder is read without pickle.load (a malicious file is
refused and never runs), bad folders are one ConfigError, the models have the papers'
sizes, BatchNorm statistics stay out of the flat vector and evaluation is deterministic."""

import json
import os
import pickle

import numpy as np
import pytest
import torch

from psgd import config
from psgd.errors import ConfigError
from psgd.tasks import task_class
from psgd.tasks.cifar import augment
from psgd.tasks.models import build_model
from psgd.tasks.safe_pickle import UnsafePickleError, load_numpy_pickle
from psgd.train import main as train

CPU = torch.device("cpu")


def write_batch(path, count, label_key, classes, seed, protocol):
    rng = np.random.default_rng(seed)
    content = {
        b"batch_label": b"generated for a test",
        b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
        label_key: [int(v) for v in rng.integers(0, classes, count)],
        b"filenames": [b"img_%d.png" % i for i in range(count)],
    }
    path.write_bytes(pickle.dumps(content, protocol=protocol))
    return content


@pytest.fixture
def cifar10_dir(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):  # protocol 2 as in the official files, and the newer ones numpy writes differently
        write_batch(folder / f"data_batch_{i}", 8, b"labels", 10, i, protocol=2 if i % 2 else 5)
    write_batch(folder / "test_batch", 10, b"labels", 10, 99, protocol=4)
    return folder


def cifar(folder, **options):
    cls = task_class("cifar")
    return cls(cls.Options(name="cifar", data_dir=str(folder), **options), 0, 2)


def test_reads_the_python_format(cifar10_dir):
    task = cifar(cifar10_dir, model="cnn", width=4)
    expected = pickle.loads((cifar10_dir / "data_batch_1").read_bytes())  # our own file: safe to unpickle here
    assert task.data.x_train.shape == (40, 3, 32, 32) and task.data.x_train.dtype == torch.uint8
    assert np.array_equal(task.data.x_train[:8].numpy().reshape(8, -1), expected[b"data"])
    assert task.data.y_train[:8].tolist() == expected[b"labels"]
    assert task.data.x_test.shape == (10, 3, 32, 32) and task.data.classes == 10


def test_reads_cifar100(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    write_batch(folder / "train", 12, b"fine_labels", 100, 1, protocol=2)
    write_batch(folder / "test", 6, b"fine_labels", 100, 2, protocol=2)
    task = cifar(folder, dataset="cifar100", model="mlp", width=2)
    assert task.data.classes == 100 and task.data.y_train.max() < 100
    assert task.dim == sum(p.numel() for p in build_model("mlp", 100, 2).parameters())


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_pickle_is_refused_and_never_runs(cifar10_dir, tmp_path):
    marker = tmp_path / "pwned"
    (cifar10_dir / "data_batch_3").write_bytes(pickle.dumps({b"data": Exploit(marker), b"labels": [0]}, protocol=2))
    with pytest.raises(ConfigError, match=r"data_batch_3 is not a CIFAR python-format file: refused to load global"):
        cifar(cifar10_dir)
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match="system"):
        load_numpy_pickle(pickle.dumps(Exploit(marker)))
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_numpy_pickle(pickle.dumps(eval))
    with pytest.raises(UnsafePickleError, match="objects"):
        load_numpy_pickle(pickle.dumps(np.array([1, "x"], dtype=object)))
    assert not marker.exists()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "test_batch").unlink(), "missing test_batch"),
        (lambda d: (d / "data_batch_2").write_bytes(b"not a pickle"), "data_batch_2 is not a CIFAR python-format"),
        (lambda d: (d / "data_batch_2").write_bytes(pickle.dumps([1, 2])), "has no b'data'"),
        (
            lambda d: (d / "data_batch_2").write_bytes(
                pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]})
            ),
            "shape \\(N, 3072\\)",
        ),
        (
            lambda d: (d / "data_batch_2").write_bytes(
                pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]})
            ),
            "labels outside",
        ),
    ],
)
def test_a_malformed_folder_is_one_config_error(cifar10_dir, damage, message):
    damage(cifar10_dir)
    with pytest.raises(ConfigError, match=message):
        cifar(cifar10_dir)


def cifar_config(tmp_path, task: str = "") -> str:
    path = tmp_path / "cifar.toml"
    path.write_text(f'name = "t"\nrounds = 2\n[task]\nname = "cifar"\n{task}\n[method]\nname = "sgd"\n')
    return str(path)


def test_missing_folder_fails_the_job_with_one_line(tmp_path, capsys):
    args = [cifar_config(tmp_path), "--simulate", "2"]
    assert train([*args, "--out", str(tmp_path / "a"), "--set", f"task.data_dir={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "task.data_dir" in err[0] and "no such folder" in err[0]
    assert not (tmp_path / "a").exists()  # nothing left behind: the same --out works once the path is fixed
    (tmp_path / "empty").mkdir()
    assert train([*args, "--out", str(tmp_path / "empty"), "--set", f"task.data_dir={tmp_path / 'nowhere'}"]) == 2
    assert (tmp_path / "empty").is_dir() and not any((tmp_path / "empty").iterdir())  # the user's folder stays
    capsys.readouterr()
    assert train([*args, "--out", str(tmp_path / "b")]) == 2
    assert "task.data_dir is required" in capsys.readouterr().err


def test_options_are_validated(tmp_path):
    with pytest.raises(ConfigError, match="task.model must be one of"):
        config.load(cifar_config(tmp_path), ["task.model=alexnet"])
    with pytest.raises(ConfigError, match="task.norm"):
        config.load(cifar_config(tmp_path), ["task.norm=layer"])


@pytest.mark.parametrize(
    "name, classes, params",
    [("resnet18", 10, 11_173_962), ("resnet34", 100, 21_328_292), ("vgg11", 10, 9_231_114), ("vgg19", 10, 20_040_522)],
)
def test_paper_models_have_their_published_sizes(name, classes, params):
    model = build_model(name, classes)
    assert sum(p.numel() for p in model.parameters()) == params
    buffers = sum(b.numel() for b in model.buffers())
    assert buffers > 0  # BatchNorm statistics: not parameters, so not in the flat vector


def test_resnet18_forward_and_gradient_on_two_images():
    task = task_class("cifar")(task_class("cifar").Options(name="cifar", dataset="synthetic", synthetic_train=16,
                                                           synthetic_test=4, augment=True), 0, 2)  # fmt: skip
    assert task.dim == 11_173_962
    oracle = task.oracle(1, CPU)
    oracle.options = oracle.options.__class__(**{**oracle.options.__dict__, "batch_size": 2})
    g = oracle(task.init_params())
    assert g.shape == (task.dim,) and torch.isfinite(g).all() and g.abs().sum() > 0


def test_group_norm_variant_has_no_buffers():
    model = build_model("resnet18", 10, width=8, norm="group")
    assert sum(b.numel() for b in model.buffers()) == 0


def test_evaluation_is_deterministic_and_uses_no_worker_state():
    cls = task_class("cifar")
    options = cls.Options(name="cifar", dataset="synthetic", model="resnet18", width=4, synthetic_train=64,
                          synthetic_test=32, eval_batch=16, bn_batches=2, batch_size=8)  # fmt: skip
    task = cls(options, 0, 2)
    x = task.init_params()
    oracle = task.oracle(1, CPU)
    for r in range(3):  # a worker's BatchNorm buffers move; the server's evaluation must not care
        x = x - 0.1 * oracle.at_round(r)(x)
    first = task.evaluate(x)
    assert task.evaluate(x.clone()) == first
    assert cls(options, 0, 2).evaluate(x) == first
    assert 0.0 <= first["test_accuracy"] <= 1.0


def test_augment_is_a_crop_of_the_padded_image_or_its_mirror():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(6):
        crops = [padded[i, :, y : y + 32, x : x + 32] for y in range(9) for x in range(9)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(2)) for c in crops)


def test_synthetic_cnn_learns(tmp_path):
    out = tmp_path / "run"
    sets = [
        "task.name=cifar",
        "task.dataset=synthetic",
        "task.model=cnn",
        "task.width=4",
        "task.synthetic_train=400",
        "task.synthetic_test=200",
        "rounds=40",
        "eval_every=40",
        "method.uplink=topk:ratio=0.1",
        "method.lr=0.05",
    ]
    args = [cifar_config(tmp_path), "--simulate", "2", "--quiet", "--out", str(out)]
    assert train([*args, *[a for s in sets for a in ("--set", s)]]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_metrics"]["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
