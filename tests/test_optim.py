"""nnkit.optim: optimizers by name, injected hyper-parameters, schedules, reduce-on-plateau."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from nnkit import optim

TARGET = jnp.array([0.5, -1.0, 2.0])


def quad(p):
    return jnp.sum((p["w"] - TARGET) ** 2)


def run(opt, steps, p=None):
    p = {"w": jnp.array([3.0, 2.0, -1.0])} if p is None else p
    s = opt.init(p)
    for _ in range(steps):
        u, s = opt.update(jax.grad(quad)(p), s, p)
        p = optax.apply_updates(p, u)
    return p, s


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_every_optimizer_builds_and_lowers_a_quadratic(name):
    lr = 1.0 if name == "adadelta" else 0.05
    before = float(quad({"w": jnp.array([3.0, 2.0, -1.0])}))
    p, s = run(optim.make(name, lr), 5)
    assert float(quad(p)) < before
    np.testing.assert_allclose(optim.get_lr(s), lr, rtol=1e-6)
    p2, _ = run(optim.make(name, lr, weight_decay=1e-3, clip_norm=10.0), 3)
    assert np.all(np.isfinite(p2["w"]))


def test_unknown_optimizer_lists_known_names():
    with pytest.raises(ValueError, match="unknown optimizer 'adamm'.*adam.*sgd"):
        optim.make("adamm", 0.1)
    with pytest.raises(ValueError, match="accumulate"):
        optim.make("sgd", 0.1, accumulate=0)


def test_sgd_coupled_weight_decay_closed_form():
    p0 = {"w": jnp.array([3.0, 2.0, -1.0])}
    g = jax.grad(quad)(p0)["w"]
    p, _ = run(optim.make("sgd", 0.1, weight_decay=0.5), 1)
    np.testing.assert_allclose(p["w"], p0["w"] - 0.1 * (g + 0.5 * p0["w"]), rtol=1e-6)


def test_adamw_decay_is_decoupled():
    p0 = {"w": jnp.array([3.0, 2.0, -1.0])}
    g = jax.grad(quad)(p0)["w"]
    p, _ = run(optim.make("adamw", 0.1, weight_decay=0.5), 1)
    adam_dir = g / (jnp.abs(g) + 1e-8)  # first Adam step: m_hat / (sqrt(v_hat) + eps)
    np.testing.assert_allclose(p["w"], p0["w"] - 0.1 * (adam_dir + 0.5 * p0["w"]), rtol=1e-5)
    # with weight_decay=0 it is plain Adam
    pa, _ = run(optim.make("adamw", 0.1), 2)
    pb, _ = run(optax.adam(0.1), 2)
    np.testing.assert_allclose(pa["w"], pb["w"], rtol=1e-6)


def test_clip_norm_clips_the_global_gradient_norm_first():
    p0 = {"w": jnp.array([3.0, 2.0, -1.0])}
    g = jax.grad(quad)(p0)["w"]
    p, _ = run(optim.make("sgd", 1.0, clip_norm=1.0), 1)
    step = p0["w"] - p["w"]
    np.testing.assert_allclose(jnp.linalg.norm(step), 1.0, rtol=1e-5)
    np.testing.assert_allclose(step / jnp.linalg.norm(step), g / jnp.linalg.norm(g), rtol=1e-5)


def test_accumulate_applies_the_mean_every_k_steps():
    opt = optim.make("sgd", 0.1, accumulate=2)
    p0 = {"w": jnp.array([3.0, 2.0, -1.0])}
    s = opt.init(p0)
    g1 = {"w": jnp.array([1.0, 0.0, 0.0])}
    g2 = {"w": jnp.array([0.0, 3.0, 0.0])}
    u1, s = opt.update(g1, s, p0)
    np.testing.assert_array_equal(u1["w"], 0.0)
    u2, s = opt.update(g2, s, p0)
    np.testing.assert_allclose(u2["w"], -0.1 * (g1["w"] + g2["w"]) / 2, rtol=1e-6)
    assert float(optim.get_lr(s)) == pytest.approx(0.1)


def test_set_hyperparam_through_multisteps_and_under_vmap():
    opt = optim.make("sgd", 0.1, accumulate=2, weight_decay=0.1)
    s = opt.init({"w": jnp.zeros(3)})
    s2 = optim.set_hyperparam(s, "learning_rate", 0.25)
    assert float(optim.get_lr(s2)) == 0.25
    assert float(optim.get_lr(s)) == pytest.approx(0.1)  # pure: the original is unchanged
    with pytest.raises(KeyError, match="no injected hyper-parameter 'b1'"):
        optim.set_hyperparam(s, "b1", 0.5)

    # per-model learning rates in one vmapped update
    opt = optim.make("sgd", 0.0)
    p = {"w": jnp.ones((2, 3))}
    states = jax.vmap(opt.init)(p)
    states = jax.vmap(lambda st, lr: optim.set_hyperparam(st, "learning_rate", lr))(
        states, jnp.array([0.1, 0.2])
    )
    u, _ = jax.vmap(opt.update)({"w": jnp.ones((2, 3))}, states, p)
    np.testing.assert_allclose(u["w"], [[-0.1] * 3, [-0.2] * 3], rtol=1e-6)


def test_schedule_learning_rate_is_observable_after_each_update():
    sched = optim.schedule("step", learning_rate=1.0, boundaries=[2], factor=0.5)
    opt = optim.make("sgd", sched)
    p = {"w": jnp.zeros(3)}
    s = opt.init(p)
    seen = []
    for _ in range(4):
        _, s = opt.update({"w": jnp.ones(3)}, s, p)
        seen.append(float(optim.get_lr(s)))
    assert seen == [1.0, 1.0, 0.5, 0.5]


def S(name, **kw):
    f = optim.schedule(name, **kw)
    return lambda t: float(f(t))


def test_constant_step_and_piecewise_schedules():
    assert S("constant", learning_rate=0.3)(1000) == pytest.approx(0.3)
    f = S("step", learning_rate=1.0, boundaries=[10, 20], factor=0.5)
    assert [f(0), f(9), f(10), f(19), f(20), f(100)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    g = S("piecewise", learning_rate=1.0, boundaries=[3], values=[0.1, 0.01])
    assert [g(2), g(3)] == pytest.approx([0.1, 0.01])
    h = S("step", learning_rate=1.0, step_size=5, factor=0.1)
    assert [h(4), h(5), h(10)] == pytest.approx([1.0, 0.1, 0.01])
    with pytest.raises(ValueError, match="len\\(boundaries\\)\\+1"):
        optim.schedule("step", learning_rate=1.0, boundaries=[3], values=[0.1])


def test_exponential_cosine_linear_schedules():
    f = S("exponential", learning_rate=2.0, decay_rate=0.5, transition_steps=10)
    assert [f(0), f(10), f(5)] == pytest.approx([2.0, 1.0, 2.0 * 0.5**0.5])
    c = S("cosine", learning_rate=1.0, decay_steps=100, alpha=0.1)
    assert [c(0), c(50), c(100), c(200)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    lin = S("linear", learning_rate=1.0, end_value=0.0, transition_steps=4)
    assert [lin(0), lin(1), lin(4), lin(9)] == pytest.approx([1.0, 0.75, 0.0, 0.0])


def test_warmup_cosine_schedule():
    f = S("warmup_cosine", learning_rate=1.0, warmup_steps=10, decay_steps=110, end_value=0.0)
    assert [f(0), f(5), f(10), f(60), f(110)] == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0],
                                                              abs=1e-6)


def test_cyclic_triangle_peaks_at_step_size():
    f = S("cyclic", base_lr=0.1, max_lr=1.0, step_size=4)
    assert [f(0), f(2), f(4), f(6), f(8), f(12)] == pytest.approx(
        [0.1, 0.55, 1.0, 0.55, 0.1, 1.0])
    g = S("cyclic", base_lr=0.0, max_lr=1.0, step_size=4, mode="triangular2")
    assert [g(4), g(12), g(20)] == pytest.approx([1.0, 0.5, 0.25])


def test_one_cycle_schedule():
    f = S("one_cycle", max_lr=1.0, total_steps=100, pct_start=0.3, div_factor=25,
          final_div_factor=1e4)
    assert f(0) == pytest.approx(1.0 / 25)
    assert f(30) == pytest.approx(1.0)
    assert f(100) == pytest.approx(1.0 / 25 / 1e4, rel=1e-3)
    assert f(10) < f(20) < f(30) > f(60) > f(90)


def test_sgdr_restarts_at_each_period():
    f = S("sgdr", learning_rate=1.0, period=10, min_lr=0.0)
    assert [f(0), f(5), f(9), f(10), f(15), f(20)] == pytest.approx(
        [1.0, 0.5, 0.5 * (1 + np.cos(np.pi * 0.9)), 1.0, 0.5, 1.0], abs=1e-6)
    g = S("sgdr", learning_rate=1.0, period=10, t_mult=2.0, min_lr=0.1)
    # cycles [0,10), [10,30), [30,70), [70,150)
    for restart in (0, 10, 30, 70):
        assert g(restart) == pytest.approx(1.0)
    assert g(20) == pytest.approx(0.55)  # middle of the 20-step cycle
    assert g(50) == pytest.approx(0.55)  # middle of the 40-step cycle
    assert g(29) < 0.12


@pytest.mark.parametrize("name, kw, match", [
    ("cosine", dict(decay_steps=10, alpha=-1.0), r"cosine schedule: alpha .* must be in "
                                                 r"\[0, 1\], got -1.0"),
    ("cosine", dict(decay_steps=10, alpha=1.5), r"alpha .* must be in \[0, 1\], got 1.5"),
    ("exponential", dict(decay_rate=-0.5), "exponential schedule: decay_rate must be > 0, "
                                           "got -0.5"),
    ("exponential", dict(decay_rate=0), "decay_rate must be > 0, got 0"),
    ("step", dict(boundaries=[3], factor=-0.1), "step schedule: factor must be > 0"),
    ("step", dict(boundaries=[3], values=[0.1, -0.01]),
     r"values\[1\] must be a finite learning rate >= 0, got -0.01"),
    ("linear", dict(end_value=-0.1, transition_steps=10), "end_value must be a finite "
                                                          "learning rate >= 0, got -0.1"),
    ("constant", dict(learning_rate=float("inf")), "learning_rate must be a finite"),
    ("cyclic", dict(base_lr=-0.1, max_lr=1.0, step_size=4), "base_lr must be a finite"),
])
def test_schedule_values_that_would_make_the_rate_negative_are_refused(name, kw, match):
    kw = {"learning_rate": 0.1, **kw} if name != "cyclic" else kw
    with pytest.raises(ValueError, match=match):
        optim.schedule(name, **kw)


def test_schedule_and_optimizer_arguments_given_as_arrays_are_accepted():
    """Array arguments are not range-checked on the host, and must not be tested for truth."""
    import jax.numpy as jnp

    f = optim.schedule("step", learning_rate=0.1, boundaries=[10], values=np.array([0.1, 0.01]))
    assert float(f(20)) == pytest.approx(0.01)
    f = optim.schedule("step", learning_rate=0.1, boundaries=[10], values=jnp.array([0.2, 0.02]))
    assert float(f(0)) == pytest.approx(0.2)
    # eps = 0 is fine with an eps_root that keeps the denominator from 0
    optim.make("adam", 1e-3, eps=0.0, eps_root=1e-8)
    with pytest.raises(ValueError, match=r"eps must be > 0 \(or 0 with eps_root > 0\), got 0.0"):
        optim.make("adam", 1e-3, eps=0.0)


@pytest.mark.parametrize("name, kw, match", [
    ("adam", dict(b1=2.0), r"optimizer 'adam': b1 must be in \[0, 1\), got 2.0"),
    ("adam", dict(b2=1.0), r"b2 must be in \[0, 1\), got 1.0"),
    ("lion", dict(b1=-0.1), r"b1 must be in \[0, 1\), got -0.1"),
    ("momentum", dict(momentum=1.5), r"optimizer 'momentum': momentum must be in \[0, 1\)"),
    ("rmsprop", dict(decay=1.0), r"decay must be in \[0, 1\), got 1.0"),
    ("adadelta", dict(rho=float("nan")), r"rho must be in \[0, 1\), got nan"),
    ("adam", dict(eps=-1.0),
     r"optimizer .adam.: eps must be > 0 \(or 0 with eps_root > 0\), got -1.0"),
    ("rmsprop", dict(eps=0.0), r"eps must be > 0 \(or 0 with eps_root > 0\), got 0.0"),
    ("sgd", dict(momentum=0.9, nesterov=1), "nesterov must be true or false, got int 1"),
])
def test_optimizer_options_out_of_range_are_refused(name, kw, match):
    with pytest.raises(ValueError, match=match):
        optim.make(name, 1e-3, **kw)


def test_optimizer_options_in_range_pass():
    optim.make("adam", 1e-3, b1=0.0, b2=0.999, eps=1e-8)
    optim.make("sgd", 1e-3, momentum=0.9, nesterov=True)
    optim.make("rmsprop", 1e-3, decay=0.9, momentum=None)


def test_unknown_schedule_and_bad_arguments():
    with pytest.raises(ValueError, match="unknown schedule 'cosin'.*cosine.*sgdr"):
        optim.schedule("cosin", learning_rate=1.0)
    with pytest.raises(ValueError, match="schedule 'cosine'"):
        optim.schedule("cosine", learning_rate=1.0)  # missing decay_steps
    for wd in (-1.0, float("nan")):
        with pytest.raises(ValueError, match=rf"weight_decay must be >= 0, got {wd}"):
            optim.make("sgd", 0.1, weight_decay=wd)


def test_plateau_reduces_after_patience_then_cools_down():
    cfg = optim.Plateau(patience=2, factor=0.5, cooldown=1, min_scale=0.2)
    upd = jax.jit(lambda ps, v: optim.plateau_update(cfg, ps, v))
    ps = optim.plateau_init(cfg)
    scales = []
    for v in [1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.99, 0.98, 0.97, 0.96, 0.95]:
        ps = upd(ps, jnp.float32(v))
        scales.append(float(ps.scale))
    # epochs 2,3 bad -> reduce at 3; cooldown at 4; 5,6 bad -> reduce at 6; cooldown 7;
    # 8,9 bad -> 0.125 clipped to min_scale 0.2 at 9
    assert scales == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.2, 0.2])
    assert float(ps.best) == pytest.approx(0.9)


def test_plateau_max_mode_min_delta_and_nan():
    cfg = optim.Plateau(mode="max", patience=1, factor=0.1, min_delta=0.05)
    ps = optim.plateau_init(cfg)
    ps = optim.plateau_update(cfg, ps, jnp.float32(0.5))
    ps = optim.plateau_update(cfg, ps, jnp.float32(0.52))  # not > 0.5 + 0.05
    assert float(ps.scale) == pytest.approx(0.1)
    ps = optim.plateau_update(cfg, ps, jnp.float32(jnp.nan))  # NaN never improves
    assert float(ps.scale) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="factor"):
        optim.Plateau(factor=1.5)


def test_lr_scale_multiplies_the_rate_and_get_lr_reports_the_product():
    p = {"w": jnp.array([1.0, -2.0, 0.5])}
    g = {"w": jnp.array([0.3, -0.1, 0.2])}
    sched = optim.schedule("cosine", learning_rate=1.0, decay_steps=5)
    scaled = optim.make("adam", sched, lr_scale=1.0)
    st = optim.set_hyperparam(scaled.init(p), "lr_scale", 0.2)
    ref = optim.make("adam", optim.schedule("cosine", learning_rate=0.2, decay_steps=5))
    sr = ref.init(p)
    for _ in range(3):
        u, st = scaled.update(g, st, p)
        v, sr = ref.update(g, sr, p)
        np.testing.assert_allclose(u["w"], v["w"], rtol=1e-6)
        np.testing.assert_allclose(optim.get_lr(st), optim.get_lr(sr), rtol=1e-6)
    assert float(optim.get_hyperparam(st, "lr_scale")) == pytest.approx(0.2)
    with pytest.raises(KeyError):  # only when asked for
        optim.get_hyperparam(optim.make("adam", 0.1).init(p), "lr_scale")
