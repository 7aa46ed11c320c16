"""Probes that explain the numbers: small measurements run by :mod:`benchmarks.run`.

* :func:`shuffle_probe`: cost of an epoch's shuffle: ``jax.random.permutation`` on the
  device, the single-operand sort of packed ``(random bits | index)`` keys that
  :func:`nnkit.data.shuffle.permutation` uses on the device (``nnkit.data.epoch_batches``),
  and the host-side order :func:`nnkit.train.order.epoch_order` that ``fit`` draws while
  the device runs the previous epoch.
* :func:`overhead_entries`: the hand-written W3 step with nnkit's per-step extras added one
  at a time (learning rate injected in the optimizer state, a step counter and key in the
  carry, metrics), to attribute the per-call overhead of ``make_train_step`` on tiny models;
  and with 1, 2 and 4 independent ``int32`` counters (and the 4 as one array), which show
  that the cost is in how many kernels are ready at once, not in how many there are.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks import handwritten, nnkit_entries
from benchmarks.harness import Entry, Runner, per_step_runner, timed
from benchmarks.workloads import LR, Workload
from nnkit import optim
from nnkit.data.shuffle import permutation
from nnkit.train.order import epoch_order, key_words

__all__ = ["packed_permutation", "shuffle_probe", "overhead_entries"]


packed_permutation = permutation  # nnkit's device shuffle (nnkit.data.shuffle)


def shuffle_probe(sizes: tuple[int, ...] = (3200, 60000), reps: int = 7) -> dict[str, Any]:
    """Median ms of one epoch's shuffle for each size: ``jax.random.permutation`` and
    :func:`packed_permutation` (jitted, on the device) and the host-side
    :func:`nnkit.train.order.epoch_order` (batch 32) that ``fit`` draws while the device
    runs the previous epoch (calls interleaved). Returns ``{"rows": [...], "lines": [...]}``.
    """
    key = jax.random.key(0)
    words = key_words(jax.random.key_data(key))
    rows = []
    for n in sizes:
        dev: dict[str, Callable] = {
            "jax.random.permutation": jax.jit(lambda k, n=n: jax.random.permutation(k, n)),
            "packed sort": jax.jit(lambda k, n=n: packed_permutation(k, n)),
        }
        fns: dict[str, Callable] = {
            name: (lambda f=f: jax.block_until_ready(f(key))) for name, f in dev.items()}
        fns["host epoch_order"] = lambda n=n: epoch_order(words, 1, n, 32)
        for f in fns.values():
            f()
        times: dict[str, list[float]] = {name: [] for name in fns}
        for _ in range(reps):
            for name, f in fns.items():
                times[name].append(timed(f) * 1e3)
        rows.append({"n": n, **{name: statistics.median(t) for name, t in times.items()}})
    lines = ["| n | jax.random.permutation ms | packed sort ms | host epoch_order ms |",
             "|---|---|---|---|"]
    lines += [f"| {r['n']:,} | {r['jax.random.permutation']:.2f} | {r['packed sort']:.2f} | "
              f"{r['host epoch_order']:.2f} |" for r in rows]
    return {"rows": rows, "lines": lines}


def _variant(
    wl: Workload, data, *, inject: bool, counters: bool, metrics: bool, scalars: int = 0,
    packed: bool = False,
) -> Runner:
    """The hand-written step plus some of nnkit's extras (see module docstring)."""
    opt = optim.make("adam", LR) if inject else optax.adam(LR)
    params = handwritten.init_params(wl, jax.random.key(0))

    def step(carry, x, y):
        p, s = carry[0], carry[1]

        def lf(q):
            logits = handwritten.forward(wl, q, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits

        (loss, logits), g = jax.value_and_grad(lf, has_aux=True)(p)
        u, s = opt.update(g, s, p)
        p = optax.apply_updates(p, u)
        out: Any = loss
        if metrics:
            out = {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == y),
                   "grad_norm": optax.tree.norm(g)}
        new = (p, s, carry[2] + 1, carry[3]) if counters else (p, s)
        if scalars:
            new = (*new, carry[-1] + 1 if packed else [v + 1 for v in carry[-1]])
        return new, out

    carry: tuple = (params, opt.init(params))
    if counters:
        carry += (jnp.zeros((), jnp.int32), jax.random.key_data(jax.random.key(0)))
    if scalars:
        carry += (jnp.zeros((scalars,), jnp.int32) if packed else
                  [jnp.zeros((), jnp.int32) for _ in range(scalars)],)

    def call(f, c, x, y):
        c, out = f(c, x, y)
        return c, out["loss"] if metrics else out

    return per_step_runner(jax.jit(step, donate_argnums=(0,)), carry,
                           *handwritten.device_batches(wl, *data), call=call)


def overhead_entries(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> list[Entry]:
    """Per-step entries attributing nnkit's per-call overhead (on W3)."""
    specs = {
        "jax": ("hand-written", {}),
        "jax+inject": ("+ lr injected (nnkit.optim.make)", {"inject": True}),
        "jax+counters": ("+ step counter and key in the carry", {"counters": True}),
        "jax+metrics": ("+ accuracy, grad_norm outputs", {"metrics": True}),
        "jax+inject+counters": ("+ lr injected + counter/key", {"inject": True,
                                                                "counters": True}),
        "jax+all": ("+ all three", {"inject": True, "counters": True, "metrics": True}),
        "jax+1op": ("+ 1 independent int32 counter (+1)", {"scalars": 1}),
        "jax+2ops": ("+ 2 independent int32 counters (+1 each)", {"scalars": 2}),
        "jax+4ops": ("+ 4 independent int32 counters (+1 each)", {"scalars": 4}),
        "jax+4packed": ("+ the same 4 counters as one int32[4] array", {"scalars": 4,
                                                                        "packed": True}),
    }
    out = []
    for k, (label, kw) in specs.items():
        full = {"inject": False, "counters": False, "metrics": False, "scalars": 0,
                "packed": False, **kw}
        out.append(Entry(k, label, lambda w, full=full: _variant(w, data, **full)))
    out.append(Entry("nnkit-step", "nnkit make_train_step",
                     lambda w: nnkit_entries.build_step_entry(w, data)))
    out.append(Entry("nnkit-step-lean", "nnkit step, no metrics, plain optax.adam",
                     lambda w: nnkit_entries.build_step_entry(w, data, lean=True)))
    return out
