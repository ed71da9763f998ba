"""Bad inputs and specs end in one clear ValueError naming the parameter; the registry and its table."""

import subprocess
import sys

import pytest
import torch
from compress_specs import SPECS, resolve

from psgd.compress import available, make, with_layers
from psgd.errors import NonFiniteError


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(
    "x, why",
    [
        (torch.empty(0), "x: empty tensor"),
        (torch.tensor([1.0, float("nan")]), "x: contains NaN or Inf"),
        (torch.tensor([1.0, float("inf")]), "x: contains NaN or Inf"),
        (torch.tensor([1, 2, 3]), "x: dtype must be a float type"),
        (torch.ones(2, 2), "x: expected a 1-D tensor"),
        ([1.0, 2.0], "x: expected a torch.Tensor"),
    ],
)
def test_bad_vectors(spec, x, why):
    with pytest.raises(ValueError, match=why):
        make(resolve(spec, 4)).encode(x)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_non_finite_input_is_a_non_finite_error(spec, bad, dtype):
    """The runtime turns NonFiniteError into "diverged in round t"; it is still a ValueError."""
    x = torch.ones(9, dtype=dtype)
    x[4] = bad
    with pytest.raises(NonFiniteError, match="x: contains NaN or Inf"):
        make(resolve(spec, 9)).encode(x)


@pytest.mark.parametrize(
    "spec, why",
    [
        ("nope", "unknown compressor 'nope'"),
        ("topk", "topk: give exactly one of ratio or k"),
        ("topk:ratio=0.1,k=3", "topk: give exactly one of ratio or k"),
        ("topk:ratio=0", "topk: ratio must be in \\(0, 1\\]"),
        ("randk:ratio=1.5", "randk: ratio must be in \\(0, 1\\]"),
        ("topk_natural:ratio=-0.1", "topk_natural: ratio must be in"),
        ("topk_dither:k=0", "topk_dither: k must be >= 1"),
        ("randk:ratio=0.1,scaled=maybe", "randk: parameter scaled='maybe' is not a valid bool"),
        ("topk:ratio=0.1,bogus=1", "topk: unknown parameter 'bogus'"),
        ("qsgd:s=0", "qsgd: s must be an integer >= 1"),
        ("natural_dither:s=0", "natural_dither: s must be an integer >= 1"),
        ("topk_dither:k=3,s=0", "topk_dither: s must be an integer >= 1"),
        ("qsgd:p=3", "qsgd: p must be 2 or inf"),
        ("qsgd:coding=huffman", "qsgd: coding must be 'fixed' or 'elias'"),
        ("hard_threshold:lam=-1", "hard_threshold: lam must be >= 0"),
        ("hard_threshold", "hard_threshold: lam is required"),
        ("sparse_dither:nu=0", "sparse_dither: nu must be > 0"),
        ("spherical:alpha=1", "spherical: alpha must be in \\(0, 1\\)"),
        ("spherical:block=0", "spherical: block must be an integer >= 1"),
        ("powersgd:rank=0", "powersgd: rank must be an integer >= 1"),
        ("block_sign:bucket=-1", "block_sign: bucket must be a size in bytes"),
        ("bucket(topk:k=1, size=0)", "bucket: size must be > 0"),
        ("scaled(topk:k=1)", "scaled: inner must be unbiased"),
        ("scaled(k=3)", "a wrapper needs an inner compressor first"),
        ("topk(identity)", "'topk' is not a wrapper"),
        ("per_layer(identity, layers=3+x)", None),
        ("", "non-empty string"),
    ],
)
def test_bad_specs(spec, why):
    if why is None:  # layers are parsed when the dimension is known
        with pytest.raises(ValueError, match="per_layer: layers='3\\+x'"):
            make(spec).encode(torch.ones(4))
        return
    with pytest.raises(ValueError, match=why):
        make(spec)


def test_specs_round_trip_through_their_string():
    for spec in SPECS:
        c = make(resolve(spec, 30))
        assert make(c.spec) == c, spec


def test_wrapper_keys_continue_the_inner_spec():
    c = make("scaled(randk:ratio=0.1,shared_seed=false)")
    assert c.inner == make("randk:ratio=0.1,shared_seed=false")
    c = make("bucket(qsgd:s=4,coding=elias, size=1KiB)")
    assert c.size == 1024 and c.inner.coding == "elias"


def test_with_layers_sets_the_outermost_layered_compressor():
    c = with_layers(make("scaled(per_layer(qsgd:s=2))"), [3, 4])
    assert c.inner.layers == "3+4" and c.inner.inner == make("qsgd:s=2")
    assert with_layers(make("block_sign:bucket=0"), [1, 2]).layers == "1+2"
    assert with_layers(make("topk:k=1"), [1, 2]) == make("topk:k=1")


def test_available_lists_name_params_class_and_bits():
    rows = {r["name"]: r for r in available()}
    assert rows["topk"]["params"] == ["ratio", "k"]
    assert rows["natural"]["class"] == "U(1/8)" and rows["natural"]["bits"] == "9d"
    assert all(r["class"] and r["bits"] and r["summary"] for r in rows.values())


def test_python_m_psgd_compress_prints_the_table():
    out = subprocess.run([sys.executable, "-m", "psgd.compress"], capture_output=True, text=True, check=True).stdout
    for r in available():
        assert r["name"] in out and r["bits"] in out


def test_class_parameters():
    d = 100
    assert make("topk:ratio=0.1").delta(d) == 10
    assert make("randk:ratio=0.1").omega(d) == 9 and make("randk:ratio=0.1").delta(d) is None
    assert make("randk:ratio=0.1,scaled=false").delta(d) == 10 and not make("randk:ratio=0.1,scaled=false").unbiased
    assert make("natural").omega(d) == 1 / 8 and make("natural").delta(d) == pytest.approx(8 / 7)
    assert make("qsgd:s=2").omega(d) == 5 and make("qsgd:s=20").omega(d) == 0.25
    assert make("terngrad").omega(d) == 4.5
    assert make("natural_dither:s=8").omega(d) == pytest.approx(1 / 8 + 10 * 2**-7 * min(1, 10 * 2**-7))
    assert make("scaled(qsgd:s=2)").delta(d) == 6
    assert make("sparse_dither:nu=0.2").delta(d) == pytest.approx(1.25)
    assert make("sparse_dither:nu=0.2,random=true").omega(d) == 0.2
    assert make("spherical:alpha=0.5").delta(d) == 2
    assert make("hard_threshold:lam=0.1").delta(d) is None and make("sign").delta(d) is None
    assert make("adaptive_rand").delta(d) == d
    assert make("topk_natural:k=10").delta(d) == pytest.approx(9 / 8 * 10)
