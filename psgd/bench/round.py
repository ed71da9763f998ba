"""One training round's codec and server costs, the bytes on the wire, and the break-even links.

Runs the real EF14 rules (bidirectional: the downlink uses the same compressor and the server
keeps the global error) on the real frame code, for d = 11,173,962 (ResNet-18) and 4 workers
by default. The uplink frames are built once by n workers and kept in bytearrays, as a
transport delivers them. Each round then times:

  server    parse        decode_frame + from_bytes of every uplink part (n frames), as the server
                         parses: identity's and dithering's value checks left to the add that reads them
            accumulate   Aggregator.add in rank order, then the means or, for a rule that divides
                         them itself, the sums (Aggregator.read, as the runtime does)
            step         the method's server rule on the means (global error, downlink encode,
                         its SGD step)
            pack_down    the downlink frame's bytes
  worker    step         the worker rule without its downlink step: error-feedback add, encode,
                         C(p) taken off the error (a worker's gradient is a fixed tensor here)
            pack_up      the uplink frame's bytes
            down_decode  decode_frame + from_bytes + decode of the downlink frame

Each figure is the best of --repeat rounds after one warm-up (the device synchronised around
each), in ms and in copies of d fp32: ``y.copy_(x)`` repeated back to back before and after the
codec's rounds, and at the start of every round, the best of all (repeated, the copy keeps x and y
in the CPU's cache where it holds them: the strict reference). ``copy_in_round_ms``, the copy at
the start of each round alone, has buffers as cold as the round's: the memory speed its passes see.
``break_even`` gives, per codec, the link below which its round beats the identity round
(psgd.bench.links: the server's link carries the 2n frames one after another, as
psgd.runtime.link emulates), for the measured n and projected to --project workers (the
server's per-uplink costs scale with n, the rest does not). ``targets`` holds issue 9's target
for the server round of 4 workers (12 copies for identity, scaled sign, natural and qsgd) and
whether it holds.
"""

from __future__ import annotations

import math

import torch

from psgd.bench.links import RoundCost, break_even, pays
from psgd.methods import Context, build
from psgd.methods.ef14 import EF14Options
from psgd.runtime.aggregate import Aggregator
from psgd.runtime.clock import now
from psgd.runtime.frames import SendBuffer, pack, parse
from psgd.wire import decode_frame
from psgd.wire.frame import Kind

RESNET18_D = 11_173_962
SPECS = ["identity", "scaled_sign", "natural", "qsgd:s=16", "topk:ratio=0.01"]
IDENTITY = "identity"  # the uncompressed round every break-even figure compares with
# issue 9: a server round of 4 workers within 12 copies for these codecs (top-k: plus its downlink encode)
ROUND_TARGET, ROUND_TARGET_CODECS = 12.0, frozenset({"identity", "scaled_sign", "natural", "qsgd"})
INFO = [0.0, 0.0, 0.0, 0.0, 0]  # an uplink's info: loss, compute s, encode s, decode s, bytes received


def add_arguments(p) -> None:
    p.add_argument("--d", type=int, default=RESNET18_D, help="vector size (default: ResNet-18's)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--specs", nargs="+", default=SPECS, help="compressors (identity is always measured)")
    p.add_argument("--project", nargs="+", type=int, default=[16, 64], help="worker counts to project B* to")


class Phases:
    """Best seconds per named phase: ``lap(name)`` ends a phase (the device synchronised)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.best, self.counting, self.t = device, {}, False, 0.0

    def begin(self, counting: bool) -> None:
        self.counting, self.t = counting, now(self.device)

    def lap(self, name: str) -> None:
        t = now(self.device)
        if self.counting:
            self.best[name] = min(self.best.get(name, math.inf), t - self.t)
        self.t = t


def best_of(repeat: int, device: torch.device, fn) -> dict[str, float]:
    """Per-phase best seconds over repeat calls of fn(r, lap) after one warm-up (round 0 warms up
    allocators, kernels and caches); fn calls lap(name) at the end of each phase."""
    phases = Phases(device)
    for r in range(repeat + 1):
        phases.begin(counting=r > 0)
        fn(r, phases.lap)
    return phases.best


class Oracle:
    """A worker's gradient, the same every round (the bench times codecs, not a model)."""

    def __init__(self, g: torch.Tensor) -> None:
        self.g = g

    def __call__(self, x: torch.Tensor, sample: int = 0) -> torch.Tensor:
        return self.g


