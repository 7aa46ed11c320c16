"""Tests for nnkit.precision: dtype policies, the with_policy wrapper and loss scaling."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jaxpr import all_eqns

import nnkit
from nnkit import precision as prec
from nnkit.core import layer
from nnkit.layers import Dense, Relu

F32, BF16, F16 = jnp.dtype("float32"), jnp.dtype("bfloat16"), jnp.dtype("float16")


def mlp():
    return nnkit.serial(Dense(64), Relu(), Dense(32), Relu(), Dense(3))


def data(n=16, d=8, seed=0):
    return jax.random.normal(jax.random.key(seed), (n, d), jnp.float32)


@pytest.mark.parametrize(
    "name,dtypes,scale",
    [
        ("float32", (F32, F32, F32), 1.0),
        ("bfloat16", (BF16, BF16, BF16), 1.0),
        ("float16", (F16, F16, F16), prec.DynamicLossScale()),
        ("mixed_bfloat16", (F32, BF16, F32), 1.0),
        ("mixed_float16", (F32, F16, F32), prec.DynamicLossScale()),
    ],
)
def test_named_policies(name, dtypes, scale):
    p = prec.Policy.from_name(name)
    assert (p.param_dtype, p.compute_dtype, p.output_dtype) == dtypes
    assert p.loss_scale == scale
    assert p.name == name
    assert prec.get_policy(name) == p


def test_policy_defaults_and_errors():
    assert prec.get_policy(None) == prec.Policy() == prec.Policy.from_name("float32")
    assert prec.Policy.from_name("mixed_float16", loss_scale=8).loss_scale == 8.0
    assert prec.Policy.from_name("mixed_float16", loss_scale="static").loss_scale == 2.0**12
    assert prec.Policy.from_name("mixed_float16").dynamic == prec.DynamicLossScale(2.0**15, 2000)
    assert prec.Policy.from_name("mixed_bfloat16").dynamic is None
    assert prec.Policy(F32, F16, F16).name == "float32/float16/float16"
    with pytest.raises(ValueError, match="unknown precision policy 'half'.*mixed_bfloat16"):
        prec.Policy.from_name("half")
    with pytest.raises(ValueError, match="Policy.compute_dtype: expected a floating dtype"):
        prec.Policy(compute_dtype=jnp.int32)
    with pytest.raises(ValueError, match="Policy.output_dtype: 'nope' is not a dtype"):
        prec.Policy(output_dtype="nope")
    with pytest.raises(ValueError, match="Policy.loss_scale"):
        prec.Policy(loss_scale=0)
    with pytest.raises(ValueError, match="Policy.loss_scale.*'dynamic'.*got 'dynamc'"):
        prec.Policy(loss_scale="dynamc")
    with pytest.raises(ValueError, match=r"DynamicLossScale.period: expected an int >= 1, got 0"):
        prec.DynamicLossScale(period=0)
    with pytest.raises(ValueError, match=r"DynamicLossScale.factor: expected .* > 1, got 1"):
        prec.DynamicLossScale(factor=1)


def test_cast_floating_leaves_ints_and_keys_alone():
    tree = {"f": jnp.ones(2), "i": jnp.arange(3), "k": jax.random.key(0), "h": jnp.ones(1, F16)}
    out = prec.cast_to_compute(tree, "mixed_bfloat16")
    assert out["f"].dtype == BF16 and out["h"].dtype == BF16
    assert out["i"].dtype == jnp.int32
    assert jax.dtypes.issubdtype(out["k"].dtype, jax.dtypes.prng_key)
    back = prec.Policy.from_name("mixed_bfloat16").cast_to_param(out)
    assert back["f"].dtype == F32 and back["i"].dtype == jnp.int32


def test_mixed_bf16_forward_close_to_float32_and_keeps_the_tree():
    model, x = mlp(), data()
    _, p32, _ = model.init(jax.random.key(1), (8,))
    wrapped = prec.with_policy(model, "mixed_bfloat16")
    _, pmix, _ = wrapped.init(jax.random.key(1), (8,))
    # same names, same float32 values: a checkpoint fits both
    chex.assert_trees_all_equal(pmix, p32)
    chex.assert_trees_all_equal_dtypes(pmix, p32)
    assert (wrapped.kind, wrapped.name, wrapped.children) == (
        model.kind, model.name, model.children)
    assert dict(wrapped.meta)["dtype_policy"] == "mixed_bfloat16"

    y32, _ = jax.jit(model.apply)(p32, {}, x)
    ymix, _ = jax.jit(wrapped.apply)(pmix, {}, x)
    assert ymix.dtype == F32 and ymix.shape == (16, 3)
    # bf16 has an 8-bit mantissa (relative step 2**-8 ~ 0.4%); three layers stay within ~3%
    scale = float(jnp.max(jnp.abs(y32)))
    np.testing.assert_allclose(ymix, y32, atol=3e-2 * scale)
    assert float(jnp.max(jnp.abs(ymix - y32))) > 0  # really computed in bf16


def test_mixed_bf16_matmuls_run_in_bf16():
    model = prec.with_policy(mlp(), "mixed_bfloat16")
    _, params, _ = model.init(jax.random.key(1), (8,))
    jaxpr = jax.make_jaxpr(lambda p, x: model.apply(p, {}, x)[0])(params, data())
    dots = [e for e in all_eqns(jaxpr.jaxpr) if e.primitive.name == "dot_general"]
    assert len(dots) == 3
    for e in dots:
        assert [v.aval.dtype for v in e.invars] == [BF16, BF16]


def test_mixed_bf16_matmuls_after_norm_layers_run_in_bf16():
    """Norm layers compute their statistics in float32 but return the compute dtype, so the
    matmuls after them stay bf16 (a float32 output would promote every later matmul)."""
    from nnkit.layers import BatchNorm, Dense, LayerNorm, Relu

    for norm in (BatchNorm(), LayerNorm()):
        model = prec.with_policy(
            nnkit.serial(Dense(16), norm, Relu(), Dense(16), LayerNorm(), Dense(3)),
            "mixed_bfloat16")
        _, params, state = model.init(jax.random.key(1), (8,))
        for train in (False, True):
            jaxpr = jax.make_jaxpr(
                lambda p, x, s=state, m=model, t=train: m.apply(p, s, x, train=t)[0])(
                    params, data())
            dots = [e for e in all_eqns(jaxpr.jaxpr) if e.primitive.name == "dot_general"]
            assert len(dots) == 3
            for e in dots:
                assert [v.aval.dtype for v in e.invars] == [BF16, BF16]
            out = jax.eval_shape(lambda p, x, s=state, m=model, t=train: m.apply(
                p, s, x, train=t)[0], params, data())
            assert out.dtype == jnp.float32  # the policy's output dtype


def test_mixed_bf16_grads_are_float32_and_close():
    model, x = mlp(), data()
    y = jnp.sin(x[:, :3])
    _, params, _ = model.init(jax.random.key(2), (8,))

    def loss(m):
        return lambda p: jnp.mean((m.apply(p, {}, x)[0] - y) ** 2)

    g32 = jax.jit(jax.grad(loss(model)))(params)
    gmix = jax.jit(jax.grad(loss(prec.with_policy(model, "mixed_bfloat16"))))(params)
    chex.assert_trees_all_equal_dtypes(gmix, params)  # float32, like the params
    # element-wise errors are large where grads cancel, so compare whole leaves: bf16
    # rounding in the forward and backward passes gives ~1% (last layer) to ~7% (first)
    for a, b in zip(jax.tree.leaves(gmix), jax.tree.leaves(g32), strict=True):
        rel = float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))
        cos = float(jnp.vdot(a, b) / (jnp.linalg.norm(a) * jnp.linalg.norm(b)))
        assert 0 < rel < 0.1 and cos > 0.99


def test_pure_bfloat16_stores_params_in_bf16():
    model = prec.with_policy(mlp(), "bfloat16")
    _, params, _ = model.init(jax.random.key(1), (8,))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {BF16}
    y, _ = model.apply(params, {}, data())
    assert y.dtype == BF16


def _running_mean():
    def init(key, shape):
        return shape, {}, {"mean": jnp.zeros(shape[-1:], jnp.float32)}

    def apply(params, state, x, *, key=None, train=False):
        return x, {"mean": 0.9 * state["mean"] + 0.1 * jnp.mean(x, axis=0)}

    return layer("running_mean", init, apply)


def test_state_keeps_its_dtype_so_scan_carries_work():
    model = prec.with_policy(nnkit.serial(Dense(4), _running_mean()), "mixed_bfloat16")
    _, params, state = model.init(jax.random.key(0), (8,))
    xs = jnp.stack([data(seed=s) for s in range(3)])

    def body(st, x):
        _, st = model.apply(params, st, x, train=True)
        return st, None

    final, _ = jax.lax.scan(body, state, xs)  # fails if the carry's dtype changed
    assert final["running_mean_0"]["mean"].dtype == F32
    assert float(jnp.max(jnp.abs(final["running_mean_0"]["mean"]))) > 0


def test_int_inputs_are_not_cast():
    seen = []

    def init(key, shape):
        return shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        seen.append(x.dtype)
        return x.astype(jnp.float32), {}

    model = prec.with_policy(layer("probe", init, apply), "mixed_bfloat16")
    model.init(jax.random.key(0), (3,))
    model.apply({}, {}, jnp.arange(6).reshape(2, 3))
    model.apply({}, {}, jnp.ones((2, 3)))
    assert seen == [jnp.int32, BF16]


def test_with_policy_rejects_non_layers():
    with pytest.raises(TypeError, match="expected an nnkit Layer"):
        prec.with_policy(lambda x: x, "float32")


# ----------------------------------------------------------------------------- loss scale


def test_scale_and_unscale_closed_form():
    p = prec.Policy.from_name("mixed_float16", loss_scale=4.0)
    assert float(prec.scale_loss(jnp.float32(1.5), p)) == 6.0
    g = prec.unscale_grads({"a": jnp.array([8.0, 2.0], F16), "n": jnp.arange(2)}, p)
    assert g["a"].dtype == F16 and g["n"].dtype == jnp.int32
    np.testing.assert_array_equal(g["a"], np.array([2.0, 0.5], np.float16))
    assert prec.unscale_grads(g, "float32") is g


def test_all_finite():
    assert bool(prec.all_finite({"a": jnp.ones(3), "i": jnp.arange(2)}))
    assert not bool(prec.all_finite({"a": jnp.array([1.0, jnp.inf])}))
    assert not bool(prec.all_finite([jnp.ones(2), jnp.array(jnp.nan, F16)]))
    assert bool(prec.all_finite({}))


def _tiny_grad_problem(policy):
    """dL/dw = c * sum(x) = 1e-5 * 1e-3 = 1e-8 per weight: below float16's smallest subnormal."""
    model = prec.with_policy(Dense(1, use_bias=False), policy)
    _, params, _ = model.init(jax.random.key(0), (4,))
    x = jnp.full((1, 4), 1e-3, jnp.float32)

    def loss(p):
        return 1e-5 * jnp.sum(model.apply(p, {}, x)[0])

    return loss, params


