"""Compressor throughput beside a copy: encode, decode, accumulate and parse, in ms and in copies.

For d = 11,173,962 (ResNet-18) by default, on the CPU and on CUDA when present. The reference
is ``y.copy_(x)`` into a preallocated buffer (the speed of memory), timed right before every run
of every figure (``Beside``): ``*_vs_copy`` is the median over the runs of each run's time over the
copy's just before it, so both see the same load on a shared machine. ``*_ms`` is the best of
--repeat runs after one warm-up, the device synchronised around each run: other processes only
ever add time, so the minimum is the reproducible figure. Per compressor:

  encode            c.encode(x, generator)
  decode            c.decode(m), into a fresh tensor (maps new pages, as x.clone() does)
  decode_into       c.decode_into(m, out), into an existing buffer
  accumulate        c.accumulate(m, out): out += C(x), how the server aggregates uplinks
  to_bytes          m.to_bytes(), what a sender hands to the transport
  parse             c.from_bytes(data, device, d=d) of received bytes (a bytearray, as
                    transports deliver: read in place), validation included

decode, decode_into and accumulate use the parsed message, as a receiver does. Top-k codecs
are also timed against torch.topk with the same k. ``targets`` holds issue 9's targets for the
codec (in copies, or in torch.topk times) and whether each holds. Spherical compression
searches ~1/P random points per block, so it runs on its own smaller --spherical-d.
"""

from __future__ import annotations

import statistics
import time

import torch

from psgd.compress import Compressor, make
from psgd.runtime.clock import now

RESNET18_D = 11_173_962
SPECS = [
    "identity",
    "fp16",
    "bf16",
    "sign",
    "scaled_sign",
    "block_sign:bucket=5MiB",
    "topk:ratio=0.01",
    "randk:ratio=0.01",
    "randk:ratio=0.01,shared_seed=false",
    "adaptive_rand",
    "hard_threshold:lam=2.5",
    "terngrad",
    "qsgd:s=16",
    "qsgd:s=16,coding=elias",
    "natural",
    "natural_round",
    "natural_dither:s=8",
    "topk_natural:ratio=0.01",
    "topk_dither:ratio=0.01,s=8",
    "sparse_dither:nu=0.1",
    "sparse_dither:nu=0.1,random=true",
    "powersgd:rank=4",
    "bucket(scaled_sign, size=5MiB)",
    "spherical:alpha=0.5,block=8",
]

# issue 9's targets at d = 11,173,962, one thread: encode, decode into a buffer and accumulate
# within STREAMING copies for streaming codecs, ENTROPY_CODED for the variable-length ones; the
# top-k family selects within TOPK of torch.topk's time with the same k
STREAMING, ENTROPY_CODED, TOPK = 2.0, 4.0, 0.5
STREAMING_CODECS = frozenset(
    {"identity", "fp16", "bf16", "sign", "scaled_sign", "block_sign", "bucket", "randk", "terngrad", "qsgd"}
    | {"natural", "natural_round", "natural_dither"}
)
ENTROPY_CODED_CODECS = frozenset({"sparse_dither"})
TOPK_CODECS = frozenset({"topk", "topk_natural", "topk_dither"})
COPY_FIGURES = ("encode_vs_copy", "decode_into_vs_copy", "accumulate_vs_copy")


def targets(c: Compressor) -> dict[str, float]:
    """Figure -> the largest value that meets issue 9's target for codec c (empty: no target)."""
    if c.name in ENTROPY_CODED_CODECS or (c.name == "qsgd" and c.coding == "elias"):
        return dict.fromkeys(COPY_FIGURES, ENTROPY_CODED)
    if c.name in STREAMING_CODECS:
        return dict.fromkeys(COPY_FIGURES, STREAMING)
    if c.name in TOPK_CODECS:
        return {"encode_vs_torch_topk": TOPK, "decode_into_vs_copy": STREAMING, "accumulate_vs_copy": STREAMING}
    return {}


def add_arguments(p) -> None:
    p.add_argument("--d", type=int, default=RESNET18_D, help="vector size (default: ResNet-18's)")
    p.add_argument("--spherical-d", type=int, default=2**15, help="vector size for spherical compression")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    p.add_argument("--specs", nargs="+", default=SPECS)


