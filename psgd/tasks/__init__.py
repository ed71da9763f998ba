"""Model + data + loss + metrics; importing a task's file registers it."""

from psgd.tasks import breast_cancer, cifar, digits, ridge, synthetic  # noqa: F401  (registration)
from psgd.tasks.base import Task, TaskOptions, WorkerOracle
from psgd.tasks.registry import registered, task_class

__all__ = ["Task", "TaskOptions", "WorkerOracle", "registered", "task_class"]