def test_float16_small_grads_underflow_without_loss_scale():
    loss, params = _tiny_grad_problem(prec.Policy.from_name("mixed_float16", loss_scale=1.0))
    g = jax.grad(loss)(params)
    assert g["w"].dtype == F32
    np.testing.assert_array_equal(g["w"], 0.0)


def test_float16_static_loss_scale_recovers_small_grads():
    pol = prec.Policy.from_name("mixed_float16", loss_scale="static")  # 2**12
    loss, params = _tiny_grad_problem(pol)
    value, g = prec.value_and_grad(loss, pol)(params)
    assert g["w"].dtype == F32
    np.testing.assert_allclose(g["w"], np.full((4, 1), 1e-8), rtol=2e-2)
    np.testing.assert_allclose(value, loss(params), rtol=1e-6)  # the value is unscaled
    assert bool(prec.all_finite(g))


def test_float16_too_large_loss_scale_overflows_and_is_detected():
    pol = prec.Policy.from_name("mixed_float16", loss_scale=2.0**40)
    loss, params = _tiny_grad_problem(pol)
    _, g = prec.value_and_grad(loss, pol)(params)
    assert not bool(prec.all_finite(g))


def test_value_and_grad_has_aux_matches_jax():
    def f(p):
        return jnp.sum(p["w"] ** 2), {"n": 3}

    p = {"w": jnp.array([1.0, -2.0])}
    (v, aux), g = prec.value_and_grad(f, prec.Policy(loss_scale=8.0), has_aux=True)(p)
    assert float(v) == 5.0 and aux == {"n": 3}
    np.testing.assert_allclose(g["w"], [2.0, -4.0])  # 2w, the scale removed exactly


