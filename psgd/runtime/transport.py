"""Transports move frames (bytes) between the server (rank 0) and workers.

MPITransport uses explicit Send/Recv of byte buffers, sizes by Iprobe + Get_count;
LocalTransport runs worker nodes in this process for the in-process simulation.
Both report the exact byte counts they moved.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Protocol


class Transport(Protocol):
    def send(self, dest: int, data: bytes) -> None: ...

    def recv(self, source: int) -> bytes: ...


class MPITransport:
    TAG = 7

    def __init__(self, comm) -> None:
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm

    def send(self, dest: int, data: bytes) -> None:
        self.comm.Send([data, self.MPI.BYTE], dest=dest, tag=self.TAG)

    def recv(self, source: int) -> bytes:
        """Wait for a frame without spinning a core: Iprobe, then back off with short sleeps."""
        status = self.MPI.Status()
        delay = 0.0
        while not self.comm.Iprobe(source=source, tag=self.TAG, status=status):
            time.sleep(delay)
            delay = min(1e-3, delay * 2 + 1e-6)
        buf = bytearray(status.Get_count(self.MPI.BYTE))
        self.comm.Recv([buf, self.MPI.BYTE], source=source, tag=self.TAG, status=status)
        if status.Get_count(self.MPI.BYTE) != len(buf):
            raise RuntimeError(f"MPI delivered {status.Get_count(self.MPI.BYTE)} bytes, probed {len(buf)}")
        return bytes(buf)


class LocalTransport:
    """Delivers each frame to an in-process worker node at once and queues its reply."""

    def __init__(self, workers: dict) -> None:
        self.workers = workers
        self.outbox: dict[int, deque[bytes]] = {rank: deque() for rank in workers}

    def send(self, dest: int, data: bytes) -> None:
        reply = self.workers[dest].handle(data)
        if reply is not None:
            self.outbox[dest].append(reply)

    def recv(self, source: int) -> bytes:
        return self.outbox[source].popleft()
