"""Reading a run folder, complete or not: config.toml, rounds.jsonl, and summary.json when
the run finished. A killed run leaves no summary and possibly a half-written last line;
both are fine. Anything else that is not a run folder is one ConfigError."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psgd.errors import ConfigError

REQUIRED = ("round", "time_s", "loss", "bytes_up", "bytes_down")
TIMINGS = ("compute_s", "encode_s", "comm_s", "decode_s", "server_s")
NOT_METRICS = {*REQUIRED, *TIMINGS, "header_up", "header_down"}


@dataclass(frozen=True)
class Run:
    path: Path
    label: str
    config: dict  # config.toml as written by psgd.train ({} when absent)
    summary: dict | None  # None: the run did not finish (killed, or still running)
    records: list[dict]  # one per round, sorted by round; a resumed round's later record wins
    truncated: bool  # the last line of rounds.jsonl was cut off

    @property
    def workers(self) -> int:
        return len(self.records[0]["bytes_up"])

    @property
    def rounds(self) -> np.ndarray:
        return self.column("round")

    def column(self, key: str) -> np.ndarray:
        """One value per round as float64 (NaN where the round lacks it or logged null)."""
        return np.array([_number(r.get(key)) for r in self.records], dtype=np.float64)

    def bytes_per_round(self, key: str) -> np.ndarray:
        """``bytes_up`` or ``bytes_down`` summed over the workers, per round."""
        return np.array([sum(r[key]) for r in self.records], dtype=np.float64)

    def metrics(self) -> list[str]:
        """Names of the evaluated metrics (test_accuracy, test_loss, suboptimality, ...)."""
        names: dict[str, None] = {}
        for r in self.records:
            names.update((k, None) for k in r if k not in NOT_METRICS)
        return list(names)

    def evaluated(self, metric: str) -> np.ndarray:
        """Indices (into records) of the rounds where ``metric`` was evaluated."""
        return np.array([i for i, r in enumerate(self.records) if r.get(metric) is not None], dtype=np.int64)

    def setting(self, section: str, key: str, default: str = "?") -> str:
        return str(self.config.get(section, {}).get(key, default))


def _number(value) -> float:
    return float("nan") if value is None else float(value)


def _parse_rounds(path: Path) -> tuple[list[dict], bool]:
    text = path.read_text()
    lines = text.splitlines()
    records, truncated = {}, False
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) and not text.endswith("\n"):
                truncated = True  # the writer was killed mid-line
                continue
            raise ConfigError(f"{path}:{i}: not a JSON object; is this a psgd run folder?") from None
        if not isinstance(record, dict) or any(k not in record for k in REQUIRED):
            missing = [k for k in REQUIRED if not isinstance(record, dict) or k not in record]
            raise ConfigError(f"{path}:{i}: not a psgd round record (missing {', '.join(missing)})")
        records[record["round"]] = record
    if not records:
        raise ConfigError(f"{path}: no complete round logged yet")
    return [records[k] for k in sorted(records)], truncated


def load_run(path: str | Path, label: str | None = None) -> Run:
    """A run folder written by ``python -m psgd.train``; ConfigError when it is not one."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"{path}: not a run folder (no such directory)")
    if not (path / "rounds.jsonl").is_file():
        raise ConfigError(f"{path}: not a run folder (no rounds.jsonl; python -m psgd.train writes one)")
    records, truncated = _parse_rounds(path / "rounds.jsonl")
    config = {}
    if (path / "config.toml").is_file():
        try:
            config = tomllib.loads((path / "config.toml").read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path / 'config.toml'}: invalid TOML: {e}") from None
    summary = None
    if (path / "summary.json").is_file():
        try:
            summary = json.loads((path / "summary.json").read_text())
        except json.JSONDecodeError:
            summary = None  # cut off while written: the rounds still tell the story
    widths = {len(r["bytes_up"]) for r in records} | {len(r["bytes_down"]) for r in records}
    if len(widths) != 1:
        raise ConfigError(f"{path / 'rounds.jsonl'}: rounds disagree on the number of workers {sorted(widths)}")
    return Run(path, label or path.name, config, summary, records, truncated)


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Labels are the folder names, made unique with their parent folder when two clash."""
    paths = [Path(p) for p in paths]
    names = [p.name for p in paths]
    labels = [f"{p.parent.name}/{p.name}" if names.count(p.name) > 1 else p.name for p in paths]
    return [load_run(p, label) for p, label in zip(paths, labels, strict=True)]
