"""Tasks by name: one file per task family, one ``@register`` line per task; and a user's task
by import path, ``package.module:factory`` or ``path/to/file.py:factory``, imported on every
rank. The factory is a psgd.Task subclass, a TaskSpec (``psgd.task(...)``), or a function of
no arguments returning either; a bad path or object is one ConfigError."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from pathlib import Path

from psgd.errors import ConfigError
from psgd.registry import Registry
from psgd.tasks.base import Task

_TASKS: Registry[type[Task]] = Registry("task")
register = _TASKS.register
registered = _TASKS.registered
_IMPORTED: dict[str, type[Task]] = {}  # import path -> task class, resolved once per process


def task_class(name: str) -> type[Task]:
    """The class of a registered name or of an import path (see the module)."""
    if ":" not in name:
        return _TASKS.get(name)
    if name not in _IMPORTED:
        _IMPORTED[name] = as_task_class(name, import_object(name))
    return _IMPORTED[name]


def import_object(name: str):
    module, _, attr = name.rpartition(":")
    if not module or not attr:
        raise ConfigError(f"task.name {name!r}: expected 'package.module:factory' or 'path/to/file.py:factory'")
    try:
        mod = import_file(Path(module)) if module.endswith(".py") else importlib.import_module(module)
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"task.name {name!r}: no module named {e.name!r} (is its folder on PYTHONPATH on every node?)"
        ) from None
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"task.name {name!r}: importing {module} raised {type(e).__name__}: {e}") from None
    try:
        return functools.reduce(getattr, attr.split("."), mod)
    except AttributeError:
        raise ConfigError(f"task.name {name!r}: module {module!r} has no attribute {attr!r}") from None


def import_file(path: Path):
    if not path.is_file():
        raise ConfigError(f"task.name: no such file {str(path)!r} (relative paths start at the working directory)")
    key = f"psgd_user.{path.resolve().with_suffix('').as_posix().strip('/').replace('/', '.')}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules[key] = module
        try:
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        except BaseException:
            del sys.modules[key]
            raise
    return sys.modules[key]


def as_task_class(name: str, obj) -> type[Task]:
    """obj as a Task class: itself, a class running its TaskSpec, or what the factory returns."""
    from psgd.tasks.generic import TaskSpec, TorchTask

    made = obj
    if callable(obj) and not isinstance(obj, type | TaskSpec):
        try:
            made = obj()
        except Exception as e:
            raise ConfigError(f"task.name {name!r}: the factory raised {type(e).__name__}: {e}") from None
    if isinstance(made, type) and issubclass(made, Task):
        return made
    if isinstance(made, TaskSpec):
        return type("UserTask", (TorchTask,), {"name": name, "spec": made, "__module__": __name__})
    raise ConfigError(
        f"task.name {name!r} is not a task: expected a psgd.Task subclass, psgd.task(...) or a function "
        f"returning one, got {type(made).__name__}"
    )


def use(obj) -> str:
    """The import path of obj (a factory, TaskSpec-returning function or Task subclass handed to
    psgd.main by a script), with obj resolved under it: every rank runs the script, so none imports it
    again. A script's own objects are named by its path (or by its module under ``python -m``)."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if module is None or qualname is None or "<" in qualname:
        raise ConfigError(f"psgd.main: give a module-level function or class, got {obj!r}")
    if module == "__main__":
        main = sys.modules["__main__"]
        spec = getattr(main, "__spec__", None)
        if spec is not None and spec.name:
            module = spec.name
        else:
            path = Path(main.__file__).resolve()
            module = str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
    name = f"{module}:{qualname}"
    if name not in _IMPORTED:
        _IMPORTED[name] = as_task_class(name, obj)
    return name
