"""Haiku entry: ``hk.transform`` + the same donated ``jax.jit`` step as the hand-written
entry (W5: ``hk.LSTM`` under ``hk.dynamic_unroll``). Raises
:class:`benchmarks.harness.Skip` without Haiku."""

from __future__ import annotations

import jax
import numpy as np

from benchmarks.handwritten import build_functional_entry
from benchmarks.harness import Runner, Skip, require
from benchmarks.workloads import Workload

__all__ = ["build_haiku"]


def build_haiku(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``haiku``: ``hk.without_apply_rng(hk.transform(forward))``."""
    hk = require("haiku")

    if wl.kind == "mlp":

        def forward(x):
            for h in wl.hidden:
                x = jax.nn.relu(hk.Linear(h)(x))
            return hk.Linear(wl.num_classes)(x)
    elif wl.kind == "lenet":

        def forward(x):
            pool = dict(window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding="VALID")
            x = hk.max_pool(jax.nn.relu(hk.Conv2D(6, 5, padding="SAME")(x)), **pool)
            x = hk.max_pool(jax.nn.relu(hk.Conv2D(16, 5, padding="VALID")(x)), **pool)
            x = hk.Flatten()(x)
            x = jax.nn.relu(hk.Linear(120)(x))
            x = jax.nn.relu(hk.Linear(84)(x))
            return hk.Linear(wl.num_classes)(x)
    elif wl.kind == "lstm":

        def forward(x):  # x: (B, T, F)
            core = hk.LSTM(wl.hidden[0])
            hs, _ = hk.dynamic_unroll(core, x, core.initial_state(x.shape[0]), time_major=False)
            return hk.Linear(wl.num_classes)(hs[:, -1])
    else:
        raise Skip(f"no Haiku model for workload kind {wl.kind!r}")

    net = hk.without_apply_rng(hk.transform(forward))
    params = net.init(jax.random.key(0), np.zeros((wl.batch, *wl.input_shape), np.float32))
    return build_functional_entry(wl, data, params, net.apply)
