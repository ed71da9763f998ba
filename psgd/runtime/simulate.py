"""The in-process simulation: the same server and worker nodes as under MPI, with a
LocalTransport instead of MPI, so losses and byte counts are identical."""

from __future__ import annotations

from psgd.config import RunConfig
from psgd.runtime import devices
from psgd.runtime.server import RunResult, ServerNode
from psgd.runtime.transport import LocalTransport
from psgd.runtime.worker import WorkerNode


def run_in_process(cfg: RunConfig, n: int, log=None, progress=None) -> tuple[ServerNode, RunResult]:
    workers = {r: WorkerNode(cfg, r, n, devices.pick(cfg.device, r)) for r in range(1, n + 1)}
    server = ServerNode(cfg, n, devices.pick(cfg.device, 0), log=log, progress=progress)
    result = server.run(LocalTransport(workers))
    return server, result


__all__ = ["run_in_process"]
