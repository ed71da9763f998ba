"""What the README and the launch scripts tell a user to run names things that exist."""

import importlib.util
import re
from pathlib import Path

import pytest

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


@pytest.mark.parametrize("block", re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S))
def test_readme_python_examples_run(block):
    exec(compile(block, "README.md", "exec"), {})
