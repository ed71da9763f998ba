"""The same generator gives the same message on the CPU and on CUDA (skipped without a GPU)."""

import pytest
import torch
from compress_specs import SPECS, resolve

from psgd.compress import make

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CPU-only machine)")

# Compressors that reduce x (norms, cumulative sums, QR) may round the reduction differently
# on the two devices: their decoded vectors are compared to a tolerance instead of bytes.
REDUCING = ("scaled_sign", "block_sign", "bucket", "qsgd", "natural_dither:p=2", "sparse_dither", "spherical")
REDUCING += ("powersgd", "adaptive_rand")


def exact(spec: str) -> bool:
    return spec in ("terngrad", "qsgd:p=inf,s=3", "qsgd:p=inf,s=2,coding=elias") or not spec.startswith(REDUCING)


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
    if exact(spec):
        assert cpu.to_bytes() == gpu.to_bytes()
    assert torch.allclose(y_cpu, y_gpu.cpu(), rtol=1e-5, atol=1e-6)
    back = c.from_bytes(gpu.to_bytes(), device="cuda")
    assert torch.equal(c.decode(back), y_gpu)
