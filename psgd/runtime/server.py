"""The server loop (rank 0): ship the model, then each round send the downlink to every
worker, take each uplink as it lands (parsed once, accumulated into the running aggregate in
rank order: aggregate.py), run the method's server rule on the means, log the round.

Every frame goes through the ledger. At shut-down each worker reports the bytes it sent
and received; they must equal the server's counts, or the run fails loudly.

Checkpoints (every ``checkpoint_every`` rounds and after the last round) hold the server's
method state, every worker's state (fetched with SNAPSHOT frames), the downlink frame of
the next round and the ledger. Every random draw is seeded by (seed, rank, round,
purpose), so these are all a resumed run needs to repeat the uninterrupted run exactly.
Checkpoint frames are not training traffic: they are counted apart (``checkpoint_bytes_*``),
as are the frames that fetch the workers' models to evaluate their average for methods
whose workers hold models of their own between syncs (``eval_bytes_*``).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch

from psgd.config import RunConfig
from psgd.errors import FrameError, Interrupted, NonFiniteError, PsgdError, Stalled
from psgd.methods import Context, build
from psgd.runtime import checkpoint
from psgd.runtime.aggregate import Aggregator
from psgd.runtime.clock import now
from psgd.runtime.frames import SendBuffer, pack, parse
from psgd.runtime.ledger import Counts, Ledger
from psgd.runtime.patience import Patience
from psgd.runtime.signals import STOPPED, StopRequest
from psgd.runtime.transport import Transport
from psgd.tasks import task_class
from psgd.wire import Frame, decode_frame, encode_frame
from psgd.wire.frame import Kind


def check_uplink(frame: Frame, w: int, t: int) -> None:
    """An uplink is an UP frame whose info is [loss, compute s, encode s, decode s, bytes received]."""
    if frame.kind != Kind.UP:
        raise FrameError(f"malformed frame from rank {w} in round {t}: {frame.kind.name}, expected UP")
    info = frame.info
    if len(info) != 5 or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in info):
        raise FrameError(f"malformed frame from rank {w} in round {t}: info {info!r:.80} is not 5 numbers")


@dataclass
class RunResult:
    rounds: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    model: torch.Tensor | None = None


class ServerNode:
    def __init__(
        self,
        cfg: RunConfig,
        n: int,
        device: torch.device,
        log=None,
        progress=None,
        checkpoint_path=None,
        stop: StopRequest | None = None,
    ) -> None:
        """``stop``: a signal received meanwhile ends the run at the next round boundary, after a
        checkpoint (needs checkpoint_path)."""
        self.cfg, self.n, self.device = cfg, n, device
        self.task = task_class(cfg.task.name)(cfg.task, cfg.seed, n)
        self.method = build(cfg.method, self.task)
        self.ledger = Ledger(n)
        self.checkpoint_bytes = Ledger(n)  # SNAPSHOT/STATE/RESTORE frames, apart from training traffic
        self.eval_bytes = Ledger(n)  # EVAL/MODEL frames (local-model methods' evaluation), apart too
        self.log = log or (lambda record: None)
        self.progress = progress or (lambda record, cfg: None)
        self.checkpoint_path = checkpoint_path
        self.worker_devices: list[str] = []
        self.patience = Patience(cfg.timeout_s)
        self.down_buffer = SendBuffer()  # each round's downlink is built here (valid for that round)
        self.stop = stop

    def receive(self, transport: Transport, pending: list[int], round: int | None) -> tuple[int, bytes]:
        """The first frame in from the pending workers; Stalled (naming them and the round) when
        none comes within the patience."""
        t0 = time.perf_counter()
        try:
            w, data = transport.recv_any(pending, self.patience.seconds())
        except Stalled as e:
            where = f"round {round}" if round is not None else "shut-down"
            saved = self.checkpoint_path is not None and self.checkpoint_path.exists()
            hint = "; the last checkpoint is kept: continue with --resume" if saved else ""
            raise Stalled(f"{e} in {where} (stopped, dead or hung){hint}") from None
        self.patience.observe(time.perf_counter() - t0)
        return w, data

    def ctx(self, round: int) -> Context:
        return Context(round, 0, self.n, self.cfg.seed, self.device)

    def broadcast(self, transport: Transport, data: bytes, header: int) -> float:
        t0 = time.perf_counter()
        for w in range(1, self.n + 1):
            transport.send(w, data)
            self.ledger.sent(w, len(data), header)
        return time.perf_counter() - t0

    def gather(self, transport: Transport, round: int | None) -> tuple[list, float]:
        """Receive one frame from every worker, in rank order; validate; count."""
        frames, seconds, failure = [], 0.0, None
        for w in range(1, self.n + 1):
            t0 = time.perf_counter()
            _, data = self.receive(transport, [w], round)
            seconds += time.perf_counter() - t0
            try:
                frame = decode_frame(data, sender=w, round=round)
            except FrameError as e:
                failure = failure or e
                self.ledger.received(w, len(data), len(data))
                continue
            if frame.kind == Kind.ERROR and failure is None:
                failure = PsgdError(f"worker {w} failed in round {frame.round}: {frame.info[0] if frame.info else '?'}")
            frames.append((w, data, frame))
        if failure is not None:
            for w, data, _ in frames:
                self.ledger.received(w, len(data), len(data))
            raise failure
        return frames, seconds

    def run(self, transport: Transport, resume: tuple | None = None, history: list[dict] = ()) -> RunResult:
        """Run every round; ``resume`` = checkpoint.load(...) continues from a checkpoint,
        ``history`` holds the rounds logged before it (kept in the result)."""
        result = RunResult(rounds=list(history))
        try:
            self._rounds(transport, result, resume)
        except Stalled:
            raise  # a shut-down would wait on the stalled rank: the caller aborts the job
        except PsgdError as e:
            with contextlib.suppress(PsgdError):  # the first error is the one to report
                self.shutdown(transport, status=STOPPED if isinstance(e, Interrupted) else 2, text=str(e))
            raise e
        result.summary = self.shutdown(transport, status=0, text="")
        result.model = self.method.server_model(self.state)
        return result

    def _rounds(self, transport: Transport, result: RunResult, resume: tuple | None) -> None:
        cfg = self.cfg
        self.state, init = self.method.server_init(self.task.init_params().to(self.device), self.ctx(0))
        self.final_metrics: dict = {}
        if resume is None:
            first, elapsed = 0, 0.0
            down, header = pack(Kind.DOWN, 0, 0, [], init)
        else:
            first, elapsed, down, header = self.restore(transport, *resume)
        start = time.perf_counter() - elapsed
        aggregate = Aggregator(self.n, self.task.dim, self.task.dtype, self.device)
        for t in range(first, cfg.rounds):
            comm_s = self.broadcast(transport, down, header)
            infos, recv_s, decode_s = self.aggregate(transport, t, len(down), aggregate)
            comm_s += recv_s
            t0 = time.perf_counter()
            try:
                messages = self.method.server_step(self.state, aggregate.read(self.method.reads_sums), self.ctx(t))
            except NonFiniteError as e:
                raise NonFiniteError(f"diverged in round {t} on the server: {e}; try a smaller method.lr") from None
            down, header = pack(Kind.DOWN, t + 1, 0, [], messages, self.down_buffer)
            server_s = time.perf_counter() - t0
            record = {
                "round": t,
                "time_s": time.perf_counter() - start,
                "compute_s": max(i[1] for i in infos),
                "encode_s": max(i[2] for i in infos),
                "comm_s": comm_s,
                "decode_s": decode_s + max(i[3] for i in infos),
                "server_s": server_s,
                "loss": sum(i[0] for i in infos) / len(infos),
                **self.ledger.round_record(),
            }
            if (t + 1) % cfg.eval_every == 0 or t == cfg.rounds - 1:
                self.final_metrics = self.task.evaluate(self.evaluated_model(transport, t, down))
                record.update(self.final_metrics)
            self.ledger.new_round()
            result.rounds.append(record)
            self.log(record)
            self.progress(record, cfg)
            every = cfg.checkpoint_every
            stopping = self.stop is not None and self.stop.received and t < cfg.rounds - 1
            due = (every and (t + 1) % every == 0) or t == cfg.rounds - 1 or stopping
            if self.checkpoint_path is not None and due:
                self.save(transport, t + 1, down, header, time.perf_counter() - start)
            if stopping and self.checkpoint_path is not None:
                raise Interrupted(
                    f"stopped by {self.stop.received} after round {t}; checkpoint written: "
                    f"continue with --resume {self.checkpoint_path.parent}"
                )

    def aggregate(self, transport: Transport, t: int, sent: int, aggregate: Aggregator) -> tuple[list, float, float]:
        """Receive round t's uplinks in arrival order; parse each once and add it to the aggregate
        (in rank order). Returns (infos in rank order, seconds waiting, seconds parsing and adding).
        A bad frame is reported once every frame is in, so no worker is left blocked in a send."""
        codecs = self.method.uplink_codecs(t)
        aggregate.start(codecs, t)
        pending, infos, failure = list(range(1, self.n + 1)), {}, None
        wait_s = work_s = 0.0
        while pending:
            t0 = time.perf_counter()
            w, data = self.receive(transport, pending, t)
            t1 = time.perf_counter()
            wait_s += t1 - t0
            pending.remove(w)
            counted = False
            try:
                frame = decode_frame(data, sender=w, round=t)
                if frame.kind == Kind.ERROR:
                    raise PsgdError(f"worker {w} failed in round {frame.round}: {frame.info[0] if frame.info else '?'}")
                check_uplink(frame, w, t)
                # identity's finiteness and dithering's levels are checked by the add that reads them (aggregate.py)
                messages, body = parse(frame, codecs, self.device, self.task.dim, aggregate.dtype, check_body=False)
                self.ledger.received(w, len(data), len(data) - body)
                counted = True
                if frame.info[4] != sent:
                    raise PsgdError(
                        f"byte ledger mismatch: worker {w} received {frame.info[4]} bytes in round {t}, "
                        f"server sent {sent}"
                    )
                infos[w] = frame.info
                if failure is None:
                    aggregate.add(w, messages)
            except PsgdError as e:
                failure = failure or e
                if not counted:
                    self.ledger.received(w, len(data), len(data))
            work_s += now(self.device) - t1
        if failure is not None:
            raise failure
        return [infos[w] for w in range(1, self.n + 1)], wait_s, work_s

    def evaluated_model(self, transport: Transport, t: int, down: bytes) -> torch.Tensor:
        """The model scored after round t: the server's, or, while the workers' models differ
        (local-model methods between syncs), their average once each applies ``down`` (round
        t + 1's downlink, built, not yet sent). Those frames are counted apart (``eval_bytes_*``)."""
        if not self.method.local_models(t):
            return self.method.server_model(self.state)
        request = encode_frame(Frame(Kind.EVAL, t + 1, 0, [], [down]))
        what = f"its model for the evaluation after round {t}"
        models = self.ask_workers(
            transport, t + 1, request, len(request) - len(down), Kind.MODEL, self.eval_bytes, what
        )
        ref = self.method.server_model(self.state)  # the workers' models have its dtype and size
        total = torch.zeros_like(ref)
        for w, model in enumerate(models, start=1):
            if len(model) != ref.numel() * ref.element_size():
                raise PsgdError(f"worker {w} could not send {what}: {len(model)} bytes for d = {ref.numel()}")
            total.add_(torch.frombuffer(bytearray(model), dtype=ref.dtype).to(self.device))
        return total.div_(self.n)

    def ask_workers(
        self, transport: Transport, round: int, request: bytes, header: int, reply: Kind, ledger: Ledger, what: str
    ) -> list[memoryview]:
        """Send ``request`` to every worker and return each one's one-part ``reply`` (of the
        request's round), counting both ways in ``ledger`` (checkpoint or evaluation traffic)."""
        for w in range(1, self.n + 1):
            transport.send(w, request)
            ledger.sent(w, len(request), header)
        parts = []
        for w in range(1, self.n + 1):
            _, data = self.receive(transport, [w], round)
            frame = decode_frame(data, sender=w, round=round)
            ledger.received(w, len(data), len(data) - frame.body_len)
            if frame.kind != reply or len(frame.parts) != 1:
                text = frame.info[0] if frame.kind == Kind.ERROR and frame.info else frame.kind.name
                raise PsgdError(f"worker {w} could not send {what}: {text}")
            parts.append(frame.parts[0])
        return parts

    def save(self, transport: Transport, next_round: int, down: bytes, header: int, elapsed: float) -> None:
        """Write a checkpoint taken between rounds: next_round's downlink is built, not sent."""
        snapshot, snapshot_header = pack(Kind.SNAPSHOT, next_round, 0, [])
        what = f"its state for the checkpoint of round {next_round}"
        states = self.ask_workers(
            transport, next_round, snapshot, snapshot_header, Kind.STATE, self.checkpoint_bytes, what
        )
        tensors, scalars = checkpoint.capture(self.state, "server.")
        for w, state in enumerate(states, start=1):
            tensors[f"worker{w}"] = torch.frombuffer(bytearray(state), dtype=torch.uint8)
        tensors["down"] = torch.frombuffer(bytearray(down), dtype=torch.uint8)
        meta = {
            "round": next_round,
            "workers": self.n,
            "dim": self.task.dim,
            "method": self.method.name,
            "down_header": header,
            "elapsed": elapsed,
            "scalars": scalars,
            "ledger": self.ledger.state(),
            "final_metrics": self.final_metrics,
        }
        checkpoint.save(self.checkpoint_path, tensors, meta)

    def restore(self, transport: Transport, tensors: dict, meta: dict) -> tuple[int, float, bytes, int]:
        """Load a checkpoint into this server and its workers; (next round, elapsed s, its downlink, header)."""
        mine = (self.n, self.task.dim, self.method.name)
        saved = (meta["workers"], meta["dim"], meta["method"])
        if saved != mine:
            raise PsgdError(
                f"the checkpoint is of {saved[0]} workers, d = {saved[1]}, method {saved[2]}; "
                f"this job has {mine[0]} workers, d = {mine[1]}, method {mine[2]}"
            )
        next_round = meta["round"]
        checkpoint.restore(self.state, tensors, meta["scalars"], self.device, "server.")
        for w in range(1, self.n + 1):
            blob = tensors[f"worker{w}"].numpy().tobytes()
            data = encode_frame(Frame(Kind.RESTORE, next_round, 0, [], [blob]))
            transport.send(w, data)
            self.checkpoint_bytes.sent(w, len(data), len(data) - len(blob))
        self.ledger.up = Counts(**meta["ledger"]["up"])
        self.ledger.down = Counts(**meta["ledger"]["down"])
        self.final_metrics = meta["final_metrics"]
        return next_round, meta["elapsed"], tensors["down"].numpy().tobytes(), meta["down_header"]

    def shutdown(self, transport: Transport, status: int, text: str) -> dict:
        """Send BYE to every worker, collect their own byte counts and check them against ours."""
        bye, header = pack(Kind.BYE, -1, 0, [status, text])
        self.broadcast(transport, bye, header)
        frames, _ = self.gather(transport, None)
        mismatch = []
        for w, data, frame in frames:
            if frame.kind != Kind.LEDGER:
                raise PsgdError(f"worker {w} answered BYE with {frame.kind.name}")
            if len(frame.info) != 5 or not all(isinstance(v, bytes) and len(v) == 8 for v in frame.info[3:]):
                raise FrameError(f"malformed frame from rank {w} in shut-down: LEDGER info {frame.info!r:.80}")
            sent, received, device, side_sent, side_received = frame.info
            side_sent, side_received = int.from_bytes(side_sent, "big"), int.from_bytes(side_received, "big")
            up, down = self.ledger.up.total[w - 1], self.ledger.down.total[w - 1]
            if sent != up or received != down:
                mismatch.append(f"worker {w}: sent {sent} (server got {up}), received {received} (server sent {down})")
            side_up = self.checkpoint_bytes.up.total[w - 1] + self.eval_bytes.up.total[w - 1]
            side_down = self.checkpoint_bytes.down.total[w - 1] + self.eval_bytes.down.total[w - 1]
            if side_sent != side_up or side_received != side_down:
                mismatch.append(
                    f"worker {w}: checkpoint and evaluation frames: sent {side_sent} (server got {side_up}), "
                    f"received {side_received} (server sent {side_down})"
                )
            self.ledger.received(w, len(data), len(data))
            self.worker_devices.append(device)
        if mismatch and status == 0:
            raise PsgdError("byte ledger mismatch between worker and server: " + "; ".join(mismatch))
        ledgers = (self.ledger, self.checkpoint_bytes, self.eval_bytes)  # all that crossed MPI
        return {
            "bytes_up": list(self.ledger.up.total),
            "bytes_down": list(self.ledger.down.total),
            "header_up": list(self.ledger.up.header),
            "header_down": list(self.ledger.down.header),
            "checkpoint_bytes_up": list(self.checkpoint_bytes.up.total),
            "checkpoint_bytes_down": list(self.checkpoint_bytes.down.total),
            "eval_bytes_up": list(self.eval_bytes.up.total),
            "eval_bytes_down": list(self.eval_bytes.down.total),
            "mpi_bytes_up": [sum(x) for x in zip(*(g.up.total for g in ledgers), strict=True)],
            "mpi_bytes_down": [sum(x) for x in zip(*(g.down.total for g in ledgers), strict=True)],
        }