class Beside:
    """Times each run of a figure right after a run of the reference (the copy), so that the two see
    the same load, clock speed and cache: a shared machine's other tenants and the CPU's frequency
    after wide vector code move both alike. ``timed(fn)`` gives (best seconds, median ratio of the
    pairs, last result) over repeat pairs after one warm-up, the device synchronised; the median of
    the per-pair ratios is the figure that stays put between runs (a best copy and a best codec
    time taken minutes apart moved ratios by 30% here). Each run's result is dropped before the
    next, as a sender drops a message once it is framed, so a fresh output reuses the memory just
    freed."""

    def __init__(self, reference, repeat: int, device: torch.device) -> None:
        self.reference, self.repeat, self.device = reference, repeat, device
        self.reference_s = float("inf")

    def timed(self, fn):
        out, best, ratios = fn(), float("inf"), []
        for _ in range(self.repeat):
            t0 = now(self.device)
            self.reference()
            t1 = now(self.device)
            out = None
            out = fn()
            t2 = now(self.device)
            self.reference_s, best = min(self.reference_s, t1 - t0), min(best, t2 - t1)
            ratios.append((t2 - t1) / (t1 - t0))
        return best, statistics.median(ratios), out


def gbps(d: int, seconds: float) -> float:
    """GB/s of fp32 input."""
    return 4 * d / seconds / 1e9


def bench_spec(spec: str, x: torch.Tensor, repeat: int) -> dict:
    """One compressor, with a copy timed before and after it (and torch.topk for top-k codecs)."""
    c, d, device = make(spec), x.numel(), x.device
    g = torch.Generator(device=device)
    y = torch.empty_like(x)
    clock = Beside(lambda: y.copy_(x), repeat, device)
    seconds, ratio = {}, {}

    def timed(name: str, fn):
        seconds[name], ratio[name], result = clock.timed(fn)
        return result

    m = timed("encode", lambda: c.encode(x, g.manual_seed(1)))  # x is drawn with seed 0
    received = bytearray(timed("to_bytes", m.to_bytes))
    p = timed("parse", lambda: c.from_bytes(received, device, d=d))
    decoded = timed("decode", lambda: c.decode(p))
    timed("decode_into", lambda: c.decode_into(p, y))
    timed("accumulate", lambda: c.accumulate(p, y))
    topk_s = None
    if c.name in TOPK_CODECS:
        k = c.meta_layout(d)[0]
        topk_s, _, _ = clock.timed(lambda: torch.topk(x.abs(), k, sorted=False))
    copy_s = clock.reference_s
    out = {
        "spec": spec,
        "d": d,
        "copy_ms": copy_s * 1e3,
        **{f"{k}_ms": s * 1e3 for k, s in seconds.items()},
        **{f"{k}_vs_copy": r for k, r in ratio.items()},
        **{f"{k}_GBps": gbps(d, seconds[k]) for k in ("encode", "decode_into", "accumulate")},
        "body_bytes": m.body_len,
        "header_bytes": m.header_len,
        "bits": c.bits(m),
        "bits_per_coordinate": c.bits(m) / d,
        "rel_error": float(((decoded.double() - x.double()) ** 2).sum() / (x.double() ** 2).sum()),
    }
    if topk_s is not None:
        out["torch_topk_ms"] = topk_s * 1e3
        out["encode_vs_torch_topk"] = seconds["encode"] / topk_s
    out["targets"] = {k: {"at_most": v, "meets_target": out[k] <= v} for k, v in targets(c).items()}
    return out


def bench_device(device: torch.device, args) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(args.d, generator=gen, device=device)
    small = x[: min(args.d, args.spherical_d)].contiguous()
    results = [bench_spec(s, small if s.startswith("spherical") else x, args.repeat) for s in args.specs]
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "results": results,
        "targets_missed": [
            f"{r['spec']}: {k}" for r in results for k, t in r["targets"].items() if not t["meets_target"]
        ],
    }


def run(args) -> dict:
    t0 = time.perf_counter()
    out = {"bench": "compress", "d": args.d, "devices": [bench_device(torch.device(d), args) for d in args.devices]}
    out["wall_s"] = time.perf_counter() - t0
    return out


def table(result: dict) -> str:
    """Each codec's costs in copies of d fp32 (``*``: misses its target), as text."""
    figures = ("encode", "decode_into", "accumulate", "parse")
    lines = [f"d = {result['d']}; times in copies of d fp32 (y.copy_(x)); * misses issue 9's target"]
    for dev in result["devices"]:
        lines.append(f"{dev['device']:<36}" + "".join(f"{k:>13}" for k in figures) + f"{'bits/coord':>12}")
        for r in dev["results"]:
            missed = {k.removesuffix("_vs_copy") for k, t in r["targets"].items() if not t["meets_target"]}
            cells = "".join(f"{format(r[k + '_vs_copy'], '.3g') + ('*' if k in missed else ' '):>13}" for k in figures)
            lines.append(f"{r['spec']:<36}{cells}{r['bits_per_coordinate']:>12.4g}")
    return "\n".join(lines)
