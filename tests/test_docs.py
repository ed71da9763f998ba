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


CHECKS = {"x_hat": check_compress_example, "r": check_simulate_example}


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S))
def test_readme_python_examples_run_and_say_what_they_promise(block):
    ns: dict = {}
    exec(compile(block, "README.md", "exec"), ns)
    checks = [check for name, check in CHECKS.items() if name in ns]
    assert checks, "a README example with no check in tests/test_docs.py: add one"
    for check in checks:
        check(ns)