def test_scaled_multiplies_the_loss_only():
    pol = prec.Policy(loss_scale=4.0)
    assert float(prec.scaled(lambda v: v * 2, pol)(jnp.float32(3.0))) == 24.0
    loss, aux = prec.scaled(lambda v: (v, {"raw": v}), pol, has_aux=True)(jnp.float32(3.0))
    assert float(loss) == 12.0 and float(aux["raw"]) == 3.0
    f = lambda v: v
    assert prec.scaled(f, "float32") is f


# ----------------------------------------------------------------------------- config


def test_from_config():
    assert prec.from_config(None) is None
    assert prec.from_config("mixed_bfloat16") == prec.Policy.from_name("mixed_bfloat16")
    p = prec.from_config({"name": "mixed_float16", "loss_scale": 1024})
    assert (p.compute_dtype, p.loss_scale) == (F16, 1024.0)
    p = prec.from_config({"compute_dtype": "bfloat16"})
    assert (p.param_dtype, p.compute_dtype, p.output_dtype) == (F32, BF16, F32)
    assert prec.from_config("mixed_float16").loss_scale == prec.DynamicLossScale()
    p = prec.from_config({"name": "mixed_float16", "loss_scale": {"initial": 65536,
                                                                  "period": 1000}})
    assert p.loss_scale == prec.DynamicLossScale(65536.0, 1000, 2.0, 1.0)
    assert prec.from_config({"name": "float16", "loss_scale": "static"}).loss_scale == 4096.0


