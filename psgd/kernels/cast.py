"""Widening narrow floats (fp16, bf16) into a wider buffer: out += weight * v, without a dense temporary.

On the CPU, fp16/bf16 values into a contiguous fp32 ``out`` with weight 1 or -1 take a numba kernel
that reads the 16-bit values and read-modify-writes out once (about one copy of the vector). numba
has no float16, so the kernels widen the bits: bf16 is ``bits << 16``; fp16 is rebuilt branch-free
(selects on uint32, so the loop vectorises), exactly as torch widens it (every pattern but NaN
payloads). With weight +-1 the product w * v is exact (-1: the sign bit flipped before widening),
so out_i + w * v_i is the float of torch's ``out.add_(v.to(out.dtype), alpha=w)``. Any other weight
is a fused multiply-add in torch, so it keeps torch's path: chunks that stay in cache widened into
one small buffer and added with torch's own ``add_`` (also the fallback and, with
``PSGD_KERNELS=reference``, the forced path). The plain reference, ``out.add_(v.to(out.dtype),
alpha=weight)``, is the CUDA path. ``add_widened_pair`` adds two messages in one pass over out (the
server's aggregate).
"""

from __future__ import annotations

import numpy as np
import torch

from psgd.kernels import cpu, device_fn, np_view, run

CHUNK = 2**18  # elements widened at a time by the torch path: 1 MiB of fp32, within L2


@device_fn
def fp16_value(h, flip):
    """The float32 of fp16 bits h ^ flip (h uint16; flip uint32 0x8000 negates, 0 not), exact, no
    branch: exponent 31 (Inf/NaN) maps to 255, 0 (zero, subnormal) to mantissa * 2^-24, any other e
    to e + 112; then the sign. h is widened once and every intermediate cast back to uint32 (numba
    widens integer arithmetic to 64 bits: half the vector lanes)."""
    u = np.uint32(np.uint32(h) ^ flip)
    o = np.uint32(np.uint32(u << np.uint32(13)) & np.uint32(0x0FFFE000))
    e = np.uint32(u & np.uint32(0x7C00))
    normal = np.uint32(o + np.uint32(112 << 23))
    special = np.uint32(o + np.uint32(224 << 23))
    small = np.float32(np.float32(np.uint32(u & np.uint32(0x3FF))) * np.float32(2.0**-24)).view(np.uint32)
    mag = special if e == np.uint32(0x7C00) else normal
    mag = small if e == np.uint32(0) else mag
    sign = np.uint32(np.uint32(u << np.uint32(16)) & np.uint32(0x80000000))
    return np.uint32(mag | sign).view(np.float32)


@device_fn
def bf16_value(h, flip):
    """The float32 of bf16 bits h ^ flip: the same bits in the upper half."""
    return np.uint32(np.uint32(np.uint32(h) ^ flip) << np.uint32(16)).view(np.float32)


@device_fn
def widen(h, flip, half):
    """The float32 of fp16 (``half``) or bf16 bits h ^ flip; ``half`` is one value for a whole kernel
    call, a condition LLVM takes out of the loop."""
    return fp16_value(h, flip) if half else bf16_value(h, flip)


@cpu
def add_kernel(values, out, flip, half):
    """out += w * widened(values) (16-bit patterns as uint16) for w = +-1: flip 0x8000 where w = -1
    (w * v is exact, -v the same float)."""
    for i in range(out.size):
        out[i] += widen(values[i], flip, half)


@cpu
def pair_kernel(a, b, out, start, half):
    """out = va + vb with ``start``, else (out + va) + vb (a, b: 16-bit patterns), one pass over out.
    ``start`` is the same for every i: a select LLVM hoists, no branch per coordinate."""
    for i in range(out.size):
        va = widen(a[i], np.uint32(0), half)
        first = va if start else out[i] + va
        out[i] = first + widen(b[i], np.uint32(0), half)


def bits(values: torch.Tensor):
    """The uint16 numpy view of 16-bit values (contiguous, on the CPU)."""
    return np_view(values.view(torch.int16)).view(np.uint16)


def _compilable(values: torch.Tensor, out: torch.Tensor) -> bool:
    """fp16/bf16 values into fp32 out, both contiguous, of one size (the device is run's to check)."""
    return (
        values.dtype in (torch.float16, torch.bfloat16)
        and out.dtype == torch.float32
        and values.numel() == out.numel()
        and values.is_contiguous()
        and out.is_contiguous()
    )


def add_widened_ref(values: torch.Tensor, out: torch.Tensor, weight: float) -> None:
    """out += weight * values (widened to out's dtype): the plain-torch reference (any device)."""
    out.add_(values.to(out.dtype), alpha=weight)


def add_chunks(values: torch.Tensor, out: torch.Tensor, weight: float) -> None:
    """out += weight * values by torch on the CPU, widened a chunk at a time (the reference's floats)."""
    n = values.numel()
    if out.device.type != "cpu" or n <= CHUNK:
        add_widened_ref(values, out, weight)
        return
    wide = torch.empty(CHUNK, dtype=out.dtype)
    for start in range(0, n, CHUNK):  # a loop over chunks, not coordinates
        chunk = wide[: min(CHUNK, n - start)]
        chunk.copy_(values[start : start + CHUNK])
        out[start : start + CHUNK].add_(chunk, alpha=weight)


def add_widened(values: torch.Tensor, out: torch.Tensor, weight: float) -> None:
    """out += weight * values, in place, one pass over out and values."""
    if weight in (1.0, -1.0) and _compilable(values, out):

        def compiled():
            flip = np.uint32(0x8000 if weight < 0 else 0)
            add_kernel(bits(values), np_view(out), flip, values.dtype == torch.float16)

        run(add_kernel, (values, out), compiled, lambda: add_chunks(values, out, weight))
    else:
        add_chunks(values, out, weight)


def add_widened_pair(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, start: bool) -> None:
    """out = a + b with ``start``, else (out + a) + b, a and b widened (both fp16 or both bf16, out
    fp32): the floats of ``out.copy_(a)`` (``add_widened(a, out, 1)``) then ``add_widened(b, out, 1)``,
    in one pass over out on the CPU; else those two steps."""

    def reference():
        if start:
            out.copy_(a)
        else:
            add_chunks(a, out, 1.0)
        add_chunks(b, out, 1.0)

    if a.dtype == b.dtype and _compilable(a, out) and _compilable(b, out):

        def compiled():
            pair_kernel(bits(a), bits(b), np_view(out), bool(start), a.dtype == torch.float16)

        run(pair_kernel, (a, b, out), compiled, reference)
    else:
        reference()
