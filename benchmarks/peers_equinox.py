"""Equinox entry: modules on single examples, ``jax.vmap`` over the batch, the tutorial's
``eqx.filter_jit`` step (W5: ``eqx.nn.LSTMCell`` scanned over one sequence's time steps, as
Equinox's RNN example does). Raises :class:`benchmarks.harness.Skip` without Equinox."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from benchmarks.handwritten import device_batches
from benchmarks.harness import Runner, Skip, per_step_runner, require
from benchmarks.workloads import LR, Workload

__all__ = ["build_equinox"]


def _model(wl: Workload, eqx: Any) -> Any:
    keys = jax.random.split(jax.random.key(0), 8)
    if wl.kind == "mlp":
        sizes = [wl.input_shape[-1], *wl.hidden, wl.num_classes]

        class MLP(eqx.Module):
            layers: list

            def __init__(self):
                self.layers = [eqx.nn.Linear(a, b, key=k) for (a, b), k in
                               zip(zip(sizes[:-1], sizes[1:], strict=True), keys, strict=False)]

            def __call__(self, x):
                for lyr in self.layers[:-1]:
                    x = jax.nn.relu(lyr(x))
                return self.layers[-1](x)

        return MLP()
    if wl.kind == "lenet":

        class LeNet(eqx.Module):
            c1: Any
            c2: Any
            f1: Any
            f2: Any
            f3: Any
            pool: Any

            def __init__(self):
                c = wl.input_shape[-1]
                self.c1 = eqx.nn.Conv2d(c, 6, 5, padding=2, key=keys[0])
                self.c2 = eqx.nn.Conv2d(6, 16, 5, key=keys[1])
                self.f1 = eqx.nn.Linear(400, 120, key=keys[2])
                self.f2 = eqx.nn.Linear(120, 84, key=keys[3])
                self.f3 = eqx.nn.Linear(84, wl.num_classes, key=keys[4])
                self.pool = eqx.nn.MaxPool2d(2, 2)

            def __call__(self, x):  # x: (C, H, W)
                x = self.pool(jax.nn.relu(self.c1(x)))
                x = self.pool(jax.nn.relu(self.c2(x)))
                x = x.reshape(-1)
                x = jax.nn.relu(self.f1(x))
                x = jax.nn.relu(self.f2(x))
                return self.f3(x)

        return LeNet()
    if wl.kind == "lstm":

        class LSTMNet(eqx.Module):
            cell: Any
            head: Any

            def __init__(self):
                self.cell = eqx.nn.LSTMCell(wl.input_shape[-1], wl.hidden[0], key=keys[0])
                self.head = eqx.nn.Linear(wl.hidden[0], wl.num_classes, key=keys[1])

            def __call__(self, x):  # x: (T, F), one sequence
                def step(carry, x_t):
                    return self.cell(x_t, carry), None

                zeros = jnp.zeros((self.cell.hidden_size,), x.dtype)
                (h, _), _ = lax.scan(step, (zeros, zeros), x)
                return self.head(h)

        return LSTMNet()
    raise Skip(f"no Equinox model for workload kind {wl.kind!r}")


def build_equinox(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``equinox``: ``eqx.filter_jit`` + ``eqx.filter_value_and_grad`` step."""
    eqx = require("equinox")
    model = _model(wl, eqx)
    opt = optax.adam(LR)
    opt_state = opt.init(eqx.filter(model, eqx.is_inexact_array))

    def loss_fn(m, x, y):
        logits = jax.vmap(m)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @eqx.filter_jit
    def step(carry, x, y):
        m, s = carry
        loss, grads = eqx.filter_value_and_grad(loss_fn)(m, x, y)
        updates, s = opt.update(grads, s, eqx.filter(m, eqx.is_inexact_array))
        return (eqx.apply_updates(m, updates), s), loss

    x, y = data
    if wl.kind == "lenet":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # Equinox convs are channels-first
    xs, ys = device_batches(wl, x, y)
    return per_step_runner(step, (model, opt_state), xs, ys)