@pytest.mark.parametrize(
    "value,match",
    [
        ("half", r"precision: unknown precision policy 'half'"),
        (3, r"precision: expected a policy name or a mapping"),
        ({"nme": "float32"}, r"precision: unknown key\(s\) \['nme'\]"),
        ({"name": "float32", "compute_dtype": "bfloat16"}, r"either name or dtypes"),
        ({"compute_dtype": "int8"}, r"precision.compute_dtype: .*floating"),
        ({"name": "mixed_float16", "loss_scale": -1}, r"precision.loss_scale"),
        ({"name": "mixed_float16", "loss_scale": {"min_scale": 0}},
         r"precision.loss_scale.min_scale: expected a finite number > 0, got 0"),
    ],
)
def test_from_config_errors_name_the_key(value, match):
    with pytest.raises(ValueError, match=match):
        prec.from_config(value)


# ----------------------------------------------------------------------------- training


def _blobs(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n).astype(np.int32)
    centers = np.array([[2.0, 0.0], [-1.0, 1.7], [-1.0, -1.7]], np.float32)
    x = centers[y] + 0.5 * rng.normal(size=(n, 2)).astype(np.float32)
    return x, y


def test_fit_mixed_bfloat16_trains_with_float32_params_and_bf16_compute():
    from nnkit import optim

    model = nnkit.serial(Dense(16), Relu(), Dense(3))
    x, y = _blobs()
    kw = dict(epochs=3, batch_size=16, key=0, progress=False, mode="scan")
    r = nnkit.fit(model, optim.make("adam", 0.02), (x, y), policy="mixed_bfloat16", **kw)
    loss = r.history["train_loss"]
    assert loss[-1] < 0.5 * loss[0]
    assert r.history["train_accuracy"][-1] > 0.9
    # params and the optimizer state (Adam's moments) stay float32
    for leaf in jax.tree.leaves((r.train_state.params, r.train_state.opt_state)):
        if jnp.issubdtype(leaf.dtype, jnp.floating):
            assert leaf.dtype == F32
    # the model really computed in bfloat16: same run in float32 differs, but only a little
    r32 = nnkit.fit(model, optim.make("adam", 0.02), (x, y), **kw)
    assert r32.history["train_loss"] != loss
    np.testing.assert_allclose(loss, r32.history["train_loss"], rtol=0.05)
    # a bfloat16 forward pass has bf16 matmuls inside
    wrapped = prec.with_policy(model, "mixed_bfloat16")
    jaxpr = str(jax.make_jaxpr(lambda p: wrapped.apply(p, {}, x[:4])[0])(r.train_state.params))
    assert "bf16[4,16]" in jaxpr


