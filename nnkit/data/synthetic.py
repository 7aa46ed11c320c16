"""Generated 2-D classification sets: logic gates, five_points, moons, circles, spirals, blobs.

Every loader returns ``x`` (n, 2) float32 and ``y`` (n,) int32 (``blobs`` may have ``dim`` != 2)
and is deterministic given ``seed`` (a NumPy ``Generator`` seed).
"""

from __future__ import annotations

import numpy as np

from nnkit.data.dataset import Dataset, check_generated_size
from nnkit.data.registry import register

__all__ = ["logic_gate", "five_points", "moons", "circles", "spirals", "blobs"]

_GATES = {
    "and": (0, 0, 0, 1),
    "or": (0, 1, 1, 1),
    "nand": (1, 1, 1, 0),
    "xor": (0, 1, 1, 0),
}

FIVE_POINTS_X = np.array(
    [[1.2, -3.4], [2.3, 2.8], [-0.7, 1.2], [3.2, -0.4], [-1.3, 2.3]], dtype=np.float32
)
FIVE_POINTS_Y = np.array([0, 0, 1, 1, 2], dtype=np.int32)


def _class_counts(n: int, k: int) -> list[int]:
    if n < k:
        raise ValueError(f"need at least one point per class: n={n} < {k} classes")
    return [n // k + (i < n % k) for i in range(k)]


def _shuffled(rng: np.random.Generator, x: np.ndarray, y: np.ndarray) -> tuple:
    perm = rng.permutation(len(y))
    return x[perm], y[perm]


def logic_gate(gate: str, seed: int = 0) -> Dataset:
    """Truth table of a 2-input gate: x (4, 2) in {0,1}, y (4,) in {0,1}.

    ``seed`` is accepted for a uniform interface and ignored (the set is fixed).
    """
    del seed
    if gate not in _GATES:
        raise ValueError(f"unknown gate {gate!r}; known: {sorted(_GATES)}")
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    return Dataset.classification(gate, x, np.array(_GATES[gate]), 2, ("0", "1"))


def five_points(seed: int = 0) -> Dataset:
    """The course example: x (5, 2), y = 0, 0, 1, 1, 2 (3 classes). ``seed`` is ignored."""
    del seed
    return Dataset.classification("five_points", FIVE_POINTS_X.copy(), FIVE_POINTS_Y.copy(), 3)


def moons(n: int = 200, noise: float = 0.1, seed: int = 0) -> Dataset:
    """Two interleaving half circles: x (n, 2), y (n,) in {0, 1}; ``noise`` is the xy std."""
    check_generated_size("moons", n, 2)
    rng = np.random.default_rng(seed)
    n0, n1 = _class_counts(n, 2)
    t0, t1 = rng.uniform(0, np.pi, n0), rng.uniform(0, np.pi, n1)
    outer = np.stack([np.cos(t0), np.sin(t0)], 1)
    inner = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)
    x = np.concatenate([outer, inner]) + noise * rng.standard_normal((n, 2))
    y = np.repeat([0, 1], [n0, n1])
    return Dataset.classification("moons", *_shuffled(rng, x, y), 2)


def circles(n: int = 200, noise: float = 0.05, factor: float = 0.5, seed: int = 0) -> Dataset:
    """A small circle (radius ``factor``, class 1) inside a unit circle (class 0): x (n, 2)."""
    if not 0 < factor < 1:
        raise ValueError(f"factor must be in (0, 1), got {factor}")
    check_generated_size("circles", n, 2)
    rng = np.random.default_rng(seed)
    n0, n1 = _class_counts(n, 2)
    t = rng.uniform(0, 2 * np.pi, n)
    r = np.repeat([1.0, factor], [n0, n1])
    x = np.stack([r * np.cos(t), r * np.sin(t)], 1) + noise * rng.standard_normal((n, 2))
    y = np.repeat([0, 1], [n0, n1])
    return Dataset.classification("circles", *_shuffled(rng, x, y), 2)


def spirals(
    n: int = 300, arms: int = 2, noise: float = 0.02, turns: float = 1.0, seed: int = 0
) -> Dataset:
    """``arms`` interleaved spirals, one class each: x (n, 2) within the unit disc (+ noise).

    Arm ``j`` is ``r * (cos θ, sin θ)`` with ``θ = 2πj/arms + 2π·turns·r``, ``r ~ U(0, 1)``.
    """
    if arms < 1:
        raise ValueError(f"arms must be >= 1, got {arms}")
    check_generated_size("spirals", n, 2)
    rng = np.random.default_rng(seed)
    counts = _class_counts(n, arms)
    y = np.repeat(np.arange(arms), counts)
    r = rng.uniform(0, 1, n)
    theta = 2 * np.pi * y / arms + 2 * np.pi * turns * r
    x = np.stack([r * np.cos(theta), r * np.sin(theta)], 1) + noise * rng.standard_normal((n, 2))
    return Dataset.classification("spirals", *_shuffled(rng, x, y), arms)


def blobs(
    n: int = 300,
    centers: int = 3,
    std: float = 1.0,
    dim: int = 2,
    box: float = 6.0,
    seed: int = 0,
) -> Dataset:
    """Isotropic Gaussian clusters: centres ~ U(-box, box)^dim, x (n, dim), y (n,) cluster id."""
    check_generated_size("blobs", n, dim)
    rng = np.random.default_rng(seed)
    counts = _class_counts(n, centers)
    mu = rng.uniform(-box, box, (centers, dim))
    y = np.repeat(np.arange(centers), counts)
    x = mu[y] + std * rng.standard_normal((n, dim))
    return Dataset.classification("blobs", *_shuffled(rng, x, y), centers)


def _gate_loader(gate: str):
    def load_gate(seed: int = 0) -> Dataset:
        return logic_gate(gate, seed)

    load_gate.__name__ = f"load_{gate}"
    load_gate.__doc__ = f"The {gate.upper()} truth table: x (4, 2), y (4,) in {{0, 1}}."
    return load_gate


for _g in _GATES:
    register(_g, _gate_loader(_g), f"{_g.upper()} gate truth table: 4 points in {{0,1}}^2")
register("five_points", five_points, "course example: 5 fixed points in 2-D, 3 classes")
register("moons", moons, "two interleaving half circles in 2-D (n, noise, seed)")
register("circles", circles, "a circle inside a circle in 2-D (n, noise, factor, seed)")
register("spirals", spirals, "k interleaved spiral arms in 2-D, one class each (n, arms, seed)")
register("blobs", blobs, "isotropic Gaussian clusters (n, centers, std, dim, seed)")
