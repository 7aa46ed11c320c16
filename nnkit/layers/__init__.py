"""nnkit layers: every one is a :class:`nnkit.core.Layer` (an ``init``/``apply`` pair)."""

from nnkit.layers.activation import (
    Activation,
    Elu,
    Gelu,
    LeakyRelu,
    LogSoftmax,
    Relu,
    Sigmoid,
    Silu,
    Softmax,
    Softplus,
    Step,
    Tanh,
)
from nnkit.layers.dense import Dense

__all__ = [
    "Activation", "Elu", "Gelu", "LeakyRelu", "LogSoftmax", "Relu", "Sigmoid", "Silu",
    "Softmax", "Softplus", "Step", "Tanh", "Dense",
]