@pytest.mark.parametrize("grad_mode", ["batch", "accumulate", "per_example"])
def test_train_step_float16_loss_scale_recovers_tiny_gradients(grad_mode):
    """Loss 1e-7 * MSE: its output cotangents (~1e-8) underflow in float16, so without a
    loss scale every gradient is 0; the static scale 2**12 lifts them into float16's range
    and the unscaled float32 gradient matches the float32 step."""
    import optax

    from nnkit.train import create_train_state, make_train_step

    model = nnkit.serial(Dense(16), nnkit.layers.Tanh(), Dense(3))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 4)).astype(np.float32))
    y = jnp.asarray(rng.normal(size=(8, 3)).astype(np.float32))
    mb = 2 if grad_mode == "accumulate" else 1
    rows = {"batch": 8, "accumulate": 4, "per_example": 1}[grad_mode]  # per loss call
    c = 1e-7 * rows / 8  # the same output cotangents 2 c (p - t) / (rows * 3) in every mode
    tiny = lambda p, t: c * jnp.mean((p - t) ** 2)
    opt = optax.sgd(1.0)  # update = -grad
    ts = create_train_state(model, (4,), opt, 0)

    def one_step(policy):
        step = make_train_step(model, tiny, opt, metrics=(), policy=policy, donate=False,
                               grad_mode=grad_mode, microbatches=mb, log_grad_norm=True)
        new, m = step(ts, (x, y))
        return jax.tree.map(lambda a, b: a - b, new.params, ts.params), m

    d32, m32 = one_step(None)
    d16, m16 = one_step(prec.Policy.from_name("mixed_float16", loss_scale="static"))
    d0, m0 = one_step(prec.Policy(F32, F16, F32, loss_scale=1.0))
    assert float(m32["grad_norm"]) > 1e-7 * rows / 8
    assert float(m0["grad_norm"]) == 0.0  # underflow without the scale
    assert float(m16["grad_norm"]) == pytest.approx(float(m32["grad_norm"]), rel=1e-3)
    assert float(m16["loss"]) == pytest.approx(float(m32["loss"]), rel=1e-2)  # unscaled
    for a, b in zip(jax.tree.leaves(d16), jax.tree.leaves(d32), strict=True):
        assert a.dtype == F32
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-10)


def test_policy_wrapping_is_memoised_and_not_doubled():
    from nnkit.train.step import apply_policy

    model = mlp()
    a = apply_policy(model, "mixed_bfloat16")
    assert apply_policy(model, "mixed_bfloat16") is a  # fit reuses its compiled functions
    assert apply_policy(a, "mixed_bfloat16") is a  # already under the policy
    assert apply_policy(model, None) is model
    assert dict(a.meta)["dtype_policy"] == "mixed_bfloat16"
    with pytest.raises(ValueError, match="unknown precision policy 'half'"):
        apply_policy(model, "half")


def test_fit_refuses_an_optimizer_whose_eps_vanishes_in_float16_state():
    import nnkit
    from nnkit import optim

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    model = nnkit.models.mlp(hidden=(8,), out=2)
    with pytest.raises(ValueError, match="eps rounds to 0 in float16"):
        nnkit.fit(model, "adam", (x, y), epochs=1, batch_size=32, policy="float16",
                  progress=False)
    for opt in ("sgd", optim.make("adam", 1e-3, eps=1e-3)):
        r = nnkit.fit(model, opt, (x, y), epochs=1, batch_size=32, policy="float16",
                      progress=False)
        assert r.stop_reason == "completed"
    nnkit.fit(model, "adam", (x, y), epochs=1, batch_size=32, policy="mixed_float16",
              progress=False)


# ----------------------------------------------------------------------------- dynamic scale


def _ls(scale, good):
    return prec.LossScaleState(jnp.float32(scale), jnp.int32(good))


