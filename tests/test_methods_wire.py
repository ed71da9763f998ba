"""Each method's wire formula (payload bytes per round and direction), its refusals, LIEC-SGD's
virtual sequence, and MPI == in-process for the methods with their own round structure."""

import json
import math

import numpy as np
import pytest
import torch

import psgd
from psgd import config
from psgd.compress import make, registered
from psgd.compress.topk import index_bits
from psgd.errors import ConfigError
from psgd.methods import Context, build, method_class
from psgd.methods.sgd import mean
from psgd.methods.theory import Constants
from psgd.runtime.simulate import run_in_process
from tests.mpi_launch import launch, mpirun
from tests.problems import quadratics

N, D = 3, 20
SIGN = 4 + math.ceil(D / 8)  # scaled sign: d + 32 bits
DENSE = 4 * D  # fp32: 32d bits


def topk(k: int) -> int:
    return 4 * k + math.ceil(k * index_bits(D) / 8)  # k(32 + ceil(log2 d)) bits


# (method, uplink, downlink, options, up(t), down(t)): payload bytes per worker in round t's record;
# the downlink of record t is what the server built in round t - 1 (record 0: the fp32 model).
CASES = [
    ("sgd", "identity", "identity", {}, lambda t: DENSE, lambda t: DENSE),
    ("ef14", "topk:k=3", "identity", {}, lambda t: topk(3), lambda t: DENSE),
    ("doublesqueeze", "scaled_sign", "scaled_sign", {}, lambda t: SIGN, lambda t: DENSE if t == 0 else SIGN),
    ("ef21", "topk:k=3", "identity", {}, lambda t: DENSE if t == 0 else topk(3), lambda t: DENSE),
    ("ef21_sgdm", "topk:k=3", "identity", {"eta": 0.5}, lambda t: DENSE if t == 0 else topk(3), lambda t: DENSE),
    ("ef21_sgd2m", "topk:k=3", "identity", {"eta": 0.5}, lambda t: DENSE if t == 0 else topk(3), lambda t: DENSE),
    # LIEC-SGD, H = 4: d + 32 bits each way, 32d on sync rounds (t + 1 = 4, 8, ...), 64d with momentum
    (
        "liec",
        "scaled_sign",
        "scaled_sign",
        {"period": 4},
        lambda t: DENSE if (t + 1) % 4 == 0 else SIGN,
        lambda t: DENSE if t == 0 or t % 4 == 0 else SIGN,
    ),
    (
        "liec",
        "scaled_sign",
        "scaled_sign",
        {"period": 4, "momentum": 0.5},
        lambda t: 2 * DENSE if (t + 1) % 4 == 0 else SIGN,
        lambda t: DENSE if t == 0 else 2 * DENSE if t % 4 == 0 else SIGN,
    ),
    # CSER, H = 4: the errors (fp32 with the identity reset compressor) ride along on reset rounds
    (
        "cser",
        "topk:k=3",
        "identity",
        {"period": 4},
        lambda t: topk(3) + (DENSE if (t + 1) % 4 == 0 else 0),
        lambda t: 2 * DENSE if t > 0 and t % 4 == 0 else DENSE,
    ),
]
if "randk" in registered():
    CASES += [
        ("diana", "randk:k=5", "identity", {}, lambda t: 4 * 5, lambda t: DENSE),  # 32k: indices from the seed
        ("adiana", "randk:k=5", "identity", {}, lambda t: 2 * 4 * 5, lambda t: DENSE),  # two messages
    ]


@pytest.mark.parametrize("method, up, down, options, up_bytes, down_bytes", CASES, ids=[c[0] for c in CASES])
def test_payload_bytes_per_round_equal_the_wire_formula(method, up, down, options, up_bytes, down_bytes):
    p = quadratics(N, D, seed=1, mu=0.3)
    rounds = 9
    r = psgd.simulate(
        method, up, down, grads=p.grads, x0=np.zeros(D), lr=0.05, rounds=rounds, L=p.L, mu=p.mu, **options
    )
    assert r.body_up == [N * up_bytes(t) for t in range(rounds)]
    assert r.body_down == [N * down_bytes(t) for t in range(rounds)]
    for rec in r.rounds:  # headers: a few bytes per message
        assert max(rec["header_up"]) < 100 and max(rec["header_down"]) < 100


