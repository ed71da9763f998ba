"""Server cost per round (decode n uplinks + aggregate + encode the downlink) and bytes on the wire.

Runs the real EF14 server rule (bidirectional: the downlink uses the same compressor and
the server keeps the global error) on the real frame code, for d = 11,173,962 (ResNet-18)
and 4 workers by default. Times are medians over --repeat rounds, after one warm-up.
"""

from __future__ import annotations

import statistics
import time

import torch

from psgd.methods import Context, build
from psgd.methods.ef14 import EF14Options
from psgd.runtime.frames import pack, unpack
from psgd.wire import decode_frame
from psgd.wire.frame import Kind

RESNET18_D = 11_173_962


def add_arguments(p) -> None:
    p.add_argument("--d", type=int, default=RESNET18_D, help="vector size (default: ResNet-18's)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--specs", nargs="+", default=["identity", "topk:ratio=0.01", "scaled_sign"])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_spec(spec: str, d: int, n: int, repeat: int, device: torch.device) -> dict:
    method = build(EF14Options(uplink=spec, downlink=spec))
    state, _ = method.server_init(torch.zeros(d, device=device), Context(0, 0, n, 0, device))
    g = torch.Generator(device=device).manual_seed(0)
    frames = []
    for w in range(1, n + 1):
        msg = method.uplink.encode(torch.randn(d, generator=g, device=device))
        frames.append(pack(Kind.UP, 0, w, [], [msg])[0])
    decode_ms, step_ms, down_bytes = [], [], 0
    for r in range(repeat + 1):
        sync(device)
        t0 = time.perf_counter()
        ups = [unpack(decode_frame(f, w, 0), method.uplink_codecs(0), device)[0] for w, f in enumerate(frames, 1)]
        sync(device)
        t1 = time.perf_counter()
        down, _ = pack(Kind.DOWN, r + 1, 0, [], method.server_step(state, ups, Context(r, 0, n, 0, device)))
        t2 = time.perf_counter()
        down_bytes = len(down)
        if r:  # the first round warms up allocators and kernels
            decode_ms.append((t1 - t0) * 1e3)
            step_ms.append((t2 - t1) * 1e3)
    decode, step = statistics.median(decode_ms), statistics.median(step_ms)
    return {
        "spec": spec,
        "bytes_up_per_worker": len(frames[0]),
        "bytes_down_per_worker": down_bytes,
        "fp32_bytes": 4 * d,
        "bits_per_coordinate_up": 8 * len(frames[0]) / d,
        "decode_ms": decode,
        "aggregate_encode_ms": step,
        "server_round_ms": decode + step,
    }


def run(args) -> dict:
    device = torch.device(args.device)
    return {
        "bench": "round",
        "d": args.d,
        "workers": args.workers,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch_threads": torch.get_num_threads(),
        "results": [bench_spec(s, args.d, args.workers, args.repeat, device) for s in args.specs],
    }
