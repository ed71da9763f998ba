"""The run folder: resolved config, rounds.jsonl (flushed every round), summary.json."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

from psgd.config import RunConfig, to_toml
from psgd.errors import ConfigError, PsgdError


def choose(out: str | None, name: str, root: str = "runs") -> Path:
    """An explicit --out must be new or empty; the default runs/<name> gets -2, -3, ... rather than overwrite."""
    if out is not None:
        path = Path(out)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise ConfigError(f"--out {path} exists and is not empty; choose another folder")
        return path
    path = Path(root) / name
    k = 2
    while path.exists():
        path = Path(root) / f"{name}-{k}"
        k += 1
    return path


def _clean(value):
    """JSON has no NaN: write null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def read_rounds(path: Path) -> list[dict]:
    """The records of rounds.jsonl; a torn last line (a job killed while writing) is dropped."""
    records = []
    lines = (path / "rounds.jsonl").read_text().splitlines() if (path / "rounds.jsonl").is_file() else []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ConfigError(f"{path / 'rounds.jsonl'}: line {i + 1} is not JSON") from None
    return records


class RunDir:
    """A run folder open for writing. ``keep_rounds`` (resume): the records of the rounds
    before the checkpoint, rewritten, and later rounds appended after them."""

    def __init__(self, path: Path, cfg: RunConfig, keep_rounds: list[dict] = ()) -> None:
        self.path = path
        self.created = not path.exists()
        self.fresh = self.created or not any(path.iterdir())  # a new run's folder: discard() may empty it
        self.logged = 0
        try:
            path.mkdir(parents=True, exist_ok=True)
            (path / "config.toml").write_text(to_toml(cfg))
            kept = path / "rounds.jsonl.tmp"  # replaced atomically: a kill here loses no record
            kept.write_text("".join(json.dumps(_clean(r)) + "\n" for r in keep_rounds))
            os.replace(kept, path / "rounds.jsonl")
            self.rounds = open(path / "rounds.jsonl", "a")  # noqa: SIM115  (open for the whole run)
        except OSError as e:
            raise ConfigError(f"cannot write run folder {path}: {e.strerror}") from None

    def log(self, record: dict) -> None:
        try:
            self.rounds.write(json.dumps(_clean(record)) + "\n")
            self.rounds.flush()
        except OSError as e:  # a torn last line is dropped on reading: the earlier records stay
            raise PsgdError(f"cannot write {self.path / 'rounds.jsonl'}: {e.strerror or e}") from None
        self.logged += 1

    def discard(self) -> None:
        """Remove a new run's folder when set-up failed before its first round, so that the
        same command can run again once the cause is fixed; a resumed run's folder stays."""
        self.rounds.close()
        if not self.fresh or self.logged:
            return
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
        else:  # the user's empty folder: leave it empty
            for name in ("config.toml", "rounds.jsonl", "rounds.jsonl.tmp"):
                (self.path / name).unlink(missing_ok=True)

    def finish(self, summary: dict) -> None:
        try:
            self.rounds.close()
            (self.path / "summary.json").write_text(json.dumps(_clean(summary), indent=2) + "\n")
        except OSError as e:
            raise PsgdError(f"cannot write {self.path / 'summary.json'}: {e.strerror or e}") from None
