"""Reading pickled numpy data (the CIFAR "python version" files) without running code.

``pickle.load`` calls whatever callables the file names, so a crafted file can run any
program. This unpickler resolves only the globals that rebuild numpy arrays, and refuses
every other one with a clear error; dicts, lists, bytes, str and numbers need no global.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

_NUMPY_CORE = ("numpy.core", "numpy._core")  # numpy < 2 and numpy >= 2 spell it differently
ALLOWED = {
    *((f"{core}.multiarray", "_reconstruct") for core in _NUMPY_CORE),  # ndarray.__reduce__, protocol <= 4
    *((f"{core}.numeric", "_frombuffer") for core in _NUMPY_CORE),  # ndarray.__reduce_ex__, protocol 5
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes in protocol <= 2 written by Python 3: encode(str, "latin1")
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "dict"),
    ("builtins", "list"),
}


class UnsafePickleError(pickle.UnpicklingError):
    """The file names a global outside ALLOWED."""


class NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in ALLOWED:
            raise UnsafePickleError(
                f"refused to load global {module}.{name}: only numpy arrays, dicts, lists and bytes are accepted"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise UnsafePickleError("refused a persistent id: only numpy arrays, dicts, lists and bytes are accepted")


def load_numpy_pickle(data: bytes):
    """Unpickle ``data`` (Python 2 str become bytes, as the CIFAR files need); object arrays are refused."""
    value = NumpyOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    _refuse_object_arrays(value)
    return value


def _refuse_object_arrays(value) -> None:
    if isinstance(value, np.ndarray) and value.dtype.hasobject:
        raise UnsafePickleError("refused an array of Python objects: only numeric arrays are accepted")
    if isinstance(value, dict):
        for v in value.values():
            _refuse_object_arrays(v)
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, (np.ndarray, dict, list)):
                _refuse_object_arrays(v)
