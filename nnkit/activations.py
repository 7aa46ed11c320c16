"""Activation functions: plain ``jnp`` functions, each also available as a layer.

``nnkit.activations.relu(x)`` is the function; ``nnkit.layers.Relu()`` (or
``nnkit.layers.Activation(fn)``) is the parameter-free layer. Every function is
numerically stable for large ``|x|`` (tested at +-30 and beyond).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = [
    "step", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "softplus", "silu",
    "softmax", "log_softmax", "identity", "get", "ACTIVATIONS",
]


def _step_value(x: Array) -> Array:
    x = jnp.asarray(x)
    return (x >= 0).astype(jnp.result_type(x, jnp.float32))


@jax.custom_jvp
def step(x: Array) -> Array:
    """Heaviside step ``1[x >= 0]`` (the perceptron's activation); its gradient is 0."""
    return _step_value(x)


@step.defjvp
def _step_jvp(primals, tangents):
    (x,), _ = primals, tangents
    y = _step_value(x)
    return y, jnp.zeros_like(y)


def sigmoid(x: Array) -> Array:
    """``1 / (1 + exp(-x))``, stable for large ``|x|``."""
    return jax.nn.sigmoid(x)


def tanh(x: Array) -> Array:
    """Hyperbolic tangent."""
    return jnp.tanh(x)


def relu(x: Array) -> Array:
    """``max(x, 0)``."""
    return jax.nn.relu(x)


def leaky_relu(x: Array, alpha: float = 0.01) -> Array:
    """``x`` if ``x > 0`` else ``alpha * x``; derivative ``alpha`` at 0 (the left one, as
    :func:`relu`'s 0 there and PyTorch's)."""
    return jnp.where(x > 0, x, alpha * x)


def elu(x: Array, alpha: float = 1.0) -> Array:
    """``x`` if ``x > 0`` else ``alpha * (exp(x) - 1)``."""
    return jax.nn.elu(x, alpha)


def gelu(x: Array, approximate: bool = False) -> Array:
    """``x * Phi(x)``; ``approximate=True`` uses the tanh approximation."""
    return jax.nn.gelu(x, approximate=approximate)


def softplus(x: Array) -> Array:
    """``log(1 + exp(x))``, stable for large ``|x|``."""
    return jax.nn.softplus(x)


def silu(x: Array) -> Array:
    """``x * sigmoid(x)`` (swish)."""
    return jax.nn.silu(x)


def softmax(x: Array, axis: int = -1) -> Array:
    """``exp(x_i - max) / sum_j exp(x_j - max)`` along ``axis``."""
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x: Array, axis: int = -1) -> Array:
    """``x_i - logsumexp(x)`` along ``axis``."""
    return jax.nn.log_softmax(x, axis=axis)


def identity(x: Array) -> Array:
    """Returns ``x`` (a linear unit)."""
    return x


ACTIVATIONS = {
    "step": step, "sigmoid": sigmoid, "tanh": tanh, "relu": relu, "leaky_relu": leaky_relu,
    "elu": elu, "gelu": gelu, "softplus": softplus, "silu": silu, "swish": silu,
    "softmax": softmax, "log_softmax": log_softmax, "identity": identity, "linear": identity,
}


def get(name_or_fn: str | Callable[..., Array]) -> Callable[..., Array]:
    """Looks an activation up by name (``"relu"``); a callable is returned unchanged."""
    if callable(name_or_fn):
        return name_or_fn
    try:
        return ACTIVATIONS[name_or_fn]
    except KeyError:
        raise ValueError(
            f"unknown activation {name_or_fn!r}; known: {sorted(ACTIVATIONS)}"
        ) from None
