"""A worker node: turns each downlink frame into an uplink frame through the method's
worker rule. Transport-free, so MPI ranks and the in-process simulation share it."""

from __future__ import annotations

import time

import torch

from psgd.config import RunConfig
from psgd.methods import Context, build
from psgd.runtime.frames import pack, unpack
from psgd.tasks import task_class
from psgd.wire import decode_frame
from psgd.wire.frame import Kind


class TimedOracle:
    """Wraps a task oracle and accumulates the seconds spent computing gradients."""

    def __init__(self, oracle) -> None:
        self.oracle = oracle
        self.seconds = 0.0

    def __call__(self, x: torch.Tensor, sample: int = 0) -> torch.Tensor:
        t0 = time.perf_counter()
        g = self.oracle(x, sample)
        self.seconds += time.perf_counter() - t0
        return g


class WorkerNode:
    def __init__(self, cfg: RunConfig, rank: int, n: int, device: torch.device) -> None:
        self.cfg, self.rank, self.n, self.device = cfg, rank, n, device
        task = task_class(cfg.task.name)(cfg.task, cfg.seed, n)
        self.method = build(cfg.method, task)
        self.oracle = task.oracle(rank, device)
        self.state = None
        self.round = 0
        self.sent = self.received = 0
        self.done = False
        self.exit_status = 0

    def handle(self, data: bytes) -> bytes | None:
        """Process one frame from the server; return the reply frame (None: nothing to send)."""
        self.received += len(data)
        try:
            reply = self._handle(data)
        except Exception as e:  # the server reports it: one message, orderly shut-down
            reply, _ = pack(Kind.ERROR, self.round, self.rank, [f"{type(e).__name__}: {e}"[:500]])
        self.sent += len(reply)
        return reply

    def _handle(self, data: bytes) -> bytes:
        frame = decode_frame(data, sender=0, round=None)
        if frame.kind == Kind.BYE:
            self.done = True
            self.exit_status = int(frame.info[0]) if frame.info else 2
            reply, _ = pack(Kind.LEDGER, frame.round, self.rank, [self.sent, self.received, str(self.device)])
            return reply
        if frame.kind != Kind.DOWN or frame.round != self.round:
            raise ValueError(f"expected the downlink of round {self.round}, got {frame.kind.name} round {frame.round}")
        t = self.round
        ctx = Context(t, self.rank, self.n, self.cfg.seed, self.device)
        t0 = time.perf_counter()
        codecs = self.method.init_codecs() if t == 0 else self.method.downlink_codecs(t - 1)
        down, _ = unpack(frame, codecs, self.device)
        decode_s = time.perf_counter() - t0
        if t == 0:
            self.state, down = self.method.worker_init(down, ctx), []
        oracle = TimedOracle(self.oracle.at_round(t))
        t0 = time.perf_counter()
        messages = self.method.worker_step(self.state, down, oracle, ctx)
        encode_s = time.perf_counter() - t0 - oracle.seconds
        info = [float(self.oracle.last_loss), oracle.seconds, encode_s, decode_s, len(data)]
        reply, _ = pack(Kind.UP, t, self.rank, info, messages)
        self.round += 1
        return reply