@pytest.mark.parametrize(
    "method, up, options, message",
    [
        ("diana", "topk:k=2", {}, "needs an unbiased uplink compressor"),
        ("adiana", "topk:k=2", {}, "needs an unbiased uplink compressor"),
        ("adiana", "identity", {"shared_randomness": True}, "independent across workers"),
        ("ef21", "topk:k=2", {"downlink": "scaled_sign"}, "the downlink must be identity"),
        ("ef21", "topk:k=2", {"lr": 10.0, "strict_theory": True}, "above the theorem's bound"),
        ("diana", "identity", {"lr": 10.0, "strict_theory": True}, "above the theorem's bound"),
        ("liec", "scaled_sign", {"lr": 1.0, "strict_theory": True}, "above the theorem's bound"),
        ("liec", "scaled_sign", {"lr": "theory", "momentum": 0.9}, "need momentum = weight_decay = 0"),
        ("ef14", "topk:k=2", {"lr": "theory", "downlink": "topk:k=2"}, "assumes an uncompressed downlink"),
        ("cser", "topk:k=2", {"period": 0}, "method.period must be >= 1"),
    ],
)
def test_incompatible_choices_are_refused_with_a_reason(method, up, options, message):
    p = quadratics(N, D, seed=1)
    options = {"lr": 0.1, **options}
    with pytest.raises(ConfigError, match=message):
        psgd.simulate(method, up, grads=p.grads, x0=np.zeros(D), rounds=2, L=p.L, mu=p.mu, L_i=p.L_i, **options)


def test_adiana_needs_mu():
    opts = method_class("adiana").Options(name="adiana", lr=0.1)
    with pytest.raises(ConfigError, match="strong convexity constant mu"):
        build(opts, constants=Constants(n=3, d=10, L=1.0))


def test_diana_and_adiana_compressors_are_independent_across_workers():
    m = build(method_class("diana").Options(name="diana", uplink="randk:k=3"), constants=Constants(3, 30))
    x = torch.arange(1.0, 31.0)
    supports = []
    for rank in (1, 2):
        ctx = Context(5, rank, 3, 0, torch.device("cpu"))
        supports.append(m.uplink.decode(m.uplink.encode(x, ctx.rng("uplink"))).nonzero().flatten().tolist())
    assert supports[0] != supports[1]
    shared = make("randk:k=3")
    same = [
        shared.decode(shared.encode(x, Context(5, r, 3, 0, torch.device("cpu")).rng("uplink", True))) for r in (1, 2)
    ]
    assert torch.equal(same[0], same[1])  # what shared_randomness = true gives DIANA (and ADIANA refuses)


def drive(method, grads, x0, rounds, observe):
    """The method's rules in a plain loop (messages decoded directly); observe(t, server, workers, g_mean)
    runs after round t's worker steps, before the server's."""
    cpu = torch.device("cpu")
    n = len(grads)
    state, init = method.server_init(x0.clone(), Context(0, 0, n, 0, cpu))
    init = [c.decode(m) for c, m in zip(method.init_codecs(), init, strict=True)]
    workers = [method.worker_init(init, Context(0, r, n, 0, cpu)) for r in range(1, n + 1)]
    down: list = []
    for t in range(rounds):
        ups, gs = [], []
        for r, (w, grad) in enumerate(zip(workers, grads, strict=True), start=1):

            def oracle(x, sample=0, grad=grad, gs=gs):
                gs.append(grad(x))
                return gs[-1].clone()

            msgs = method.worker_step(w, down, oracle, Context(t, r, n, 0, cpu))
            ups.append([c.decode(m) for c, m in zip(method.uplink_codecs(t), msgs, strict=True)])
        observe(t, state, workers, sum(gs) / n)
        means = [mean([u[j] for u in ups]) for j in range(len(ups[0]))]  # as runtime.Aggregator sums
        msgs = method.server_step(state, means, Context(t, 0, n, 0, cpu))
        down = [c.decode(m) for c, m in zip(method.downlink_codecs(t), msgs, strict=True)]


