"""Flax entries: NNX with ``nnx.jit`` (the tutorial loop), NNX with ``nnx.split``/``merge``
around a plain donated ``jax.jit`` (Flax's documented fast path), and Linen. W5's LSTM is
each API's own: ``nnx.RNN(nnx.OptimizedLSTMCell)`` and ``nn.RNN(nn.OptimizedLSTMCell)``.

Each builder raises :class:`benchmarks.harness.Skip` when Flax is not installed.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import numpy as np
import optax

from benchmarks.handwritten import build_functional_entry, device_batches
from benchmarks.harness import Runner, Skip, per_step_runner, require
from benchmarks.workloads import LR, Workload

__all__ = ["build_nnx", "build_nnx_split", "build_linen"]


def _nnx_model(wl: Workload, nnx: Any) -> Any:
    rngs = nnx.Rngs(0)
    if wl.kind == "mlp":
        sizes = [wl.input_shape[-1], *wl.hidden, wl.num_classes]

        class MLP(nnx.Module):
            def __init__(self):
                self.n = len(sizes) - 1
                for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
                    setattr(self, f"l{i}", nnx.Linear(a, b, rngs=rngs))

            def __call__(self, x):
                for i in range(self.n):
                    x = getattr(self, f"l{i}")(x)
                    if i < self.n - 1:
                        x = nnx.relu(x)
                return x

        return MLP()
    if wl.kind == "lenet":

        class LeNet(nnx.Module):
            def __init__(self):
                c = wl.input_shape[-1]
                self.c1 = nnx.Conv(c, 6, (5, 5), padding="SAME", rngs=rngs)
                self.c2 = nnx.Conv(6, 16, (5, 5), padding="VALID", rngs=rngs)
                self.f1 = nnx.Linear(400, 120, rngs=rngs)
                self.f2 = nnx.Linear(120, 84, rngs=rngs)
                self.f3 = nnx.Linear(84, wl.num_classes, rngs=rngs)

            def __call__(self, x):
                x = nnx.max_pool(nnx.relu(self.c1(x)), (2, 2), strides=(2, 2))
                x = nnx.max_pool(nnx.relu(self.c2(x)), (2, 2), strides=(2, 2))
                x = x.reshape(x.shape[0], -1)
                x = nnx.relu(self.f1(x))
                x = nnx.relu(self.f2(x))
                return self.f3(x)

        return LeNet()
    if wl.kind == "lstm":

        class LSTMNet(nnx.Module):
            def __init__(self):
                cell = nnx.OptimizedLSTMCell(wl.input_shape[-1], wl.hidden[0], rngs=rngs)
                self.rnn = nnx.RNN(cell, rngs=rngs)
                self.head = nnx.Linear(wl.hidden[0], wl.num_classes, rngs=rngs)

            def __call__(self, x):  # x: (B, T, F)
                return self.head(self.rnn(x)[:, -1])

        return LSTMNet()
    raise Skip(f"no NNX model for workload kind {wl.kind!r}")


def _nnx_loss(model: Any, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def build_nnx(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``nnx``: ``@nnx.jit`` step mutating the model and ``nnx.Optimizer`` in place."""
    nnx = require("flax.nnx")
    model = _nnx_model(wl, nnx)
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(_nnx_loss)(model, x, y)
        optimizer.update(model, grads)
        return loss

    xs, ys = device_batches(wl, *data)

    def call(f, c, x, y):
        return c, f(c[0], c[1], x, y)

    return per_step_runner(train_step, (model, optimizer), xs, ys, call=call)


def build_nnx_split(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``nnx-split``: ``nnx.split`` once, a donated ``jax.jit`` step that ``nnx.merge``-s."""
    nnx = require("flax.nnx")
    model = _nnx_model(wl, nnx)
    optimizer = nnx.Optimizer(model, optax.adam(LR), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))

    @partial(jax.jit, donate_argnums=(0,))
    def train_step(state, x, y):
        model, optimizer = nnx.merge(graphdef, state)
        loss, grads = nnx.value_and_grad(_nnx_loss)(model, x, y)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    xs, ys = device_batches(wl, *data)
    return per_step_runner(train_step, state, xs, ys)


def build_linen(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``linen``: a Linen module, ``apply`` inside the same donated jit step as ``jax``."""
    nn = require("flax.linen")

    if wl.kind == "mlp":

        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                for h in wl.hidden:
                    x = nn.relu(nn.Dense(h)(x))
                return nn.Dense(wl.num_classes)(x)
    elif wl.kind == "lenet":

        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                x = nn.max_pool(nn.relu(nn.Conv(6, (5, 5), padding="SAME")(x)), (2, 2), (2, 2))
                x = nn.max_pool(nn.relu(nn.Conv(16, (5, 5), padding="VALID")(x)), (2, 2),
                                (2, 2))
                x = x.reshape(x.shape[0], -1)
                x = nn.relu(nn.Dense(120)(x))
                x = nn.relu(nn.Dense(84)(x))
                return nn.Dense(wl.num_classes)(x)
    elif wl.kind == "lstm":

        class Net(nn.Module):
            @nn.compact
            def __call__(self, x):
                hs = nn.RNN(nn.OptimizedLSTMCell(wl.hidden[0]))(x)
                return nn.Dense(wl.num_classes)(hs[:, -1])
    else:
        raise Skip(f"no Linen model for workload kind {wl.kind!r}")

    net = Net()
    x0 = np.zeros((wl.batch, *wl.input_shape), np.float32)
    params = net.init(jax.random.key(0), x0)["params"]
    return build_functional_entry(wl, data, params, lambda p, x: net.apply({"params": p}, x))
