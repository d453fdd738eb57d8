"""LLM-free operators for parameter genomes (openended.mutation.gaussian)."""

import io

import numpy as np
import pytest

from openended.mutation.gaussian import dump_params, gaussian, load_params, random_params


def _files(w, **extra):
    return {"weights.npy": dump_params(np.asarray(w, dtype=np.float64)), **extra}


def test_dump_load_roundtrip_is_float64_1d():
    w = np.arange(5, dtype=np.int32)
    back = load_params({"weights.npy": dump_params(w)})
    assert back.dtype == np.float64 and back.shape == (5,)
    np.testing.assert_array_equal(back, w)
    # the bytes are plain np.save output that np.load reads back
    assert np.load(io.BytesIO(dump_params(w))).dtype == np.float64


def test_gaussian_is_deterministic_given_the_seed():
    parent = _files(np.linspace(-1, 1, 142))
    a = gaussian(parent, np.random.default_rng(7), sigma=0.3)
    b = gaussian(parent, np.random.default_rng(7), sigma=0.3)
    c = gaussian(parent, np.random.default_rng(8), sigma=0.3)
    assert a["weights.npy"] == b["weights.npy"]
    assert a["weights.npy"] != c["weights.npy"]


@pytest.mark.parametrize("sigma", [0.01, 0.3, 2.0])
def test_gaussian_step_has_std_sigma(sigma):
    parent_w = np.random.default_rng(0).standard_normal(20000)
    child = gaussian(_files(parent_w), np.random.default_rng(1), sigma=sigma)
    delta = load_params(child) - parent_w
    assert delta.shape == parent_w.shape
    assert abs(delta.std() / sigma - 1.0) < 0.03
    assert abs(delta.mean()) < 0.05 * sigma


def test_gaussian_sigma_zero_copies_weights():
    w = np.array([1.5, -2.0, 3.25])
    child = gaussian(_files(w), np.random.default_rng(0), sigma=0.0)
    np.testing.assert_array_equal(load_params(child), w)


def test_gaussian_preserves_other_files_and_does_not_mutate_parent():
    parent = _files(np.zeros(4), **{"notes.txt": b"hello", "sub/cfg.json": b"{}"})
    snapshot = dict(parent)
    child = gaussian(parent, np.random.default_rng(3), sigma=1.0)
    assert child["notes.txt"] == b"hello" and child["sub/cfg.json"] == b"{}"
    assert set(child) == set(parent)
    assert parent == snapshot
    assert child["weights.npy"] != parent["weights.npy"]


def test_gaussian_custom_params_file():
    parent = {"theta.npy": dump_params(np.ones(3)), "weights.npy": b"untouched"}
    child = gaussian(parent, np.random.default_rng(0), sigma=0.5, params_file="theta.npy")
    assert child["weights.npy"] == b"untouched"
    assert load_params(child, "theta.npy").shape == (3,)


@pytest.mark.parametrize(
    "files, match",
    [
        ({}, "weights.npy"),
        ({"other.npy": dump_params(np.ones(3))}, "weights.npy.*missing"),
        ({"weights.npy": b"not an npy file"}, "weights.npy.*loadable"),
        ({"weights.npy": dump_params(np.array([1.0, np.nan]))}, "weights.npy.*non-finite"),
        ({"weights.npy": dump_params(np.array([np.inf]))}, "weights.npy.*non-finite"),
    ],
)
def test_gaussian_bad_genome_raises_naming_the_file(files, match):
    with pytest.raises(ValueError, match=match):
        gaussian(files, np.random.default_rng(0), sigma=0.1)


def test_load_params_rejects_2d_and_non_numeric():
    buf = io.BytesIO()
    np.save(buf, np.ones((2, 3)))
    with pytest.raises(ValueError, match="1-D"):
        load_params({"weights.npy": buf.getvalue()})
    buf = io.BytesIO()
    np.save(buf, np.array(["a", "b"]))
    with pytest.raises(ValueError, match="real numbers"):
        load_params({"weights.npy": buf.getvalue()})


@pytest.mark.parametrize("sigma", [-0.1, float("nan"), float("inf")])
def test_gaussian_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        gaussian(_files(np.zeros(3)), np.random.default_rng(0), sigma=sigma)


def test_random_params_deterministic_shape_and_scale():
    a = random_params(np.random.default_rng(5), count=142, scale=1.0)
    b = random_params(np.random.default_rng(5), count=142, scale=1.0)
    assert a == b and set(a) == {"weights.npy"}
    w = load_params(a)
    assert w.shape == (142,)
    big = load_params(random_params(np.random.default_rng(5), count=50000, scale=2.5, params_file="p.npy"), "p.npy")
    assert abs(big.std() / 2.5 - 1.0) < 0.03
    with pytest.raises(ValueError):
        random_params(np.random.default_rng(0), count=0, scale=1.0)
    with pytest.raises(ValueError):
        random_params(np.random.default_rng(0), count=3, scale=-1.0)
