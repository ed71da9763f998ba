"""The numbers a report shows for one run, all computed from rounds.jsonl (so a killed
run's partial log gives the same kind of answer as a finished one).

Which bytes count (``Counting``): up, down or both directions; whole frames, or payload
only, i.e. each frame's bytes minus its header bytes (frame header with the worker's
telemetry, plus each message's few-byte header), which leaves the compressed messages'
bodies: the papers' bit counts rounded up to whole bytes (paper 2 plots error against these).

Projected wall-clock on a link (``psgd.runtime.link``): per round
    compute + encode + decode + server + sum over the round's frames of link.hold(bytes),
i.e. the measured computation plus the transfer time of every frame that round, up and
down, carried one after another by the server's link (the parameter server is the
bottleneck of a star). Measured comm_s is replaced, not added.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psgd.config import load as load_config
from psgd.errors import ConfigError, PsgdError
from psgd.report.runs import TIMINGS, Run
from psgd.runtime.link import Link
from psgd.tasks import task_class

FP32 = 4  # bytes per coordinate of an uncompressed float32 vector


DIRECTIONS = {"total": ("up", "down"), "up": ("up",), "down": ("down",)}


@dataclass(frozen=True)
class Counting:
    """The bytes a report counts: ``direction`` total (up + down), up or down, whole frames
    or ``payload`` only (frame bytes minus header bytes, per frame)."""

    direction: str = "total"
    payload: bool = False

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ConfigError(f"--bytes must be one of {', '.join(DIRECTIONS)}, got {self.direction!r}")

    @property
    def directions(self) -> tuple[str, ...]:
        return DIRECTIONS[self.direction]

    def per_round(self, run: Run, direction: str) -> np.ndarray:
        """Bytes counted in ``direction`` ("up" or "down"), summed over the workers, per round."""
        sent = run.bytes_per_round(f"bytes_{direction}")
        if not self.payload:
            return sent
        if any(f"header_{direction}" not in r for r in run.records):
            raise ConfigError(f"{run.path}: rounds.jsonl has no header_{direction}, so --payload cannot subtract it")
        return sent - run.bytes_per_round(f"header_{direction}")

    def cumulative(self, run: Run) -> np.ndarray:
        """Counted bytes over all workers and the chosen directions, cumulated to the end of each round."""
        return np.cumsum(sum(self.per_round(run, d) for d in self.directions))

    @property
    def qualifier(self) -> str:
        """What the table's "MB to target" column counts beyond the default, e.g. " (up, payload)"."""
        words = ([] if self.direction == "total" else [self.direction]) + (["payload"] if self.payload else [])
        return f" ({', '.join(words)})" if words else ""

    @property
    def sent(self) -> str:
        """Who sent the counted bytes, in words for the plot's axis."""
        return {"total": "sent up + down", "up": "sent by workers", "down": "sent to workers"}[self.direction]

    @property
    def content(self) -> str:
        return "payload only" if self.payload else "headers included"


TOTAL = Counting()  # the default: up + down, headers included


def cumulative_bytes(run: Run, counting: Counting = TOTAL) -> np.ndarray:
    """Bytes counted by ``counting`` (default: up + down, headers included) over all workers,
    cumulated to the end of each round."""
    return counting.cumulative(run)


def transfer_seconds(run: Run, link: Link) -> np.ndarray:
    """Per round: every frame of the round held for its transfer time on ``link``."""
    return np.array(
        [sum(link.hold(b) for b in r["bytes_up"]) + sum(link.hold(b) for b in r["bytes_down"]) for r in run.records]
    )


def projected_time(run: Run, link: Link) -> np.ndarray:
    """Projected wall-clock (s) at the end of each round on ``link`` (see the module docstring)."""
    compute = sum(np.nan_to_num(run.column(k)) for k in TIMINGS if k != "comm_s")
    return np.cumsum(compute + transfer_seconds(run, link))