@pytest.mark.parametrize("period, tol", [(1000, 1e-12), (5, 1e-6)])
def test_liec_virtual_sequence_follows_plain_sgd(period, tol):
    """x_bar - lr e_s = x~ with x~ <- x~ - lr (1/n) sum_i g_i (SPEC 3.10, no momentum). Sync rounds
    ship fp32 models, so with syncs the identity holds up to fp32 rounding."""
    p = quadratics(N, D, seed=2)
    grads = [lambda x, g=g: torch.from_numpy(g(x.numpy())) for g in p.grads]
    lr = 0.05
    method = build(method_class("liec").Options(name="liec", lr=lr, period=period), constants=Constants(N, D))
    x0 = torch.zeros(D, dtype=torch.float64)
    virtual, seen, errors, spread = [x0.clone()], [], [], []

    def observe(t, server, workers, g_mean):
        x_bar = sum(w.x for w in workers) / len(workers)
        seen.append(x_bar - lr * server.global_error)
        virtual.append(virtual[-1] - lr * g_mean)
        errors.append(float(server.global_error.abs().max()))
        spread.append(max(float((w.x - x_bar).abs().max()) for w in workers))

    drive(method, grads, x0, 30, observe)
    assert max(errors) > 1e-3 and max(spread) > 1e-3  # the error and the local models' spread are real
    for t, (a, b) in enumerate(zip(seen, virtual, strict=False)):
        assert float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max())), t


# The methods whose codecs change with the round (sync / reset rounds every H); every method's
# config in configs/ is also run under MPI by tests/mpi/test_mpi_rules.py.
MPI_CASES = {
    "liec": {"uplink": "scaled_sign", "downlink": "scaled_sign", "period": 3},
    "cser": {"uplink": "topk:ratio=0.1", "period": 3, "momentum": 0.9},
}


def toml(method: dict) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in method.items()]
    return "\n".join(
        [
            'name = "mpi"',
            "rounds = 8",
            "eval_every = 4",
            'device = "cpu"',
            "[task]",
            'name = "digits_logreg"',
            "l2 = 0.1",
            "[method]",
            *lines,
        ]
    )


@pytest.mark.skipif(mpirun() is None, reason="no mpirun")
@pytest.mark.parametrize("case", list(MPI_CASES))
def test_mpi_run_equals_in_process_for_methods_with_their_own_rounds(case, tmp_path):
    method = {"name": case, "lr": 0.1, **MPI_CASES[case]}
    path = tmp_path / "job.toml"
    path.write_text(toml(method) + "\n")
    proc = launch(4, ["-m", "psgd.train", str(path), "--quiet", "--out", str(tmp_path / "mpi")])
    assert proc.returncode == 0, proc.stderr
    mpi = [json.loads(line) for line in (tmp_path / "mpi" / "rounds.jsonl").read_text().splitlines()]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks (OMP_NUM_THREADS=1): float reductions then split alike
    try:
        _, sim = run_in_process(config.load(path), 3)
    finally:
        torch.set_num_threads(threads)
    assert len(mpi) == 8
    for a, b in zip(mpi, sim.rounds, strict=True):
        for key in ("loss", "bytes_up", "bytes_down", "header_up", "header_down", "test_accuracy"):
            assert a.get(key) == b.get(key), key


EF_CASES = [("ef14", {"uplink": "topk:k=3"}), ("doublesqueeze", {})]
if "hard_threshold" in registered():
    EF_CASES.append(("hard_threshold", {"target_k": 4}))


@pytest.mark.parametrize("method, options", EF_CASES, ids=[c[0] for c in EF_CASES])
def test_error_feedback_identity(method, options):
    """What a worker sends plus its new error is exactly its old error plus the gradient."""
    p = quadratics(N, D, seed=3)
    grads = [lambda x, g=g: torch.from_numpy(g(x.numpy())) for g in p.grads]
    m = build(method_class(method).Options(name=method, lr=0.1, **options), constants=Constants(N, D))
    cpu = torch.device("cpu")
    ws = [m.worker_init([torch.zeros(D, dtype=torch.float64)], Context(0, r, N, 0, cpu)) for r in range(1, N + 1)]
    for t in range(4):
        for r, (w, grad) in enumerate(zip(ws, grads, strict=True), start=1):
            e0, g = w.error.clone(), grad(w.x)
            (msg,) = m.worker_step(w, [], lambda x, s=0, g=g: g.clone(), Context(t, r, N, 0, cpu))
            assert torch.allclose(m.uplink.decode(msg) + w.error, e0 + g, rtol=0, atol=1e-12)
            assert float(w.error.abs().max()) > 0
    if method == "hard_threshold":
        assert m.uplink.spec == f"hard_threshold:lam={1 / (2 * math.sqrt(4))}"  # lam = 1/(2 sqrt(k))


