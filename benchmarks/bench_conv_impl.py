"""Times ``Conv2D``'s implementations (``xla``, ``im2col``, ``toeplitz``; forward + backward).

    python benchmarks/bench_conv_impl.py            # LeNet-5, batch 128
    python benchmarks/bench_conv_impl.py --sweep    # + single conv layers

LeNet-5 is timed two ways: one jitted ``value_and_grad`` + SGD step per call ("step"), and
``--scan`` such steps in one jitted ``lax.scan`` ("scan", per step), which is how
``nnkit.fit(mode="scan")`` runs an epoch. Reported: the fastest (min) wall time over
interleaved repeats after a warm-up (the min is the least disturbed by other processes on a
shared machine), plus the max difference of loss and gradients from the ``xla`` impl.
``--sweep`` also prints what ``impl="auto"`` picks for each single layer.

Memory note: im2col materialises a ``(taps * C, N * prod(out))`` patch matrix per conv
(toeplitz: ``kh`` row slices, ``(N * H_out, kh * W_pad * C)``, plus its banded weights). On a
VM where freshly mapped pages are expensive, glibc returning large blocks to the OS after
every call can cost ~1 ms per MB; compare with
``MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
from jax import lax

import nnkit
from nnkit.layers import Conv2D, Dense, Flatten, MaxPool2D, Relu
from nnkit.layers import _spatial as sp
from nnkit.layers import conv as conv_mod


def lenet5(impl: str) -> nnkit.Layer:
    """LeNet-5 (28x28x1 -> 10), 61,706 params."""
    return nnkit.serial(
        Conv2D(6, 5, padding="SAME", impl=impl), Relu(), MaxPool2D(2),
        Conv2D(16, 5, padding="VALID", impl=impl), Relu(), MaxPool2D(2),
        Flatten(), Dense(120), Relu(), Dense(84), Relu(), Dense(10),
    )


def sgd_step(model: nnkit.Layer, state):
    """``(params, (x, y)) -> (params, (loss, grads))``: cross-entropy, SGD lr 0.01."""

    def loss(params, x, y):
        logits, _ = model.apply(params, state, x)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def step(params, batch):
        value, grads = jax.value_and_grad(loss)(params, *batch)
        new = jax.tree_util.tree_map(lambda p, g: p - 0.01 * g, params, grads)
        return new, (value, grads)

    return step


def time_min(fns: dict, args: dict, repeats: int) -> dict[str, float]:
    """Min ms per call, the entries interleaved so background load hits all alike."""
    for name, f in fns.items():  # compile + warm up
        jax.block_until_ready(f(*args[name]))
    times: dict[str, list[float]] = {n: [] for n in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args[name]))
            times[name].append((time.perf_counter() - t0) * 1e3)
    return {n: min(t) for n, t in times.items()}


IMPLS = ("xla", "im2col", "toeplitz")


def bench_lenet(batch: int, scan: int, repeats: int) -> None:
    xs = jax.random.normal(jax.random.key(1), (scan, batch, 28, 28, 1))
    ys = jax.random.randint(jax.random.key(2), (scan, batch), 0, 10)
    fns, args, outs = {}, {}, {}
    for impl in IMPLS:
        model = lenet5(impl)
        _, params, state = model.init(jax.random.key(0), (28, 28, 1))
        step = sgd_step(model, state)
        fns[f"{impl} step"] = jax.jit(step)
        args[f"{impl} step"] = (params, (xs[0], ys[0]))
        fns[f"{impl} scan"] = jax.jit(lambda p, b, step=step: lax.scan(step, p, b)[0])
        args[f"{impl} scan"] = (params, (xs, ys))
        outs[impl] = fns[f"{impl} step"](params, (xs[0], ys[0]))[1]
    diff = {
        impl: max(float(jnp.max(jnp.abs(a - b)))
                  for a, b in zip(jax.tree.leaves(outs["xla"]), jax.tree.leaves(outs[impl]),
                                  strict=True))
        for impl in IMPLS[1:]
    }
    ms = time_min(fns, args, repeats)
    print(f"LeNet-5 train step (fwd+bwd+SGD), batch {batch}, backend {jax.default_backend()}")
    print(f"  {'':28s} " + "  ".join(f"{i:>10s}" for i in IMPLS) + "   (ms per step)")
    for kind, per in (("step", 1), ("scan", scan)):
        label = "one jitted step per call" if kind == "step" else f"{scan} steps in a lax.scan"
        row = "  ".join(f"{ms[f'{i} {kind}'] / per:10.2f}" for i in IMPLS)
        best = min(IMPLS, key=lambda i: ms[f"{i} {kind}"])
        print(f"  {label:28s} {row}   fastest: {best}")
    print("  max |diff| of loss and grads from xla: "
          + ", ".join(f"{i} {d:.1e}" for i, d in diff.items()))


def bench_sweep(batch: int, repeats: int) -> None:
    print(f"single Conv2D, grads wrt x and w (one jitted call), batch {batch}, SAME")
    print("  k  size  C_in C_out groups " + "".join(f"{i + ' ms':>13s}" for i in IMPLS)
          + "   auto picks")
    for k, hw, cin, cout, g in [(5, 28, 1, 6, 1), (5, 14, 6, 16, 1), (5, 32, 3, 6, 1),
                                (5, 28, 1, 16, 1), (5, 28, 1, 32, 1), (3, 28, 1, 8, 1),
                                (3, 32, 3, 16, 1),
                                (3, 16, 16, 32, 1), (3, 8, 64, 64, 1), (1, 16, 32, 32, 1),
                                (7, 32, 3, 16, 1), (3, 16, 32, 32, 32), (3, 16, 16, 32, 2)]:
        x = jax.random.normal(jax.random.key(1), (batch, hw, hw, cin))
        fns, args = {}, {}
        for impl in IMPLS:
            model = Conv2D(cout, k, groups=g, impl=impl)
            _, params, state = model.init(jax.random.key(0), (hw, hw, cin))

            def loss(p, x, model=model):
                return jnp.sum(jnp.sin(model.apply(p, {}, x)[0]))

            fns[impl] = jax.jit(jax.grad(loss, argnums=(0, 1)))
            args[impl] = (params, x)
        ms = time_min(fns, args, repeats)
        w_shape = (k, k, cin // g, cout)
        pads = sp.resolve_pads("SAME", (hw, hw), (k, k), (1, 1), (1, 1))
        pick = conv_mod._pick_impl("auto", (k, k), g, x.shape, w_shape, (1, 1), pads, (1, 1))
        print(f"  {k}  {hw:4d}  {cin:4d} {cout:5d} {g:6d} "
              + "".join(f"{ms[i]:13.2f}" for i in IMPLS) + f"   {pick}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--scan", type=int, default=8, help="steps per lax.scan call")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--sweep", action="store_true")
    a = ap.parse_args()
    bench_lenet(a.batch, a.scan, a.repeats)
    if a.sweep:
        bench_sweep(a.batch, max(a.repeats // 2, 3))


if __name__ == "__main__":
    main()
