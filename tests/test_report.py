"""psgd.report: the table's numbers are the sums of rounds.jsonl, the plots are real PNGs,
killed runs (no summary, cut last line) still report, and a non-run folder is one clear error.
--payload --bytes up counts the message bodies the workers sent: paper 2's bits, in bytes."""

import json
import math
import shutil

import matplotlib.image
import numpy as np
import pytest

from psgd.report import plots
from psgd.report.cli import main
from psgd.report.metrics import Counting, cumulative_bytes, projected_time
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
    reached, at = row["MB to acc >= 0"].split(" ", 1)
    assert float(reached) == pytest.approx(mb, rel=1e-3) and at == f"(round {first_eval})"
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


K = 4  # top-k's k on breast cancer (d = 31): k(32 + ceil(log2 d)) bits per uplink message


@pytest.fixture(scope="module")
def breast_cancer(tmp_path_factory):
    """Paper 2's logistic regression, top-k up (EF14: plain sgd refuses a biased uplink), fp32 down."""
    root = tmp_path_factory.mktemp("bc")
    config = root / "bc.toml"
    config.write_text(
        f'name = "bc"\nrounds = {ROUNDS}\neval_every = 4\n[task]\nname = "breast_cancer"\nl2 = 0.01\n'
        f'stochastic = false\n[method]\nname = "ef14"\nuplink = "topk:k={K}"\ndownlink = "identity"\nlr = "theory"\n'
    )
    assert train([str(config), "--simulate", str(WORKERS), "--quiet", "--out", str(root / "bc")]) == 0
    return root / "bc"


def payload(recs, direction):
    """Per round: frame bytes minus header bytes, summed over the workers."""
    return [sum(recs[i][f"bytes_{direction}"]) - sum(recs[i][f"header_{direction}"]) for i in range(len(recs))]


def test_payload_up_is_the_workers_message_bodies(breast_cancer, tmp_path):
    recs = records(breast_cancer)
    d = json.loads((breast_cancer / "summary.json").read_text())["dim"]
    body = math.ceil(K * (32 + math.ceil(math.log2(d))) / 8)  # the paper's bit count, rounded up to bytes
    assert payload(recs, "up") == [WORKERS * body] * ROUNDS
    assert payload(recs, "down") == [WORKERS * 4 * d] * ROUNDS  # identity: d fp32 values
    up = sum(payload(recs, "up"))
    run = load_run(breast_cancer)
    assert cumulative_bytes(run, Counting("up", payload=True))[-1] == up
    assert cumulative_bytes(run, Counting("total", payload=True))[-1] == up + sum(payload(recs, "down"))
    assert cumulative_bytes(run, Counting("down"))[-1] == sum(sum(r["bytes_down"]) for r in recs)

    errors = [r.get("relative_error") for r in recs]
    target = errors[7]  # evaluated at rounds 3, 7, 11
    first = next(i for i, e in enumerate(errors) if e is not None and e <= target)
    out = tmp_path / "report"
    args = ["--payload", "--bytes", "up", "--target", repr(target), "--metric", "relative_error"]
    assert main([str(breast_cancer), "--out", str(out), *args]) == 0
    text = (out / "report.md").read_text()
    (row,) = table(text)
    assert float(row["MB up (payload)"]) == pytest.approx(up / 1e6, rel=1e-3)
    assert float(row["ratio up (payload vs fp32)"].rstrip("x")) == pytest.approx(32 * d / (8 * body), abs=0.05)
    reached, at = row[f"MB (up, payload) to relative_error <= {target:g}"].split(" ", 1)
    assert float(reached) == pytest.approx(sum(payload(recs, "up")[: first + 1]) / 1e6, rel=1e-3)
    assert at == f"(round {first})"
    assert not any(column.startswith(("MB down", "ratio down")) for column in row)  # --bytes up
    assert "bytes of payload" in text and "uplink only" in text


def test_payload_ratio_beats_the_ratio_with_headers(breast_cancer, tmp_path):
    """Telemetry headers hide most of top-k's saving on d = 31; the payload shows it."""
    rows = {}
    for flags in ([], ["--payload"]):
        out = tmp_path / "report"
        assert main([str(breast_cancer), "--out", str(out), *flags]) == 0
        (rows[bool(flags)],) = table((out / "report.md").read_text())
    with_headers = float(rows[False]["ratio up (vs fp32)"].rstrip("x"))
    body_only = float(rows[True]["ratio up (payload vs fp32)"].rstrip("x"))
    assert with_headers < 2 < 6 < body_only
    assert float(rows[True]["ratio down (payload vs fp32)"].rstrip("x")) == pytest.approx(1.0)


def test_bytes_axis_says_what_it_counts(breast_cancer, tmp_path, monkeypatch):
    labels, draw = {}, plots.curves

    def curves(runs, xs, label, path, *rest):
        labels[path.name] = label
        draw(runs, xs, label, path, *rest)

    monkeypatch.setattr(plots, "curves", curves)
    assert main([str(breast_cancer), "--out", str(tmp_path / "a"), "--payload", "--bytes", "up"]) == 0
    assert labels["bytes.png"] == "bytes sent by workers (payload only, all workers; log scale)"  # 38 B to 456 B
    assert main([str(breast_cancer), "--out", str(tmp_path / "b")]) == 0
    assert labels["bytes.png"] == "kB sent up + down (headers included, all workers; log scale)"
    assert main([str(breast_cancer), "--out", str(tmp_path / "c"), "--bytes", "down", "--payload"]) == 0
    assert labels["bytes.png"].startswith("bytes sent to workers (payload only")  # 248 B to 2976 B


def test_byte_unit_keeps_ticks_near_one():
    assert plots.byte_unit([np.array([19.0, 1900.0])]) == (1.0, "bytes")
    assert plots.byte_unit([np.array([200.0, 30e3])]) == (1e3, "kB")
    assert plots.byte_unit([np.array([0.0, 5e6, 4e9])]) == (1e6, "MB")  # zero (nothing sent yet) is left out
    assert plots.byte_unit([np.array([0.0])]) == (1.0, "bytes")


def test_payload_without_header_counts_is_one_clear_error(breast_cancer, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(breast_cancer, old)
    stripped = [{k: v for k, v in r.items() if k != "header_up"} for r in records(old)]
    (old / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in stripped))
    assert main([str(old), "--out", str(tmp_path / "o")]) == 0  # whole frames need no headers
    assert main([str(old), "--out", str(tmp_path / "o"), "--payload"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no header_up" in err[0]
