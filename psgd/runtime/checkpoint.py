"""Checkpoint files and state blobs: named tensors plus a small msgpack header, no pickle.

Layout: ``PSGDCKP2`` + msgpack ``{"meta": {...}, "tensors": [[name, dtype, shape, nbytes], ...]}``
+ the tensors' raw bytes in that order + a 16-byte BLAKE2b digest of everything before it.
Loading checks the digest first (a truncated or corrupted file is one clear error, never a
wrong resume), then parses the header, checks every length and builds tensors from the bytes:
nothing is ever unpickled. Files are written to a temporary name, flushed to disk and renamed,
so a kill, a second signal or a full disk while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import msgpack
import torch

from psgd.errors import PsgdError
from psgd.methods.optim import SGDStep

MAGIC = b"PSGDCKP2"
OLD_MAGIC = b"PSGDCKPT"  # the format before checksums
DIGEST = 16
DTYPES = {"float32": torch.float32, "float64": torch.float64, "int64": torch.int64, "uint8": torch.uint8}


def to_bytes(tensors: dict[str, torch.Tensor], meta: dict) -> bytes:
    index, blobs = [], []
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        dtype = str(t.dtype).removeprefix("torch.")
        if dtype not in DTYPES:
            raise TypeError(f"cannot checkpoint {name} of dtype {t.dtype}")
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
        index.append([name, dtype, list(t.shape), len(raw)])
        blobs.append(raw)
    body = b"".join([MAGIC, msgpack.packb({"meta": meta, "tensors": index}), *blobs])
    return body + digest(body)


def digest(data) -> bytes:
    return hashlib.blake2b(data, digest_size=DIGEST).digest()


def from_bytes(data: bytes, what: str = "checkpoint") -> tuple[dict[str, torch.Tensor], dict]:
    def bad(why):
        return PsgdError(f"{what} is not a valid psgd checkpoint: {why}")

    if data.startswith(OLD_MAGIC):
        raise bad("written by an older psgd without a checksum; start the run again")
    if not data.startswith(MAGIC):
        raise bad("bad magic")
    if len(data) < len(MAGIC) + DIGEST or digest(memoryview(data)[:-DIGEST]) != data[-DIGEST:]:
        raise bad("checksum mismatch: the file is truncated or corrupted")
    data = memoryview(data)[:-DIGEST]
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data))
    unpacker.feed(data[len(MAGIC) :])
    try:
        header = unpacker.unpack()
        meta, index = header["meta"], header["tensors"]
    except Exception as e:
        raise bad(f"unreadable header ({type(e).__name__})") from None
    pos, tensors = len(MAGIC) + unpacker.tell(), {}
    for entry in index:
        try:
            name, dtype, shape, nbytes = entry
            t = torch.frombuffer(bytearray(data[pos : pos + nbytes]), dtype=DTYPES[dtype]) if nbytes else None
            tensors[name] = (t if t is not None else torch.empty(0, dtype=DTYPES[dtype])).reshape(shape)
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise bad(f"tensor entry {entry!r:.80} ({type(e).__name__})") from None
        pos += nbytes
    if pos != len(data):
        raise bad(f"{len(data) - pos} trailing bytes")
    return tensors, meta


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Write atomically; an unwritable folder or a full disk is one PsgdError, the previous file intact."""
    tmp = path.with_suffix(".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(to_bytes(tensors, meta))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise PsgdError(f"cannot write the checkpoint {path}: {e.strerror or e}; the previous one is kept") from None


def load(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if not path.is_file():
        raise PsgdError(f"no checkpoint at {path}")
    return from_bytes(path.read_bytes(), str(path))


def capture(state, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict]:
    """A method state as named tensors + scalars. A state is a dataclass whose fields are
    tensors, numbers, None, an SGDStep, a list of tensors or another such dataclass."""
    tensors, scalars = {}, {}
    for f in dataclasses.fields(state):
        _capture(getattr(state, f.name), prefix + f.name, tensors, scalars)
    return tensors, scalars


def _capture(value, key: str, tensors: dict, scalars: dict) -> None:
    if isinstance(value, torch.Tensor):
        tensors[key] = value
    elif isinstance(value, SGDStep):
        tensors.update({f"{key}.{k}": v for k, v in value.state().items()})
    elif dataclasses.is_dataclass(value):
        t, s = capture(value, key + ".")
        tensors.update(t)
        scalars.update(s)
    elif isinstance(value, list) and all(isinstance(v, torch.Tensor) for v in value):
        scalars[key + "#len"] = len(value)
        tensors.update({f"{key}.{i}": v for i, v in enumerate(value)})
    elif value is None or isinstance(value, (int, float, bool)):
        scalars[key] = value
    else:
        raise TypeError(f"state field {key} of type {type(value).__name__} cannot be checkpointed")


def restore(state, tensors: dict[str, torch.Tensor], scalars: dict, device, prefix: str = "") -> None:
    """Overwrite a freshly initialised state with captured values, in place."""
    for f in dataclasses.fields(state):
        value, key = getattr(state, f.name), prefix + f.name
        if isinstance(value, SGDStep):
            value.load({k.removeprefix(f"{key}."): v.to(device) for k, v in tensors.items() if k.startswith(f"{key}.")})
        elif dataclasses.is_dataclass(value):
            restore(value, tensors, scalars, device, key + ".")
        elif key + "#len" in scalars:
            setattr(state, f.name, [tensors[f"{key}.{i}"].to(device) for i in range(scalars[key + "#len"])])
        elif key in tensors:
            saved = tensors[key].to(device)
            if isinstance(value, torch.Tensor) and value.shape == saved.shape and value.dtype == saved.dtype:
                value.copy_(saved)  # in place: a state tensor may be a view other objects share
            else:
                setattr(state, f.name, saved)
        elif key in scalars:
            setattr(state, f.name, scalars[key])
