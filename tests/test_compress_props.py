"""Compressor properties with fixed seeds: unbiasedness, E||C(x) - x||^2 against omega or delta,
SPEC's worst-case vectors and exact oracles, and the bit counts the papers give."""

import math

import pytest
import torch

from psgd.compress import make
from psgd.compress.spherical import cap_probability, rice_parameter
from psgd.errors import NonFiniteError


def tileable(spec: str) -> bool:
    """Coordinates compressed independently given ||x||_inf (or nothing): one message of x
    repeated n times then holds n independent draws, one encode instead of n."""
    name, _, params = spec.partition(":")
    p_inf = "p=inf" in params or (name == "natural_dither" and "p=" not in params)
    per_coordinate = name in ("identity", "natural", "natural_round", "terngrad")
    return per_coordinate or (name in ("qsgd", "natural_dither") and p_inf)


def draws(spec: str, x: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n decoded compressions of x (n x d), through bytes, from one seeded generator."""
    c = make(spec)
    g = torch.Generator().manual_seed(seed)
    if tileable(spec):
        return c.decode(c.from_bytes(c.encode(x.repeat(n), g).to_bytes())).view(n, -1)
    return torch.stack([c.decode(c.from_bytes(c.encode(x, g).to_bytes())) for _ in range(n)])


def assert_unbiased(samples: torch.Tensor, x: torch.Tensor) -> None:
    """||mean - x||^2 against its expectation sum_i Var_i / n (4x slack; d >= 32 coordinates
    make the sum concentrate, so a biased C fails and an unbiased one passes)."""
    n = samples.shape[0]
    err = float(((samples.mean(0) - x) ** 2).sum())
    expected = float(samples.var(0).sum()) / n
    assert err <= 4 * expected + 1e-12 * float((x**2).sum()), (err, expected)


def vec(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(d, generator=g, dtype=torch.float64) * torch.rand(d, generator=g, dtype=torch.float64)


def sq(v: torch.Tensor) -> float:
    return float((v**2).sum())


UNBIASED = [
    "identity",
    "randk:ratio=0.25",
    "randk:k=4,shared_seed=false",
    "terngrad",
    "qsgd:s=2",
    "qsgd:p=inf,s=4",
    "qsgd:s=3,coding=elias",
    "natural",
    "natural_dither:s=3",
    "natural_dither:p=2,s=5",
    "sparse_dither:nu=0.5,random=true",
    "bucket(qsgd:s=2, size=64)",
]


@pytest.mark.parametrize("spec", UNBIASED)
def test_unbiased_and_variance_within_omega(spec):
    d = 48
    n = 3000 if tileable(spec) else 300
    x = vec(d, 5)
    c = make(spec)
    assert c.unbiased and c.omega(d) is not None
    s = draws(spec, x, n)
    assert_unbiased(s, x)
    mse = float(((s - x) ** 2).sum(1).mean())
    # the sample mean of ||C - x||^2 within 4 standard errors of a value <= omega ||x||^2
    se = float(((s - x) ** 2).sum(1).std()) / math.sqrt(n)
    assert mse <= c.omega(d) * sq(x) + 4 * se + 1e-12


def test_a_biased_compressor_fails_the_unbiasedness_check():
    x = vec(48, 5)
    with pytest.raises(AssertionError):
        assert_unbiased(draws("randk:ratio=0.25,scaled=false", x, 300), x)


def test_randk_exact_moments_and_uniform_subsets():
    d, k, n = 40, 10, 800
    x = vec(d, 1)
    s = draws(f"randk:k={k}", x, n)
    # E||C(x)||^2 = (d/k)||x||^2 exactly [D]
    norms = (s**2).sum(1)
    assert abs(float(norms.mean()) - d / k * sq(x)) <= 4 * float(norms.std()) / math.sqrt(n)
    kept = (s != 0).double().mean(0)  # inclusion probability k/d for every coordinate
    assert float((kept - k / d).abs().max()) <= 5 * math.sqrt(k / d * (1 - k / d) / n)
    assert bool(((s != 0).sum(1) == k).all())
    unscaled = draws(f"randk:k={k},scaled=false", x, 200)
    kept_norm = (unscaled**2).sum(1)
    assert torch.allclose(((unscaled - x) ** 2).sum(1), sq(x) - kept_norm)


def test_shared_seed_and_sent_indices_decode_alike():
    x = vec(100, 2)
    a = make("randk:ratio=0.1").encode(x, torch.Generator().manual_seed(3))
    b = make("randk:ratio=0.1,shared_seed=false").encode(x, torch.Generator().manual_seed(3))
    assert torch.equal(make("randk:ratio=0.1").decode(a), make("randk:ratio=0.1,shared_seed=false").decode(b))
    assert a.body_len == 4 * 10 and b.body_len == 4 * 10 + math.ceil(10 * 7 / 8)


def test_topk_error_and_worst_case():
    d, k = 50, 7
    x = vec(d, 3).float()
    y = make(f"topk:k={k}").decode(make(f"topk:k={k}").encode(x))
    top = x.abs().topk(k).indices
    assert torch.equal(y[top], x[top]) and int((y != 0).sum()) == k
    assert math.isclose(sq(y - x), sq(x) - sq(x[top]))
    flat = torch.ones(d)  # all |x_i| equal: the bound 1 - k/d is attained
    assert math.isclose(sq(make(f"topk:k={k}").decode(make(f"topk:k={k}").encode(flat)) - flat), (1 - k / d) * d)


def test_adaptive_rand_picks_proportionally_to_magnitude():
    d, n = 8, 1000
    x = torch.tensor([3.0, -1, 0, 2, 0.5, -0.5, 1, 0], dtype=torch.float64)
    s = draws("adaptive_rand", x, n)
    freq = (s != 0).double().mean(0)
    p = x.abs() / x.abs().sum()
    assert float((freq - p).abs().max()) <= 5 * math.sqrt(0.25 / n)
    assert bool((s[:, x == 0] == 0).all())
    exact = sq(x) - float((x.abs() ** 3).sum() / x.abs().sum())  # E||C - x||^2 [D]
    assert exact <= (1 - 1 / d) * sq(x)
    mse = ((s - x) ** 2).sum(1)
    assert abs(float(mse.mean()) - exact) <= 4 * float(mse.std()) / math.sqrt(n)
    flat = torch.ones(d, dtype=torch.float64)  # worst case: equality with delta = d
    assert math.isclose(sq(flat) - float((flat**3).sum() / flat.sum()), (1 - 1 / d) * sq(flat))


def test_hard_threshold_is_exact_and_absolute():
    x = vec(200, 4).float()
    lam = 0.3
    y = make(f"hard_threshold:lam={lam}").decode(make(f"hard_threshold:lam={lam}").encode(x))
    assert torch.equal(y, torch.where(x.abs() >= lam, x, 0))
    assert sq(y - x) <= x.numel() * lam**2
    m = make(f"hard_threshold:lam={lam}").encode(x)
    assert m.meta == (int((x.abs() >= lam).sum()),)


def test_sign_and_scaled_sign():
    x = torch.tensor([0.5, -2.0, 0.0, 1.5], dtype=torch.float64)
    assert make("sign").decode(make("sign").encode(x)).tolist() == [1, -1, 1, 1]
    y = make("scaled_sign").decode(make("scaled_sign").encode(x))
    phi = float(x.abs().sum() ** 2 / (4 * sq(x)))
    assert math.isclose(sq(y - x), (1 - phi) * sq(x), rel_tol=1e-6)
    d = 1000
    e1 = torch.zeros(d, dtype=torch.float64)
    e1[0] = 1  # phi = 1/d: the worst case, delta = d
    y = make("scaled_sign").decode(make("scaled_sign").encode(e1))
    assert math.isclose(sq(y - e1), 1 - 1 / d, rel_tol=1e-6)
    g = vec(200_000, 0).sign() * torch.randn(200_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = make("scaled_sign").decode(make("scaled_sign").encode(g))
    assert abs(sq(y - g) / sq(g) - (1 - 2 / math.pi)) < 0.01  # Gaussian: 1 - 2/pi


def test_block_sign_blocks_and_error():
    d = 30
    x = vec(d, 6)
    for spec, sizes in [("block_sign:bucket=40", [10, 10, 10]), ("block_sign:bucket=0,layers=4+6x2+14", [4, 12, 14])]:
        c = make(spec)
        y = c.decode(c.encode(x))
        assert c.bits(d) == d + 32 * len(sizes) and c.delta(d) == max(sizes)
        err, off = 0.0, 0
        for n in sizes:
            b = x[off : off + n]
            err += (1 - float(b.abs().sum() ** 2 / (n * sq(b)))) * sq(b)
            off += n
        assert math.isclose(sq(y - x), err, rel_tol=1e-6)
    # layers grouped into buckets like torch's _take_tensors: a layer above the limit alone
    assert make("block_sign:bucket=40,layers=4+4+20+2").delta(30) == 20
    c = make("block_sign:bucket=40,layers=4+4+20+2")
    assert c.bits(30) == 30 + 32 * 3
    assert make("block_sign:bucket=52428800").bits(d) == d + 32  # 50 MiB: one block, plain scaled sign


def dither_variance(x: torch.Tensor, norm: float, s: int) -> float:
    """E||C(x) - x||^2 of uniform dithering [D]: (norm/s)^2 sum_i f_i (1 - f_i)."""
    y = s * x.abs() / norm
    f = y - y.floor()
    return (norm / s) ** 2 * float((f * (1 - f)).sum())


@pytest.mark.parametrize("p, s", [(2, 2), (math.inf, 1), (math.inf, 3)])
def test_qsgd_exact_variance_oracle(p, s):
    d = 40
    x = vec(d, 7)
    spec = "terngrad" if (p, s) == (math.inf, 1) else f"qsgd:p={p},s={s}"
    norm = float(torch.linalg.vector_norm(x, ord=p).float())
    exact = dither_variance(x, norm, s)
    assert exact <= make(spec).omega(d) * sq(x)
    n = 3000 if tileable(spec) else 400
    mse = ((draws(spec, x, n) - x) ** 2).sum(1)
    assert abs(float(mse.mean()) - exact) <= 4 * float(mse.std()) / math.sqrt(n)


def test_terngrad_worst_case_vector():
    d = 64
    x = torch.ones(d, dtype=torch.float64)
    x[0] = 1 + math.sqrt(d)  # maximises zeta(x) = ||x||_inf ||x||_1 / ||x||^2 at (1 + sqrt d)/2
    exact = dither_variance(x, float(x.abs().max()), 1)
    assert math.isclose(exact, make("terngrad").omega(d) * sq(x), rel_tol=1e-9)


def test_elias_and_fixed_coding_carry_the_same_levels():
    x = vec(300, 8)
    for s in (1, 4, 17):
        a = make(f"qsgd:s={s}").encode(x, torch.Generator().manual_seed(1))
        b = make(f"qsgd:s={s},coding=elias").encode(x, torch.Generator().manual_seed(1))
        assert torch.equal(make(f"qsgd:s={s}").decode(a), make(f"qsgd:s={s},coding=elias").decode(b))
    d = 10_000  # QSGD Thm 3.2 at s = sqrt(d): at most 2.8d + 32 bits [R], checked on a Gaussian x
    x = torch.randn(d, generator=torch.Generator().manual_seed(2))
    m = make(f"qsgd:s={int(math.sqrt(d))},coding=elias").encode(x, torch.Generator().manual_seed(3))
    assert 8 * m.body_len <= 2.8 * d + 32 + 8


def test_natural_compression_oracles():
    a = torch.arange(-20, 20, dtype=torch.float64)
    worst = torch.ldexp(torch.full_like(a, 4 / 3), a)  # |x| = (4/3) 2^a: variance exactly x^2/8
    var = float(((2 ** (a + 1) - worst) * (worst - 2**a)).sum())
    assert math.isclose(var, sq(worst) / 8, rel_tol=1e-12)
    x = vec(40, 9) * 100
    n = 3000
    s = draws("natural", x, n)
    assert bool(((s.abs() == 0) | (torch.log2(s.abs()) == torch.log2(s.abs()).round())).all())  # powers of two
    lo = 2 ** torch.floor(torch.log2(x.abs()))
    exact = float(((2 * lo - x.abs()) * (x.abs() - lo)).sum())
    mse = ((s - x) ** 2).sum(1)
    assert abs(float(mse.mean()) - exact) <= 4 * float(mse.std()) / math.sqrt(n)
    assert exact <= sq(x) / 8


def test_natural_rounding_is_deterministic_and_within_nine_eighths():
    x = vec(500, 10)
    c = make("natural_round")
    y = c.decode(c.encode(x))
    lo = 2 ** torch.floor(torch.log2(x.abs()))
    assert torch.equal(y.abs(), torch.where(x.abs() >= 1.5 * lo, 2 * lo, lo))
    assert sq(y - x) <= (1 - 1 / c.delta(500)) * sq(x)
    edge = torch.ldexp(torch.full((8,), 1.5 * (1 - 1e-12), dtype=torch.float64), torch.arange(8.0))
    assert math.isclose(sq(c.decode(c.encode(edge)) - edge), sq(edge) / 9, rel_tol=1e-9)  # attains 1 - 8/9


def test_natural_subnormals_and_overflow():
    c = make("natural")
    tiny = torch.tensor([1e-40, -3e-39, 0.0])
    s = draws("natural", tiny, 4000)
    assert bool(((s.abs() == 0) | (s.abs() == 2.0**-126)).all())
    assert torch.allclose(s.double().mean(0), tiny.double(), atol=5 * 2.0**-126 / math.sqrt(4000))
    for seed in range(8):  # refused whatever the draw: random rounding may go up from any |x_i| > 2^127
        with pytest.raises(NonFiniteError, match="could round to 2\\^128, beyond fp32"):
            c.encode(torch.tensor([2.0**127 * (1 + 2**-23)]), torch.Generator().manual_seed(seed))
    assert torch.equal(c.decode(c.encode(torch.tensor([2.0**127]))), torch.tensor([2.0**127]))
    with pytest.raises(NonFiniteError, match="could round to 2\\^16, beyond float16"):
        c.encode(torch.tensor([40000.0], dtype=torch.float16))
    assert make("natural_round").encode(torch.tensor([49000.0], dtype=torch.float16)).body_len == 2  # rounds down
    with pytest.raises(NonFiniteError, match="2\\^16"):
        make("natural_round").encode(torch.tensor([49152.0], dtype=torch.float16))  # 1.5 2^15 rounds up


@pytest.mark.parametrize("spec, zeta", [("topk_natural:k=6", 9 / 8), ("topk_dither:k=6,s=3", None)])
def test_topk_compositions(spec, zeta):
    d, n = 30, 400
    x = vec(d, 11)
    c = make(spec)
    zeta = zeta or 1 + c.omega2(6)
    s = draws(spec, x, n)
    top = x.abs().topk(6).indices
    mask = torch.zeros(d, dtype=torch.bool)
    mask[top] = True
    assert bool((s[:, ~mask] == 0).all())
    assert_unbiased(s * zeta, torch.where(mask, x, 0))  # zeta C = C2(Top_k x), C2 unbiased
    mse = ((s - x) ** 2).sum(1)
    assert float(mse.mean()) <= (1 - 1 / c.delta(d)) * sq(x) + 4 * float(mse.std()) / math.sqrt(n)
    assert c.delta(d) == pytest.approx(zeta * d / 6)


def test_sparse_dither_deterministic_bound_and_bits():
    for d, nu in [(1000, 0.1), (4097, 0.3), (5, 0.1)]:
        c = make(f"sparse_dither:nu={nu}")
        for seed in range(5):
            x = vec(d, seed)
            m = c.encode(x)
            y = c.decode(m)
            assert sq(y - x) <= nu * sq(x) * (1 + 1e-6)  # C(nu): a sure bound
            gamma = float(y.abs().max() / y.abs().max().div(2 * math.sqrt(nu / d) * float(x.norm())).round())
            k = (y.abs() / gamma).round()
            n0 = int((k == 0).sum())
            support = m.meta[0] - (31 + d.bit_length() + int(k.sum()) + (d - n0))  # gamma, n0, unary, signs
            log2_c = (math.lgamma(d + 1) - math.lgamma(n0 + 1) - math.lgamma(d - n0 + 1)) / math.log(2)
            assert log2_c - 1 <= support <= 1.001 * log2_c + 160  # the enumerative count, plus the coder's flush
            if nu == 0.1 and d >= 1000:  # paper 2's worst-case bound at nu = 1/10: 1.66d + 1.69d + log d + 30
                assert 8 * m.body_len <= 3.35 * d + math.log2(d) + 30 + 8


def test_sparse_dither_randomised_expected_bits():
    d, nu = 2000, 0.1
    c = make(f"sparse_dither:nu={nu},random=true")
    g = torch.Generator().manual_seed(0)
    x = vec(d, 1)
    bits = [c.encode(x, g).meta[0] for _ in range(20)]
    assert sum(bits) / 20 <= (math.log2(3) + 1 / (2 * math.sqrt(nu))) * d + math.log2(d) + 30


def test_spherical_sure_bound_bits_and_cap_probability():
    alpha, block = 0.5, 6
    c = make(f"spherical:alpha={alpha},block={block}")
    d = 600
    x = vec(d, 12)
    bits = []
    for seed in range(4):
        m = c.encode(x, torch.Generator().manual_seed(seed))
        y = c.decode(m)
        for b in range(d // block):
            xb, yb = x[b * block : (b + 1) * block], y[b * block : (b + 1) * block]
            assert sq(yb - xb) <= alpha * sq(xb) * (1 + 1e-6)
        bits.append(m.meta[1] / (d // block))
    p = cap_probability(alpha, block)
    assert sum(bits) / len(bits) < -math.log2(p) + 3  # per block, besides the fp32 norm
    assert rice_parameter(p) >= 0
    u = torch.randn(200_000, block, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    inside = (u[:, 0] / u.norm(dim=1)) >= math.sqrt(1 - alpha)
    assert abs(float(inside.double().mean()) - p) <= 5 * math.sqrt(p / 200_000)
    with pytest.raises(ValueError, match="smaller block"):
        make("spherical:alpha=0.1,block=64")


def test_powersgd_recovers_low_rank_and_never_expands():
    a, b = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    x = torch.outer(a, b).reshape(-1)
    c = make("powersgd:rank=1")
    assert torch.allclose(c.decode(c.encode(x, torch.Generator().manual_seed(0))), x.float().double(), atol=1e-5)
    for seed in range(5):
        v = vec(101, seed)
        assert sq(make("powersgd:rank=2").decode(make("powersgd:rank=2").encode(v)) - v) <= sq(v) * (1 + 1e-9)
    assert make("powersgd:rank=2").bits(100) == 32 * 2 * (10 + 10)


def test_scaled_unbiased_is_contractive_with_exact_rand_k_error():
    d, k, n = 40, 8, 600
    x = vec(d, 13)
    c = make(f"scaled(randk:k={k})")
    zeta = d / k
    assert not c.unbiased and c.delta(d) == zeta
    s = draws(f"scaled(randk:k={k})", x, n)
    plain = draws(f"randk:k={k}", x, n)
    assert torch.allclose(s, plain / zeta)
    mse = ((s - x) ** 2).sum(1)  # E||C/zeta - x||^2 = (1 - 1/zeta)||x||^2 exactly for rand-k [D]
    assert abs(float(mse.mean()) - (1 - 1 / zeta) * sq(x)) <= 4 * float(mse.std()) / math.sqrt(n)
    with pytest.raises(ValueError, match="scaled: inner must be unbiased"):
        make("scaled(topk:k=3)")


def test_blockwise_wrappers_equal_the_inner_per_block():
    d = 30
    x = vec(d, 14)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    y = make("per_layer(qsgd:s=2, layers=10+20)").decode(make("per_layer(qsgd:s=2, layers=10+20)").encode(x, g1))
    inner = make("qsgd:s=2")
    parts = [inner.decode(inner.encode(x[:10], g2)), inner.decode(inner.encode(x[10:], g2))]
    assert torch.equal(y, torch.cat(parts))
    c = make("per_layer(qsgd:s=2, layers=10+20)")
    assert c.unbiased and c.omega(d) == inner.omega(20)
    assert make("bucket(topk:k=2, size=40)").delta(d) == 5.0
    with pytest.raises(ValueError, match="per_layer: needs layers"):
        make("per_layer(topk:k=2)").encode(x)
    with pytest.raises(ValueError, match="layers sum to 25"):
        make("per_layer(topk:k=2, layers=10+15)").encode(x)


def test_casts_round_to_nearest_within_the_unit_roundoff():
    x = vec(1000, 15) + 0.1
    for spec, dt in [("fp16", torch.float16), ("bf16", torch.bfloat16)]:
        c = make(spec)
        y = c.decode(c.encode(x))
        assert torch.equal(y, x.to(dt).double())
        assert sq(y - x) <= (1 - 1 / c.delta(1000)) * sq(x)
    with pytest.raises(ValueError, match="fp16"):
        make("fp16").encode(torch.tensor([1e5]))


def test_natural_codes_agree_between_the_fp32_bit_trick_and_float64():
    from psgd.compress.natural import natural_codes

    x = torch.cat([vec(2000, 16).float(), torch.tensor([0.0, -0.0, 1e-40, -2e-39, 3e-45, 1.5, 2.0**-126, 1e38])])
    assert torch.equal(natural_codes(x, None), natural_codes(x.double(), None))
    u = torch.rand(x.numel(), generator=torch.Generator().manual_seed(0))
    assert torch.equal(natural_codes(x, u), natural_codes(x.double(), u.double()))
