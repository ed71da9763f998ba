"""tests/gpu_check.sh is valid bash and names only modules, options and config keys that exist
(it runs on GPU machines only, where a typo would cost a whole device session)."""

import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

from psgd import config, train
from psgd.bench.__main__ import parser as bench_parser

SCRIPT = Path(__file__).with_name("gpu_check.sh")
TEXT = SCRIPT.read_text()
VARIABLES = {"$device": "cuda", "$d": "1000", "$OUT": "/tmp/gpu-out", "$py": "python3"}


def command_lines(marker: str) -> list[list[str]]:
    """The script's commands after ``marker`` (continued lines joined), variables filled in."""
    text = TEXT.replace("\\\n", " ")
    lines = [line.split(marker, 1)[1] for line in text.splitlines() if marker in line and not line.startswith("#")]
    out = []
    for line in lines:
        for name, value in VARIABLES.items():
            line = line.replace(f'"{name}"', value).replace(name, value)
        out.append(shlex.split(line.split('"${task[@]}"')[0]))
    return out


def test_the_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_the_modules_it_runs_exist():
    code = "\n".join(line for line in TEXT.splitlines() if not line.startswith("#"))
    for module in set(re.findall(r"-m ([\w.]+)", code)) - {"pip", "pytest"}:  # installed there when missing
        assert importlib.util.find_spec(module) is not None, module
    assert Path(SCRIPT.parent, "test_compress_cuda.py").is_file()


def test_the_bench_commands_parse():
    commands = command_lines("-m psgd.bench ")
    assert [c[0] for c in commands] == ["compress", "round"]
    for argv in commands:
        args = bench_parser().parse_args(argv)
        assert args.table and args.out.startswith("/tmp/gpu-out/")


def test_the_training_job_uses_real_config_keys():
    (argv,) = command_lines("-m psgd.train ")
    args = train.parser().parse_args(argv)
    cfg = config.load(None, [*args.set, "task.name=synthetic"])
    assert (cfg.device, cfg.rounds) == ("cuda", 200)
    assert "--set task.name=synthetic" in TEXT
