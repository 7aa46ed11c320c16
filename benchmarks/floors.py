"""Floors under the targets nnkit misses on a 2-core CPU, measured with hand-written code.

Neither probe runs nnkit's training code except where named: they measure what the machine
and XLA:CPU allow for the same work, so that a missed ratio can be read against its floor.

* :func:`sweep_floor_entries` (W4 on W3): the hand-written W3 epoch (``vmap`` + ``lax.scan``,
  one device) for 1, 2, 4 and 8 models, and 4 and 8 models *packed* into one network whose
  weights are block-diagonal (``x @ [W_1 | ... | W_m]`` for the shared input, then
  ``h @ blockdiag(W_1, ..., W_m)``): the same products as dense matmuls, ``m`` times the
  multiply-adds but one library call per product; and the vmap + scan epoch for 1 and 4
  models with each weight gradient computed from a laid-out ``x^T`` (``laid-out-<m>``, the
  layout :func:`nnkit.matmul.matmul` gives small weights, with and without ``vmap``) and
  the cross-entropy's ``log p_y`` picked with a one-hot mask, as nnkit's loss does.
  ``nnkit.sweep`` puts 4 of its 8 models on each core, so the 4-model epoch over the
  1-model epoch is the floor of W4's ratio (``laid-out-<m>`` where measured: nnkit's own
  layout, so the floor of what nnkit's one-model epoch is compared with).
* :func:`lstm_floor_probe` (W5): per time step of forward + backward, PyTorch's
  ``nn.LSTM`` on all threads and on one, nnkit's :func:`nnkit.layers.lstm_sequence`, and the
  recurrence's matmuls alone in JAX (a scan of the forward ``(B, F+H) @ (F+H, 4H)`` and the
  backward ``(B, 4H) @ (4H, H)`` products, then the weight gradient as one matmul): what
  XLA:CPU spends on the products before any gate arithmetic.
"""

from __future__ import annotations

import functools
import os
import statistics
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from benchmarks import handwritten, sweeps
from benchmarks.harness import Entry, Runner, Skip, require, scanned_runner, timed
from benchmarks.peers_torch import torch_device
from benchmarks.workloads import Workload
from nnkit.layers.lstm_sequence import lstm_sequence

__all__ = ["SWEEP_FLOOR_MODELS", "PACKED_MODELS", "LAID_OUT_MODELS", "SWEEP_PROBE", "LSTM_PROBE",
           "sweep_floor_entries", "step_seconds", "sweep_floor_lines", "lstm_floor_probe"]

SWEEP_PROBE = "W4's floor: the hand-written W3 epoch for several models on one device"
"""Title of the W4 floor in ``results["probes"]`` (and RESULTS.md)."""

LSTM_PROBE = "W5's floor: one forward + backward pass over the sequences, per time step"
"""Title of the W5 floor in ``results["probes"]`` (and RESULTS.md)."""

LSTM_NNKIT = "nnkit lstm_sequence, forward + backward"
LSTM_MATMULS = "JAX, the matmuls alone (forward, backward, weight gradient)"

SWEEP_FLOOR_MODELS = (1, 2, 4, 8)
"""Model counts of the hand-written vmap + scan epochs."""

LAID_OUT_MODELS = (1, 4)
"""Model counts of the vmap + scan epochs with laid-out weight gradients."""

PACKED_MODELS = (4, 8)
"""Model counts of the block-diagonal packed epochs."""


def _rates(m: int) -> list[float]:
    return [float(v) for v in np.geomspace(1e-4, 1e-2, m)] if m > 1 else [1e-3]


def _block_diagonal(w: jax.Array) -> jax.Array:
    """``(m, a, b)`` -> ``(m*a, m*b)`` with ``w[i]`` on the diagonal, zeros elsewhere."""
    m, a, b = w.shape
    eye = jnp.eye(m, dtype=w.dtype)
    return (eye[:, None, :, None] * w[:, :, None, :]).reshape(m * a, m * b)


def _packed_logits(params: dict, x: jax.Array) -> jax.Array:
    """Logits ``(B, m, classes)`` of ``m`` MLPs held as stacked ``(m, in, out)`` weights:
    one dense matmul per layer (the first over the shared input, the rest block-diagonal)."""
    n = len(params)
    h = None
    for i in range(n):
        w, b = params[f"l{i}"]["w"], params[f"l{i}"]["b"]
        m = w.shape[0]
        if h is None:
            h = x @ jnp.moveaxis(w, 0, 1).reshape(w.shape[1], -1)
        else:
            h = h @ _block_diagonal(w)
        h = h + b.reshape(-1)
        if i < n - 1:
            h = jax.nn.relu(h)
    return h.reshape(x.shape[0], m, -1)


