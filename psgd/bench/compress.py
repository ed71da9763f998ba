"""Compressor throughput: encode/decode GB/s of fp32 input, bits per coordinate, relative error.

For d = 11,173,962 (ResNet-18) by default, on the CPU and on CUDA when present. Each time is
the best of --repeat runs after one warm-up (CUDA synchronised): on a shared machine other
processes only ever add time, so the minimum is the reproducible figure. A plain copy (and,
for top-k, torch.topk with the same k) is timed right before each compressor, so
``encode_vs_copy`` and ``topk_vs_torch_topk`` hold on any machine. Spherical compression
searches ~1/P random points per block, so it runs on its own smaller --spherical-d.
"""

from __future__ import annotations

import time

import torch

from psgd.compress import make

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


def add_arguments(p) -> None:
    p.add_argument("--d", type=int, default=RESNET18_D, help="vector size (default: ResNet-18's)")
    p.add_argument("--spherical-d", type=int, default=2**15, help="vector size for spherical compression")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--devices", nargs="+", default=["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    p.add_argument("--specs", nargs="+", default=SPECS)


def timed(fn, repeat: int, device: torch.device):
    """(best seconds, last result) over repeat runs after one warm-up."""
    out, times = fn(), []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times), out


def gbps(d: int, seconds: float) -> float:
    return 4 * d / seconds / 1e9


def bench_spec(spec: str, x: torch.Tensor, repeat: int) -> dict:
    """One compressor, with a plain copy (and torch.topk for top-k) timed right before it, so
    the ratios compare runs taken under the same load."""
    c, d, device = make(spec), x.numel(), x.device
    g = torch.Generator(device=device)
    copy_s, _ = timed(lambda: x.clone(), repeat, device)
    encode_s, m = timed(lambda: c.encode(x, g.manual_seed(1)), repeat, device)  # x is drawn with seed 0
    decode_s, y = timed(lambda: c.decode(m), repeat, device)
    out = {
        "spec": spec,
        "d": d,
        "encode_ms": encode_s * 1e3,
        "decode_ms": decode_s * 1e3,
        "encode_GBps": gbps(d, encode_s),
        "decode_GBps": gbps(d, decode_s),
        "bits_per_coordinate": 8 * m.body_len / d,
        "header_bytes": m.header_len,
        "rel_error": float(((y.double() - x.double()) ** 2).sum() / (x.double() ** 2).sum()),
        "copy_ms": copy_s * 1e3,
        "encode_vs_copy": encode_s / copy_s,
    }
    if spec.startswith("topk:"):
        k = c.encode(x).meta[0]
        topk_s, _ = timed(lambda: torch.topk(x.abs(), k, sorted=False), repeat, device)
        out["torch_topk_ms"] = topk_s * 1e3
        out["topk_vs_torch_topk"] = encode_s / topk_s
    return out


def bench_device(device: torch.device, args) -> dict:
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(args.d, generator=gen, device=device)
    small = x[: min(args.d, args.spherical_d)].contiguous()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {
        "device": name,
        "torch_threads": torch.get_num_threads(),
        "results": [bench_spec(s, small if s.startswith("spherical") else x, args.repeat) for s in args.specs],
    }


def run(args) -> dict:
    t0 = time.perf_counter()
    out = {"bench": "compress", "d": args.d, "devices": [bench_device(torch.device(d), args) for d in args.devices]}
    out["wall_s"] = time.perf_counter() - t0
    return out
