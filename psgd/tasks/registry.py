"""Tasks by name: one file per task family, one ``@register`` line per task."""

from __future__ import annotations

from psgd.registry import Registry
from psgd.tasks.base import Task

_TASKS: Registry[type[Task]] = Registry("task")
register = _TASKS.register
task_class = _TASKS.get
registered = _TASKS.registered