def dimension(run: Run) -> int | None:
    """d from summary.json; for an unfinished run, from building the task of its config (None if that fails)."""
    if run.summary and "dim" in run.summary:
        return int(run.summary["dim"])
    if not (run.path / "config.toml").is_file():
        return None
    try:
        cfg = load_config(run.path / "config.toml")
        return task_class(cfg.task.name)(cfg.task, cfg.seed, run.workers).dim
    except (PsgdError, ValueError, OSError):
        return None


@dataclass(frozen=True)
class Target:
    """A value of an evaluated metric to reach: at least it for accuracies, at most it otherwise
    (losses, errors, suboptimality)."""

    value: float
    metric: str = "test_accuracy"

    @property
    def higher_is_better(self) -> bool:
        return "accuracy" in self.metric

    def met(self, value: float) -> bool:
        return value >= self.value if self.higher_is_better else value <= self.value

    @property
    def label(self) -> str:
        name = "acc" if self.metric == "test_accuracy" else self.metric
        return f"{name} {'>=' if self.higher_is_better else '<='} {self.value:g}"


@dataclass(frozen=True)
class Reached:
    """Where a run first reached the target (at an evaluation round)."""

    round: int
    bytes: float
    seconds: float
    projected_s: float | None


@dataclass(frozen=True)
class RunMetrics:
    label: str
    method: str
    uplink: str
    downlink: str
    workers: int
    rounds: int  # rounds logged
    planned: int | None  # rounds in the config
    complete: bool
    mode: str | None  # "mpi" or "simulate" (summary.json); None for an unfinished run
    final_loss: float
    final_metrics: dict[str, float]  # the last evaluation of every metric
    mb_up: float  # counted as the report's Counting says: whole frames or payload only
    mb_down: float
    ratio_up: float | None  # fp32 bytes / bytes counted (None: d unknown)
    ratio_down: float | None
    seconds: dict[str, float]  # summed compute / encode / comm / decode / server, and wall
    projected_s: float | None
    reached: Reached | None  # None: no target, or not reached; its bytes as counted


def first_reach(run: Run, target: Target, projected: np.ndarray | None, counting: Counting = TOTAL) -> Reached | None:
    for i in run.evaluated(target.metric):
        if target.met(run.records[i][target.metric]):
            cum = cumulative_bytes(run, counting)
            return Reached(
                int(run.records[i]["round"]),
                float(cum[i]),
                float(run.records[i]["time_s"]),
                None if projected is None else float(projected[i]),
            )
    return None


def run_metrics(
    run: Run, link: Link | None = None, target: Target | None = None, counting: Counting = TOTAL
) -> RunMetrics:
    """The run's row; bytes, ratios and bytes to ``target`` as ``counting`` counts them."""
    up, down = counting.per_round(run, "up").sum(), counting.per_round(run, "down").sum()
    d = dimension(run)
    fp32 = None if d is None else FP32 * d * len(run.records) * run.workers
    final = {}
    for metric in run.metrics():
        idx = run.evaluated(metric)
        if len(idx):
            final[metric] = float(run.records[idx[-1]][metric])
    projected = None if link is None else projected_time(run, link)
    seconds = {k: float(np.nansum(run.column(k))) for k in TIMINGS}
    seconds["wall"] = float(run.records[-1]["time_s"])
    planned = run.config.get("rounds")
    return RunMetrics(
        label=run.label,
        method=run.setting("method", "name"),
        uplink=run.setting("method", "uplink", "identity"),
        downlink=run.setting("method", "downlink", "identity"),
        workers=run.workers,
        rounds=len(run.records),
        planned=planned,
        complete=run.summary is not None,
        mode=(run.summary or {}).get("mode"),
        final_loss=float(run.column("loss")[-1]),
        final_metrics=final,
        mb_up=float(up) / 1e6,
        mb_down=float(down) / 1e6,
        ratio_up=None if fp32 is None or not up else fp32 / up,
        ratio_down=None if fp32 is None or not down else fp32 / down,
        seconds=seconds,
        projected_s=None if projected is None else float(projected[-1]),
        reached=None if target is None else first_reach(run, target, projected, counting),
    )
