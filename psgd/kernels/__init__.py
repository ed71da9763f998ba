"""Compiled kernels for the hot path: numba on the CPU, Triton on CUDA, each beside a plain-torch
reference that tests compare with it bit for bit.

A CPU kernel is a plain Python function over numpy arrays, compiled by numba on first use and
cached on disk (``cache=True``: once per machine, not once per run or per rank; in a folder
per version of these sources, psgd/kernels/cache.py). Where numba is
missing or cannot compile, ``cpu`` returns None once with one warning and the codec runs its
reference. ``PSGD_KERNELS=reference`` forces the references everywhere (for comparisons).
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable

import torch

try:
    import numba
except Exception:  # noqa: BLE001  (any import failure means: no compiled path)
    numba = None

if numba is not None:
    from psgd.kernels import cache, width

    cache.use(numba)  # a folder per version of the kernels' sources (see cache.py)
    width.use(numba)  # 16 coordinates a vector instruction where the CPU has AVX-512 (see width.py)

_WARNED = False
KERNELS: list[CpuKernel] = []


def enabled() -> bool:
    """Compiled kernels are in use (numba importable, not switched off by PSGD_KERNELS=reference)."""
    return numba is not None and os.environ.get("PSGD_KERNELS", "") != "reference"


def fallback(why: str) -> None:
    """Say once per process that the compiled path is off, and why."""
    global _WARNED
    if not _WARNED:
        _WARNED = True
        warnings.warn(f"psgd: compiled CPU kernels unavailable ({why}); using the torch references", stacklevel=3)


class CpuKernel:
    """A numba-compiled function; ``kernel(*arrays)`` runs it. Use ``usable(t)`` first: False on
    CUDA tensors, with kernels off, or once compilation has failed (then one warning). Every
    kernel is listed in KERNELS (the tests check that none broke: a silent fallback to the
    reference would make every compiled-versus-reference comparison pass trivially)."""

    def __init__(self, fn: Callable, fastmath: set[str] | bool = False) -> None:
        self.fn = fn
        self.jit = numba.njit(cache=True, nogil=True, fastmath=fastmath)(fn) if numba is not None else None
        self.broken = False
        KERNELS.append(self)

    def usable(self, *tensors: torch.Tensor) -> bool:
        if numba is None and os.environ.get("PSGD_KERNELS", "") != "reference":
            fallback("numba is not installed")
        return enabled() and not self.broken and all(t.device.type == "cpu" for t in tensors)

    def __call__(self, *args):
        try:
            return self.jit(*args)
        except numba.core.errors.NumbaError as e:  # a compiler problem, not a data problem
            self.broken = True
            fallback(f"{self.fn.__name__}: {type(e).__name__}")
            raise KernelUnavailable from e


class KernelUnavailable(RuntimeError):
    """Raised once by a kernel that failed to compile; the caller runs the reference instead."""


def run(kernel: CpuKernel, tensors: tuple, fast: Callable, reference: Callable):
    """``fast()`` when ``kernel`` can run on ``tensors``, else (or once it failed to compile) ``reference()``."""
    if kernel.usable(*tensors):
        try:
            return fast()
        except KernelUnavailable:
            pass
    return reference()


def device_fn(fn: Callable | None = None, *, fastmath: set[str] | None = None) -> Callable:
    """Decorator: a helper that compiled kernels call (numba-compiled, inlined into its callers); the
    plain function where numba is missing. ``@device_fn(fastmath={"reassoc"})`` lets numba reorder its
    float sums into vector lanes: such a helper is compiled on its own, not inlined, so the flags
    apply to its code alone (the order is fixed by the machine's compiled code, the same every run)."""
    if fn is None:
        return functools.partial(device_fn, fastmath=fastmath)
    if numba is None:
        return fn
    if fastmath:
        return numba.njit(cache=True, nogil=True, fastmath=fastmath)(fn)
    return numba.njit(cache=True, inline="always")(fn)


def cpu(fn: Callable | None = None, *, fastmath: set[str] | bool = False) -> CpuKernel | Callable:
    """Decorator: a CPU kernel over numpy arrays (see CpuKernel); ``@cpu(fastmath=...)`` passes
    numba's fastmath flags."""
    if fn is None:
        return functools.partial(CpuKernel, fastmath=fastmath)
    return CpuKernel(fn, fastmath)


def np_view(t: torch.Tensor):
    """The numpy array sharing t's memory (t contiguous, on the CPU)."""
    return t.detach().numpy()
