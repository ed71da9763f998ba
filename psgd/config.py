"""Run configuration: a TOML file (default: the one embedded in the package), ``--set``
overrides of any key, and validation against the task's and method's option dataclasses.
Every mistake becomes one ConfigError that names the key."""

from __future__ import annotations

import copy
import dataclasses
import tomllib
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from psgd.errors import ConfigError
from psgd.methods import MethodOptions, build, method_class
from psgd.runtime import link
from psgd.tasks import TaskOptions, task_class


@dataclass(frozen=True)
class RunConfig:
    task: TaskOptions
    method: MethodOptions
    name: str = "run"  # the run folder's name (load() defaults it to the config file's stem)
    seed: int = 0
    rounds: int = 300
    eval_every: int = 50
    device: str = "auto"  # "auto": each worker on a GPU when there is one (round-robin), else CPU
    link: str = ""  # emulated link, e.g. "bandwidth=1Gbit,latency=50us" (empty: none)
    checkpoint_every: int = 0  # rounds between checkpoints (0: only at the end)
    timeout_s: float = 0.0  # seconds a rank waits for a frame before the job ends as stalled (0: auto)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


TOP_LEVEL = {f.name: f for f in dataclasses.fields(RunConfig)}


def _parse_value(raw: str):
    """A --set value as TOML (numbers, booleans, lists, quoted strings), else a bare string."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"--set expects key=value, got {item!r}")
        *path, leaf = key.strip().split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a table")
        node[leaf] = _parse_value(raw.strip())
    return data


def _check_type(where: str, value, kind):
    origin = typing.get_origin(kind)
    if origin is list:
        (item,) = typing.get_args(kind)
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check_type(f"{where}[]", v, item) for v in value]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for option in typing.get_args(kind):
            try:
                return _check_type(where, value, option)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} has the wrong type ({kind})")
    if kind is type(None):
        if value is None:
            return value
        raise ConfigError(f"{where}: expected nothing, got {value!r}")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(section: str, cls: type, data: dict):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise ConfigError(f"unknown key {section}.{key}; known: {', '.join(sorted(known))}")
    kwargs = {k: _check_type(f"{section}.{k}", v, hints[k]) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def from_dict(data: dict) -> RunConfig:
    for key in data:
        if key not in TOP_LEVEL:
            raise ConfigError(f"unknown key {key!r}; known: {', '.join(sorted(TOP_LEVEL))}")
    for section in ("task", "method"):
        if not isinstance(data.get(section), dict) or "name" not in data[section]:
            raise ConfigError(f"[{section}] table with a name is required")
    try:
        task_cls = task_class(data["task"]["name"])
        method_cls = method_class(data["method"]["name"])
    except ValueError as e:
        raise ConfigError(str(e)) from None
    task = _build("task", task_cls.Options, data["task"])
    method = _build("method", method_cls.Options, data["method"])
    hints = typing.get_type_hints(RunConfig)
    top = {k: _check_type(k, v, hints[k]) for k, v in data.items() if k not in ("task", "method")}
    cfg = RunConfig(task=task, method=method, **top)
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2^32), got {cfg.seed}")
    if cfg.rounds < 1:
        raise ConfigError(f"rounds must be >= 1, got {cfg.rounds}")
    if cfg.eval_every < 1:
        raise ConfigError(f"eval_every must be >= 1, got {cfg.eval_every}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda', got {cfg.device!r}")
    if not cfg.timeout_s >= 0:
        raise ConfigError(f"timeout_s must be >= 0 (0: automatic), got {cfg.timeout_s}")
    if cfg.checkpoint_every < 0:
        raise ConfigError(f"checkpoint_every must be >= 0, got {cfg.checkpoint_every}")
    link.parse(cfg.link)
    try:
        build(method)  # builds the compressors: unknown specs fail here, on every rank alike
    except ValueError as e:
        raise ConfigError(f"method: {e}") from None
    return cfg


def load(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a TOML config (None: the embedded default) and apply ``key=value`` overrides."""
    if path is None:
        text = resources.files("psgd").joinpath("default.toml").read_text()
        source = "embedded default"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        text, source = p.read_text(), str(p)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: invalid TOML: {e}") from None
    if path is not None:
        data.setdefault("name", Path(path).stem)
        return from_dict(apply_overrides(data, list(overrides)))
    return from_dict(_retarget(data, apply_overrides(copy.deepcopy(data), list(overrides)), overrides))


def _retarget(default: dict, data: dict, overrides: list[str]) -> dict:
    """``--set task.name=...`` (or method.name) on the embedded default: the default's keys
    that the new task or method does not have are dropped, not reported as the user's."""
    given = {item.partition("=")[0].strip() for item in overrides}
    for section, lookup in (("task", task_class), ("method", method_class)):
        name = data.get(section, {}).get("name")
        if name == default[section]["name"]:
            continue
        try:
            known = {f.name for f in dataclasses.fields(lookup(name).Options)}
        except (ValueError, TypeError):
            continue  # an unknown name: from_dict says so
        for key in default[section]:
            if key not in known and f"{section}.{key}" not in given:
                del data[section][key]
    return data


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} as TOML")


def to_toml(cfg: RunConfig) -> str:
    """The resolved config, loadable again with ``load``."""
    d = cfg.to_dict()
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict) and v is not None]
    for section in ("task", "method"):
        lines += ["", f"[{section}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in d[section].items() if v is not None]
    return "\n".join(lines) + "\n"
