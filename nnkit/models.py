"""A registry of named architectures, and :func:`build` for config ``model`` sections.

Every architecture is a function returning an :class:`nnkit.Layer`::

    nnkit.models.mlp(hidden=(128,), out=10)       # Flatten -> [Dense -> act]* -> Dense
    nnkit.models.lenet5(num_classes=10)           # LeCun et al. 1998, 61,706 params on 28x28x1
    nnkit.models.build({"arch": "mlp", "hidden": [64]})
    nnkit.models.build({"layers": [{"type": "flatten"}, {"type": "dense", "features": 10}]})

Outputs are logits (no final softmax): pair them with the ``cross_entropy`` loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nnkit import activations as A
from nnkit import layers as L
from nnkit._checks import check_int
from nnkit.config import ConfigError, suggest, typed_options
from nnkit.core import Layer, ShapeError, residual, serial

__all__ = [
    "mlp",
    "lenet5",
    "lstm_classifier",
    "lstm_regressor",
    "perceptron",
    "ARCHS",
    "OUTPUT_ARG",
    "LAYER_TYPES",
    "available",
    "build",
    "validate",
    "with_output_size",
]


def mlp(
    hidden: Sequence[int] = (128,),
    out: int = 10,
    activation: str = "relu",
    dropout: float = 0.0,
    batchnorm: bool = False,
) -> Layer:
    """Multi-layer perceptron on flattened inputs, with ``out`` logits.

    ``Flatten -> [Dense(h) -> BatchNorm? -> act -> Dropout?] per h in hidden -> Dense(out)``.

    Input: any per-example shape (flattened to ``prod(shape)``); output ``(out,)`` logits.
    Hidden layers are ``dense_0, dense_1, ...``; the output layer is ``out``.
    """
    if isinstance(hidden, int):
        hidden = (hidden,)
    hidden = tuple(check_int(h, "mlp: hidden sizes") for h in hidden)
    check_int(out, "mlp: out")
    try:
        A.get(activation)
    except (ValueError, KeyError, TypeError):
        known = list(A.ACTIVATIONS)
        raise ValueError(f"mlp: unknown activation {activation!r}{suggest(activation, known)}; "
                         f"known: {', '.join(known)}") from None
    if not isinstance(dropout, int | float) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"mlp: dropout must be in [0, 1), got {dropout!r}")
    parts: list[Layer] = [L.Flatten(name="flatten")]
    for i, h in enumerate(hidden):
        parts.append(L.Dense(h, name=f"dense_{i}"))
        if batchnorm:
            parts.append(L.BatchNorm(name=f"batchnorm_{i}"))
        parts.append(L.Activation(activation, name=f"{activation}_{i}"))
        if dropout > 0:
            parts.append(L.Dropout(float(dropout), name=f"dropout_{i}"))
    parts.append(L.Dense(out, name="out"))
    return serial(*parts)


def lenet5(num_classes: int = 10, pool: str = "max") -> Layer:
    """LeNet-5 convolutional network (ReLU, max-pool) for (28, 28, 1) images.

    ``conv1 6@5x5 SAME -> relu -> pool 2 -> conv2 16@5x5 VALID -> relu -> pool 2 -> flatten
    -> fc1 120 -> relu -> fc2 84 -> relu -> out``. On 28x28x1: 28->28->14->10->5, so
    flatten gives 400 and the model has 61,706 parameters with 10 classes. ``pool``:
    ``"max"`` (2x2 max pooling) or ``"mean"`` (2x2 average pooling, the subsampling of the
    original LeNet-5, without its trainable scale and bias).
    """
    check_int(num_classes, "lenet5: num_classes")
    pools = {"max": L.MaxPool2D, "mean": L.AvgPool2D}
    if pool not in pools:
        raise ValueError(f"lenet5: pool must be one of {sorted(pools)}, got {pool!r}")
    return serial(
        L.Conv2D(6, 5, padding="SAME", name="conv1"),
        L.Relu(name="relu1"),
        pools[pool](2, name="pool1"),
        L.Conv2D(16, 5, padding="VALID", name="conv2"),
        L.Relu(name="relu2"),
        pools[pool](2, name="pool2"),
        L.Flatten(name="flatten"),
        L.Dense(120, name="fc1"),
        L.Relu(name="relu3"),
        L.Dense(84, name="fc2"),
        L.Relu(name="relu4"),
        L.Dense(num_classes, name="out"),
    )


def _lstm(hidden: int, unroll: int) -> Layer:
    """An LSTM over (time, features) returning the last hidden state (hidden,)."""
    return L.LSTM(hidden, return_sequences=False, unroll=unroll, name="lstm")


def lstm_classifier(hidden: int = 64, out: int = 10, unroll: int = 1) -> Layer:
    """LSTM sequence classifier: ``LSTM(hidden)`` over (time, features), then ``Dense(out)``.

    The last hidden state (hidden,) feeds the output layer; outputs are ``out`` logits.
    ``unroll``: time steps per loop iteration (see :func:`nnkit.layers.LSTM`: a larger one
    compiles longer and trains faster).
    """
    check_int(hidden, "lstm_classifier: hidden")
    check_int(out, "lstm_classifier: out")
    check_int(unroll, "lstm_classifier: unroll")
    return serial(_lstm(hidden, unroll), L.Dense(out, name="out"))


def lstm_regressor(hidden: int = 64, out: int = 1, unroll: int = 1) -> Layer:
    """LSTM sequence regressor: ``LSTM(hidden)`` over (time, features), then ``Dense(out)``.

    The last hidden state (hidden,) feeds the output layer; outputs are ``out`` real values.
    ``unroll`` as :func:`lstm_classifier`.
    """
    check_int(hidden, "lstm_regressor: hidden")
    check_int(out, "lstm_regressor: out")
    check_int(unroll, "lstm_regressor: unroll")
    return serial(_lstm(hidden, unroll), L.Dense(out, name="out"))


def perceptron(out: int = 1, activation: str = "step") -> Layer:
    """Rosenblatt's perceptron: one Dense layer then a step (or sigmoid) activation.

    ``y = act(flatten(x) @ w + b)`` with ``act`` = ``step`` or ``sigmoid``.

    Input: any per-example shape (flattened); output ``(out,)``. Note the step has zero
    gradient: train the ``sigmoid`` variant by gradient descent.
    """
    check_int(out, "perceptron: out")
    if activation not in ("step", "sigmoid"):
        raise ValueError(f"perceptron: activation must be 'step' or 'sigmoid', got {activation!r}")
    return serial(L.Flatten(name="flatten"), L.Dense(out, name="dense"),
                  L.Activation(activation, name=activation))


ARCHS: dict[str, Callable[..., Layer]] = {
    "mlp": mlp,
    "lenet5": lenet5,
    "lstm_classifier": lstm_classifier,
    "lstm_regressor": lstm_regressor,
    "perceptron": perceptron,
}
"""Architecture name -> constructor."""

OUTPUT_ARG: dict[str, str] = {
    "mlp": "out",
    "lenet5": "num_classes",
    "lstm_classifier": "out",
    "lstm_regressor": "out",
    "perceptron": "out",
}
"""The argument of each architecture that sets its output width (filled from the data)."""


def _layer_types() -> dict[str, Callable[..., Layer]]:
    types = {
        "dense": L.Dense, "conv1d": L.Conv1D, "conv2d": L.Conv2D,
        "maxpool1d": L.MaxPool1D, "maxpool2d": L.MaxPool2D, "avgpool1d": L.AvgPool1D,
        "avgpool2d": L.AvgPool2D, "global_avg_pool": L.GlobalAvgPool,
        "global_max_pool": L.GlobalMaxPool, "flatten": L.Flatten, "reshape": L.Reshape,
        "dropout": L.Dropout, "batchnorm": L.BatchNorm, "layernorm": L.LayerNorm,
        "embedding": L.Embedding, "activation": L.Activation,
        "relu": L.Relu, "sigmoid": L.Sigmoid, "tanh": L.Tanh, "step": L.Step,
        "leaky_relu": L.LeakyRelu, "elu": L.Elu, "gelu": L.Gelu, "softplus": L.Softplus,
        "silu": L.Silu, "softmax": L.Softmax, "log_softmax": L.LogSoftmax,
    }
    for name in ("LSTM", "GRU", "RNN"):  # nnkit/layers/recurrent.py, when present
        if hasattr(L, name):
            types[name.lower()] = getattr(L, name)
    return types


LAYER_TYPES: dict[str, Callable[..., Layer]] = _layer_types()
"""``type`` names for layer-list specs -> :mod:`nnkit.layers` constructors. ``serial`` and
``residual`` take a nested ``layers`` list."""

_CONTAINERS = ("serial", "residual")


def available() -> dict[str, str]:
    """Architecture names -> the first line of their docstring."""
    return {k: (fn.__doc__ or "").strip().splitlines()[0] for k, fn in ARCHS.items()}


def _norm(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _call(fn: Callable[..., Layer], kwargs: Mapping[str, Any], key: str, what: str) -> Layer:
    """``fn(**kwargs)`` with argument and value errors turned into ConfigErrors."""
    sig = inspect.signature(fn)
    names = [n for n, p in sig.parameters.items()
             if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for k in kwargs:
        if k not in names and not takes_any:
            raise ConfigError(
                f"{what} has no argument {k!r}{suggest(k, names)}; arguments: "
                f"{', '.join(names)}",
                key=f"{key}.{k}",
            )
    try:
        sig.bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{what}: {e}", key=key) from None
    kwargs = typed_options(fn, kwargs, key)
    try:
        return fn(**kwargs)
    except (ValueError, TypeError, ShapeError, KeyError) as e:
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        bad = [k for k in kwargs if k in msg]
        text = msg if msg.startswith(f"{what}:") else f"{what}: {msg}"
        raise ConfigError(text, key=f"{key}.{bad[0]}" if bad else key) from None


def _build_layers(items: Any, key: str) -> list[Layer]:
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError("expected a non-empty list of layers", key=key)
    out = []
    for i, item in enumerate(items):
        k = f"{key}[{i}]"
        if not isinstance(item, Mapping):
            raise ConfigError(f"expected a mapping with 'type', got {item!r}", key=k)
        if "type" not in item:
            raise ConfigError("missing 'type'", key=k)
        t = item["type"]
        kwargs = {a: v for a, v in item.items() if a != "type"}
        norm = _norm(str(t))
        if norm in _CONTAINERS:
            inner = _build_layers(kwargs.pop("layers", None), f"{k}.layers")
            extra = [a for a in kwargs if a != "name"]
            if extra:
                raise ConfigError(f"{norm} takes only 'layers' and 'name', got {extra}",
                                  key=f"{k}.{extra[0]}")
            try:
                block = serial(*inner, name=None if norm == "residual" else kwargs.get("name"))
                out.append(residual(block, name=kwargs.get("name")) if norm == "residual"
                           else block)
            except ValueError as e:  # e.g. two layers of one name
                raise ConfigError(str(e), key=f"{k}.layers") from None
            continue
        if norm not in LAYER_TYPES:
            valid = sorted(LAYER_TYPES) + list(_CONTAINERS)
            raise ConfigError(
                f"unknown layer type {t!r}{suggest(norm, valid)}; valid types: "
                f"{', '.join(valid)}",
                key=f"{k}.type",
            )
        if norm == "dropout" and "rate" in kwargs:
            r = kwargs["rate"]
            if isinstance(r, bool) or not isinstance(r, int | float) or not 0 <= r < 1:
                raise ConfigError(f"must be in [0, 1), got {r!r}", key=f"{k}.rate")
        out.append(_call(LAYER_TYPES[norm], kwargs, k, norm))
    return out


def build(spec: Mapping[str, Any], *, key: str = "model") -> Layer:
    """A model from a config ``model`` section.

    Either ``{"arch": name, **kwargs}`` (a registered architecture, see :func:`available`)
    or ``{"layers": [{"type": "dense", "features": 64, "name": "hidden"}, {"type": "relu"},
    ...], "name": optional}`` built with :func:`nnkit.serial` (types: :data:`LAYER_TYPES`).

    Raises:
      ConfigError: unknown arch / layer type / argument (with the closest valid name), or a
        value the constructor rejects; the error names the key (``model.layers[2].type``).
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"expected a mapping, got {type(spec).__name__}", key=key)
    has_arch, has_layers = "arch" in spec, "layers" in spec
    if has_arch == has_layers:
        raise ConfigError(
            "give exactly one of 'arch' (one of " + ", ".join(ARCHS) + ") or 'layers'",
            key=key,
        )
    if has_arch:
        arch = spec["arch"]
        if arch not in ARCHS:
            raise ConfigError(
                f"unknown architecture {arch!r}{suggest(arch, ARCHS)}; available: "
                f"{', '.join(ARCHS)}",
                key=f"{key}.arch",
            )
        kwargs = {k: v for k, v in spec.items() if k != "arch"}
        if arch == "mlp" and "dropout" in kwargs:
            d = kwargs["dropout"]
            if isinstance(d, bool) or not isinstance(d, int | float) or not 0 <= d < 1:
                raise ConfigError(f"must be in [0, 1), got {d!r}", key=f"{key}.dropout")
        if "hidden" in kwargs and isinstance(kwargs["hidden"], list):
            kwargs["hidden"] = tuple(kwargs["hidden"])
        return _call(ARCHS[arch], kwargs, key, arch)
    extra = [k for k in spec if k not in ("layers", "name")]
    if extra:
        raise ConfigError(
            f"unknown key {extra[0]!r}{suggest(extra[0], ['layers', 'name'])}; a layer-list "
            "model takes 'layers' and 'name'",
            key=f"{key}.{extra[0]}",
        )
    layers = _build_layers(spec["layers"], f"{key}.layers")
    try:
        return serial(*layers, name=spec.get("name"))
    except ValueError as e:  # e.g. two layers of one name
        raise ConfigError(str(e), key=f"{key}.layers") from None


def validate(spec: Mapping[str, Any], *, key: str = "model") -> None:
    """Checks a model spec by building it (nothing is initialised); raises ConfigError."""
    build(spec, key=key)


def with_output_size(spec: Mapping[str, Any], size: int) -> dict[str, Any]:
    """``spec`` with the architecture's output width set to ``size`` unless given.

    Layer-list specs are returned unchanged (their last layer sets the width).
    """
    spec = dict(spec)
    arch = spec.get("arch")
    if arch in OUTPUT_ARG and OUTPUT_ARG[arch] not in spec:
        spec[OUTPUT_ARG[arch]] = int(size)
    return spec
