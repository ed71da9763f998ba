"""Compare the methods: run configs/*.toml and rewrite the README's comparison table.

    python -m psgd.compare [--rounds N] [--configs configs/ef21.toml ...] [--workers 4] [--no-write]

Each config runs in the in-process simulation, which gives the same losses and byte counts as
``mpirun -n WORKERS+1 python -m psgd.train CONFIG``. The table (between the ``compare:begin`` and
``compare:end`` markers of README.md) lists the final test accuracy and the megabytes every worker
sent and received in total (frame headers included; 1 MB = 10^6 bytes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from psgd import config
from psgd.errors import PsgdError
from psgd.methods import build
from psgd.runtime.simulate import run_in_process

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"


def run(path: Path, workers: int, rounds: int | None) -> dict:
    cfg = config.load(path, [f"rounds={rounds}"] if rounds else [])
    start = time.perf_counter()
    _, result = run_in_process(cfg, workers)
    seconds = time.perf_counter() - start
    final = [r for r in result.rounds if "test_accuracy" in r][-1]
    method = build(cfg.method)
    return {
        "config": path.name,
        "method": cfg.method.name,
        "task": cfg.task.name,
        "uplink": method.uplink.spec if method.uplink.name != cfg.method.uplink.split(":")[0] else cfg.method.uplink,
        "downlink": cfg.method.downlink,
        "accuracy": final["test_accuracy"],
        "mb_up": sum(result.summary["bytes_up"]) / 1e6,
        "mb_down": sum(result.summary["bytes_down"]) / 1e6,
        "rounds": cfg.rounds,
        "seconds": seconds,
    }


def table(rows: list[dict], workers: int) -> str:
    lines = [
        f"In-process simulation of {workers} workers (identical to `mpirun -n {workers + 1}`); MB summed over "
        "workers, frame headers included. Regenerate with `python -m psgd.compare`.",
        "",
        "| config | method | task | uplink | downlink | test accuracy | MB up | MB down | rounds |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['method']} | {r['task']} | `{r['uplink']}` | `{r['downlink']}` | "
            f"{r['accuracy']:.3f} | {r['mb_up']:.2f} | {r['mb_down']:.2f} | {r['rounds']} |"
        )
    return "\n".join(lines)


def rewrite(readme: Path, text: str) -> None:
    content = readme.read_text()
    if BEGIN not in content or END not in content:
        raise PsgdError(f"{readme} has no {BEGIN} ... {END} markers")
    head, rest = content.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m psgd.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--configs", nargs="+", type=Path, help="config files (default: configs/*.toml)")
    p.add_argument("--rounds", type=int, help="override every config's rounds")
    p.add_argument("--workers", type=int, default=4, help="workers (default 4, as mpirun -n 5)")
    p.add_argument("--readme", type=Path, default=ROOT / "README.md", help="README to rewrite")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    args = p.parse_args(argv)
    paths = args.configs or sorted((ROOT / "configs").glob("*.toml"))
    torch.set_num_threads(1)  # one intra-op thread, as the MPI ranks run: the same floats as under mpirun
    if not paths:
        print("psgd: error: no configs to compare", file=sys.stderr)
        return 2
    rows = []
    try:
        for path in paths:
            row = run(path, args.workers, args.rounds)
            print(
                f"{row['config']}: accuracy {row['accuracy']:.3f}, {row['mb_up']:.2f} MB up, "
                f"{row['mb_down']:.2f} MB down, {row['seconds']:.1f} s",
                file=sys.stderr,
            )
            rows.append(row)
        text = table(rows, args.workers)
        print(text)
        if not args.no_write:
            rewrite(args.readme, text)
    except PsgdError as e:  # ConfigError included
        print(f"psgd: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
