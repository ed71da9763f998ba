"""512-bit vectors for the compiled kernels on CPUs with AVX-512.

LLVM's tuning for most AVX-512 CPUs (Skylake-X to Sapphire Rapids, and whatever model a VM
reports) prefers 256-bit vectors, so numba's loops ran 8 coordinates an instruction where the
CPU takes 16. The kernels are throughput-bound (the draw's two multiplies, the dithering's
compares and selects): measured here, d = 11.2M, one thread, natural dithering's code loop went
from 1.9 to 1.2 copies of memory with the preference lifted, the results bit for bit the same
(integer and IEEE arithmetic per coordinate; every reduction keeps its order in the code).

Done once by ``import psgd.kernels`` before the first kernel compiles: numba's target machine is
made with the host's features plus ``-prefer-256-bit``. It changes how numba compiles every
function in the process (the user's own too), so it is left alone where the user chose numba's
target (NUMBA_CPU_NAME or NUMBA_CPU_FEATURES), where ``PSGD_VECTOR_WIDTH=256`` asks for LLVM's
choice, where the CPU has no AVX-512, and where numba has already made its target machine. The
features are part of numba's cache key, so code compiled either way is never mixed up.
"""

from __future__ import annotations

import os

PREFER_512 = "-prefer-256-bit"


def features(host: dict[str, bool]) -> str | None:
    """numba's target features for the host's (name -> present): theirs plus the 512-bit
    preference where AVX-512F is present, else None (numba's default stays)."""
    if not host.get("avx512f"):
        return None
    return ",".join(f"{'+' if on else '-'}{name}" for name, on in sorted(host.items())) + "," + PREFER_512


def use(numba) -> bool:
    """Set numba's target features as above, if nobody chose them and nothing compiled yet; True if set."""
    config = numba.core.config
    if os.environ.get("PSGD_VECTOR_WIDTH", "") == "256" or config.CPU_NAME or config.CPU_FEATURES:
        return False
    from numba.core.registry import cpu_target

    if "_toplevel_target_context" in vars(cpu_target):  # the target machine exists: too late
        return False
    try:
        import llvmlite.binding as llvm

        wanted = features(dict(llvm.get_host_cpu_features()))
    except (RuntimeError, OSError):  # a host whose features LLVM cannot read: its defaults stay
        return False
    if wanted is None:
        return False
    config.CPU_FEATURES = wanted
    return True