@pytest.mark.parametrize(
    "scale,good,finite,expect",
    [
        (8.0, 0, True, (8.0, 1)),  # one more good step
        (8.0, 2, True, (16.0, 0)),  # the period's third good step: x factor, count reset
        (8.0, 2, False, (4.0, 0)),  # overflow: / factor, count reset
        (1.5, 1, False, (1.0, 0)),  # never below min_scale
        (1.0, 0, False, (1.0, 0)),
        (3e38, 2, True, (3e38, 0)),  # 6e38 overflows float32: kept
    ],
)
def test_loss_scale_update_closed_form(scale, good, finite, expect):
    dyn = prec.DynamicLossScale(initial=8.0, period=3, factor=2.0, min_scale=1.0)
    out = prec.loss_scale_update(dyn, _ls(scale, good), jnp.asarray(finite))
    assert out.scale.dtype == F32 and out.good_steps.dtype == jnp.int32
    assert (float(out.scale), int(out.good_steps)) == (np.float32(expect[0]), expect[1])


def test_loss_scale_init_only_for_dynamic_policies():
    st = prec.loss_scale_init("mixed_float16")
    assert (float(st.scale), int(st.good_steps)) == (2.0**15, 0)
    for p in (None, "float32", "mixed_bfloat16", prec.Policy.from_name("float16", loss_scale=8)):
        assert prec.loss_scale_init(p) is None
    with pytest.raises(ValueError, match="dynamic loss scale has no fixed value"):
        prec.scale_loss(jnp.float32(1.0), "mixed_float16")
    v, g = prec.value_and_grad(lambda w: jnp.sum(w**2), "mixed_float16",
                               scale=jnp.float32(8.0))(jnp.array([1.0, -2.0]))
    assert float(v) == 5.0
    np.testing.assert_array_equal(g, [2.0, -4.0])


def _dynamic_step_setup(dyn):
    import optax

    from nnkit.train import create_train_state, make_train_step

    model = nnkit.serial(Dense(8), nnkit.layers.BatchNorm(), Relu(), Dense(3))
    pol = prec.Policy.from_name("mixed_float16", loss_scale=dyn)
    opt = optax.adam(1e-2)
    ts = create_train_state(model, (4,), opt, 0, policy=pol)
    step = make_train_step(model, "cross_entropy", opt, policy=pol, donate=False,
                           log_grad_norm=True)
    x, y = _blobs(16)
    x = jnp.asarray(np.concatenate([x, x], axis=1))
    return model, pol, opt, ts, step, (x, jnp.asarray(y))


def test_dynamic_step_skips_an_overflow_then_grows_after_period_compiling_once():
    """Scale 2**40: the output cotangent overflows float16 -> every gradient inf/nan: the
    step changes nothing but the scale (2**39, count reset). With a scale that fits, period
    = 3 good steps (counted 1, 2) double it on the third; the program is compiled once."""
    from _compiles import lowerings

    from nnkit.train import make_train_step

    dyn = prec.DynamicLossScale(initial=2.0**10, period=3)
    model, pol, opt, ts, step, batch = _dynamic_step_setup(dyn)
    assert (float(ts.loss_scale.scale), int(ts.loss_scale.good_steps)) == (2.0**10, 0)
    ts_big = ts._replace(loss_scale=_ls(2.0**40, 5))
    with lowerings() as seen:
        skipped, m_skip = step(ts_big, batch)
        states = [ts]
        for _ in range(4):
            nxt, m = step(states[-1], batch)
            states.append(nxt)
    assert len(seen) == 1, f"{len(seen)} programs lowered; the scale must be traced"
    # the skipped step: bit-identical state, the scale halved, the count reset
    chex.assert_trees_all_equal(skipped._replace(loss_scale=None), ts_big._replace(loss_scale=None))
    assert (float(skipped.loss_scale.scale), int(skipped.loss_scale.good_steps)) == (2.0**39, 0)
    assert float(m_skip["loss_scale"]) == 2.0**39 and float(m_skip["grad_norm"]) == 0.0
    assert np.isfinite(float(m_skip["loss"]))
    # good steps: counted, the scale doubled after the third, then counting again
    got = [(float(s.loss_scale.scale), int(s.loss_scale.good_steps), int(s.step))
           for s in states]
    assert got == [(2.0**10, 0, 0), (2.0**10, 1, 1), (2.0**10, 2, 2), (2.0**11, 0, 3),
                   (2.0**11, 1, 4)]
    assert float(m["loss_scale"]) == 2.0**11
    for a, b in zip(jax.tree.leaves(states[1].params), jax.tree.leaves(ts.params), strict=True):
        assert not np.array_equal(a, b)  # a good step updates every parameter
    # a good step is the static-scale step with the same s
    static = make_train_step(model, "cross_entropy", opt, donate=False,
                             policy=prec.Policy.from_name("mixed_float16", loss_scale=2.0**10))
    ref, _ = static(ts._replace(loss_scale=None), batch)
    chex.assert_trees_all_close((states[1].params, states[1].state, states[1].opt_state),
                                (ref.params, ref.state, ref.opt_state), rtol=1e-6, atol=1e-7)


