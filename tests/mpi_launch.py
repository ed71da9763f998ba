"""Launching psgd under mpirun from tests: the venv's mpirun, a timeout on every launch."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mpirun() -> str | None:
    here = Path(sys.executable).parent / "mpirun"
    return str(here) if here.exists() else shutil.which("mpirun")


def launch(n: int, args: list[str], timeout: float = 240, cwd: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [mpirun(), "-n", str(n)]
    if (
        "OMPI_COMM_WORLD_SIZE" in os.environ
        or "Open MPI" in subprocess.run([mpirun(), "--version"], capture_output=True, text=True).stdout
    ):
        cmd += ["--allow-run-as-root", "--oversubscribe"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [*cmd, sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT, env=env
    )
