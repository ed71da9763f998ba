"""Which device each rank computes on."""

from __future__ import annotations

import torch

from psgd.errors import ConfigError


def pick(setting: str, slot: int) -> torch.device:
    """'auto': CUDA when present, GPU ``slot`` mod count (slot: the worker's index among the
    workers on its machine, from 0; the server passes 0 and shares GPU 0); else CPU.
    'cuda' insists on a GPU; 'cpu' never uses one."""
    available = torch.cuda.is_available()
    if setting == "cuda" and not available:
        raise ConfigError("device = 'cuda' but no CUDA device is available")
    if setting == "cpu" or not available:
        return torch.device("cpu")
    return torch.device("cuda", slot % torch.cuda.device_count())


def local_slot(comm) -> int:
    """This rank's index among the worker ranks on its machine (0 for the server): ranks on
    several nodes share each node's GPUs round-robin, whatever the global numbering."""
    import numpy as np
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    members = np.zeros(node.Get_size(), dtype=np.int64)
    node.Allgather(np.array([comm.Get_rank()], dtype=np.int64), members)
    node.Free()
    rank = comm.Get_rank()
    workers = sorted(int(r) for r in members if r != 0)
    return 0 if rank == 0 else workers.index(rank)
