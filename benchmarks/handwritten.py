"""The reference: plain JAX + Optax written by hand, the way a careful user would.

Models are functions of a params dict; the step is ``jax.jit`` with the params and the
optimizer state donated. Two entries:

* ``jax``: one jitted step per batch, called from Python (ratio 1.00 in every table);
* ``jax-scan``: ``K`` steps (the workload's ``steps_per_epoch``) in one ``lax.scan`` over
  pre-stacked device batches.

LeNet uses ``lax.conv_general_dilated`` (NHWC/HWIO) and ``lax.reduce_window`` max pooling
(what a plain JAX user writes); the LSTM scans a cell that computes ``x_t W_ih + h W_hh + b``
at each time step. (Hoisting the input projection out of the loop -- one
``(B*T, F) @ (F, 4H)`` matmul, the textbook optimisation, :func:`forward_lstm_hoisted` --
measured several times *slower* on XLA:CPU: the ``(T, B, 4H)`` projection and its
cotangent are laid out transposed and copied in full around the loops.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from benchmarks.harness import Runner, Skip, per_step_runner, scanned_runner
from benchmarks.workloads import LR, Workload

__all__ = ["init_params", "forward", "forward_lstm_hoisted", "loss_fn", "make_step",
           "make_scan", "device_batches", "build_step_entry", "build_scan_entry",
           "build_hoisted_entry", "build_functional_entry"]

Params = dict[str, Any]


def _dense(key: jax.Array, n_in: int, n_out: int) -> dict[str, jax.Array]:
    lim = np.sqrt(6.0 / n_in)
    return {"w": jax.random.uniform(key, (n_in, n_out), jnp.float32, -lim, lim),
            "b": jnp.zeros((n_out,), jnp.float32)}


def _conv(key: jax.Array, k: int, c_in: int, c_out: int) -> dict[str, jax.Array]:
    lim = np.sqrt(6.0 / (k * k * c_in))
    return {"w": jax.random.uniform(key, (k, k, c_in, c_out), jnp.float32, -lim, lim),
            "b": jnp.zeros((c_out,), jnp.float32)}


def init_params(wl: Workload, key: jax.Array) -> Params:
    """He-uniform weights, zero biases, for the workload's model."""
    ks = jax.random.split(key, 8)
    if wl.kind == "mlp":
        sizes = [wl.input_shape[-1], *wl.hidden, wl.num_classes]
        return {f"l{i}": _dense(ks[i], a, b)
                for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))}
    if wl.kind == "lenet":
        return {"c1": _conv(ks[0], 5, wl.input_shape[-1], 6), "c2": _conv(ks[1], 5, 6, 16),
                "f1": _dense(ks[2], 400, 120), "f2": _dense(ks[3], 120, 84),
                "f3": _dense(ks[4], 84, wl.num_classes)}
    if wl.kind == "lstm":
        f, h = wl.input_shape[-1], wl.hidden[0]
        lim_i, lim_h = np.sqrt(6.0 / (f + 4 * h)), 1.0 / np.sqrt(h)
        return {
            "w_ih": jax.random.uniform(ks[0], (f, 4 * h), jnp.float32, -lim_i, lim_i),
            "w_hh": jax.random.uniform(ks[1], (h, 4 * h), jnp.float32, -lim_h, lim_h),
            "b": jnp.zeros((4 * h,), jnp.float32).at[h:2 * h].set(1.0),
            "out": _dense(ks[2], h, wl.num_classes),
        }
    raise ValueError(f"unknown workload kind {wl.kind!r}")


