"""The same generator gives the same message on the CPU and on CUDA (skipped without a GPU)."""

import pytest
import torch
from compress_specs import SPECS, resolve

from psgd.compress import make

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CPU-only machine)")

# Reductions (norms, cumulative sums, QR) may round differently on the two devices; these
# compare decoded vectors to a tolerance instead of bytes.
APPROX = ("powersgd", "adaptive_rand", "spherical")


@cuda
@pytest.mark.parametrize("spec", SPECS)
def test_cpu_and_cuda_give_the_same_message(spec):
    d = 1000
    c = make(resolve(spec, d))
    x = torch.randn(d, generator=torch.Generator().manual_seed(0))
    cpu = c.encode(x, torch.Generator().manual_seed(1))
    gpu = c.encode(x.cuda(), torch.Generator().manual_seed(1))
    y_cpu, y_gpu = c.decode(cpu), c.decode(gpu)
    assert y_gpu.device.type == "cuda"
    if spec.startswith(APPROX):
        assert torch.allclose(y_cpu, y_gpu.cpu(), rtol=1e-4, atol=1e-5)
    else:
        assert cpu.to_bytes() == gpu.to_bytes()
    back = c.from_bytes(gpu.to_bytes(), device="cuda")
    assert torch.equal(c.decode(back), y_gpu)