def bench_spec(spec: str, d: int, n: int, repeat: int, device: torch.device) -> dict:
    method = build(EF14Options(uplink=spec, downlink=spec))
    state, _ = method.server_init(torch.zeros(d, device=device), Context(0, 0, n, 0, device))
    g = torch.Generator(device=device).manual_seed(0)
    workers, frames = [], []
    for w in range(1, n + 1):
        ctx = Context(0, w, n, 0, device)
        oracle = Oracle(torch.randn(d, generator=g, device=device))
        workers.append((method.worker_init([torch.zeros(d, device=device)], ctx), oracle, ctx))
        messages = method.worker_step(workers[-1][0], [], oracle, ctx)
        frames.append(bytearray(pack(Kind.UP, 0, w, INFO, messages)[0]))
    codecs, down_codecs = method.uplink_codecs(0), method.downlink_codecs(0)
    aggregate = Aggregator(n, d, torch.float32, device)
    down, down_buffer, up_buffer = bytearray(), SendBuffer(), SendBuffer()  # reused, as the nodes do

    x, y = torch.randn(d, generator=g, device=device), torch.empty(d, device=device)

    def server(r: int, lap) -> None:
        nonlocal down
        y.copy_(x)
        lap("copy")
        parsed = []
        for w, data in enumerate(frames, start=1):
            frame = decode_frame(data, sender=w, round=0)
            parsed.append(parse(frame, codecs, device, d, torch.float32, check_body=False)[0])
        lap("parse")
        aggregate.start(codecs, 0)
        for w, messages in enumerate(parsed, start=1):
            aggregate.add(w, messages)
        up = aggregate.read(method.reads_sums)
        lap("accumulate")
        messages = method.server_step(state, up, Context(r, 0, n, 0, device))
        lap("server_step")
        data = pack(Kind.DOWN, r + 1, 0, [], messages, down_buffer)[0]
        lap("pack_down")
        down = bytearray(data)  # as a worker's transport delivers it (untimed: not the server's work)

    def worker(r: int, lap) -> None:
        y.copy_(x)
        lap("copy")
        state, oracle, ctx = workers[0]
        messages = method.worker_step(state, [], oracle, ctx)
        lap("worker_step")
        pack(Kind.UP, 0, 1, INFO, messages, up_buffer)
        lap("pack_up")
        frame = decode_frame(down, sender=0, round=None)
        for c, p in zip(down_codecs, frame.parts, strict=True):
            c.decode(c.from_bytes(p, device, d))
        lap("worker_down_decode")

    def copy(r: int, lap) -> None:
        y.copy_(x)
        lap("copy")

    hot = best_of(repeat, device, copy)["copy"]
    server_s, worker_s = best_of(repeat, device, server), best_of(repeat, device, worker)
    cold = min(server_s.pop("copy"), worker_s.pop("copy"))
    copy_s = min(hot, best_of(repeat, device, copy)["copy"], cold)  # cold beats hot only under load
    seconds = server_s | worker_s
    seconds["server_round"] = sum(seconds[k] for k in ("parse", "accumulate", "server_step", "pack_down"))
    seconds["worker_round"] = sum(seconds[k] for k in ("worker_step", "pack_up", "worker_down_decode"))
    up_bytes = sum(map(len, frames)) / n
    cost = RoundCost(
        worker_s=seconds["worker_round"],
        server_fixed_s=seconds["server_step"] + seconds["pack_down"],
        server_per_worker_s=(seconds["parse"] + seconds["accumulate"]) / n,
        up_bytes=up_bytes,
        down_bytes=len(down),
    )
    copies = {f"{k}_copies": s / copy_s for k, s in seconds.items()}
    target = {"at_most": ROUND_TARGET, "meets_target": copies["server_round_copies"] <= ROUND_TARGET}
    return {
        "spec": spec,
        "bytes_up_per_worker": up_bytes,
        "bytes_down_per_worker": len(down),
        "fp32_bytes": 4 * d,
        "bits_per_coordinate_up": 8 * up_bytes / d,
        "bits_per_coordinate_down": 8 * len(down) / d,
        "copy_ms": copy_s * 1e3,
        "copy_in_round_ms": cold * 1e3,
        **{f"{k}_ms": s * 1e3 for k, s in seconds.items()},
        **copies,
        "targets": {"server_round_copies": target} if n == 4 and method.uplink.name in ROUND_TARGET_CODECS else {},
        "cost": cost,
    }


def with_break_even(results: list[dict], n: int, project: list[int]) -> list[dict]:
    """Each result with its break-even links against the identity round (RoundCost dropped)."""
    base = next(r["cost"] for r in results if r["spec"] == IDENTITY)
    out = []
    for r in results:
        cost = r.pop("cost")
        figures = []
        for workers in [n, *project]:
            b = break_even(cost, base, workers)
            figures.append({"workers": workers, "Gbps": None if math.isinf(b) else b / 1e9, "pays": pays(b)})
        out.append(r | {"break_even": figures} if r["spec"] != IDENTITY else r)
    return out


def run(args) -> dict:
    device = torch.device(args.device)
    specs = [IDENTITY, *(s for s in args.specs if s != IDENTITY)]
    results = [bench_spec(s, args.d, args.workers, args.repeat, device) for s in specs]
    return {
        "bench": "round",
        "d": args.d,
        "workers": args.workers,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "results": with_break_even(results, args.workers, sorted(set(args.project) - {args.workers})),
    }


def table(result: dict) -> str:
    """The round's costs in copies of d fp32 and the break-even links, as text."""
    first = next((r for r in result["results"] if "break_even" in r), None)
    ns = [f["workers"] for f in first["break_even"]] if first else []
    head = f"{'codec':<18}{'bytes up':>12}{'server':>9}{'worker':>9}" + "".join(f"{f'B* n={k}':>12}" for k in ns)
    lines = [
        f"d = {result['d']}, {result['workers']} workers on {result['device']}; server and worker costs in copies "
        f"of d fp32 (* misses issue 9's target), B* in Gbit/s (compression pays on slower links)",
        head,
    ]
    for r in result["results"]:
        missed = "*" if not all(t["meets_target"] for t in r["targets"].values()) else " "
        row = f"{r['spec']:<18}{r['bytes_up_per_worker']:>12.0f}{r['server_round_copies']:>8.1f}{missed}"
        row += f"{r['worker_round_copies']:>9.1f}"
        for f in r.get("break_even", []):
            row += f"{f['pays'] if f['Gbps'] is None else format(f['Gbps'], '.3g'):>12}"
        lines.append(row)
    return "\n".join(lines)
