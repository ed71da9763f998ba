"""Compiled kernels are cached per version of psgd/kernels' sources: an edit to any kernel file
(say the generator that other kernels inline) gets a fresh folder, never an old compiled draw."""

import os

import pytest

from psgd.kernels import cache

numba = pytest.importorskip("numba")


def test_the_cache_folder_follows_every_kernel_source(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "KERNELS", tmp_path)
    (tmp_path / "rng.py").write_text("A = 1\n")
    (tmp_path / "triton").mkdir()
    (tmp_path / "triton" / "rng.py").write_text("B = 1\n")
    first = cache.digest("0.68.1")
    assert cache.digest("0.68.1") == first
    (tmp_path / "rng.py").write_text("A = 2\n")  # an inlined helper's module changes
    second = cache.digest("0.68.1")
    (tmp_path / "triton" / "rng.py").write_text("B = 2\n")
    third = cache.digest("0.68.1")
    assert len({first, second, third, cache.digest("0.69.0")}) == 4


def test_the_folder_is_under_numba_cache_dir_and_in_use(tmp_path, monkeypatch):
    in_use = cache.cache_dir(numba.__version__)  # import psgd.kernels pointed numba there (where writable)
    if os.access(in_use, os.W_OK):
        assert str(in_use) == numba.config.CACHE_DIR
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    path = cache.cache_dir(numba.__version__)
    assert path.parent == tmp_path and path.name == f"psgd-{cache.digest(numba.__version__)}"
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_dir(numba.__version__).parent == tmp_path / "xdg" / "psgd" / "numba"
