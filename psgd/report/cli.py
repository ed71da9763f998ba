"""The report command: run folders in, PNG plots and report.md out."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from psgd.errors import ConfigError, PsgdError
from psgd.report.metrics import DIRECTIONS, TOTAL, Counting, Target, run_metrics
from psgd.report.plots import draw_all
from psgd.report.runs import load_runs
from psgd.report.table import markdown
from psgd.runtime.link import parse as parse_link


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m psgd.report",
        description="Turn run folders (finished or killed) into PNG plots and a markdown table.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by python -m psgd.train")
    p.add_argument("--out", required=True, help="folder for report.md and the PNGs (created)")
    p.add_argument(
        "--link", default="", metavar="SPEC", help="project wall-clock on a link, e.g. bandwidth=1Gbit,latency=50us"
    )
    p.add_argument(
        "--target", type=float, metavar="VALUE", help="report bytes and time to reach this value of --metric"
    )
    p.add_argument(
        "--metric",
        default="test_accuracy",
        help="evaluated metric for --target and the plots (default test_accuracy; reached at >= for accuracies, "
        "<= for others, e.g. relative_error)",
    )
    p.add_argument(
        "--bytes",
        choices=list(DIRECTIONS),
        default="total",
        help="direction(s) the bytes plot, MB to --target and the MB and ratio columns count: total (up + down, "
        "the default), up (sent by the workers) or down (sent to them)",
    )
    p.add_argument(
        "--payload",
        action="store_true",
        help="count payload only: each frame's bytes minus its header bytes (telemetry and message headers), "
        "i.e. the compressed messages' bodies (paper 2's bits sent, rounded up to bytes)",
    )
    return p


def write_report(
    runs: list[str],
    out: str | Path,
    link_spec: str = "",
    target: float | None = None,
    metric: str = "test_accuracy",
    counting: Counting = TOTAL,
) -> Path:
    """Loads the runs, writes the plots and report.md into ``out``; returns report.md's path.
    ``counting``: which bytes the bytes plot and the MB, ratio and MB-to-target columns count."""
    link = parse_link(link_spec)
    goal = None if target is None else Target(target, metric)
    loaded = load_runs(runs)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create --out {out}: {e.strerror}") from None
    rows = [run_metrics(run, link, goal, counting) for run in loaded]
    plots = draw_all(loaded, out, link, link_spec, goal, counting)
    path = out / "report.md"
    path.write_text(markdown(rows, goal, link, link_spec, plots, counting))
    return path


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        counting = Counting(args.bytes, args.payload)
        path = write_report(args.runs, args.out, args.link, args.target, args.metric, counting)
    except PsgdError as e:
        print(f"psgd: error: {e}", file=sys.stderr, flush=True)
        return 2
    print(f"[psgd] report: {path}", flush=True)
    return 0
