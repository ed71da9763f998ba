"""Bad input ends the job with one clear line on stderr and exit code 2."""

import json

import pytest

from psgd.train import main


@pytest.mark.parametrize(
    "args, message",
    [
        (["--set", "bogus=1"], "unknown key 'bogus'"),
        (["--set", "method.lr=fast"], "method.lr must be a number"),
        (["--set", "rounds=1.5"], "rounds: expected int"),
        (["--set", "method.uplink=nope:k=1"], "unknown compressor 'nope'"),
        (["--set", "method.uplink=topk:ratio=2"], "ratio must be in"),
        (["--set", "method.uplink=topk:size=2"], "unknown parameter 'size'"),
        (["--set", "method.name=adam"], "unknown method 'adam'"),
        (["--set", "task.name=imagenet"], "unknown task 'imagenet'"),
        (["--set", "task.split=weird"], "task.split"),
        (["--set", "device=tpu"], "device must be"),
        (["--set", "seed=-1"], "seed must be in [0, 2^32)"),
        (["--set", "seed=5000000000"], "seed must be in [0, 2^32)"),
        (["no/such/config.toml"], "config file not found"),
        (["--set", "novalue"], "--set expects key=value"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, capsys, tmp_path):
    assert main([*args, "--simulate", "2", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("psgd: error: ") and message in err[0]


def test_invalid_toml_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3\n")
    assert main([str(bad), "--simulate", "2"]) == 2
    assert "invalid TOML" in capsys.readouterr().err


def test_existing_out_folder_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "rounds.jsonl").write_text("precious\n")
    assert main(["--simulate", "2", "--out", str(out)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert (out / "rounds.jsonl").read_text() == "precious\n"


def test_run_folder_contents(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["--simulate", "2", "--out", str(out), "--set", "rounds=6", "--set", "eval_every=3"]) == 0
    lines = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in lines] == list(range(6))
    keys = {"round", "time_s", "compute_s", "encode_s", "comm_s", "decode_s", "loss", "bytes_up", "bytes_down"}
    assert all(keys <= r.keys() and len(r["bytes_up"]) == 2 for r in lines)
    assert "test_accuracy" in lines[2] and "test_accuracy" not in lines[3]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 3 and len(summary["bytes_up"]) == 2
    assert summary["bytes_down"][0] > sum(r["bytes_down"][0] for r in lines)  # + shut-down frame
    assert (out / "config.toml").read_text().startswith('name = "default"')
    assert "done: 6 rounds" in capsys.readouterr().out


def test_help_documents_keys(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--set" in out and "method.uplink" in out and "--simulate" in out


def test_another_task_on_the_embedded_default_drops_the_defaults_own_keys(tmp_path, capsys):
    """The default's task.hidden belongs to digits_mlp: naming another task drops it, while a
    key the user gives is still checked."""
    common = ["--simulate", "2", "--quiet", "--set", "rounds=2", "--set", "task.name=digits_logreg"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    assert "hidden" not in (tmp_path / "a" / "config.toml").read_text()
    assert main([*common, "--set", "task.hidden=3", "--out", str(tmp_path / "b")]) == 2
    assert "unknown key task.hidden" in capsys.readouterr().err


def test_a_diverging_run_says_so_and_keeps_its_rounds(tmp_path, capsys):
    args = ["--simulate", "2", "--quiet", "--set", "rounds=300", "--set", "task.name=synthetic"]
    out = tmp_path / "run"
    assert main([*args, "--set", "method.lr=50", "--set", "method.momentum=0", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "diverged in round" in err[0] and "smaller method.lr" in err[0]
    assert len((out / "rounds.jsonl").read_text().splitlines()) > 5  # the rounds before it stay for a report