@pytest.mark.parametrize("method", ["ef14", "doublesqueeze", "liec"])
def test_layer_wise_compressors_get_the_tasks_layers_on_both_sides(method):
    """digits_mlp has tensors of 4096, 64, 640 and 10 coordinates: block sign by layer sends one
    fp32 scale per tensor (d + 4 * 32 bits), and the server parses with the same layers."""
    options = {"period": 1000} if method == "liec" else {}
    cfg = config.from_dict(
        {
            "rounds": 3,
            "eval_every": 3,
            "task": {"name": "digits_mlp", "hidden": 64},
            "method": {
                "name": method,
                "uplink": "block_sign:bucket=0",
                "downlink": "per_layer(scaled_sign)",
                **options,
            },
        }
    )
    server, result = run_in_process(cfg, 2)
    assert server.method.uplink.spec == "block_sign:bucket=0,layers=4096+64+640+10"
    d, layers = 4810, 4
    body = math.ceil((d + 32 * layers) / 8)
    for rec in result.rounds:
        assert all(b - h == body for b, h in zip(rec["bytes_up"], rec["header_up"], strict=True))
    last = result.rounds[-1]
    assert all(b - h == body for b, h in zip(last["bytes_down"], last["header_down"], strict=True))


def test_an_explicit_layers_spec_is_kept():
    task, method = {"name": "digits_mlp", "hidden": 64}, {"name": "ef14", "uplink": "block_sign:layers=4810"}
    server, _ = run_in_process(config.from_dict({"rounds": 1, "task": task, "method": method}), 1)
    assert server.method.uplink.spec.endswith("layers=4810")


def test_liec_is_evaluated_on_the_average_of_the_workers_models():
    """Between syncs the workers' models differ and the server's is none of them: evaluation
    scores (1/n) sum_i x_i (SPEC 3.10, as LIEC's code does), here against a numpy LIEC-SGD."""
    p = quadratics(N, D, seed=3)
    lr, period, rounds = 0.2, 5, 12

    def scaled_sign(v):  # ||v||_1 / d sign(v), the scale sent as fp32
        return np.float32(np.abs(v).sum() / v.size) * np.sign(v)

    x = [np.zeros(D) for _ in range(N)]
    e_s, expected, server_f = np.zeros(D), [], []
    x_bar = np.zeros(D)
    for t in range(rounds):
        g = [grad(xi) for grad, xi in zip(p.grads, x, strict=True)]
        if (t + 1) % period == 0:  # sync: y_i = x_i - lr g_i, x = mean y_i - lr e_s (fp32 on the wire)
            x_bar = np.mean([(xi - lr * gi).astype(np.float32) for xi, gi in zip(x, g, strict=True)], axis=0)
            x_bar = (x_bar - lr * e_s).astype(np.float32).astype(np.float64)
            e_s, x = np.zeros(D), [x_bar.copy() for _ in range(N)]
        else:
            c = [scaled_sign(gi) for gi in g]
            m = np.mean(c, axis=0) + e_s
            q = scaled_sign(m)
            e_s = m - q
            x = [xi - lr * (q + gi - ci) for xi, gi, ci in zip(x, g, c, strict=True)]
            x_bar = x_bar - lr * q
        expected.append(p.f(np.mean(x, axis=0)))
        server_f.append(p.f(x_bar))
    r = psgd.simulate(
        "liec",
        "scaled_sign",
        "scaled_sign",
        grads=p.grads,
        x0=np.zeros(D),
        lr=lr,
        rounds=rounds,
        loss=p.f,
        period=period,
    )
    assert np.allclose(r.losses, expected, rtol=1e-5)
    gap = [abs(a - b) / b for a, b in zip(expected, server_f, strict=True)]
    assert max(gap) > 1e-2 and gap[period - 1] < 1e-6  # the server's model differs, except right after a sync
    fetched = rounds - rounds // period  # non-sync rounds: each worker sends its fp64 model once
    assert all(fetched * 8 * D < b < fetched * (8 * D + 64) for b in r.summary["eval_bytes_up"])
    quiet = psgd.simulate(  # evaluated only at the end: the training traffic is the same
        "liec", "scaled_sign", "scaled_sign", grads=p.grads, x0=np.zeros(D), lr=lr, rounds=rounds, period=period
    )
    assert (quiet.summary["bytes_up"], quiet.summary["bytes_down"]) == (r.summary["bytes_up"], r.summary["bytes_down"])
    assert np.array_equal(quiet.x, r.x)
