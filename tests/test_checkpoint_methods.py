"""Every method's state survives a checkpoint: split at a checkpoint and resumed, each
method repeats its uninterrupted run exactly (in process; test_checkpoint.py covers MPI)."""

import pytest

from psgd import config
from psgd.methods import method_class, registered
from psgd.runtime import checkpoint
from psgd.runtime.simulate import run_in_process

UPLINK = {"diana": "natural", "adiana": "natural", "hard_threshold": "hard_threshold:lam=0.01"}
COMPRESSED_DOWNLINK = ("doublesqueeze", "liec", "ef14")  # the methods with a server-side error


def make_config(name: str, rounds: int) -> config.RunConfig:
    fields = method_class(name).Options.__dataclass_fields__
    task = (
        {"name": "digits_logreg", "l2": 0.01} if name == "adiana" else {"name": "digits_mlp", "hidden": 16}
    )  # ADIANA needs mu
    method = {
        "name": name,
        "lr": 0.05,
        "momentum": 0.0 if name == "adiana" else 0.9,
        "uplink": UPLINK.get(name, "topk:ratio=0.1"),
        "downlink": "scaled_sign" if name in COMPRESSED_DOWNLINK else "identity",
        **({"period": 3} if "period" in fields else {}),  # LIEC and CSER sync on both sides of the split
    }
    return config.from_dict({"rounds": rounds, "eval_every": 4, "device": "cpu", "task": task, "method": method})


@pytest.mark.parametrize("name", sorted(registered()))
def test_resumed_method_repeats_the_uninterrupted_run(name, tmp_path):
    full_cfg = make_config(name, 12)
    _, full = run_in_process(full_cfg, 2)
    part_cfg = make_config(name, 8)
    path = tmp_path / "checkpoint.psgd"
    _, part = run_in_process(part_cfg, 2, checkpoint_path=path)
    _, resumed = run_in_process(full_cfg, 2, resume=checkpoint.load(path), history=part.rounds)
    assert [r["loss"] for r in resumed.rounds] == [r["loss"] for r in full.rounds]
    assert [r["bytes_up"] for r in resumed.rounds] == [r["bytes_up"] for r in full.rounds]
    assert [r["bytes_down"] for r in resumed.rounds] == [r["bytes_down"] for r in full.rounds]
    assert resumed.summary["bytes_up"] == full.summary["bytes_up"]
    assert resumed.summary["bytes_down"] == full.summary["bytes_down"]
    assert resumed.model.equal(full.model)
