"""psgd.report: the table's numbers are the sums of rounds.jsonl, the plots are real PNGs,
killed runs (no summary, cut last line) still report, and a non-run folder is one clear error."""

import json
import shutil

import matplotlib.image
import numpy as np
import pytest

from psgd.report.cli import main
from psgd.report.metrics import projected_time
from psgd.report.runs import load_run
from psgd.runtime.link import parse
from psgd.train import main as train

ROUNDS, WORKERS = 12, 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    common = ["--simulate", str(WORKERS), "--quiet", "--set", f"rounds={ROUNDS}", "--set", "eval_every=4"]
    assert train([*common, "--out", str(root / "topk")]) == 0
    assert train([*common, "--set", "method.uplink=scaled_sign", "--out", str(root / "sign")]) == 0
    return root


def records(path):
    return [json.loads(line) for line in (path / "rounds.jsonl").read_text().splitlines()]


def table(report_md: str) -> list[dict]:
    """The first markdown table of the report as a list of {column: cell}."""
    lines = [line for line in report_md.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in lines[0].strip("|").split(" | ")]
    rows = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]
    out = []
    for row in rows:
        if len(row) != len(head):
            break  # the next table
        out.append(dict(zip(head, row, strict=True)))
    return out


def test_table_numbers_are_the_sums_of_rounds_jsonl(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main([str(runs / "topk"), str(runs / "sign"), "--out", str(out)]) == 0
    rows = {r["run"]: r for r in table((out / "report.md").read_text())}
    for name in ("topk", "sign"):
        recs = records(runs / name)
        up = sum(sum(r["bytes_up"]) for r in recs)
        down = sum(sum(r["bytes_down"]) for r in recs)
        assert float(rows[name]["MB up"]) == pytest.approx(up / 1e6, abs=5e-4)
        assert float(rows[name]["MB down"]) == pytest.approx(down / 1e6, abs=5e-4)
        dim = json.loads((runs / name / "summary.json").read_text())["dim"]
        ratio = 4 * dim * ROUNDS * WORKERS / up
        assert float(rows[name]["ratio up (vs fp32)"].rstrip("x")) == pytest.approx(ratio, abs=0.05)
        assert rows[name]["rounds"] == str(ROUNDS)
        assert float(rows[name]["test_accuracy"]) == pytest.approx(recs[-1]["test_accuracy"], abs=1e-4)
    assert float(rows["sign"]["ratio up (vs fp32)"].rstrip("x")) > 20  # 1 bit + scale vs 32 bits
    assert "report.md" in capsys.readouterr().out


def test_every_plot_is_a_non_empty_png(runs, tmp_path):
    out = tmp_path / "report"
    assert main([str(runs / "topk"), str(runs / "sign"), "--out", str(out), "--link", "bandwidth=1Gbit"]) == 0
    names = {"rounds.png", "bytes.png", "wallclock.png", "projected.png", "time_split.png"}
    assert names <= {p.name for p in out.glob("*.png")}
    for name in names:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 200 and image.shape[1] > 500
        assert image[..., :3].std() > 0.01  # something is drawn, not a blank canvas
        assert f"![{name}]({name})" in (out / "report.md").read_text()


def test_target_and_projected_time(runs, tmp_path):
    link = parse("bandwidth=10Mbit,latency=1ms")
    run = load_run(runs / "topk")
    expected = 0.0
    for r in records(runs / "topk"):
        expected += r["compute_s"] + r["encode_s"] + r["decode_s"] + r["server_s"]
        expected += sum(link.hold(b) for b in r["bytes_up"] + r["bytes_down"])
    assert projected_time(run, link)[-1] == pytest.approx(expected)

    out = tmp_path / "report"
    args = [str(runs / "topk"), "--out", str(out), "--link", "bandwidth=10Mbit,latency=1ms"]
    assert main([*args, "--target", "0"]) == 0
    (row,) = table((out / "report.md").read_text())
    recs = records(runs / "topk")
    first_eval = 3  # eval_every = 4: rounds 3, 7, 11
    mb = sum(sum(r["bytes_up"]) + sum(r["bytes_down"]) for r in recs[: first_eval + 1]) / 1e6
    assert row["MB to acc >= 0"] == f"{mb:.3f} (round {first_eval})"
    assert float(row["s to acc >= 0"]) == pytest.approx(recs[first_eval]["time_s"], abs=0.006)
    assert float(row["projected s @ bandwidth=10Mbit,latency=1ms"]) == pytest.approx(expected, abs=0.006)
    assert main([*args, "--target", "1.01"]) == 0
    (row,) = table((out / "report.md").read_text())
    assert row["MB to acc >= 1.01"] == "not reached"


def test_killed_run_reports_its_complete_rounds(runs, tmp_path):
    killed = tmp_path / "killed"
    shutil.copytree(runs / "topk", killed)
    (killed / "summary.json").unlink()
    lines = (killed / "rounds.jsonl").read_text().splitlines()
    (killed / "rounds.jsonl").write_text("\n".join(lines[:7]) + "\n" + lines[7][:25])  # killed mid-line
    out = tmp_path / "report"
    assert main([str(killed), "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    (row,) = table(text)
    assert row["rounds"] == f"7/{ROUNDS} (partial)"
    up = sum(sum(json.loads(line)["bytes_up"]) for line in lines[:7])
    assert float(row["MB up"]) == pytest.approx(up / 1e6, abs=5e-4)
    assert row["ratio up (vs fp32)"] != "n/a"  # d recovered from the config
    assert "Partial runs" in text and (out / "rounds.png").stat().st_size > 5000


def test_resumed_rounds_replace_earlier_records(runs, tmp_path):
    resumed = tmp_path / "resumed"
    shutil.copytree(runs / "topk", resumed)
    lines = (resumed / "rounds.jsonl").read_text().splitlines()
    again = json.loads(lines[5]) | {"loss": 123.0}
    (resumed / "rounds.jsonl").write_text("\n".join(lines[:8] + [json.dumps(again)] + lines[8:]) + "\n")
    run = load_run(resumed)
    assert len(run.records) == ROUNDS and run.records[5]["loss"] == 123.0
    assert np.array_equal(run.rounds, np.arange(ROUNDS))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such directory"),
        (lambda p: p.mkdir(), "no rounds.jsonl"),
        (lambda p: (p.mkdir(), (p / "rounds.jsonl").write_text("")), "no complete round"),
        (lambda p: (p.mkdir(), (p / "rounds.jsonl").write_text('{"a": 1}\n')), "not a psgd round record"),
        (lambda p: (p.mkdir(), (p / "rounds.jsonl").write_text("oops\n{}\n")), ":1: not a JSON object"),
    ],
)
def test_not_a_run_folder_is_one_clear_error(make, message, tmp_path, capsys):
    folder = tmp_path / "notarun"
    make(folder)
    assert main([str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("psgd: error: ") and message in err[0]


def test_bad_link_is_one_clear_error(runs, tmp_path, capsys):
    assert main([str(runs / "topk"), "--out", str(tmp_path / "o"), "--link", "bandwidth=fast"]) == 2
    assert "bandwidth" in capsys.readouterr().err


def test_target_on_an_error_metric_is_reached_from_above(tmp_path):
    """--metric relative_error: lower is better, so the target is met at <=."""
    out = tmp_path / "runs"
    config = tmp_path / "ridge.toml"
    config.write_text(
        'name = "ridge"\nrounds = 40\neval_every = 5\n[task]\nname = "ridge"\nl2 = 0.1\n'
        '[method]\nname = "sgd"\nuplink = "topk:k=4"\nlr = "theory"\n'
    )
    assert train([str(config), "--simulate", "1", "--quiet", "--out", str(out / "ridge")]) == 0
    errors = [r.get("relative_error") for r in records(out / "ridge")]
    target = errors[19]  # reached at round 19 at the latest
    report = tmp_path / "report"
    assert main([str(out / "ridge"), "--out", str(report), "--target", repr(target), "--metric", "relative_error"]) == 0
    (row,) = table((report / "report.md").read_text())
    first = next(i for i, e in enumerate(errors) if e is not None and e <= target)
    assert row[f"MB to relative_error <= {target:g}"].endswith(f"(round {first})")
