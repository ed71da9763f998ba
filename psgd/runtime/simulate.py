"""The in-process simulation: the same server and worker nodes as under MPI, with a
LocalTransport instead of MPI, so losses and byte counts are identical."""

from __future__ import annotations

import torch

from psgd.config import RunConfig
from psgd.runtime import devices, link
from psgd.runtime.server import RunResult, ServerNode
from psgd.runtime.transport import LocalTransport
from psgd.runtime.worker import WorkerNode


def run_in_process(
    cfg: RunConfig, n: int, log=None, progress=None, checkpoint_path=None, resume=None, history=(), stop=None
) -> tuple[ServerNode, RunResult]:
    """Run cfg with n in-process workers; the keywords are ServerNode's and ServerNode.run's.

    Torch runs on one intra-op thread meanwhile, as each MPI rank does, so that both give the
    same floats (a reduction split over threads sums in another order); the caller's thread
    count comes back afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run(cfg, n, log, progress, checkpoint_path, resume, history, stop)
    finally:
        torch.set_num_threads(threads)


def _run(cfg, n, log, progress, checkpoint_path, resume, history, stop):
    workers = {r: WorkerNode(cfg, r, n, devices.pick(cfg.device, r - 1)) for r in range(1, n + 1)}
    server = ServerNode(
        cfg, n, devices.pick(cfg.device, 0), log=log, progress=progress, checkpoint_path=checkpoint_path, stop=stop
    )
    transport = LocalTransport(workers)
    emulated = link.parse(cfg.link)
    if emulated is not None:  # as under MPI: the server's link carries every frame, one after another
        transport = link.EmulatedLink(transport, emulated, hold_receives=True)
    result = server.run(transport, resume=resume, history=history)
    return server, result


__all__ = ["run_in_process"]