@jax.custom_vjp
def _laid_out_dot(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` whose weight gradient is ``x^T g`` with ``x^T`` materialised (an
    optimization barrier keeps XLA from folding the transpose back into the dot)."""
    return x @ w


def _laid_out_dot_fwd(x: jax.Array, w: jax.Array):
    return x @ w, (x, w)


def _laid_out_dot_bwd(res, g: jax.Array):
    x, w = res
    return g @ w.T, lax.optimization_barrier(x.T) @ g


_laid_out_dot.defvjp(_laid_out_dot_fwd, _laid_out_dot_bwd)


def _masked_cross_entropy(logits: jax.Array, y: jax.Array) -> jax.Array:
    """Per-example cross-entropy picking ``log p_y`` with a one-hot mask, as nnkit's loss
    does (its gradient is element-wise, where a gather's is a scatter)."""
    log_p = jax.nn.log_softmax(logits)
    hit = lax.broadcasted_iota(jnp.int32, log_p.shape, 1) == y[:, None]
    return -jnp.sum(jnp.where(hit, log_p, 0.0), axis=-1)


def _forward_laid_out(wl: Workload) -> handwritten.Forward:
    """:func:`handwritten.forward` with :func:`_laid_out_dot` products (MLPs only)."""
    if wl.kind != "mlp":
        raise Skip("the laid-out floor is written for MLPs only")
    return functools.partial(handwritten.forward, dot=_laid_out_dot)


def _build_packed(wl: Workload, data: tuple[np.ndarray, np.ndarray], m: int) -> Runner:
    if wl.kind != "mlp":
        raise Skip("block-diagonal packing is written for MLPs only")
    lrs = jnp.asarray(_rates(m), jnp.float32)
    params = jax.vmap(lambda k: handwritten.init_params(wl, k))(
        jax.random.split(jax.random.key(0), m))
    adam = optax.scale_by_adam()

    def loss(p, x, y):  # the sum over models of each model's mean loss
        logits = _packed_logits(p, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y[:, None]).mean(0).sum()

    def one(carry, batch):
        p, s = carry
        value, g = jax.value_and_grad(loss)(p, *batch)
        u, s = adam.update(g, s, p)
        u = jax.tree_util.tree_map(lambda t: -lrs.reshape(-1, *([1] * (t.ndim - 1))) * t, u)
        return (optax.apply_updates(p, u), s), value / m

    k, b = wl.steps_per_epoch, wl.batch
    x, y = data
    xs, ys = jax.device_put(x.reshape(k, b, *x.shape[1:])), jax.device_put(y.reshape(k, b))
    run_k = jax.jit(lambda c, xs, ys: lax.scan(one, c, (xs, ys)), donate_argnums=(0,))
    return scanned_runner(run_k, (params, adam.init(params)), xs, ys, models=m)


def sweep_floor_entries(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> list[Entry]:
    """Entries ``vmap-scan-<m>`` and ``packed-<m>``, on the default (first) device only
    (rates count model-steps, as W4's do)."""
    out = []
    for m in SWEEP_FLOOR_MODELS:
        label = f"hand-written vmap + scan, {m} model" + ("s" if m > 1 else "")
        out.append(Entry(f"vmap-scan-{m}", label, lambda w, m=m: sweeps.build_jax_vmap(
            w, data, _rates(m), scan=True)))
    for m in PACKED_MODELS:
        out.append(Entry(f"packed-{m}", f"hand-written, {m} models packed block-diagonal",
                         lambda w, m=m: _build_packed(w, data, m)))
    for m in LAID_OUT_MODELS:
        label = (f"hand-written vmap + scan, x^T laid out, one-hot cross-entropy, {m} model"
                 + ("s" if m > 1 else ""))
        out.append(Entry(f"laid-out-{m}", label, lambda w, m=m: sweeps.build_jax_vmap(
            w, data, _rates(m), scan=True, fwd=_forward_laid_out(w),
            ce=_masked_cross_entropy)))
    return out


def step_seconds(entry: dict | None) -> float:
    """Seconds per step for all of an entry's models together (its rates count
    model-steps), from a measurement's dict; NaN if not measured."""
    entry = entry or {}
    med = entry.get("median")
    return entry.get("models", 1) / med if med else float("nan")


def sweep_floor_lines(entries: dict[str, dict]) -> list[str]:
    """Markdown table: microseconds per epoch step for all the models together, and that
    time over one model's of the same layout (``laid-out-1`` for the ``laid-out`` rows)."""

    def us(key: str) -> float:
        return 1e6 * step_seconds(entries.get(key))

    base = us("vmap-scan-1")
    lines = ["| program | models | us per step (all models) | time / one model's |",
             "|---|---|---|---|"]
    for key, e in entries.items():
        if e.get("skipped"):
            continue
        t = us(key)
        ref = us("laid-out-1") if key.startswith("laid-out") else base
        lines.append(f"| {e['label']} (`{key}`) | {e.get('models', 1)} | {t:.1f} | "
                     f"{t / ref:.2f}x |")
    return lines


def lstm_floor_probe(wl: Workload, reps: int = 5, block_s: float = 0.3) -> dict[str, Any]:
    """Median microseconds per time step of one forward + backward pass over W5's sequences
    (no optimizer), the programs interleaved in blocks of ~``block_s``. Returns
    ``{"rows": {program: us}, "threads": n, "lines": [...]}``."""
    t_len, f = wl.input_shape
    h, b = wl.hidden[0], wl.batch
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(t_len, b, f)).astype(np.float32))
    w = jnp.asarray(rng.uniform(-0.08, 0.08, (f + h, 4 * h)).astype(np.float32))
    bias = jnp.zeros(4 * h, jnp.float32)
    h0 = jnp.zeros((b, h), jnp.float32)
    probe = jnp.asarray(rng.normal(size=(b, h)).astype(np.float32))

    def nnkit_loss(w, bias):
        h_last, _ = lstm_sequence(w, bias, xs, h0, h0, 1, False)
        return jnp.sum(h_last * probe)

    nnkit_grad = jax.jit(jax.grad(nnkit_loss, argnums=(0, 1)))
    w_hh_t = jnp.asarray(w[f:].T)

    def matmuls(w, w_hh_t, xs):
        """Forward products, backward products, weight gradient: no gate arithmetic."""
        def fwd(hh, x):
            z = jnp.concatenate([x, hh], -1) @ w
            return z[:, :h], (hh, z)

        _, (hs, zs) = lax.scan(fwd, h0, xs)

        def bwd(dh, z):
            return z @ w_hh_t + dh, dh

        _, dhs = lax.scan(bwd, h0, zs, reverse=True)
        a = jnp.concatenate([xs, hs], -1).reshape(t_len * b, -1)
        return a.T @ zs.reshape(t_len * b, -1), dhs[0]

    matmuls_jit = jax.jit(matmuls)
    fns: dict[str, Callable[[], Any]] = {
        LSTM_NNKIT: lambda: jax.block_until_ready(nnkit_grad(w, bias)),
        LSTM_MATMULS: lambda: jax.block_until_ready(matmuls_jit(w, w_hh_t, xs)),
    }
    try:
        torch = require("torch")
        torch_device(torch, cpu_only=True)  # a CPU floor: no PyTorch rows off the CPU
        torch.manual_seed(0)
        lstm = torch.nn.LSTM(f, h)
        tx = torch.from_numpy(np.array(xs))
        threads = os.cpu_count() or 1

        def torch_run(n_threads: int) -> None:
            torch.set_num_threads(n_threads)
            lstm.zero_grad(set_to_none=True)
            out, _ = lstm(tx)
            out[-1].sum().backward()

        fns[f"PyTorch nn.LSTM, forward + backward, {threads} threads"] = (
            lambda: torch_run(threads))
        if threads > 1:
            fns["PyTorch nn.LSTM, forward + backward, 1 thread"] = lambda: torch_run(1)
    except Skip:
        pass
    calls = {}
    for k, fn in fns.items():  # warm up; calls per block so that a block takes ~block_s
        fn()
        calls[k] = max(1, round(block_s / timed(fn)))
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):  # blocks, not single calls: a program just before must not leave
        for k, fn in fns.items():  # its threads spinning into the first calls timed here
            n = calls[k]
            times[k].append(timed(lambda fn=fn, n=n: [fn() for _ in range(n)])
                            / (n * t_len) * 1e6)
    rows = {k: statistics.median(v) for k, v in times.items()}
    lines = ["| program | us per time step |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in rows.items()]
    return {"rows": rows, "threads": os.cpu_count() or 1, "lines": lines}
