"""The report's figures (matplotlib, Agg): training loss and an evaluation metric against
rounds, bytes (as the report counts them), measured wall-clock and projected wall-clock;
and the time split."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator  # noqa: E402

from psgd.report.metrics import TOTAL, Counting, Target, cumulative_bytes, projected_time  # noqa: E402
from psgd.report.runs import Run  # noqa: E402
from psgd.runtime.link import Link  # noqa: E402

COLORS = plt.get_cmap("tab10").colors
BYTE_UNITS = ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "bytes"))


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` rounds (shorter at the start); NaNs skipped."""
    ok = np.isfinite(values)
    sums = np.cumsum(np.where(ok, values, 0.0))
    counts = np.cumsum(ok)
    lo = np.maximum(np.arange(len(values)) - window, -1)
    pad = np.concatenate(([0.0], sums)), np.concatenate(([0], counts))
    n = counts - pad[1][lo + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums - pad[0][lo + 1]) / n


def noisy(loss: np.ndarray) -> bool:
    """Minibatch losses go up in many rounds; full-gradient ones hardly ever (those are drawn unsmoothed)."""
    steps = np.diff(loss[np.isfinite(loss)])
    return len(steps) > 0 and float((steps > 0).mean()) > 0.1


def eval_metric(runs: list[Run], preferred: str = "test_accuracy") -> str | None:
    """``preferred`` when any run has it, else the first metric any run evaluated."""
    names = [m for run in runs for m in run.metrics()]
    if preferred in names:
        return preferred
    return names[0] if names else None


def byte_unit(xs: list[np.ndarray]) -> tuple[float, str]:
    """One unit for a log axis of byte counts: the largest not above the geometric middle of the
    positive values, so the ticks stay near 1 (paper 2's d = 31 runs read in bytes or kB)."""
    values = np.concatenate(xs)
    values = values[np.isfinite(values) & (values > 0)]
    if not len(values):
        return BYTE_UNITS[-1]
    middle = np.sqrt(values.min() * values.max())
    return next((scale, name) for scale, name in BYTE_UNITS if middle >= scale or scale == 1.0)


def _axes(x_label: str, metric: str | None, byte_scale: float | None = None):
    """``byte_scale``: x is in bytes, drawn on a log axis with ticks in units of that many bytes."""
    fig, axes = plt.subplots(1, 2 if metric else 1, figsize=(12 if metric else 6.5, 4.6), squeeze=False, sharex=True)
    axes = axes[0]
    for ax in axes:
        ax.set_xlabel(x_label)
        ax.grid(True, which="major", alpha=0.35)
        if byte_scale:
            in_unit = FuncFormatter(lambda v, _: f"{v / byte_scale:g}")
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(in_unit)
            ax.xaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
            ax.xaxis.set_minor_formatter(in_unit)
            ax.tick_params(axis="x", which="minor", labelsize=7)
    axes[0].set_ylabel("training loss (mean over workers)")
    return fig, axes


def _finish(fig, axes, metric: str | None, target: Target | None, path: Path, title: str) -> None:
    if metric:
        axes[1].set_ylabel(metric.replace("_", " "))
        if target is not None and metric == target.metric:
            axes[1].axhline(target.value, color="0.4", linestyle="--", linewidth=1, label=f"target {target.value:g}")
    for ax in axes:
        ax.legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _log_y(ax) -> None:
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)


def _positive(runs: list[Run], key: str) -> bool:
    values = np.concatenate([run.column(key) for run in runs])
    values = values[np.isfinite(values)]
    return len(values) > 0 and bool((values > 0).all())


def curves(
    runs: list[Run],
    xs: list[np.ndarray],
    x_label: str,
    path: Path,
    title: str,
    target: Target | None = None,
    byte_scale: float | None = None,
) -> None:
    """Loss (raw, faint; smoothed, solid) and the evaluation metric (markers) against xs."""
    metric = eval_metric(runs, target.metric if target else "test_accuracy")
    fig, axes = _axes(x_label, metric, byte_scale)
    for i, (run, x) in enumerate(zip(runs, xs, strict=True)):
        color = COLORS[i % len(COLORS)]
        loss = run.column("loss")
        if noisy(loss):
            axes[0].set_title("noisy losses: faint every round, solid a trailing mean", fontsize=9, color="0.35")
            axes[0].plot(x, loss, color=color, alpha=0.2, linewidth=0.6)
            loss = smooth(loss, max(1, len(loss) // 50))
        axes[0].plot(x, loss, color=color, linewidth=1.6, label=run.label)
        if metric:
            idx = run.evaluated(metric)
            if len(idx):
                values = [run.records[j][metric] for j in idx]
                axes[1].plot(x[idx], values, color=color, marker="o", markersize=3.5, linewidth=1.4, label=run.label)
    if _positive(runs, "loss"):
        _log_y(axes[0])
    if metric and "accuracy" not in metric and _positive(runs, metric):
        _log_y(axes[1])
    _finish(fig, axes, metric, target, path, title)


def time_split(runs: list[Run], path: Path) -> None:
    """Horizontal stacked bars: seconds in compute, encode, comm, decode, server per run."""
    parts = ["compute_s", "encode_s", "comm_s", "decode_s", "server_s"]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.55 * len(runs)))
    left = np.zeros(len(runs))
    labels = [run.label for run in runs]
    for j, part in enumerate(parts):
        seconds = np.array([np.nansum(run.column(part)) for run in runs])
        ax.barh(labels, seconds, left=left, color=COLORS[j], label=part.removesuffix("_s"))
        left += seconds
    ax.invert_yaxis()
    ax.set_xlabel("seconds summed over rounds (compute, encode: slowest worker)")
    ax.legend(ncol=len(parts), fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    ax.grid(True, axis="x", alpha=0.35)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_all(
    runs: list[Run],
    out: Path,
    link: Link | None,
    link_spec: str,
    target: Target | None,
    counting: Counting = TOTAL,
) -> list[str]:
    """Writes every figure into ``out``; returns their file names. bytes.png counts as ``counting`` does."""
    made = []

    def curve(name, xs, label, title, byte_scale=None):
        curves(runs, xs, label, out / name, title, target, byte_scale)
        made.append(name)

    curve("rounds.png", [run.rounds for run in runs], "round", "against rounds")
    sent = [cumulative_bytes(run, counting) for run in runs]
    scale, unit = byte_unit(sent)
    curve(
        "bytes.png",
        sent,
        f"{unit} {counting.sent} ({counting.content}, all workers; log scale)",
        "against communication",
        byte_scale=scale,
    )
    curve("wallclock.png", [run.column("time_s") for run in runs], "measured wall-clock (s)", "against wall-clock")
    if link:
        curve(
            "projected.png",
            [projected_time(run, link) for run in runs],
            f"projected wall-clock (s) on a {link_spec} link",
            f"projected on {link_spec}",
        )
    time_split(runs, out / "time_split.png")
    made.append("time_split.png")
    return made
