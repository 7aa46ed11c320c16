"""Parameter initializers: ``init(key, shape, dtype=float32) -> array``.

Fans follow the layouts nnkit uses: Dense ``(in, out)``; convolution kernels
``(*spatial, in, out)`` (HWIO), so ``fan_in = prod(spatial) * in`` and
``fan_out = prod(spatial) * out``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jax.typing import DTypeLike

Array = jax.Array
Initializer = Callable[..., Array]
"""``init(key, shape, dtype=float32) -> array``."""
InitSpec = str | Initializer
"""An initializer or its name (``"he_normal"``), as layers take them."""

__all__ = [
    "zeros", "ones", "constant", "normal", "uniform", "he_normal", "he_uniform",
    "kaiming_normal", "kaiming_uniform", "glorot_normal", "glorot_uniform", "xavier_normal",
    "xavier_uniform", "lecun_normal", "lecun_uniform", "orthogonal", "course_weight",
    "course_bias", "fans", "gain", "get", "Initializer", "InitSpec",
]


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` for Dense ``(in, out)`` and HWIO kernels ``(*k, in, out)``."""
    shape = tuple(shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def gain(nonlinearity: str = "relu", negative_slope: float = 0.01) -> float:
    """Recommended gain: relu sqrt(2), leaky_relu sqrt(2/(1+a^2)), tanh 5/3, else 1."""
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        return math.sqrt(2.0 / (1.0 + negative_slope**2))
    if nonlinearity == "tanh":
        return 5.0 / 3.0
    if nonlinearity in ("linear", "sigmoid", "identity"):
        return 1.0
    raise ValueError(f"unknown nonlinearity {nonlinearity!r} for gain")


def zeros(key: Array | None, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
    """All zeros."""
    return jnp.zeros(shape, dtype)


def ones(key: Array | None, shape: Sequence[int], dtype: DTypeLike = jnp.float32) -> Array:
    """All ones."""
    return jnp.ones(shape, dtype)


def constant(value: float) -> Initializer:
    """Returns an initializer filling with ``value``."""

    def init(key, shape, dtype=jnp.float32):
        return jnp.full(shape, value, dtype)

    return init


def normal(stddev: float = 0.01, mean: float = 0.0) -> Initializer:
    """``N(mean, stddev^2)``."""

    def init(key, shape, dtype=jnp.float32):
        return mean + stddev * jax.random.normal(key, shape, dtype)

    return init


def uniform(low: float = -0.05, high: float = 0.05) -> Initializer:
    """``U[low, high)``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, low, high)

    return init


def _variance_scaling(scale: float, mode: str, distribution: str) -> Initializer:
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"unknown mode {mode!r}; known: 'fan_avg', 'fan_in', 'fan_out'")
    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        if n <= 0:
            raise ValueError(f"{mode} of shape {tuple(shape)} is {n}; cannot scale by 1/{mode}")
        var = scale / n
        if distribution == "normal":
            return math.sqrt(var) * jax.random.normal(key, shape, dtype)
        limit = math.sqrt(3.0 * var)
        return jax.random.uniform(key, shape, dtype, -limit, limit)

    return init


def he_normal(mode: str = "fan_in", nonlinearity: str = "relu",
              negative_slope: float = 0.01) -> Initializer:
    """He/Kaiming normal: ``N(0, gain^2 / fan)`` (gain sqrt(2) for relu)."""
    return _variance_scaling(gain(nonlinearity, negative_slope) ** 2, mode, "normal")


def he_uniform(mode: str = "fan_in", nonlinearity: str = "relu",
               negative_slope: float = 0.01) -> Initializer:
    """He/Kaiming uniform: ``U[-b, b]``, ``b = gain * sqrt(3 / fan)``."""
    return _variance_scaling(gain(nonlinearity, negative_slope) ** 2, mode, "uniform")


kaiming_normal = he_normal
kaiming_uniform = he_uniform


def glorot_normal() -> Initializer:
    """Glorot/Xavier normal: ``N(0, 2 / (fan_in + fan_out))``."""
    return _variance_scaling(1.0, "fan_avg", "normal")


def glorot_uniform() -> Initializer:
    """Glorot/Xavier uniform: ``U[-b, b]``, ``b = sqrt(6 / (fan_in + fan_out))``."""
    return _variance_scaling(1.0, "fan_avg", "uniform")


xavier_normal = glorot_normal
xavier_uniform = glorot_uniform


def lecun_normal() -> Initializer:
    """LeCun normal: ``N(0, 1 / fan_in)``."""
    return _variance_scaling(1.0, "fan_in", "normal")


def lecun_uniform() -> Initializer:
    """LeCun uniform: ``U[-b, b]``, ``b = sqrt(3 / fan_in)``."""
    return _variance_scaling(1.0, "fan_in", "uniform")


def orthogonal(scale: float = 1.0) -> Initializer:
    """Orthogonal matrix (QR of a Gaussian), reshaped to ``(*k, in, out)``; times ``scale``."""

    def init(key, shape, dtype=jnp.float32):
        # QR has no low-precision (bfloat16/float16) kernel: draw in float32, then cast.
        work = jnp.promote_types(dtype, jnp.float32)
        return (scale * jax.nn.initializers.orthogonal()(key, shape, work)).astype(dtype)

    return init


def course_weight() -> Initializer:
    """The course's default for fully connected weights: ``sqrt(6 / n_in) * U[-1, 1]``."""

    def init(key, shape, dtype=jnp.float32):
        fan_in, _ = fans(shape)
        return math.sqrt(6.0 / fan_in) * jax.random.uniform(key, shape, dtype, -1.0, 1.0)

    return init


def course_bias(fan_in: int) -> Initializer:
    """The course's default bias: ``U[-1, 1] / sqrt(n_in)``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -1.0, 1.0) / math.sqrt(fan_in)

    return init


_BY_NAME = {
    "zeros": lambda: zeros, "ones": lambda: ones, "normal": normal, "uniform": uniform,
    "he_normal": he_normal, "he_uniform": he_uniform, "kaiming_normal": he_normal,
    "kaiming_uniform": he_uniform, "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform, "xavier_normal": glorot_normal,
    "xavier_uniform": glorot_uniform, "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform, "orthogonal": orthogonal, "course": course_weight,
}


def get(spec: InitSpec) -> Initializer:
    """An initializer from a name (``"he_normal"``) or a callable (returned unchanged)."""
    if callable(spec):
        return spec
    try:
        return _BY_NAME[spec]()
    except KeyError:
        raise ValueError(f"unknown initializer {spec!r}; known: {sorted(_BY_NAME)}") from None
