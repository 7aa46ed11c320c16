"""Smoke tests of the sequence / generative gallery experiments (e18-e22) in quick mode,
plus checks of their pure helpers against closed forms."""

from __future__ import annotations

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import nnkit
from experiments import (
    e18_rnn_vs_lstm,
    e19_sine_forecast,
    e20_char_lstm,
    e21_gan,
    e22_autoencoder,
)
from nnkit import layers as L


def _check_e18(m):
    for kind in ("RNN", "LSTM"):
        r = m[f"{kind}_T10"]
        assert len(r["grad_profile_init"]) == 10
        assert len(r["grad_ratio_per_epoch"]) == 3  # init + 2 epochs
        assert np.all(np.asarray(r["grad_profile_init"]) > 0)
    assert m["baseline_mse"]["10"] == pytest.approx(1 / 6, rel=0.3)  # Var(U + U) = 2/12


def _check_e19(m):
    assert m["test_mse"] > 0 and m["horizon"] == 20
    assert set(m["rollouts"]) == {str(w) for w in e19_sine_forecast.OMEGAS}


def _check_e20(m):
    assert m["perplexity"]["init_val"] == pytest.approx(m["vocab"], rel=0.2)  # ~uniform
    assert m["perplexity"]["kept_train"] < m["perplexity"]["init_train"]
    for tau, text in m["samples"].items():
        assert text.startswith(m["prompt"]) and len(text) == len(m["prompt"]) + 40, tau


def _check_e21(m):
    assert 0 <= m["modes_covered"]["0"] <= 8 and m["real_data_check"]["modes_covered"] == 8
    assert set(m["coverage_by_step"]["0"]) == {"0", "20", "40"}


def _check_e22(m):
    assert set(m["test_mse"]) == {"2"}  # quick mode: the 2-D code only
    assert m["pca_test_mse"]["2"] < m["mean_image_mse"]


