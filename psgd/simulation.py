"""``psgd.simulate``: try a method on your own gradient functions, through the real runtime.

    r = psgd.simulate(method="ef21", uplink="topk:k=1", downlink="identity",
                      grads=[g1, g2, g3], x0=x0, lr=0.1, rounds=500)
    r.x, r.losses, r.bytes_up, r.bytes_down

The functions become a task whose worker i calls ``grads[i - 1]``; the job then runs in the
in-process simulation (``psgd.runtime.simulate.run_in_process``): the same method rules, frames,
encode / to_bytes / from_bytes / decode path and byte ledger as ``mpirun -n N+1 python -m psgd.train``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from psgd import config
from psgd.runtime.simulate import run_in_process
from psgd.tasks.base import Task, TaskOptions, WorkerOracle
from psgd.tasks.registry import register


@dataclass
class Problem:
    grads: Sequence[Callable]
    x0: torch.Tensor
    loss: Callable | None
    as_numpy: bool
    constants: dict | None


_PROBLEMS: dict[str, Problem] = {}
_KEYS = itertools.count()


@dataclass(frozen=True)
class FunctionsOptions(TaskOptions):
    name: str = "functions"
    key: str = ""  # which psgd.simulate call's functions (set by psgd.simulate only)


class FunctionOracle(WorkerOracle):
    def __init__(self, grad: Callable, as_numpy: bool) -> None:
        super().__init__()
        self.grad, self.as_numpy = grad, as_numpy

    def __call__(self, x: torch.Tensor, sample: int = 0) -> torch.Tensor:
        arg = x.detach().cpu().numpy().copy() if self.as_numpy else x.detach().clone()
        g = self.grad(arg)
        g = g if isinstance(g, torch.Tensor) else torch.as_tensor(np.asarray(g))
        if g.numel() != x.numel():
            raise ValueError(f"a gradient function returned {g.numel()} values for x of size {x.numel()}")
        return g.reshape(-1).to(dtype=x.dtype, device=x.device)


@register
class Functions(Task):
    """The task of one ``psgd.simulate`` call: user gradient functions, one per worker."""

    name = "functions"
    Options = FunctionsOptions

    def __init__(self, options, seed, n):
        super().__init__(options, seed, n)
        if options.key not in _PROBLEMS:
            raise ValueError("task 'functions' is made by psgd.simulate only")
        self.problem = _PROBLEMS[options.key]

    @property
    def dim(self) -> int:
        return self.problem.x0.numel()

    def init_params(self) -> torch.Tensor:
        return self.problem.x0.clone()

    @property
    def dtype(self) -> torch.dtype:
        return self.problem.x0.dtype

    def oracle(self, worker, device):
        return FunctionOracle(self.problem.grads[worker - 1], self.problem.as_numpy)

    def evaluate(self, x):
        p = self.problem
        if p.loss is None:
            return {}
        return {"objective": float(p.loss(x.cpu().numpy().copy() if p.as_numpy else x.detach().clone()))}

    def constants(self):
        return self.problem.constants


@dataclass
class SimulationResult:
    x: np.ndarray | torch.Tensor  # the server's final model, numpy when x0 was numpy
    losses: list[float]  # loss(x) after each round (empty without a loss function)
    bytes_up: list[int]  # per round: bytes all workers sent (frame headers included)
    bytes_down: list[int]  # per round: bytes the server sent to all workers
    body_up: list[int]  # per round: the compressed payloads alone (headers excluded)
    body_down: list[int]
    rounds: list[dict] = field(default_factory=list)  # the runtime's round records
    summary: dict = field(default_factory=dict)


def simulate(
    method: str,
    uplink: str = "identity",
    downlink: str = "identity",
    *,
    grads: Sequence[Callable],
    x0,
    lr: float | str = 0.1,
    rounds: int = 100,
    loss: Callable | None = None,
    seed: int = 0,
    L: float | None = None,
    mu: float | None = None,
    L_i: Sequence[float] | None = None,
    device: str = "cpu",
    **method_options,
) -> SimulationResult:
    """Run ``method`` with len(grads) workers for ``rounds`` rounds from x0.

    grads[i](x) returns worker i+1's gradient at x (numpy in, numpy out when x0 is numpy;
    torch otherwise). lr = "theory" takes the theorem's step size from L (and mu, L_i).
    Other keywords are the method's options (momentum, period, eta, ...). Bad options raise
    ConfigError with the same message a config file would get.

    Arithmetic: the server and the workers compute in x0's dtype (float64 for numpy and integer
    x0); messages cross the wire as their codecs encode them, as in a job (identity: fp32 values).
    The run starts from fp32(x0): x0 is rounded to fp32 once, before the run, because the round-0
    downlink ships the initial model in fp32; so the server holds the workers' model from the
    start, not one offset by x0 - fp32(x0). x0 must be finite and within fp32's range.
    """
    if not grads:
        raise ValueError("grads: give one gradient function per worker")
    as_numpy = not isinstance(x0, torch.Tensor)
    start = torch.as_tensor(np.asarray(x0) if as_numpy else x0).detach().reshape(-1).clone()
    if not start.is_floating_point():
        start = start.to(torch.float64)
    if not bool(start.abs().le(torch.finfo(torch.float32).max).all()):
        raise ValueError("x0: its values must be finite and within fp32's range (the wire carries fp32)")
    # the round-0 downlink ships x0 in fp32: round it once, here, so that the server starts where the workers do
    start = start.to(torch.float32).to(start.dtype)
    known = {k: v for k, v in (("L", L), ("mu", mu), ("L_i", None if L_i is None else list(L_i))) if v is not None}
    key = str(next(_KEYS))
    _PROBLEMS[key] = Problem(list(grads), start, loss, as_numpy, known or None)
    try:
        cfg = config.from_dict(
            {
                "name": "simulate",
                "seed": seed,
                "rounds": rounds,
                "eval_every": 1 if loss is not None else rounds,
                "device": device,
                "task": {"name": "functions", "key": key},
                "method": {"name": method, "uplink": uplink, "downlink": downlink, "lr": lr, **method_options},
            }
        )
        _, result = run_in_process(cfg, len(grads))
    finally:
        del _PROBLEMS[key]
    recs = result.rounds
    x = result.model.detach().cpu().clone()
    return SimulationResult(
        x=x.numpy() if as_numpy else x,
        losses=[r.get("objective", math.nan) for r in recs] if loss is not None else [],
        bytes_up=[sum(r["bytes_up"]) for r in recs],
        bytes_down=[sum(r["bytes_down"]) for r in recs],
        body_up=[sum(r["bytes_up"]) - sum(r["header_up"]) for r in recs],
        body_down=[sum(r["bytes_down"]) - sum(r["header_down"]) for r in recs],
        rounds=recs,
        summary=result.summary,
    )
