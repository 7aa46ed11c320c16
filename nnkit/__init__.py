"""nnkit: a functional neural-network toolkit for JAX.

A model is a pair of pure functions over parameter pytrees::

    init(key, input_shape)                            -> (output_shape, params, state)
    apply(params, state, x, *, key=None, train=False) -> (y, new_state)

``nnkit.parallel`` is the multi-device module; the combinator that applies layer ``i`` to
input ``i`` of a tuple is ``nnkit.Parallel`` (``nnkit.core.parallel``).
"""

from nnkit import (
    activations,
    autoencoder,
    checkpoint,
    config,
    data,
    diagnose,
    gan,
    initializers,
    layers,
    losses,
    metrics,
    models,
    optim,
    parallel,
    plots,
    precision,
    train,
)
from nnkit.compile_cache import enable as enable_compile_cache
from nnkit.core import (
    Lambda,
    Layer,
    Sequential,
    ShapeError,
    TreeError,
    concat,
    fanout,
    named,
    param_count,
    residual,
    serial,
    summary,
)
from nnkit.core import parallel as Parallel
from nnkit.mc_dropout import mc_predict
from nnkit.train import (
    EarlyStopping,
    FitResult,
    Plateau,
    TrainState,
    create_train_state,
    evaluate,
    fit,
    lr_find,
    make_eval_step,
    make_train_step,
    overfit_batch,
    predict,
    sweep,
)

__version__ = "0.1.0"

__all__ = [
    "Lambda", "Layer", "Sequential", "ShapeError", "TreeError", "concat", "fanout", "named",
    "param_count",
    "Parallel", "residual", "serial", "summary", "activations", "initializers", "layers",
    "losses", "metrics",
    "optim", "train", "fit", "FitResult", "TrainState", "create_train_state", "make_train_step",
    "make_eval_step", "lr_find", "overfit_batch", "sweep", "EarlyStopping", "Plateau",
    "predict", "evaluate",
    "__version__",
    "diagnose", "mc_predict", "checkpoint", "config", "data", "models", "parallel", "plots",
    "precision", "gan", "autoencoder", "enable_compile_cache",
]