EXPERIMENTS = {
    "e18": (e18_rnn_vs_lstm, ["training_curves.png", "grad_norm_per_step.png"], _check_e18),
    "e19": (e19_sine_forecast, ["forecast.png"], _check_e19),
    "e20": (e20_char_lstm, ["perplexity.png"], _check_e20),
    "e21": (e21_gan, ["samples.png", "losses.png"], _check_e21),
    "e22": (e22_autoencoder, ["reconstructions.png", "latent_2d.png"], _check_e22),
}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_quick(name, tmp_path):
    mod, pngs, check = EXPERIMENTS[name]
    assert isinstance(mod.TITLE, str) and mod.TITLE
    res = mod.main(tmp_path, quick=True)
    assert set(res) >= {"summary", "figures", "metrics"}
    assert res["summary"] and all(isinstance(s, str) for s in res["summary"])
    assert sorted(p.rsplit("/", 1)[-1] for p in res["figures"]) == sorted(pngs)
    for f in res["figures"]:
        assert str(tmp_path) in f
        with open(f, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n", f
    if name == "e20":  # the samples at every temperature, as text
        text = (tmp_path / "samples.txt").read_text(encoding="utf-8")
        assert all(v in text for v in res["metrics"]["samples"].values())
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"] == res["summary"]
    check(res["metrics"])


# ----------------------------------------------------------------------------- helpers


def test_early_ratio_and_grad_profile_of_linear_model():
    # a model that reads only x_{T-1}: the gradient w.r.t. every other step is exactly 0
    assert e18_rnn_vs_lstm.early_ratio(np.r_[np.full(10, 2.0), np.ones(5), np.full(10, 4.0)]) \
        == pytest.approx(0.5)
    model = nnkit.serial(nnkit.Lambda(lambda x: x[:, -1], kind="last"), L.Dense(1))
    _, p, s = model.init(jax.random.key(0), (6, 2))
    x, y = jnp.ones((4, 6, 2)), jnp.zeros((4, 1))
    g = np.asarray(e18_rnn_vs_lstm.make_profiler(model, x, y)(p, s))
    assert g.shape == (6,) and np.all(g[:-1] == 0) and g[-1] > 0


def test_sine_rollout_of_an_exact_linear_recurrence():
    # s_{k+1} = 2 cos(w dt) s_k - s_{k-1} holds exactly for a sine: a "model" computing it
    # must roll the sine out with float32 error only.
    w, dt, width, horizon = 1.3, 0.1, 5, 40
    c = 2 * np.cos(w * dt)
    model = nnkit.Lambda(lambda x: c * x[:, -1] - x[:, -2], kind="recurrence")
    k = np.arange(width + horizon)
    truth = np.sin(w * k * dt + 0.4).astype(np.float32)[None]
    roll = e19_sine_forecast.rollout(model, {}, {}, jnp.asarray(truth[:, :width, None]),
                                     horizon)
    np.testing.assert_allclose(np.asarray(roll), truth[:, width:], atol=2e-4)
    ones = e19_sine_forecast.one_step(model, {}, {}, jnp.asarray(truth), width)
    np.testing.assert_allclose(np.asarray(ones), truth[:, width:], atol=1e-5)


def test_char_sampler_matches_full_sequence_model():
    # greedy decoding: each sampled token is the argmax of the full model's logits at the
    # previous position when the model reads prompt + sampled text (teacher forcing)
    vocab, parts = 7, e20_char_lstm.make_parts(7, 4, 8)
    model = nnkit.serial(*parts.values())
    _, params, _ = model.init(jax.random.key(3), (5,))
    prompt = jnp.array([1, 2, 3], jnp.int32)
    gen = jax.jit(functools.partial(e20_char_lstm.sample, parts), static_argnums=(4,))
    toks = gen(params, prompt, jax.random.key(0), jnp.float32(0.0), 6)
    seq = jnp.concatenate([prompt, toks])[None]
    logits, _ = model.apply(params, {}, seq)
    np.testing.assert_array_equal(np.argmax(logits[0, 2:-1], -1), np.asarray(toks))
    # temperature sampling: same key -> same text, ids in range, differs from greedy
    a = gen(params, prompt, jax.random.key(1), jnp.float32(1.0), 6)
    b = gen(params, prompt, jax.random.key(1), jnp.float32(1.0), 6)
    assert np.array_equal(a, b) and 0 <= int(a.min()) and int(a.max()) < vocab


def test_mode_coverage_counts():
    centers = e21_gan.CENTERS
    assert centers.shape == (8, 2)
    np.testing.assert_allclose(np.linalg.norm(centers, axis=1), e21_gan.RADIUS)
    x = np.repeat(centers[:3], 100, axis=0)  # 3 modes exactly hit
    cov = e21_gan.mode_coverage(x)
    assert cov["modes_covered"] == 3 and cov["high_quality_fraction"] == 1.0
    far = np.zeros((50, 2))  # the ring's centre is RADIUS from every mode: never good
    cov = e21_gan.mode_coverage(np.concatenate([x, far]))
    assert cov["modes_covered"] == 3 and cov["high_quality_fraction"] == pytest.approx(300 / 350)
    real = np.asarray(e21_gan.sample_ring(jax.random.key(0), 4000))
    assert e21_gan.mode_coverage(real)["modes_covered"] == 8


def test_pca_mse_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 6)) @ np.diag([5, 3, 1, 0.1, 0.1, 0.1])
    full, _ = e22_autoencoder.pca_mse(a, a, 6)
    assert full == pytest.approx(0.0, abs=1e-18)
    # rank-k error on the training set = sum of the dropped squared singular values / size
    s = np.linalg.svd(a - a.mean(0), compute_uv=False)
    for k in (1, 3):
        err, codes = e22_autoencoder.pca_mse(a, a, k)
        assert codes.shape == (200, k)
        assert err == pytest.approx(np.sum(s[k:] ** 2) / a.size, rel=1e-9)
