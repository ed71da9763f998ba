"""Where numba caches psgd's compiled kernels: a folder named by a digest of the kernels' sources.

numba's disk cache (``cache=True``) is invalidated only by a change to the file that defines a
kernel, not by a change to a helper it inlines from another module: a kernel compiled before an
edit to psgd/kernels/rng.py kept the old draws, and so sent other bytes than the reference. So
the cache lives in ``<base>/psgd-<digest>``, the digest covering every source file of
psgd/kernels and numba's version: any change there compiles afresh (once per machine), an older
folder is simply never read again. ``base`` is NUMBA_CACHE_DIR where the user set it, else
``$XDG_CACHE_HOME/psgd/numba`` (``~/.cache/psgd/numba``). Where that cannot be created, numba's
own default (next to the sources) is left in place.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

KERNELS = Path(__file__).resolve().parent


def digest(version: str) -> str:
    """A digest of every psgd/kernels source file (name and bytes) and numba's version."""
    h = hashlib.blake2b(version.encode(), digest_size=8)
    for path in sorted(KERNELS.rglob("*.py")):
        h.update(str(path.relative_to(KERNELS)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def cache_dir(version: str) -> Path:
    base = (
        os.environ.get("NUMBA_CACHE_DIR")
        or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "psgd" / "numba"
    )
    return Path(base) / f"psgd-{digest(version)}"


def use(numba) -> Path | None:
    """Point numba's cache at cache_dir (before any kernel is defined); the folder, or None where
    it cannot be made (numba's default stays)."""
    path = cache_dir(numba.__version__)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK):
        return None
    numba.config.CACHE_DIR = str(path)
    return path
