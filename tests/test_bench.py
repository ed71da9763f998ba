"""The benchmarks run on small sizes and report the bytes the codecs count and the frames carry;
the break-even model against hand-computed cases (timings are measurements, never asserted)."""

import json
import math

import pytest
import torch

from psgd.bench.__main__ import main
from psgd.bench.links import RoundCost, break_even, pays
from psgd.bench.round import INFO
from psgd.compress import make
from psgd.runtime.frames import pack
from psgd.wire.frame import Kind, frame_overhead


def run(capsys, *args) -> dict:
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_round_reports_the_frames_bytes_and_break_even_links(capsys):
    d = 1000
    r = run(capsys, "round", "--d", str(d), "--repeat", "1", "--specs", "topk:k=10", "scaled_sign")
    assert (r["d"], r["workers"]) == (d, 4) and [x["spec"] for x in r["results"]] == [
        "identity",
        "topk:k=10",
        "scaled_sign",
    ]
    for x in r["results"]:
        c = make(x["spec"])
        frame = pack(Kind.UP, 0, 1, INFO, [c.encode(torch.randn(d))])[0]
        assert x["bytes_up_per_worker"] == len(frame)  # one frame, headers included
        header = make(x["spec"]).encode(torch.randn(d)).header_len
        assert len(frame) - frame_overhead(frame) - header == math.ceil(c.bits(d) / 8)
        assert x["bits_per_coordinate_up"] == 8 * len(frame) / d
        assert x["bytes_down_per_worker"] > math.ceil(c.bits(d) / 8)
        for k in ("parse", "accumulate", "server_step", "pack_down", "worker_step", "pack_up", "worker_down_decode"):
            assert x[f"{k}_ms"] >= 0 and x[f"{k}_copies"] >= 0
        assert x["server_round_ms"] == pytest.approx(
            sum(x[f"{k}_ms"] for k in ("parse", "accumulate", "server_step", "pack_down"))
        )
        assert ("break_even" in x) == (x["spec"] != "identity")
        assert list(x["targets"]) == (["server_round_copies"] if x["spec"] in ("identity", "scaled_sign") else [])
    for f in r["results"][1]["break_even"]:
        assert f["pays"] in ("always", "never", "below B*") and (f["Gbps"] is None) == (f["pays"] == "always")
    assert [f["workers"] for f in r["results"][1]["break_even"]] == [4, 16, 64]


def test_round_table(capsys):
    assert main(["round", "--d", "100", "--repeat", "1", "--workers", "2", "--specs", "sign", "--table"]) == 0
    text = capsys.readouterr().out
    assert "B* n=2" in text and "B* n=64" in text and "sign" in text


def test_compress_reports_the_codecs_counts_and_targets(capsys):
    d = 1000
    args = ["compress", "--d", str(d), "--repeat", "1", "--spherical-d", "64"]
    r = run(capsys, *args, "--specs", "identity", "sign", "topk:k=10", "qsgd:s=16,coding=elias", "powersgd:rank=1")
    by_spec = {x["spec"]: x for x in r["devices"][0]["results"]}
    for spec, x in by_spec.items():
        c = make(spec)
        m = c.encode(torch.randn(d, generator=torch.Generator().manual_seed(0)), torch.Generator().manual_seed(1))
        assert x["bits"] == c.bits(m) and x["bits_per_coordinate"] == c.bits(m) / d
        assert x["body_bytes"] == math.ceil(c.bits(m) / 8) and x["header_bytes"] == m.header_len
        for k in ("encode", "decode", "decode_into", "accumulate", "parse", "to_bytes"):
            # one pair a figure: its copy took at least the best copy of all (copy_ms)
            assert x[f"{k}_ms"] > 0 and 0 < x[f"{k}_vs_copy"] <= x[f"{k}_ms"] / x["copy_ms"] * (1 + 1e-9)
        assert all(t["meets_target"] == (x[k] <= t["at_most"]) for k, t in x["targets"].items())
    assert by_spec["identity"]["bits_per_coordinate"] == 32.0 and by_spec["identity"]["rel_error"] == 0.0
    assert by_spec["sign"]["bits_per_coordinate"] == 1.0
    assert by_spec["topk:k=10"]["bits"] == 10 * (32 + 10)
    assert by_spec["sign"]["targets"]["encode_vs_copy"]["at_most"] == 2.0
    assert by_spec["qsgd:s=16,coding=elias"]["targets"]["accumulate_vs_copy"]["at_most"] == 4.0
    assert by_spec["topk:k=10"]["targets"]["encode_vs_torch_topk"]["at_most"] == 0.5
    assert by_spec["powersgd:rank=1"]["targets"] == {}
    missed = r["devices"][0]["targets_missed"]
    assert missed == [f"{s}: {k}" for s, x in by_spec.items() for k, t in x["targets"].items() if not t["meets_target"]]


def test_break_even_by_hand():
    identity = RoundCost(
        worker_s=0.010, server_fixed_s=0.005, server_per_worker_s=0.002, up_bytes=1000, down_bytes=1000
    )
    codec = RoundCost(worker_s=0.020, server_fixed_s=0.010, server_per_worker_s=0.003, up_bytes=100, down_bytes=200)
    # n = 4: compute 0.042 s against 0.023 s; the server's link carries 4 (100 + 200) against 4 (1000 + 1000) bytes
    b = break_even(codec, identity, 4)
    assert b == pytest.approx(8 * 4 * 1700 / 0.019) and pays(b) == "below B*"
    assert codec.seconds(4, b) == pytest.approx(identity.seconds(4, b))
    assert codec.seconds(4, b / 2) < identity.seconds(4, b / 2) and codec.seconds(4, 2 * b) > identity.seconds(4, 2 * b)
    # n = 64: compute 0.222 s against 0.143 s
    assert break_even(codec, identity, 64) == pytest.approx(8 * 64 * 1700 / 0.079)
    cheaper = RoundCost(0.001, 0.001, 0.001, 100, 200)
    assert break_even(cheaper, identity, 4) == math.inf and pays(math.inf) == "always"
    assert break_even(identity, codec, 4) == 0.0 and pays(0.0) == "never"


def test_beside_gives_the_median_of_each_runs_time_over_its_copys(monkeypatch):
    """Each run is timed right after a copy; the ratio is the median of the pairs' ratios, the times
    the best of each: a copy slowed by other load in one pair moves the median, not the figure."""
    from psgd.bench import compress

    # (copy, codec) seconds per pair: the warm-up, then 5 pairs, one slowed throughout, one copy alone
    pairs = [(1.0, 2.0), (1.0, 2.0), (2.0, 4.0), (1.0, 1.8), (0.5, 2.0), (1.0, 2.2)]
    ticks, t = [], 0.0
    for copy, codec in pairs[1:]:
        ticks += [t, t + copy, t + copy + codec]
        t += copy + codec
    clock = iter(ticks)
    monkeypatch.setattr(compress, "now", lambda device: next(clock))
    calls = []
    beside = compress.Beside(lambda: calls.append("copy"), 5, torch.device("cpu"))
    best, ratio, out = beside.timed(lambda: calls.append("codec") or len(calls))
    assert calls == ["codec"] + ["copy", "codec"] * 5 and out == 11
    assert best == pytest.approx(1.8) and beside.reference_s == pytest.approx(0.5)
    assert ratio == pytest.approx(2.0)  # ratios 2, 2, 1.8, 4, 2.2: median 2
