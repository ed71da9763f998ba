"""The markdown report: one results table and one time-split table, a row per run."""

from __future__ import annotations

from psgd.report.metrics import TOTAL, Counting, RunMetrics, Target
from psgd.runtime.link import Link


def _num(value: float | None, fmt: str = "{:.4g}") -> str:
    return "n/a" if value is None or value != value else fmt.format(value)


def _rounds(m: RunMetrics) -> str:
    if m.complete:
        return str(m.rounds)
    return f"{m.rounds}/{m.planned} (partial)" if m.planned else f"{m.rounds} (partial)"


def _mb(mb: float) -> str:
    """Megabytes to 3 decimals, or 4 significant digits below 1 MB (paper 2's runs send kilobytes)."""
    return f"{mb:.3f}" if mb >= 1 else f"{mb:.4g}"


def _reached(m: RunMetrics, target: Target | None, link: Link | None) -> list[str]:
    if target is None:
        return []
    if m.reached is None:
        return ["not reached"] * (3 if link else 2)
    cells = [f"{_mb(m.reached.bytes / 1e6)} (round {m.reached.round})", f"{m.reached.seconds:.2f}"]
    return cells + ([f"{m.reached.projected_s:.2f}"] if link else [])


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def results_table(
    rows: list[RunMetrics], target: Target | None, link: Link | None, link_spec: str, counting: Counting
) -> list[str]:
    metrics = list(dict.fromkeys(k for m in rows for k in m.final_metrics))
    head = ["run", "method", "uplink", "downlink", "workers", "rounds", "final loss", *metrics]
    payload = " (payload)" if counting.payload else ""
    head += [f"MB {d}{payload}" for d in counting.directions]
    head += [f"ratio {d} ({'payload ' if counting.payload else ''}vs fp32)" for d in counting.directions]
    head.append("wall-clock s")
    if link:
        head.append(f"projected s @ {link_spec}")
    if target is not None:
        head += [f"MB{counting.qualifier} to {target.label}", f"s to {target.label}"]
        head += [f"projected s to {target.label}"] if link else []
    lines = [_row(head), _row(["---"] * len(head))]
    for m in rows:
        cells = [m.label, m.method, m.uplink, m.downlink, str(m.workers), _rounds(m), _num(m.final_loss)]
        cells += [_num(m.final_metrics.get(k)) for k in metrics]
        mb = {"up": m.mb_up, "down": m.mb_down}
        ratio = {"up": m.ratio_up, "down": m.ratio_down}
        cells += [_mb(mb[d]) for d in counting.directions]
        cells += [_num(ratio[d], "{:.1f}x") for d in counting.directions]
        cells.append(f"{m.seconds['wall']:.2f}")
        if link:
            cells.append(_num(m.projected_s, "{:.2f}"))
        cells += _reached(m, target, link)
        lines.append(_row(cells))
    return lines


def time_table(rows: list[RunMetrics]) -> list[str]:
    parts = ["compute_s", "encode_s", "comm_s", "decode_s", "server_s"]
    head = ["run", "compute s", "encode s", "comm s", "decode s", "server s", "wall-clock s", "comm share"]
    lines = [_row(head), _row(["---"] * len(head))]
    for m in rows:
        total = sum(m.seconds[p] for p in parts)
        share = m.seconds["comm_s"] / total if total else float("nan")
        cells = [m.label, *(f"{m.seconds[p]:.3f}" for p in parts), f"{m.seconds['wall']:.2f}", _num(share, "{:.0%}")]
        lines.append(_row(cells))
    return lines


def counted(counting: Counting, target: Target | None) -> str:
    """The paragraph that says exactly which bytes the MB, ratio and MB-to-target columns count."""
    if counting.payload:
        what = (
            "MB are 10^6 bytes of payload: each frame's bytes minus its header bytes (the frame header with "
            "the worker's telemetry, and each message's few-byte header), i.e. the compressed messages' bodies, "
            "the papers' bit counts rounded up to whole bytes"
        )
    else:
        what = "MB are 10^6 bytes that crossed MPI (headers included)"
    direction = {
        "total": "both directions, up (workers to server) and down (server to workers) in their own columns"
        + ("; MB to the target is up + down" if target is not None else ""),
        "up": "the uplink only (workers to server)",
        "down": "the downlink only (server to workers)",
    }[counting.direction]
    return (
        f"{what}, summed over all workers and rounds in rounds.jsonl (set-up and shut-down frames not). "
        f"Counted: {direction}. Compression ratio: the fp32 bytes of the same rounds (4 d per worker per "
        f"round and direction) over the {'payload ' if counting.payload else ''}bytes sent."
    )


def markdown(
    rows: list[RunMetrics],
    target: Target | None,
    link: Link | None,
    link_spec: str,
    plots: list[str],
    counting: Counting = TOTAL,
) -> str:
    out = ["# psgd report", "", counted(counting, target), ""]
    out += results_table(rows, target, link, link_spec, counting)
    if link:
        out += [
            "",
            f"Projected wall-clock on a {link_spec} link: measured compute + encode + decode + server "
            "time of each round plus each frame's latency + 8 bytes / bandwidth, the server's link carrying "
            "every frame one after another.",
        ]
    partial = [m.label for m in rows if not m.complete]
    if partial:
        out += ["", f"Partial runs (no summary.json; killed or still running): {', '.join(partial)}."]
    out += ["", "## Time split (seconds summed over rounds; compute and encode: slowest worker)", ""]
    out += time_table(rows)
    simulated = [m.label for m in rows if m.mode == "simulate"]
    if simulated:
        out += [
            "",
            f"{', '.join(simulated)}: made with --simulate, where the workers run inside the server's transport "
            "calls, so comm s also holds their work; time splits of MPI runs separate the two.",
        ]
    if plots:
        out += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(out) + "\n"
