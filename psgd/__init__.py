"""psgd: compressed-communication distributed SGD on an MPI parameter server, every byte counted."""

import os

__version__ = "0.1.0"

# torch's CPU allocator backs large tensors with transparent huge pages when this is set (read at
# allocation time): a fresh 45 MB buffer then costs ~1.5 copies instead of ~5 in page faults. A
# user's own setting wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from psgd.memory import keep_freed_pages  # noqa: E402  (after the variable above: before any tensor)

keep_freed_pages()


_LAZY = {
    "simulate": ("psgd.simulation", "simulate"),
    "Task": ("psgd.tasks", "Task"),
    "TaskOptions": ("psgd.tasks", "TaskOptions"),
    "WorkerOracle": ("psgd.tasks", "WorkerOracle"),
    "TaskSpec": ("psgd.tasks", "TaskSpec"),
    "task": ("psgd.tasks", "task"),
}


def __getattr__(name: str):
    """``psgd.simulate``, the task protocol (``psgd.Task``, ``psgd.task``, ...) and ``psgd.main`` are
    imported on first use: ``import psgd`` stays cheap."""
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(__import__(module, fromlist=[attr]), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'psgd' has no attribute {name!r}")


def main(task=None, argv: list[str] | None = None) -> int:
    """A user's own script as a psgd job: ``raise SystemExit(psgd.main(make_task))`` under
    ``if __name__ == "__main__":``, then ``mpirun -n 5 python my_script.py [CONFIG] [--set k=v ...]``
    or ``python my_script.py --simulate 4``: the command line of ``python -m psgd.train`` (config
    keys, --set, --out, --resume, signals), with task.name set to ``make_task``'s import path.
    ``make_task`` returns ``psgd.task(...)`` (or is one, or is a ``psgd.Task`` subclass)."""
    from psgd.train import main as train_main

    return train_main(argv, task=task)


__all__ = ["Task", "TaskOptions", "TaskSpec", "WorkerOracle", "main", "simulate", "task"]
