"""small_dense: tensors under min_size go as exact fp32, the rest through the inner codec, and
the body is exactly 4 bytes per small coordinate plus the inner body."""

import torch

from psgd.compress import make, with_layers


def test_small_tensors_are_exact_and_every_byte_is_counted():
    sizes = [600, 10, 300, 4]  # weight, bias, weight, bias
    c = with_layers(make("small_dense(topk:ratio=0.1, min_size=16)"), sizes)
    x = torch.randn(sum(sizes), generator=torch.Generator().manual_seed(0))
    m = c.encode(x, torch.Generator().manual_seed(1))
    x_hat = c.decode(c.from_bytes(m.to_bytes()))
    small = torch.cat([torch.full((n,), n < 16) for n in sizes])
    assert torch.equal(x_hat[small], x[small])
    inner = make("topk:ratio=0.1")
    assert torch.equal(x_hat[~small], inner.decode(inner.encode(x[~small])))
    assert c.bits(m) == 32 * 14 + inner.bits(900) and m.body_len == 4 * 14 + -(-inner.bits(900) // 8)
    assert c.delta(x.numel()) == inner.delta(900)
