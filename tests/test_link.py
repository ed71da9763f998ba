"""The emulated link: parsing, hold times, and that it changes time, never bytes."""

import json

import pytest

from psgd.errors import ConfigError
from psgd.runtime import link
from psgd.train import main


@pytest.mark.parametrize(
    "spec, bandwidth, latency",
    [
        ("bandwidth=1Gbit,latency=50us", 1e9, 50e-6),
        ("bandwidth=100MB,latency=2ms", 8e8, 2e-3),
        ("latency=1s,bandwidth=10kbit", 1e4, 1.0),
        ("bandwidth=2.5Gbps", 2.5e9, 0.0),
    ],
)
def test_parse(spec, bandwidth, latency):
    parsed = link.parse(spec)
    assert parsed.bandwidth == pytest.approx(bandwidth) and parsed.latency == pytest.approx(latency)


@pytest.mark.parametrize(
    "spec",
    ["bandwidth=fast", "bandwidth=0Gbit", "latency=5", "speed=1Gbit", "bandwidth", "bandwidth=1Gbit,bandwidth=2Gbit"],
)
def test_bad_specs_name_the_part(spec):
    with pytest.raises(ConfigError, match="link"):
        link.parse(spec)


def test_hold_is_latency_plus_transfer_time():
    assert link.Link(1e6, 1e-3).hold(1000) == pytest.approx(1e-3 + 8e-3)


def test_simulated_link_holds_every_frame_and_keeps_the_ledger(tmp_path, monkeypatch):
    common = ["--simulate", "2", "--quiet", "--set", "rounds=6", "--set", "eval_every=3"]
    assert main([*common, "--out", str(tmp_path / "plain")]) == 0
    held = []
    monkeypatch.setattr(link.time, "sleep", held.append)
    assert main([*common, "--link", "bandwidth=8Mbit,latency=1ms", "--out", str(tmp_path / "slow")]) == 0
    plain, slow = (json.loads((tmp_path / f / "summary.json").read_text()) for f in ("plain", "slow"))
    assert plain["bytes_up"] == slow["bytes_up"] and plain["bytes_down"] == slow["bytes_down"]
    assert plain["final_metrics"] == slow["final_metrics"]
    # one hold per frame in each direction, checkpoint frames included: 1 ms + bytes / 1 MB/s
    moved = sum(
        slow[k][w] for k in ("bytes_up", "bytes_down", "checkpoint_bytes_up", "checkpoint_bytes_down") for w in (0, 1)
    )
    frames = 2 * (2 * (6 + 1) + 2)  # per worker: rounds + BYE each way, plus the final checkpoint's two frames
    assert len(held) == frames
    assert sum(held) == pytest.approx(frames * 1e-3 + moved / 1e6)
    assert "bandwidth=8Mbit" in (tmp_path / "slow" / "config.toml").read_text()
