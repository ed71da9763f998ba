"""Model + data + loss + metrics; importing a task's file registers it.

The public protocol: a task is a ``Task`` subclass (model as a flat vector, each worker's
gradient oracle over its shard, the server's evaluation: base.py), or ``task(...)``, a torch
model factory with its data, loss and metrics, which the generic task (generic.py) runs.
"""

from psgd.tasks import breast_cancer, cifar, digits, npz, ridge, synthetic  # noqa: F401  (registration)
from psgd.tasks.base import Task, TaskOptions, WorkerOracle
from psgd.tasks.generic import TaskSpec, TorchOptions, TorchTask, accuracy, task
from psgd.tasks.npz import load_npz
from psgd.tasks.registry import registered, task_class

__all__ = [
    "Task",
    "TaskOptions",
    "TaskSpec",
    "TorchOptions",
    "TorchTask",
    "WorkerOracle",
    "accuracy",
    "load_npz",
    "registered",
    "task",
    "task_class",
]
