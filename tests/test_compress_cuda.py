"""CPU and CUDA give the same bytes (skipped without a GPU): for the same input and generator
every codec's CUDA message is byte-identical to the pinned CPU message, and it decodes and
accumulates on a CPU server exactly as a CPU message does."""

import pytest
import torch
from compress_specs import SPECS, resolve
from test_pinned_messages import STOCHASTIC, D, digest, normal_input, normal_key, pinned_input, pins

from psgd.compress import make

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CPU-only machine)")


@cuda
@pytest.mark.parametrize("spec", SPECS)
def test_cuda_message_is_the_pinned_cpu_message(spec):
    assert digest(spec, "cuda") == pins()[spec]


@cuda
@pytest.mark.parametrize("spec", STOCHASTIC)
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