def test_dynamic_step_needs_the_state():
    _, _, _, ts, step, batch = _dynamic_step_setup("dynamic")
    with pytest.raises(ValueError, match="train_state.loss_scale is None"):
        step(ts._replace(loss_scale=None), batch)


def test_fit_float16_dynamic_scale_recovers_where_a_static_one_overflows():
    """A static scale of 2**24 overflows float16 on the first step: fit stops (non-finite).
    The dynamic scale starting there skips and halves until the gradients fit, then trains:
    the steps taken plus the halvings (no growth in 4 epochs with period 2000) add up to
    every step run, and the logged scale is the state's."""
    from nnkit import optim

    model = nnkit.serial(Dense(16), Relu(), Dense(3))
    x, y = _blobs()
    kw = dict(epochs=4, batch_size=16, key=0, progress=False, mode="scan")
    opt = optim.make("adam", 0.02)
    static = prec.Policy.from_name("mixed_float16", loss_scale=2.0**24)
    r = nnkit.fit(model, opt, (x, y), policy=static, **kw)
    assert r.stop_reason.startswith("non-finite") and r.epochs_run == 0
    dyn = prec.Policy.from_name("mixed_float16", loss_scale=prec.DynamicLossScale(2.0**24))
    r = nnkit.fit(model, opt, (x, y), policy=dyn, **kw)
    assert r.stop_reason == "completed"
    ls = r.train_state.loss_scale
    halvings = int(np.log2(2.0**24 / float(ls.scale)))
    assert float(ls.scale) == 2.0 ** (24 - halvings) and halvings > 0
    assert int(r.train_state.step) + halvings == 4 * (96 // 16)
    assert int(ls.good_steps) == int(r.train_state.step)  # no skip after the first good step
    assert r.history["loss_scale"][-1] == float(ls.scale)
    assert r.history["train_loss"][-1] < 0.5 * r.history["train_loss"][0]
    assert r.history["train_accuracy"][-1] > 0.9
    for leaf in jax.tree.leaves((r.train_state.params, r.train_state.opt_state)):
        assert leaf.dtype != F16  # float32 params and optimizer state


def test_dynamic_scale_checkpoint_round_trip_resumes_exactly(tmp_path):
    """period 2 near float16's limit: the scale grows and overflows again within the run.
    A checkpoint after epoch 2 restores the scale state and the resumed run ends
    bit-identical to the uninterrupted one."""
    from nnkit import checkpoint, optim
    from nnkit.train import create_train_state

    model = nnkit.serial(Dense(16), Relu(), Dense(3))
    x, y = _blobs()
    opt = optim.make("adam", 0.02)
    pol = prec.Policy.from_name("mixed_float16",
                                loss_scale=prec.DynamicLossScale(2.0**14, period=2))
    kw = dict(batch_size=16, key=0, progress=False, mode="scan", policy=pol)
    full = nnkit.fit(model, opt, (x, y), epochs=4, **kw)
    assert len(set(full.history["loss_scale"])) > 1  # the scale moved
    half = nnkit.fit(model, opt, (x, y), epochs=2, **kw)
    path = checkpoint.save(tmp_path / "ck.npz", half.last_state)
    target = jax.eval_shape(lambda: create_train_state(model, (2,), opt, 0, policy=pol))
    restored, _ = checkpoint.restore(path, target)
    chex.assert_trees_all_equal(restored.loss_scale, half.last_state.loss_scale)
    assert restored.loss_scale.scale.dtype == F32
    resumed = nnkit.fit(model, opt, (x, y), epochs=4, start_epoch=2, train_state=restored, **kw)
    chex.assert_trees_all_equal(resumed.train_state, full.train_state)
    assert resumed.history["loss_scale"] == full.history["loss_scale"][2:]
