"""CPU and CUDA give the same bytes (skipped without a GPU): for the same input and generator
every codec's CUDA message is byte-identical to the pinned CPU message, and it decodes and
accumulates on a CPU server exactly as a CPU message does."""

import re

import pytest
import torch
from compress_specs import SPECS, resolve
from test_deferred_checks import BAD_INDICES, MALFORMED, ROUND, SPARSE, frames, round_reads, summed
from test_pinned_messages import PINNED, PINNED_DRAWS, D, digest, normal_input, normal_key, pinned_input, pins

from psgd.compress import make
from psgd.errors import FrameError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CPU-only machine)")


@cuda
@pytest.mark.parametrize("spec", PINNED)
def test_cuda_message_is_the_pinned_cpu_message(spec):
    assert digest(spec, "cuda") == pins()[spec]


@cuda
@pytest.mark.parametrize("spec", PINNED_DRAWS)
def test_cuda_draws_are_the_pinned_cpu_draws(spec):
    """On an input where every level is drawn: the Triton generator gives the CPU's draws."""
    assert digest(spec, "cuda", x=normal_input()) == pins()[normal_key(spec)]


@cuda
@pytest.mark.parametrize("spec", SPECS)
def test_a_gpu_message_decodes_on_a_cpu_server_as_on_the_gpu(spec):
    c = make(resolve(spec, D))
    x = pinned_input()
    gpu = c.encode(x.cuda(), torch.Generator().manual_seed(1))
    y_gpu = c.decode(gpu)
    assert y_gpu.device.type == "cuda"
    back = c.from_bytes(gpu.to_bytes(), device="cpu", d=D)
    assert torch.equal(c.decode(back), y_gpu.cpu())
    on_gpu = c.from_bytes(gpu.to_bytes(), device="cuda", d=D)
    out_gpu, out_cpu = torch.ones(D, device="cuda"), torch.ones(D)
    c.accumulate(on_gpu, out_gpu, -0.5)
    c.accumulate(back, out_cpu, -0.5)
    assert torch.equal(out_gpu.cpu(), out_cpu)


@cuda
@pytest.mark.parametrize("spec", ["identity", "fp16", "natural", "qsgd:s=16"])
def test_a_cuda_server_reads_the_device_once_per_round(monkeypatch, spec):
    """The server's parse on CUDA defers its checks (compress.base.defer_on): one read per round
    (every read counted, the kernels' too)."""
    assert round_reads(monkeypatch, spec, "cuda") == 1


@cuda
@pytest.mark.parametrize("spec,dtype,corrupt,text", MALFORMED)
def test_a_cuda_server_reports_a_malformed_message_as_the_checking_parse(spec, dtype, corrupt, text):
    raw = frames(spec, dtype, (3, corrupt))
    with pytest.raises(FrameError, match=f"^malformed frame from rank 3 in round {ROUND}: {re.escape(text)}$"):
        summed(spec, dtype, raw, [4, 3, 2, 1], device="cuda")
    valid = frames(spec, dtype)
    assert torch.equal(summed(spec, dtype, valid, [4, 3, 2, 1], "cuda").cpu(), summed(spec, dtype, valid, [1, 2, 3, 4]))


@cuda
@pytest.mark.parametrize("spec", [s for s, _ in SPARSE])
def test_a_cuda_server_reads_a_sparse_round_once(monkeypatch, spec):
    """Top-k's and rand-k's sent indices: their checks deferred as device flags with the values'."""
    assert round_reads(monkeypatch, spec, "cuda") == 1


@cuda
@pytest.mark.parametrize("spec", ["randk:ratio=0.1", "randk:ratio=0.6"])
def test_a_cuda_server_draws_a_shared_seeds_subset_once_per_round(monkeypatch, spec):
    assert round_reads(monkeypatch, spec, "cuda", shared=True, draws=1) == 2


@cuda
@pytest.mark.parametrize("spec,corrupt,text", BAD_INDICES)
def test_a_cuda_server_reports_bad_sent_indices_as_the_checking_parse(spec, corrupt, text):
    raw = frames(spec, torch.float32, (3, corrupt))
    with pytest.raises(FrameError, match=f"^malformed frame from rank 3 in round {ROUND}: {re.escape(text)}$"):
        summed(spec, torch.float32, raw, [4, 3, 2, 1], device="cuda")
