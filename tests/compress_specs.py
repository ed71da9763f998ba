"""Specs exercised by the compressor tests: every registered name, wrappers included."""

SPECS = [
    "identity",
    "fp16",
    "bf16",
    "topk:ratio=0.3",
    "topk:k=3",
    "randk:ratio=0.3",
    "randk:k=3,shared_seed=false",
    "randk:ratio=0.5,scaled=false",
    "adaptive_rand",
    "hard_threshold:lam=0.8",
    "sign",
    "scaled_sign",
    "block_sign:bucket=20",
    "block_sign:bucket=0,layers=LAYERS",
    "terngrad",
    "qsgd:s=1",
    "qsgd:s=5",
    "qsgd:p=inf,s=3",
    "qsgd:s=4,coding=elias",
    "qsgd:p=inf,s=2,coding=elias",
    "natural",
    "natural_round",
    "natural_dither:s=3",
    "natural_dither:p=2,s=8",
    "topk_natural:ratio=0.3",
    "topk_natural:k=2,scaled=false",
    "topk_dither:ratio=0.3,s=4",
    "sparse_dither:nu=0.1",
    "sparse_dither:nu=0.3,random=true",
    "spherical:alpha=0.5,block=4",
    "powersgd:rank=2",
    "per_layer(topk:ratio=0.5, layers=LAYERS)",
    "per_layer(randk:k=1,shared_seed=true, layers=LAYERS)",
    "bucket(scaled_sign, size=16)",
    "bucket(qsgd:s=2,coding=elias, size=24)",
    "per_layer(hard_threshold:lam=0.8, layers=LAYERS)",
    "bucket(sparse_dither:nu=0.2, size=40)",
    "small_dense(topk:ratio=0.5, min_size=4, layers=LAYERS)",
    "small_dense(randk:ratio=0.5, min_size=2, layers=LAYERS)",
    "scaled(natural)",
    "scaled(randk:ratio=0.25,shared_seed=false)",
]


def layers(d: int) -> str:
    """A layer layout of d coordinates: up to three uneven layers."""
    if d < 3:
        return str(d)
    return f"{d // 2}+{d // 3}+{d - d // 2 - d // 3}"


def resolve(spec: str, d: int) -> str:
    return spec.replace("LAYERS", layers(d))
