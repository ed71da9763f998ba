"""numba compiles psgd's kernels for 512-bit vectors on AVX-512 CPUs, unless the user chose otherwise
(psgd/kernels/width.py). The kernels' results do not depend on it: the compiled-versus-reference
tests and the pinned bytes run under whichever width this machine gets."""

import os
import subprocess
import sys

import pytest

from psgd.kernels import width

numba = pytest.importorskip("numba")

HOST = {"avx2": True, "avx512f": True, "avx512bw": True, "sse2": True, "amx-tile": False}


def test_the_host_features_are_kept_and_the_256_bit_preference_lifted():
    f = width.features(HOST).split(",")
    assert f[-1] == "-prefer-256-bit"
    assert set(f[:-1]) == {"+avx2", "+avx512f", "+avx512bw", "+sse2", "-amx-tile"}


def test_without_avx512_numba_keeps_its_default():
    assert width.features({**HOST, "avx512f": False}) is None
    assert width.features({"avx2": True}) is None


def features_after_import(**env) -> str:
    """numba's target features in a fresh process that imported psgd.kernels ('None' if unset)."""
    keep = {k: v for k, v in os.environ.items() if k not in ("PSGD_VECTOR_WIDTH", "NUMBA_CPU_FEATURES")}
    code = "import psgd.kernels, numba; print(numba.core.config.CPU_FEATURES)"
    out = subprocess.run([sys.executable, "-c", code], env=keep | env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_sets_the_features_unless_the_user_chose():
    import llvmlite.binding as llvm

    assert features_after_import() == str(width.features(dict(llvm.get_host_cpu_features())))
    assert features_after_import(PSGD_VECTOR_WIDTH="256") == "None"
    assert features_after_import(NUMBA_CPU_FEATURES="+avx2") == "+avx2"


def test_too_late_once_numba_made_its_target_machine(monkeypatch):
    from numba.core.registry import cpu_target

    cpu_target.target_context  # noqa: B018  (made here, if no kernel made it before)
    monkeypatch.setattr(numba.core.config, "CPU_FEATURES", None)
    monkeypatch.delenv("PSGD_VECTOR_WIDTH", raising=False)
    assert width.use(numba) is False
    assert numba.core.config.CPU_FEATURES is None
