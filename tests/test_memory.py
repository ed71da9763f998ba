"""psgd.memory: import psgd makes glibc keep freed large buffers, unless told not to."""

import os
import platform
import subprocess
import sys

import pytest

from psgd import memory

PROBE = "import psgd.memory as m; print(m.keep_freed_pages())"


def probe(env_extra: dict[str, str]) -> str:
    """keep_freed_pages() in a fresh interpreter, with the user's malloc settings replaced by env_extra."""
    env = {k: v for k, v in os.environ.items() if k != "PSGD_MALLOC" and not k.startswith("MALLOC_")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_thresholds_are_set_on_glibc_and_left_when_asked():
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert probe({}).strip() == "True"
    assert probe({"PSGD_MALLOC": "system"}).strip() == "False"
    assert probe({"MALLOC_MMAP_THRESHOLD_": "65536"}).strip() == "False"


def test_thresholds_fit_mallopt_int():
    assert 0 < memory.MMAP_THRESHOLD < 2**31 and 0 < memory.TRIM_THRESHOLD < 2**31
