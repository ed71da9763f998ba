"""The benchmarks run on small sizes and report the bytes the papers count (their timings are
measurements, never asserted)."""

import json
import math

from psgd.bench.__main__ import main


def run(capsys, *args) -> dict:
    assert main(list(args)) == 0
    return json.loads(capsys.readouterr().out)


def test_round_reports_the_frames_bytes(capsys):
    r = run(capsys, "round", "--d", "1000", "--repeat", "1", "--specs", "identity", "topk:k=10")
    identity, topk = r["results"]
    assert r["d"] == 1000 and r["workers"] == 4
    body = math.ceil(10 * (32 + 10) / 8)  # k (32 + ceil(log2 d)) bits
    assert 0 < identity["bytes_up_per_worker"] - 4000 <= 64 and 0 < topk["bytes_up_per_worker"] - body <= 64
    assert identity["server_round_ms"] > 0 and topk["server_round_ms"] > 0


def test_compress_reports_bits_per_coordinate_and_the_topk_ratio(capsys):
    args = ["compress", "--d", "1000", "--repeat", "1", "--spherical-d", "64"]
    r = run(capsys, *args, "--specs", "identity", "sign", "topk:k=10")
    by_spec = {x["spec"]: x for x in r["devices"][0]["results"]}
    assert by_spec["identity"]["bits_per_coordinate"] == 32.0
    assert by_spec["sign"]["bits_per_coordinate"] == 1.0
    assert by_spec["topk:k=10"]["bits_per_coordinate"] == math.ceil(420 / 8) * 8 / 1000
    assert by_spec["topk:k=10"]["topk_vs_torch_topk"] > 0 and by_spec["identity"]["encode_vs_copy"] > 0
