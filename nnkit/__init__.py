"""nnkit: a functional neural-network toolkit for JAX.

A model is a pair of pure functions over parameter pytrees::

    init(key, input_shape)                            -> (output_shape, params, state)
    apply(params, state, x, *, key=None, train=False) -> (y, new_state)
"""

from nnkit import activations, initializers, layers
from nnkit.core import (
    Lambda,
    Layer,
    Sequential,
    ShapeError,
    concat,
    fanout,
    named,
    param_count,
    parallel,
    residual,
    serial,
    summary,
)

__version__ = "0.1.0"

__all__ = [
    "Lambda", "Layer", "Sequential", "ShapeError", "concat", "fanout", "named", "param_count",
    "parallel", "residual", "serial", "summary", "activations", "initializers", "layers",
    "__version__",
]
