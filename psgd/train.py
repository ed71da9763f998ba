"""Run a training job: ``mpirun -n 5 python -m psgd.train [CONFIG] [--set key=value ...]``.

Rank 0 is the parameter server, ranks 1..n are workers. ``--simulate N`` runs the same
job with N workers in this process (no MPI); it gives the same losses and byte counts.
A user's own script calls ``psgd.main(make_task)`` (``main(task=...)``): the same command line
with its task, run as ``mpirun -n 5 python my_script.py [CONFIG] [--set ...]``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

import psgd
from psgd import config
from psgd.errors import ConfigError, Interrupted, PsgdError, Stalled
from psgd.methods import registered as methods
from psgd.runtime import checkpoint, devices, link, rundir
from psgd.runtime.patience import WORKER, Patience, grace
from psgd.runtime.server import ServerNode
from psgd.runtime.signals import STOPPED, StopRequest
from psgd.runtime.simulate import run_in_process
from psgd.tasks import registered as tasks
from psgd.tasks.registry import use as tasks_use

EPILOG = """\
config keys (any of them with --set key=value; values are TOML, bare words are strings):
  name, seed, rounds, eval_every, device = auto|cpu|cuda, checkpoint_every (0: at the end only),
  link (emulated network, e.g. "bandwidth=1Gbit,latency=50us"; empty: none),
  timeout_s (seconds a rank waits for a frame before the job ends as stalled; 0: automatic)
  task.name = {tasks}, or package.module:factory | path/to/file.py:factory (a user's task);
      task.batch_size, task.split = iid|label_skew (|dirichlet with task.alpha for user and npz tasks),
      and the task's own keys
  method.name = {methods}; method.uplink, method.downlink (compressor specs such as
      topk:ratio=0.01, scaled_sign, identity; see python -m psgd.compress),
      method.lr, method.momentum, method.nesterov, method.weight_decay, method.decay_norm_and_bias,
      method.lr_milestones, method.lr_gamma, method.lr_warmup (rounds), method.lr_warmup_start,
      and the method's own keys
exit status: 0 done, 2 bad input (config, CLI, data path, payload) or a stalled rank,
  3 stopped by SIGTERM or SIGUSR1 at a round boundary after a checkpoint (resume with --resume).
"""


def parser(prog: str = "python -m psgd.train") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        epilog=EPILOG.format(tasks=", ".join(sorted(tasks())), methods=", ".join(sorted(methods()))),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", nargs="?", help="TOML config file (default: the embedded default job)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    p.add_argument("--out", help="run folder (default: runs/<name>, never overwritten)")
    p.add_argument("--simulate", type=int, metavar="N", help="run N workers in this process instead of under MPI")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--link", metavar="SPEC", help="emulate a link, e.g. bandwidth=1Gbit,latency=50us (same as --set link=...)"
    )
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue RUN_DIR from its checkpoint (its config.toml; --set may change only "
        + ", ".join(RESUMABLE)
        + ")",
    )
    return p


RESUMABLE = ("rounds", "eval_every", "checkpoint_every", "link", "timeout_s")
CHECKPOINT = "checkpoint.psgd"
SETUP_TAG = 8  # a failed rank's reason, before any payload moves


def load_config(args) -> config.RunConfig:
    overrides = list(args.set) + ([f"link={args.link!r}"] if args.link is not None else [])
    if args.resume is None:
        return config.load(args.config, overrides)
    if args.config is not None or args.out is not None:
        raise ConfigError("--resume continues a run folder: give no CONFIG and no --out")
    saved = Path(args.resume) / "config.toml"
    if not saved.is_file():
        raise ConfigError(f"--resume {args.resume}: not a run folder (no config.toml)")
    base, cfg = config.load(saved).to_dict(), config.load(saved, overrides)
    changed = [k for k, v in cfg.to_dict().items() if k not in RESUMABLE and v != base[k]]
    if changed:
        raise ConfigError(f"--resume cannot change {', '.join(changed)}; only {', '.join(RESUMABLE)}")
    return cfg


def open_run(cfg: config.RunConfig, out: str | None, resume: str | None):
    """Rank 0's run folder; on resume also the checkpoint and the rounds logged before it."""
    if resume is None:
        path = rundir.choose(out, cfg.name)
        return rundir.RunDir(path, cfg), None, []
    path = Path(resume)
    saved = checkpoint.load(path / CHECKPOINT)
    at = saved[1]["round"]
    if at > cfg.rounds:
        raise ConfigError(f"the checkpoint in {path} is at round {at}, beyond rounds = {cfg.rounds}")
    history = [r for r in rundir.read_rounds(path) if r["round"] < at]
    if [r["round"] for r in history] != list(range(at)):
        raise ConfigError(f"{path / 'rounds.jsonl'} does not hold rounds 0..{at - 1} of the checkpoint")
    print(f"[psgd] resuming {path} at round {at}", flush=True)
    return rundir.RunDir(path, cfg, keep_rounds=history), saved, history


class Progress:
    """Rank 0's progress line: round, loss, accuracy, MB moved so far, ETA."""

    def __init__(self, quiet: bool, history: list[dict] = ()) -> None:
        self.quiet = quiet
        self.up = sum(sum(r["bytes_up"]) for r in history)
        self.down = sum(sum(r["bytes_down"]) for r in history)
        self.since: tuple[int, float] | None = None  # (round, time_s) of this session's first round

    def __call__(self, record: dict, cfg: config.RunConfig) -> None:
        self.up += sum(record["bytes_up"])
        self.down += sum(record["bytes_down"])
        t, total = record["round"] + 1, cfg.rounds
        if self.since is None:
            self.since = (t, record["time_s"])
        if self.quiet or not (t % max(1, total // 20) == 0 or "test_accuracy" in record or t == total):
            return
        done = t - self.since[0]
        eta = (record["time_s"] - self.since[1]) / done * (total - t) if done else float("nan")
        metric = "".join(f"  {k} {v:.4f}" for k, v in record.items() if k.startswith("test_"))
        print(
            f"[psgd] round {t}/{total}  loss {record['loss']:.4f}{metric}  "
            f"up {self.up / 1e6:.2f} MB  down {self.down / 1e6:.2f} MB  {record['time_s']:.1f}s  ETA {eta:.0f}s",
            flush=True,
        )


def summarize(cfg, server: ServerNode, result, world_size: int, mode: str, wall_s: float) -> dict:
    s = result.summary
    d, n = server.task.dim, server.n
    fp32 = cfg.rounds * 4 * d  # uncompressed fp32 bytes per worker per direction
    mpi = {}
    if mode == "mpi":
        from mpi4py import MPI

        mpi = {"mpi4py": __import__("mpi4py").__version__, "mpi": MPI.Get_library_version().splitlines()[0].strip()}
    return {
        "name": cfg.name,
        "mode": mode,
        "rounds": cfg.rounds,
        "world_size": world_size,
        "workers": n,
        "dim": d,
        "method": cfg.method.name,
        "uplink": cfg.method.uplink,
        "downlink": cfg.method.downlink,
        "lr": server.method.options.lr,  # resolved: a number even when the config says "theory"
        **({"lr_theory": server.method.theory_lr()[1]} if cfg.method.lr == "theory" else {}),
        **s,
        "mb_up": sum(s["bytes_up"]) / 1e6,
        "mb_down": sum(s["bytes_down"]) / 1e6,
        "fp32_bytes_per_worker": fp32,
        "ratio_up": fp32 * n / sum(s["bytes_up"]),
        "ratio_down": fp32 * n / sum(s["bytes_down"]),
        "final_loss": result.rounds[-1]["loss"],
        "final_metrics": server.final_metrics,
        "wall_s": wall_s,
        "devices": {"server": str(server.device), "workers": server.worker_devices},
        "versions": {
            "psgd": psgd.__version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            **mpi,
        },
    }


def versus_fp32(ratio: float) -> str:
    """fp32 bytes / bytes sent, in words; frame headers can make a tiny model's messages larger."""
    return f"{ratio:.1f}x less than fp32" if ratio >= 1 else f"{1 / ratio:.2f}x more than fp32, headers included"


def report(summary: dict, path: Path) -> None:
    acc = summary["final_metrics"].get("test_accuracy")
    print(
        f"[psgd] done: {summary['rounds']} rounds, {summary['workers']} workers, "
        + (f"test accuracy {acc:.4f}, " if acc is not None else "")
        + f"{summary['mb_up']:.2f} MB up ({versus_fp32(summary['ratio_up'])}), "
        f"{summary['mb_down']:.2f} MB down ({versus_fp32(summary['ratio_down'])}), "
        f"{summary['wall_s']:.1f}s -> {path}",
        flush=True,
    )


def fail(message: str, rank: int = 0) -> int:
    where = "" if rank == 0 else f" (rank {rank})"
    print(f"psgd: error{where}: {message}", file=sys.stderr, flush=True)
    return 2


def simulate_main(cfg, n: int, args) -> int:
    if n < 1:
        return fail(f"--simulate needs at least 1 worker, got {n}")
    folder, resume, history = open_run(cfg, args.out, args.resume)
    start = time.perf_counter()
    try:
        server, result = run_in_process(
            cfg,
            n,
            log=folder.log,
            progress=Progress(args.quiet, history),
            checkpoint_path=folder.path / CHECKPOINT,
            resume=resume,
            history=history,
            stop=args.stop,
        )
    except BaseException:
        folder.discard()
        raise
    summary = summarize(cfg, server, result, n + 1, "simulate", time.perf_counter() - start)
    folder.finish(summary)
    report(summary, folder.path)
    return 0


def setup_failure(comm, error: str | None) -> str | None:
    """Collective: None when every rank set up; else, on every rank, the one message rank 0
    prints. Ranks that failed send their reason to rank 0 as UTF-8 bytes (never pickled)."""
    from mpi4py import MPI

    flags = np.zeros(comm.Get_size(), dtype=np.int32)
    comm.Allgather(np.array([1 if error else 0], dtype=np.int32), flags)
    failed = [r for r in range(len(flags)) if flags[r]]
    if not failed:
        return None
    rank = comm.Get_rank()
    if rank != 0:
        if error:
            comm.Send(error.encode(), dest=0, tag=SETUP_TAG)
        return ""
    reasons = {}
    for r in failed:
        if r == 0:
            reasons[0] = error
            continue
        status = MPI.Status()
        comm.Probe(source=r, tag=SETUP_TAG, status=status)
        buf = bytearray(status.Get_count())
        comm.Recv(buf, source=r, tag=SETUP_TAG)
        reasons[r] = buf.decode(errors="replace")
    first = reasons[failed[0]]
    where = "" if failed[0] == 0 else f"rank {failed[0]}: "
    others = [r for r in failed[1:] if reasons[r] == first]
    differing = [f"rank {r}: {reasons[r]}" for r in failed[1:] if reasons[r] != first]
    return (
        where
        + first
        + (f" (also on rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))})" if others else "")
        + "".join(f"; {d}" for d in differing)
    )


def mpi_main(cfg, args) -> int:
    from mpi4py import MPI

    from psgd.runtime.transport import MPITransport
    from psgd.runtime.worker import WorkerNode

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if size < 2:
        message = f"world size {size}: need a server and at least one worker (mpirun -n 2 or more)"
        return fail(message) if rank == 0 else 2
    error, folder = None, None
    try:
        device = devices.pick(cfg.device, devices.local_slot(comm))
        if rank == 0:
            folder, resume, history = open_run(cfg, args.out, args.resume)
            node = ServerNode(
                cfg,
                size - 1,
                device,
                log=folder.log,
                progress=Progress(args.quiet, history),
                checkpoint_path=folder.path / CHECKPOINT,
                stop=args.stop,
            )
        else:
            node = WorkerNode(cfg, rank, size - 1, device)
    except PsgdError as e:
        error = str(e)
    except Exception as e:  # a user's model or data too: one line, and every rank still reaches the agreement
        error = f"{type(e).__name__}: {e}"
    message = setup_failure(comm, error)  # every rank agrees before any payload moves
    if message is not None:
        if folder is not None:
            folder.discard()
        return fail(message) if rank == 0 else 2
    transport = MPITransport(comm, pin=device.type == "cuda")
    emulated = link.parse(cfg.link)
    if emulated is not None and rank == 0:  # the server's link carries every frame, one after another
        transport = link.EmulatedLink(transport, emulated, hold_receives=True)
    if rank != 0:
        return serve(node, transport, comm)
    start = time.perf_counter()
    try:
        result = node.run(transport, resume=resume, history=history)
    except Stalled as e:  # the stalled rank would never answer a shut-down: stop every rank
        fail(str(e))
        comm.Abort(2)
    except PsgdError:
        raise
    except Exception as e:  # a bug, not bad input: its traceback, then stop every rank rather than leave them waiting
        traceback.print_exc()
        fail(f"internal error on the server: {type(e).__name__}: {e}; aborting all ranks")
        comm.Abort(2)
    summary = summarize(cfg, node, result, size, "mpi", time.perf_counter() - start)
    folder.finish(summary)
    report(summary, folder.path)
    return 0


def serve(node, transport, comm) -> int:
    """A worker rank's loop: answer every frame of the server until BYE. A server silent for
    longer than the patience (timeout_s) ends the job: one message, every rank aborted."""
    patience = Patience(node.cfg.timeout_s, WORKER)
    while not node.done:
        t0 = time.perf_counter()
        wait = patience.seconds() + grace(patience.seconds(), node.rank)
        try:
            _, data = transport.recv_any([0], wait)
        except Stalled:
            fail(
                f"the server (rank 0) sent nothing for {wait:.0f} s after round {node.round - 1} "
                "(stopped, dead or hung); ending the job",
                node.rank,
            )
            comm.Abort(2)
        patience.observe(time.perf_counter() - t0)
        reply = node.handle(data)
        if reply is not None:
            transport.send(0, reply)
    return node.exit_status


def agreed_config(args, comm) -> config.RunConfig | None:
    """Under MPI: the config, once every rank has loaded it (a user's task is imported on each,
    and a module missing on one node must not leave the others waiting); None where any failed,
    rank 0 having printed the one message."""
    cfg, error = None, None
    try:
        cfg = load_config(args)
    except PsgdError as e:
        error = str(e)
    message = setup_failure(comm, error)
    if message is not None:
        if comm.Get_rank() == 0:
            fail(message)
        return None
    return cfg


def main(argv: list[str] | None = None, task=None) -> int:
    """The command line; ``task`` (a user's factory, psgd.task(...)-returning function or Task
    subclass) sets task.name to its import path, so the run folder resumes and reports as any."""
    prog = "python -m psgd.train" if task is None else f"python {Path(sys.argv[0]).name}"
    args = parser(prog).parse_args(argv)
    torch.set_num_threads(1)  # one core per rank; also keeps MPI and simulation bit-identical
    args.stop = StopRequest().install()  # every rank: SIGTERM/SIGUSR1 stop the job at a round boundary
    rank, comm = 0, None
    if args.simulate is None:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
        rank = comm.Get_rank()
    try:
        if task is not None:
            args.set = [f"task.name={config._toml_value(tasks_use(task))}", *args.set]
        if args.simulate is not None:
            return simulate_main(load_config(args), args.simulate, args)
        cfg = agreed_config(args, comm)
        return 2 if cfg is None else mpi_main(cfg, args)
    except Interrupted as e:
        if rank == 0:
            print(f"psgd: {e}", file=sys.stderr, flush=True)
        return STOPPED
    except PsgdError as e:
        return fail(str(e)) if rank == 0 else 2
    finally:
        args.stop.uninstall()


if __name__ == "__main__":
    sys.exit(main())
