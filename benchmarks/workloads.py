"""The benchmark workloads: model shapes, synthetic data and analytic FLOP counts.

Every framework trains the same model on the same synthetic data (float32, MNIST shape for
W1/W2) with Adam (lr 1e-3) and mean softmax cross-entropy over integer labels.

* W1: MLP 784-512-512-10, ReLU, batch 128.
* W2: LeNet-5 on 28x28x1 (conv 6@5x5 SAME, ReLU, max-pool 2, conv 16@5x5 VALID, ReLU,
  max-pool 2, flatten 400, dense 120-84-10 with ReLU), batch 128.
* W3: MLP 2-16-16-2, ReLU, batch 32.
* W5: LSTM (hidden 128) over sequences ``(64, 32)``, the last hidden state -> dense 10,
  batch 64.

(W4, the learning-rate sweep, reuses W1 and W3; see :mod:`benchmarks.sweeps`.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Workload", "WORKLOADS", "get", "synthetic", "flops_per_step", "LR"]

LR = 1e-3
"""Adam learning rate used by every entry."""


@dataclass(frozen=True)
class Workload:
    """One training workload.

    Attributes:
      name: ``"W1"`` ... ``"W5"``.
      title: one-line description for tables.
      kind: ``"mlp"``, ``"lenet"`` or ``"lstm"``.
      batch: examples per step.
      input_shape: per-example input shape (no batch dim); channels-last for images.
      num_classes: number of output classes.
      hidden: MLP hidden widths, or ``(lstm_hidden,)``.
      steps_per_epoch: ``K``: the scanned entries run ``K`` steps per call and the
        per-step entries cycle through the same ``K`` batches (``K * batch`` examples).
    """

    name: str
    title: str
    kind: str
    batch: int
    input_shape: tuple[int, ...]
    num_classes: int
    hidden: tuple[int, ...]
    steps_per_epoch: int

    @property
    def n(self) -> int:
        """Examples in the synthetic training set: ``steps_per_epoch * batch``."""
        return self.steps_per_epoch * self.batch


WORKLOADS: dict[str, Workload] = {
    "W1": Workload("W1", "MLP 784-512-512-10, b128", "mlp", 128, (784,), 10, (512, 512), 100),
    "W2": Workload("W2", "LeNet-5, 28x28x1, b128", "lenet", 128, (28, 28, 1), 10, (), 25),
    "W3": Workload("W3", "MLP 2-16-16-2, b32", "mlp", 32, (2,), 2, (16, 16), 100),
    "W5": Workload("W5", "LSTM h128, T=64, F=32, b64", "lstm", 64, (64, 32), 10, (128,), 10),
}


def get(name: str) -> Workload:
    """The workload called ``name`` (``"W1"``, ...); ValueError naming the known ones."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {sorted(WORKLOADS)}") from None


def synthetic(wl: Workload, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: ``x`` float32 ``(n, *input_shape)`` standard normal (images in [0, 1]),
    ``y`` int32 ``(n,)`` uniform in ``[0, num_classes)``; ``n = wl.n``."""
    rng = np.random.default_rng(seed)
    shape = (wl.n, *wl.input_shape)
    if wl.kind == "lenet":
        x = rng.random(shape, dtype=np.float32)
    else:
        x = rng.standard_normal(shape, dtype=np.float32)
    y = rng.integers(0, wl.num_classes, size=(wl.n,), dtype=np.int32)
    return x, y


# ----------------------------------------------------------------------------- FLOPs


def _layer_macs(wl: Workload) -> list[tuple[float, bool]]:
    """``[(multiply-adds per example of a matmul/conv layer, is_first_layer), ...]``."""
    if wl.kind == "mlp":
        sizes = [wl.input_shape[-1], *wl.hidden, wl.num_classes]
        return [(a * b, i == 0) for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:],
                                                                 strict=True))]
    if wl.kind == "lenet":
        h, w, c = wl.input_shape
        conv1 = h * w * 6 * (5 * 5 * c)  # SAME: 28x28 outputs
        h2, w2 = h // 2 - 4, w // 2 - 4  # VALID 5x5 on 14x14 -> 10x10
        conv2 = h2 * w2 * 16 * (5 * 5 * 6)
        flat = (h2 // 2) * (w2 // 2) * 16
        return [(conv1, True), (conv2, False), (flat * 120, False), (120 * 84, False),
                (84 * wl.num_classes, False)]
    if wl.kind == "lstm":
        t, f = wl.input_shape
        hid = wl.hidden[0]
        return [(t * f * 4 * hid, True), (t * hid * 4 * hid, False),
                (hid * wl.num_classes, False)]
    raise ValueError(f"unknown workload kind {wl.kind!r}")


def flops_per_step(wl: Workload) -> float:
    """Analytic FLOPs of one training step, counting matmuls/convolutions only.

    Forward ``F = 2 * B * sum(MACs)``; backward adds the weight gradients (``F``) and the
    input gradients (``F`` less the first layer's, whose input needs no gradient), so
    ``step = 3F - 2 * B * MACs_first``. Element-wise work and Adam are left out (small).
    """
    layers = _layer_macs(wl)
    fwd = 2.0 * wl.batch * sum(m for m, _ in layers)
    first = 2.0 * wl.batch * sum(m for m, is_first in layers if is_first)
    return 3.0 * fwd - first
