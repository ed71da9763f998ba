"""breast_cancer (logistic) and ridge: the oracle is the gradient of the objective, w* is
its minimiser, and constants() bound the curvature: mu <= eig(Hessian) <= L, per worker L_i."""

import json

import pytest
import torch

from psgd import config
from psgd.methods import build
from psgd.tasks import task_class
from psgd.tasks.convex import gram
from psgd.train import main as train

TASKS = ["breast_cancer", "ridge"]


def make(name, n=3, **options):
    cls = task_class(name)
    return cls(cls.Options(name=name, **options), 0, n)


@pytest.mark.parametrize("name", TASKS)
def test_oracle_is_the_gradient_of_the_objective(name):
    task = make(name)
    w = 0.3 * torch.randn(task.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w_var = w.clone().requires_grad_(True)
    data = sum(task.loss(a @ w_var, b).mean() for a, b in task.parts) / task.n
    (data + 0.5 * task.options.l2 * w_var @ w_var).backward()
    mean_oracle = sum(task.oracle(i, "cpu")(w.float()).double() for i in range(1, task.n + 1)) / task.n
    assert torch.allclose(mean_oracle, w_var.grad, atol=1e-5)
    assert task.objective(w) == pytest.approx(float(data.detach()) + 0.5 * task.options.l2 * float(w @ w))


@pytest.mark.parametrize("name", TASKS)
def test_w_star_is_the_minimiser(name):
    task = make(name)
    grad = sum(task.oracle(i, "cpu")(task.w_star.float()).double() for i in range(1, task.n + 1)) / task.n
    assert grad.norm() < 1e-4
    metrics = task.evaluate(task.w_star.float())
    assert metrics["relative_error"] < 1e-10 and abs(metrics["suboptimality"]) < 1e-6
    assert task.evaluate(task.init_params())["relative_error"] == pytest.approx(1.0)


@pytest.mark.parametrize("name", TASKS)
def test_constants_bound_the_hessian_everywhere(name):
    task = make(name, l2=0.01)
    c = task.constants()
    assert len(c["L_i"]) == task.n and max(c["L_i"]) >= c["L"] * 0.999 and c["mu"] >= 0.01
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        w = torch.randn(task.dim, dtype=torch.float64, generator=g)
        _, hess = task._gradient_hessian(w)
        eig = torch.linalg.eigvalsh(hess)
        assert c["mu"] <= eig[0] * (1 + 1e-9) and eig[-1] <= c["L"] * (1 + 1e-9)
        for i, (a, b) in enumerate(task.parts):
            local = gram(a, task.d2loss(a @ w, b)) + 0.01 * torch.eye(task.dim, dtype=w.dtype)
            assert torch.linalg.eigvalsh(local)[-1] <= c["L_i"][i] * (1 + 1e-9)
    if name == "ridge":  # a square loss: the bounds are attained
        assert eig[0] == pytest.approx(c["mu"]) and eig[-1] == pytest.approx(c["L"])


def test_logistic_accuracy_and_minibatches():
    task = make("breast_cancer", n=2, stochastic=True, batch_size=16)
    assert task.evaluate(task.w_star.float())["train_accuracy"] > 0.97
    oracle = task.oracle(1, "cpu")
    w = torch.zeros(task.dim)
    assert not torch.equal(oracle.at_round(0)(w), oracle.at_round(1)(w))
    assert torch.equal(oracle.at_round(1)(w), oracle.at_round(1)(w))


def test_theory_step_size_from_the_constants_converges(tmp_path):
    """lr = "theory" reads the task's constants (ridge: the EF14 theorem's step size); the error falls."""
    path = tmp_path / "ridge.toml"
    path.write_text(
        'name = "ridge"\nrounds = 150\neval_every = 150\n[task]\nname = "ridge"\nl2 = 0.1\n'
        '[method]\nname = "ef14"\nuplink = "topk:k=4"\nlr = "theory"\n'
    )
    cfg = config.load(path)
    task = make("ridge", n=2, l2=0.1)
    method = build(cfg.method, task)
    assert 0 < method.options.lr_at(0) < 1 / task.constants()["L"]
    assert train([str(path), "--simulate", "2", "--quiet", "--out", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["final_metrics"]["relative_error"] < 0.5  # from 1.0 at w0 = 0
    assert summary["lr"] == method.options.lr and "B3(delta)" in summary["lr_theory"]  # the step the run took, and why
    assert 'lr = "theory"' in (tmp_path / "run" / "config.toml").read_text()  # the config as written
