"""Activation functions as parameter-free layers."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from jax import Array

from nnkit import activations as A
from nnkit.core import Layer, layer

__all__ = [
    "Activation", "Step", "Sigmoid", "Tanh", "Relu", "LeakyRelu", "Elu", "Gelu", "Softplus",
    "Silu", "Softmax", "LogSoftmax",
]


def Activation(fn: str | Callable[..., Array], *, name: str | None = None,
               **kwargs: Any) -> Layer:
    """Any element-wise (or last-axis) function ``fn(x, **kwargs)`` as a layer.

    ``fn`` may be a name from :data:`nnkit.activations.ACTIVATIONS`. Output shape = input.
    """
    f = A.get(fn)
    if kwargs:
        f = functools.partial(f, **kwargs)
    kind = fn if isinstance(fn, str) else getattr(A.get(fn), "__name__", "activation")

    def init(key, input_shape):
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        return f(x), {}

    return layer(kind, init, apply, name=name, meta=dict(kwargs))


def Step(name: str | None = None) -> Layer:
    """Heaviside step layer (perceptron)."""
    return Activation("step", name=name)


def Sigmoid(name: str | None = None) -> Layer:
    """Sigmoid layer."""
    return Activation("sigmoid", name=name)


def Tanh(name: str | None = None) -> Layer:
    """Tanh layer."""
    return Activation("tanh", name=name)


def Relu(name: str | None = None) -> Layer:
    """ReLU layer."""
    return Activation("relu", name=name)


def LeakyRelu(alpha: float = 0.01, name: str | None = None) -> Layer:
    """Leaky ReLU layer with negative slope ``alpha``."""
    return Activation("leaky_relu", name=name, alpha=alpha)


def Elu(alpha: float = 1.0, name: str | None = None) -> Layer:
    """ELU layer."""
    return Activation("elu", name=name, alpha=alpha)


def Gelu(approximate: bool = False, name: str | None = None) -> Layer:
    """GELU layer (exact, or tanh approximation)."""
    return Activation("gelu", name=name, approximate=approximate)


def Softplus(name: str | None = None) -> Layer:
    """Softplus layer."""
    return Activation("softplus", name=name)


def Silu(name: str | None = None) -> Layer:
    """SiLU / swish layer."""
    return Activation("silu", name=name)


def Softmax(name: str | None = None) -> Layer:
    """Softmax over the last axis."""
    return Activation("softmax", name=name)


def LogSoftmax(name: str | None = None) -> Layer:
    """Log-softmax over the last axis."""
    return Activation("log_softmax", name=name)
