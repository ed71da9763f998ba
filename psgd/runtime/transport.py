"""Transports move frames (bytes) between the server (rank 0) and workers.

MPITransport uses explicit Send/Recv of byte buffers, sizes by Iprobe + Get_count;
LocalTransport runs worker nodes in this process for the in-process simulation.
Both report the exact byte counts they moved. ``recv_any`` hands over whichever of several
senders' frames is in first (the server aggregates uplinks as they land).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Protocol

import torch

from psgd.errors import Stalled


class Transport(Protocol):
    def send(self, dest: int, data: bytes) -> None: ...

    def recv(self, source: int) -> bytes: ...

    def recv_any(self, sources: list[int], timeout: float | None = None) -> tuple[int, bytes]: ...


class MPITransport:
    TAG = 7

    def __init__(self, comm, pin: bool = False) -> None:
        """pin: receive into page-locked host memory (a CUDA rank), so bodies go to the device
        with non-blocking copies."""
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm
        self.pin = pin
        self.buffers: dict[int, object] = {}  # one receive buffer per sender, reused while it fits

    def send(self, dest: int, data: bytes) -> None:
        self.comm.Send([data, self.MPI.BYTE], dest=dest, tag=self.TAG)

    def recv(self, source: int) -> memoryview:
        return self.recv_any([source])[1]

    def recv_any(self, sources: list[int], timeout: float | None = None) -> tuple[int, memoryview]:
        """Wait, without spinning a core (Iprobe, then back off with short sleeps), for a frame
        from any of sources; receive it into that sender's buffer. The view stays valid until the
        next receive from the same sender (the server is done with a round's frames by then).
        Stalled when none arrives within timeout seconds (None: wait for ever)."""
        status = self.MPI.Status()
        delay, start = 0.0, time.monotonic()
        while True:
            for source in sources:
                if self.comm.Iprobe(source=source, tag=self.TAG, status=status):
                    return source, self._take(source, status.Get_count(self.MPI.BYTE))
            if timeout is not None and time.monotonic() - start > timeout:
                ranks = ", ".join(map(str, sources))
                raise Stalled(f"rank{'s' if len(sources) > 1 else ''} {ranks} sent nothing for {timeout:.0f} s")
            time.sleep(delay)
            delay = min(1e-3, delay * 2 + 1e-6)

    def _take(self, source: int, n: int) -> memoryview:
        buf = self.buffers.get(source)
        if buf is None or len(buf) < n:
            size = max(n, 64, 2 * len(buf) if buf is not None else 0)  # grow geometrically
            buf = torch.empty(size, dtype=torch.uint8, pin_memory=True).numpy() if self.pin else bytearray(size)
            self.buffers[source] = buf
        status = self.MPI.Status()
        self.comm.Recv([buf, n, self.MPI.BYTE], source=source, tag=self.TAG, status=status)
        if status.Get_count(self.MPI.BYTE) != n:
            raise RuntimeError(f"MPI delivered {status.Get_count(self.MPI.BYTE)} bytes, probed {n}")
        return memoryview(buf)[:n]


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

    def recv_any(self, sources: list[int], timeout: float | None = None) -> tuple[int, bytes]:
        """Every reply is in already: the first of sources (nothing can stall in one process)."""
        return sources[0], self.recv(sources[0])
