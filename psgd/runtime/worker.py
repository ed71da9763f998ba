"""A worker node: turns each downlink frame into an uplink frame through the method's
worker rule. Transport-free, so MPI ranks and the in-process simulation share it."""

from __future__ import annotations

import torch

from psgd.config import RunConfig
from psgd.errors import NonFiniteError
from psgd.methods import Context, build
from psgd.runtime import checkpoint
from psgd.runtime.clock import now
from psgd.runtime.frames import SendBuffer, pack, unpack
from psgd.tasks import task_class
from psgd.wire import Frame, decode_frame, encode_frame
from psgd.wire.frame import Kind


class TimedOracle:
    """Wraps a task oracle and accumulates the seconds spent computing gradients."""

    def __init__(self, oracle, device: torch.device) -> None:
        self.oracle, self.device = oracle, device
        self.seconds = 0.0

    def __call__(self, x: torch.Tensor, sample: int = 0) -> torch.Tensor:
        t0 = now(self.device)
        g = self.oracle(x, sample)
        self.seconds += now(self.device) - t0
        return g


class WorkerNode:
    def __init__(self, cfg: RunConfig, rank: int, n: int, device: torch.device) -> None:
        self.cfg, self.rank, self.n, self.device = cfg, rank, n, device
        task = task_class(cfg.task.name)(cfg.task, cfg.seed, n)
        self.dim = task.dim
        self.dtype = task.dtype  # of every message of the job
        self.method = build(cfg.method, task)
        self.oracle = task.oracle(rank, device)
        self.state = None
        self.round = 0
        self.sent = self.received = 0  # training traffic (the ledger's), restored on resume
        self.side_sent = self.side_received = 0  # checkpoint and evaluation frames of this session
        self.done = False
        self.up_buffer = SendBuffer()  # each round's uplink is built here (valid until the next)
        self.exit_status = 0

    def handle(self, data: bytes) -> bytes | None:
        """Process one frame from the server; return the reply frame (None: nothing to send)."""
        sent, received = self.sent, self.received + len(data)
        self.received = received
        try:
            frame = decode_frame(data, sender=0, round=None)
            if frame.kind in (Kind.SNAPSHOT, Kind.RESTORE, Kind.EVAL):  # not training traffic: outside the ledger
                self.received -= len(data)
                self.side_received += len(data)
                if frame.kind == Kind.EVAL:
                    side = self.model(frame)
                else:
                    side = self.snapshot(frame) if frame.kind == Kind.SNAPSHOT else self.restore(frame)
                self.side_sent += len(side) if side is not None else 0
                return side
            reply = self._handle(frame, len(data))
        except NonFiniteError as e:
            text = f"diverged: {e}; try a smaller method.lr"
            reply, _ = pack(Kind.ERROR, self.round, self.rank, [text[:500]])
        except Exception as e:  # the server reports it: one message, orderly shut-down
            reply, _ = pack(Kind.ERROR, self.round, self.rank, [f"{type(e).__name__}: {e}"[:500]])
        self.sent = sent + len(reply)
        return reply

    def snapshot(self, frame: Frame) -> bytes:
        tensors, scalars = checkpoint.capture(self.state) if self.state is not None else ({}, {})
        meta = {"scalars": scalars, "round": self.round, "sent": self.sent, "received": self.received}
        return encode_frame(Frame(Kind.STATE, frame.round, self.rank, [], [checkpoint.to_bytes(tensors, meta)]))

    def model(self, frame: Frame) -> bytes:
        """This worker's model once it applies the pending downlink (the EVAL frame's part), as raw bytes."""
        down_frame = decode_frame(bytes(frame.parts[0]), sender=0, round=frame.round)
        down, _ = unpack(down_frame, self.method.downlink_codecs(frame.round - 1), self.device, self.dim, self.dtype)
        ctx = Context(frame.round, self.rank, self.n, self.cfg.seed, self.device)
        x = self.method.worker_model(self.state, down, ctx).detach().to("cpu").contiguous()
        return encode_frame(Frame(Kind.MODEL, frame.round, self.rank, [], [x.numpy().tobytes()]))

    def restore(self, frame: Frame) -> None:
        tensors, meta = checkpoint.from_bytes(bytes(frame.parts[0]), f"state of worker {self.rank}")
        if self.state is None:  # a fresh state of the right shape, then overwritten
            d = self.dim
            ctx = Context(0, self.rank, self.n, self.cfg.seed, self.device)
            init = [torch.zeros(d, device=self.device) for _ in self.method.init_codecs()]
            self.state = self.method.worker_init(init, ctx)
        checkpoint.restore(self.state, tensors, meta["scalars"], self.device)
        self.round, self.sent, self.received = meta["round"], meta["sent"], meta["received"]
        return None

    def _handle(self, frame: Frame, nbytes: int) -> bytes:
        if frame.kind == Kind.BYE:
            self.done = True
            self.exit_status = int(frame.info[0]) if frame.info else 2
            # side counts in fixed width: this frame is training traffic, and its length must not
            # depend on how many checkpoints this session took (a resumed run repeats the bytes exactly)
            side = [n.to_bytes(8, "big") for n in (self.side_sent, self.side_received)]
            counts = [self.sent, self.received, str(self.device), *side]
            reply, _ = pack(Kind.LEDGER, frame.round, self.rank, counts)
            return reply
        if frame.kind != Kind.DOWN or frame.round != self.round:
            raise ValueError(f"expected the downlink of round {self.round}, got {frame.kind.name} round {frame.round}")
        t = self.round
        ctx = Context(t, self.rank, self.n, self.cfg.seed, self.device)
        t0 = now(self.device)
        codecs = self.method.init_codecs() if t == 0 else self.method.downlink_codecs(t - 1)
        down, _ = unpack(frame, codecs, self.device, self.dim, self.dtype)
        decode_s = now(self.device) - t0
        if t == 0:
            self.state, down = self.method.worker_init(down, ctx), []
        oracle = TimedOracle(self.oracle.at_round(t), self.device)
        t0 = now(self.device)
        messages = self.method.worker_step(self.state, down, oracle, ctx)
        encode_s = now(self.device) - t0 - oracle.seconds
        info = [float(self.oracle.last_loss), oracle.seconds, encode_s, decode_s, nbytes]
        reply, _ = pack(Kind.UP, t, self.rank, info, messages, self.up_buffer)
        self.round += 1
        return reply