def _max_pool(x: jax.Array) -> jax.Array:
    return lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _conv2d(x: jax.Array, p: dict, padding: str) -> jax.Array:
    y = lax.conv_general_dilated(x, p["w"], (1, 1), padding,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + p["b"]


def forward(wl: Workload, params: Params, x: jax.Array, *,
            dot: Callable[[jax.Array, jax.Array], jax.Array] = jnp.matmul) -> jax.Array:
    """Logits ``(B, num_classes)`` of the workload's model (``dot``: an MLP's products)."""
    if wl.kind == "mlp":
        n = len(params)
        for i in range(n):
            x = dot(x, params[f"l{i}"]["w"]) + params[f"l{i}"]["b"]
            if i < n - 1:
                x = jax.nn.relu(x)
        return x
    if wl.kind == "lenet":
        x = _max_pool(jax.nn.relu(_conv2d(x, params["c1"], "SAME")))
        x = _max_pool(jax.nn.relu(_conv2d(x, params["c2"], "VALID")))
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(x @ params["f1"]["w"] + params["f1"]["b"])
        x = jax.nn.relu(x @ params["f2"]["w"] + params["f2"]["b"])
        return x @ params["f3"]["w"] + params["f3"]["b"]
    if wl.kind == "lstm":
        def project(x_t):
            return x_t @ params["w_ih"] + params["b"]

        return _lstm(params, project, jnp.moveaxis(x, 1, 0), x.shape[0])
    raise ValueError(f"unknown workload kind {wl.kind!r}")


def _lstm(params: Params, project: Callable, xs_t: jax.Array, batch: int) -> jax.Array:
    """Scans the LSTM cell over ``xs_t`` (time-major); ``project(x_t)`` gives the input part
    of the gate pre-activations. Returns the logits from the last hidden state."""
    h = params["w_hh"].shape[0]

    def cell(carry, x_t):
        h_t, c_t = carry
        z = project(x_t) + h_t @ params["w_hh"]
        zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
        c_t = jax.nn.sigmoid(zf) * c_t + jax.nn.sigmoid(zi) * jnp.tanh(zg)
        h_t = jax.nn.sigmoid(zo) * jnp.tanh(c_t)
        return (h_t, c_t), None

    zeros = jnp.zeros((batch, h), xs_t.dtype)
    (h_last, _), _ = lax.scan(cell, (zeros, zeros), xs_t)
    return h_last @ params["out"]["w"] + params["out"]["b"]


def forward_lstm_hoisted(wl: Workload, params: Params, x: jax.Array) -> jax.Array:
    """The W5 LSTM with the input projection hoisted out of the time loop (analysis)."""
    zx = jnp.einsum("btf,fg->tbg", x, params["w_ih"]) + params["b"]
    return _lstm(params, lambda z_t: z_t, zx, x.shape[0])


Forward = Callable[[Workload, Params, jax.Array], jax.Array]


CrossEntropy = Callable[[jax.Array, jax.Array], jax.Array]
"""``ce(logits (B, C), labels (B,)) -> (B,)`` per-example cross-entropy."""


def loss_fn(
    wl: Workload, params: Params, x: jax.Array, y: jax.Array, fwd: Forward | None = None,
    ce: CrossEntropy | None = None,
) -> jax.Array:
    """Mean softmax cross-entropy over integer labels (``fwd`` defaults to :func:`forward`,
    ``ce`` to optax's ``softmax_cross_entropy_with_integer_labels``)."""
    logits = (fwd or forward)(wl, params, x)
    return (ce or optax.softmax_cross_entropy_with_integer_labels)(logits, y).mean()


def make_step(
    wl: Workload, opt: optax.GradientTransformation, fwd: Forward | None = None
) -> Callable:
    """Jitted ``step((params, opt_state), x, y) -> ((params, opt_state), loss)``, donated."""

    def step(carry, x, y):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(lambda p: loss_fn(wl, p, x, y, fwd))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return jax.jit(step, donate_argnums=(0,))


def make_scan(
    wl: Workload, opt: optax.GradientTransformation, fwd: Forward | None = None
) -> Callable:
    """Jitted ``run((params, opt_state), xs, ys) -> (carry, losses)``: ``lax.scan`` of the
    step over the leading axis of ``xs (K, B, ...)``; the carry is donated."""

    def one(carry, batch):
        params, opt_state = carry
        x, y = batch
        loss, grads = jax.value_and_grad(lambda p: loss_fn(wl, p, x, y, fwd))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    def run(carry, xs, ys):
        return lax.scan(one, carry, (xs, ys))

    return jax.jit(run, donate_argnums=(0,))


def device_batches(wl: Workload, x: np.ndarray, y: np.ndarray) -> tuple[list, list]:
    """The ``K`` batches of ``(x, y)`` as lists of device arrays (put once, reused)."""
    b, k = wl.batch, wl.steps_per_epoch
    xs = [jax.device_put(x[i * b:(i + 1) * b]) for i in range(k)]
    ys = [jax.device_put(y[i * b:(i + 1) * b]) for i in range(k)]
    return xs, ys


def build_step_entry(
    wl: Workload, data: tuple[np.ndarray, np.ndarray], fwd: Forward | None = None
) -> Runner:
    """The ``jax`` entry: per-step Python loop over device batches."""
    opt = optax.adam(LR)
    params = init_params(wl, jax.random.key(0))
    xs, ys = device_batches(wl, *data)
    return per_step_runner(make_step(wl, opt, fwd), (params, opt.init(params)), xs, ys)


def build_scan_entry(
    wl: Workload, data: tuple[np.ndarray, np.ndarray], fwd: Forward | None = None
) -> Runner:
    """The ``jax-scan`` entry: ``K`` steps per call in one ``lax.scan``."""
    opt = optax.adam(LR)
    params = init_params(wl, jax.random.key(0))
    k, b = wl.steps_per_epoch, wl.batch
    x, y = data
    xs = jax.device_put(x.reshape(k, b, *x.shape[1:]))
    ys = jax.device_put(y.reshape(k, b))
    return scanned_runner(make_scan(wl, opt, fwd), (params, opt.init(params)), xs, ys)


def build_functional_entry(
    wl: Workload,
    data: tuple[np.ndarray, np.ndarray],
    params: Any,
    apply_fn: Callable[[Any, jax.Array], jax.Array],
    *,
    x_transform: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Runner:
    """A per-step entry for any ``apply_fn(params, x) -> logits`` (Linen, Haiku): the same
    donated ``jax.jit`` + Optax step as the hand-written ``jax`` entry."""
    opt = optax.adam(LR)

    def step(carry, x, y):
        p, opt_state = carry

        def loss(q):
            logits = apply_fn(q, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        value, grads = jax.value_and_grad(loss)(p)
        updates, opt_state = opt.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), value

    x, y = data
    if x_transform is not None:
        x = x_transform(x)
    xs, ys = device_batches(wl, x, y)
    jstep = jax.jit(step, donate_argnums=(0,))
    return per_step_runner(jstep, (params, opt.init(params)), xs, ys)


def build_hoisted_entry(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``jax-hoisted`` (analysis, W5): the LSTM with its input projection hoisted."""
    if wl.kind != "lstm":
        raise Skip("LSTM (W5) only")
    return build_step_entry(wl, data, fwd=forward_lstm_hoisted)
