"""What the README and the launch scripts tell a user to run names things that exist."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "launch").iterdir())]


def mentions(pattern: str) -> set[str]:
    return {m for doc in DOCS for m in re.findall(pattern, doc.read_text())}


@pytest.mark.parametrize("path", sorted(p for p in mentions(r"configs/[\w/.-]+\.toml") if "*" not in p))
def test_named_configs_exist(path):
    assert (ROOT / path).is_file()


@pytest.mark.parametrize("module", sorted(mentions(r"python -m (psgd[\w.]*)")))
def test_named_modules_exist(module):
    assert importlib.util.find_spec(module) is not None


def check_compress_example(ns: dict) -> None:
    """The compressor example: what crosses the wire is header + body, and it decodes to what
    the message decodes to, an unbiased estimate of x within the codec's variance bound."""
    c, x, m, b, x_hat = (ns[k] for k in ("c", "x", "m", "b", "x_hat"))
    assert len(b) == m.header_len + m.body_len and m.header_len <= 32
    assert m.body_len == -(-c.bits(m) // 8)
    assert torch.equal(x_hat, c.decode(m)) and x_hat.shape == x.shape
    assert c.unbiased and float(((x_hat - x) ** 2).sum()) <= 10 * c.omega(x.numel()) * float((x**2).sum())


def check_simulate_example(ns: dict) -> None:
    """psgd.simulate's example: EF21 with top-1 reaches the optimum of the mean quadratic,
    x* = (mean_i A_i)^-1 1; after the first round (EF21's uncompressed start) each of the 3
    workers' payload is one fp32 value and a 3-bit index, 5 bytes."""
    import numpy as np

    r, A = ns["r"], ns["A"]
    x_star = np.linalg.solve(sum(A) / len(A), np.ones(5))
    assert np.linalg.norm(r.x - x_star) < 1e-6 * np.linalg.norm(x_star)
    assert set(r.body_up[1:]) == {3 * 5} and r.body_up[0] == 3 * 4 * 5


def check_user_task_example(ns: dict) -> None:
    """The user's CNN (README "Your own model and data") trains through psgd.main as the
    README's command line runs it (--simulate 4, EF21 with top-k): a finite loss that falls,
    a test accuracy, and EF21's uplinks after round 0 each k fp32 values and indices."""
    import json
    import tempfile

    import psgd

    with tempfile.TemporaryDirectory() as tmp:
        sets = ["method.name=ef21", "method.uplink=topk:ratio=0.05", "method.downlink=identity", "method.lr=0.05",
                "task.batch_size=32", "rounds=30", "eval_every=30"]  # fmt: skip
        argv = ["--simulate", "4", "--quiet", "--out", f"{tmp}/cnn", *(a for s in sets for a in ("--set", s))]
        ns["make_task"].__module__ = "my_cnn"  # exec gives the example's functions no module
        assert psgd.main(ns["make_task"], argv) == 0
        rounds = [json.loads(line) for line in Path(f"{tmp}/cnn/rounds.jsonl").read_text().splitlines()]
    assert rounds[-1]["loss"] < rounds[0]["loss"] and rounds[-1]["test_accuracy"] > 0.5
    assert len({tuple(r["bytes_up"]) for r in rounds[1:]}) == 1


CHECKS = {"x_hat": check_compress_example, "r": check_simulate_example, "make_task": check_user_task_example}


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S))
def test_readme_python_examples_run_and_say_what_they_promise(block):
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    checks = [check for name, check in CHECKS.items() if name in ns]
    assert checks, "a README example with no check in tests/test_docs.py: add one"
    for check in checks:
        check(ns)
