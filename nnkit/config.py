"""Typed, validated run configurations read from YAML (a safe loader only).

A config file has the sections below; every key is optional except ``model`` and
``data.dataset``::

    model: {arch: mlp, hidden: [128], dropout: 0.1}      # or {layers: [{type: dense, ...}]}
    data: {dataset: digits, options: {}, split: [0.8, 0.1, 0.1], stratify: true,
           split_seed: 0, batch_size: 64, eval_batch_size: 1024, standardize: true,
           augmentation: [{name: random_translate, max_shift: 1}]}
    optimizer: {name: adam, lr: 1e-3, schedule: {name: cosine, decay_steps: auto},
                weight_decay: 0.0, clip_norm: null, accumulate: 1, options: {b1: 0.9},
                plateau: {monitor: val_loss, patience: 3, factor: 0.5}}
    training: {epochs: 20, early_stopping: {monitor: val_loss, mode: auto, patience: 5,
                                            min_delta: 0},
               grad_mode: batch, microbatches: 1, l1: 0.0, l2: 0.0, mode: auto}
    loss: cross_entropy
    metrics: [accuracy]
    seed: 0
    logging: {tensorboard: true, checkpoint_keep: 3, checkpoint_every: 1, plots: true,
              histograms_every: 0}
    parallel: {data_parallel: true, fsdp: false}          # default {}: one device
    precision: mixed_bfloat16                             # default null: as the model is

``parallel`` is a mapping for :func:`nnkit.parallel.from_config` (keys ``data_parallel``,
``model_parallel``, ``fsdp``, ``fsdp_min_size``, ``distributed``). It is checked when a run
starts (``nnkit train`` builds it before anything touches a device, since it may start
JAX's multi-process runtime), not here. ``precision`` is a policy name
(``float32``, ``mixed_bfloat16``, ``mixed_float16``, ``bfloat16``, ``float16``) or a mapping
for :func:`nnkit.precision.from_config`, checked here. ``precision.loss_scale`` chooses the
float16 loss scale: ``dynamic`` (the default: skip a step whose gradients overflow and halve
the scale, double it after 2000 good steps), ``static`` (``2**12``), a number (a static
scale: ``{name: mixed_float16, loss_scale: 1024}``), or a mapping of the dynamic scale's
settings ``{initial: 32768, period: 2000, factor: 2, min_scale: 1}`` (any of them; errors
name ``precision.loss_scale.period`` etc.).

A schedule's peak rate is ``optimizer.lr``: ``optimizer.schedule`` may not give its own
``learning_rate`` (``max_lr``), which would silently override it.

Errors are :class:`ConfigError` naming the file, the dotted key, and either the closest
valid key (``did you mean 'lr'?``) or the allowed type / range. YAML is read with
:func:`load_yaml_text` (``yaml.SafeLoader`` that refuses a key repeated in one mapping, which
plain YAML would let the later value silently replace; merge keys ``<<`` still work). Overrides
``--set optimizer.lr=3e-3`` are parsed as YAML scalars. Numbers written ``1e-3`` (which
YAML 1.1 reads as a *string*) are read as floats everywhere in the file.
:func:`dump_config` writes a fully resolved config that :func:`parse_config` reads back
to an equal object.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "Config",
    "DataConfig",
    "OptimizerConfig",
    "PlateauConfig",
    "TrainingConfig",
    "EarlyStoppingConfig",
    "LoggingConfig",
    "load_config",
    "parse_config",
    "read_yaml",
    "load_yaml_text",
    "DuplicateKeyError",
    "apply_overrides",
    "dump_config",
    "config_to_dict",
    "suggest",
    "AUGMENTATIONS",
]


class ConfigError(ValueError):
    """A config value is unknown, of the wrong type or out of range.

    ``str(err)`` is one line: ``"<file>: <key>: <problem>"``. Attributes ``file`` and ``key``
    (dotted path, e.g. ``optimizer.lr``) hold the parts.
    """

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None):
        self.message = message
        self.key = key
        self.file = file
        super().__init__(self._text())

    def _text(self) -> str:
        parts = [p for p in (self.file, self.key) if p]
        return ": ".join([*parts, self.message])

    def with_file(self, file: str | None) -> ConfigError:
        """This error, naming ``file`` (if it names none yet)."""
        if file and not self.file:
            self.file = file
            self.args = (self._text(),)
        return self

    def with_source(self, file: str | None, overrides: Sequence[str] = ()) -> ConfigError:
        """This error, naming ``--set`` when its key is one that ``overrides``
        (``"a.b=value"``) set, lies inside one, or holds one; else naming ``file``."""
        return self.with_file("--set" if overridden(self.key, overrides) else file)


def overridden(key: str | None, overrides: Sequence[str]) -> bool:
    """Whether one of ``overrides`` (``"a.b=value"``) set ``key``, lies inside it, or holds
    it (list items either as ``a.0`` or ``a[0]``)."""
    if key is None:
        return False
    set_keys = [_dotted(o.split("=", 1)[0].strip()) for o in overrides]
    return any(key == k or key.startswith((k + ".", k + "[")) or k.startswith((key + ".",
                                                                                 key + "["))
               for k in set_keys)


def _dotted(set_key: str) -> str:
    """``data.augmentation.0.max_shift`` -> ``data.augmentation[0].max_shift`` (error keys
    write list items in brackets)."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", set_key)


def suggest(name: Any, valid: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest valid name (difflib), else ``""``."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ----------------------------------------------------------------------------- YAML

class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key repeated in one YAML mapping (``problem_mark``: the repeat; the message names the
    line of the first)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose mappings refuse a repeated key (merge keys ``<<`` excepted:
    keys they bring in may be overridden, as YAML defines)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            _check_unique(self, node)
        return super().construct_mapping(node, deep=deep)


def _check_unique(loader: yaml.SafeLoader, node: yaml.MappingNode) -> None:
    seen: dict[Any, yaml.Mark] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: SafeLoader reports it itself
            continue
        mark = key_node.start_mark
        if first is not None:
            raise DuplicateKeyError(
                None, None,
                f"key {key!r} repeated at line {mark.line + 1} (first at line "
                f"{first.line + 1}); give each key once",
                mark,
            )
        seen[key] = mark


def load_yaml_text(text: str) -> Any:
    """``text`` parsed as YAML with a safe loader that refuses repeated mapping keys.

    Raises:
      DuplicateKeyError: a key repeated in one mapping (a ``yaml.YAMLError``).
      yaml.YAMLError: other unparsable YAML.
    """
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


_EXP_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def yaml_numbers(tree: Any, memo: dict[int, Any] | None = None) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: turn such strings into floats.

    A node that YAML aliases (``*a``) is converted once and stays shared, so a small file of
    nested aliases cannot expand into billions of nodes here."""
    memo = {} if memo is None else memo
    if isinstance(tree, dict | list):
        if id(tree) in memo:
            return memo[id(tree)]
        if isinstance(tree, dict):
            out: Any = {}
            memo[id(tree)] = out
            out.update({k: yaml_numbers(v, memo) for k, v in tree.items()})
        else:
            out = []
            memo[id(tree)] = out
            out.extend(yaml_numbers(v, memo) for v in tree)
        return out
    if isinstance(tree, str) and _EXP_FLOAT.match(tree.strip()):
        return float(tree)
    return tree


def _check_finite(tree: Any, key: str = "", seen: set[int] | None = None) -> None:
    """ConfigError naming the first NaN or infinite number in a config tree: no setting
    takes one (a learning rate, penalty or noise of ``.inf``/``.nan`` only shows later, as
    a non-finite loss)."""
    seen = set() if seen is None else seen
    if isinstance(tree, dict | list):
        if id(tree) in seen:
            return
        seen.add(id(tree))
        items = tree.items() if isinstance(tree, dict) else enumerate(tree)
        for k, v in items:
            sub = f"{key}[{k}]" if isinstance(tree, list) else (f"{key}.{k}" if key else str(k))
            _check_finite(v, sub, seen)
    elif isinstance(tree, float) and not math.isfinite(tree):
        raise ConfigError(f"must be a finite number, got {tree!r}", key=key)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in YAML file ``path`` (:func:`load_yaml_text`; exponent strings -> floats).

    Raises:
      FileNotFoundError: no such file.
      ConfigError: unparsable YAML (with line/column), a key repeated in one mapping, or a
        top level that is not a mapping.
    """
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"{path} is a directory, not a config file (a run directory "
                                "is read with `nnkit eval` or `nnkit train --resume`)")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        raw = load_yaml_text(path.read_text(encoding="utf-8"))
    except DuplicateKeyError as e:
        raise ConfigError(str(e.problem), file=str(path)) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"invalid YAML{where}: {problem}", file=str(path)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text: {e}", file=str(path)) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"the top level must be a mapping of sections, got {type(raw).__name__}",
            file=str(path),
        )
    return yaml_numbers(raw)


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``"a.b.c=value"`` set (``value`` parsed as YAML).

    Intermediate mappings are created as needed; a numeric path part indexes a list
    (``model.layers.0.features=32``). Keys are checked later by :func:`parse_config`; a value
    that is not YAML is kept as the string, but one repeating a mapping key, or a broken
    flow collection or quoted string (``[8``, ``{a: 1``, ``"x``), is an error. Errors name
    the file ``--set``.
    """
    import copy

    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value", file="--set")
        path, text = item.split("=", 1)
        parts = [p for p in path.strip().split(".")]
        if not path.strip() or any(not p for p in parts):
            raise ConfigError(f"override {item!r} has an empty key", file="--set")
        try:
            value = yaml_numbers(load_yaml_text(text)) if text.strip() else None
        except DuplicateKeyError as e:
            raise ConfigError(str(e.problem), key=path.strip(), file="--set") from None
        except yaml.YAMLError as e:
            if text.lstrip()[:1] in ("[", "{", '"', "'"):  # meant as YAML, not a plain string
                mark = getattr(e, "problem_mark", None)
                where = f" at column {mark.column + 1}" if mark else ""
                problem = getattr(e, "problem", None) or str(e).splitlines()[0]
                raise ConfigError(f"invalid YAML {text.strip()!r}{where}: {problem}",
                                  key=path.strip(), file="--set") from None
            value = text
        node: Any = out
        for i, p in enumerate(parts[:-1]):
            here = ".".join(parts[: i + 1])
            if isinstance(node, list):
                node = _list_item(node, p, here)
                continue
            if not isinstance(node, dict):
                parent = ".".join(parts[:i])
                raise ConfigError(f"cannot set {path!r}: {parent!r} is not a mapping",
                                  file="--set")
            if node.get(p) is None:
                node[p] = {}
            node = node[p]
        last = parts[-1]
        if isinstance(node, list):
            idx = _list_index(node, last, path)
            node[idx] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"cannot set {path!r}: its parent is not a mapping", file="--set")
    return out


def _list_index(node: list, part: str, where: str) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ConfigError(
            f"list index {part!r} out of range (list has {len(node)} items)", key=where
        )
    return int(part)


def _list_item(node: list, part: str, where: str) -> Any:
    return node[_list_index(node, part, where)]


# ----------------------------------------------------------------------------- fields


def _field(default: Any = dataclasses.MISSING, *, factory: Any = None, doc: str = "",
           ge: float | None = None, gt: float | None = None, lt: float | None = None,
           le: float | None = None, choices: Any = None, normalize: Any = None) -> Any:
    """A dataclass field with validation metadata (range bounds, choices; ``normalize``
    maps a value to its canonical spelling before it is checked against the choices)."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "lt": lt, "le": le, "choices": choices,
            "normalize": normalize}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def _range_text(m: Mapping[str, Any]) -> str:
    lo = f"[{m['ge']}" if m["ge"] is not None else f"({m['gt']}" if m["gt"] is not None else None
    hi = f"{m['le']}]" if m["le"] is not None else f"{m['lt']})" if m["lt"] is not None else None
    if lo and hi:
        return f"in {lo}, {hi}"
    if lo:
        return f">= {m['ge']}" if m["ge"] is not None else f"> {m['gt']}"
    return f"<= {m['le']}" if m["le"] is not None else f"< {m['lt']}"


def _in_range(v: float, m: Mapping[str, Any]) -> bool:
    return (
        (m["ge"] is None or v >= m["ge"]) and (m["gt"] is None or v > m["gt"])
        and (m["lt"] is None or v < m["lt"]) and (m["le"] is None or v <= m["le"])
    )


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_type_name(a) for a in args) + " or null"
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict or tp is dict:
        return "mapping"
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return {int: "int", float: "number", bool: "bool (true/false)", str: "string"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against type ``tp`` (ints accepted for floats, lists for tuples)."""
    origin = typing.get_origin(tp)
    bad = ConfigError(
        f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}", key=key
    )
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if type(None) in typing.get_args(tp):
                return None
            raise bad
        for a in args:
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                if e.key != key:  # the type matched; a value inside it is wrong
                    raise
        raise bad
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        raise bad
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin is dict or tp is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    if origin is tuple:
        (item_tp, *_rest) = typing.get_args(tp)
        if isinstance(value, list | tuple):
            return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
        raise bad
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise bad
        return _from_dict(tp, value, key)
    raise TypeError(f"config field {key}: unsupported type {tp!r}")  # pragma: no cover


def _from_dict(cls: type, raw: Mapping[str, Any], prefix: str) -> Any:
    """Builds dataclass ``cls`` from ``raw``: unknown keys, types, ranges and choices."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    dotted = (lambda k: f"{prefix}.{k}") if prefix else (lambda k: k)
    for k in raw:
        if k not in fields:
            where = f"section '{prefix}'" if prefix else "the top level"
            hint = "" if prefix or k != "run" else (
                "; `run:` is the metadata nnkit writes into a run directory's config.yaml: to "
                "continue that run use `nnkit train --resume DIR`, to start a new one from "
                "this config delete its `run:` section")
            raise ConfigError(
                f"unknown key{suggest(k, fields)}; valid keys in {where}: "
                f"{', '.join(fields)}{hint}",
                key=dotted(str(k)),
            )
    kwargs = {}
    for name, f in fields.items():
        key = dotted(name)
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError("missing required key", key=key)
            continue
        v = _coerce(raw[name], hints[name], key)
        m = f.metadata
        if m and isinstance(v, int | float) and not isinstance(v, bool) and any(
            m[b] is not None for b in ("ge", "gt", "lt", "le")
        ):
            if not _in_range(v, m):
                raise ConfigError(f"must be {_range_text(m)}, got {v!r}", key=key)
        if m and m.get("normalize") is not None and v is not None:
            v = m["normalize"](v)
        if m and m.get("choices") is not None and v is not None:
            choices = m["choices"]() if callable(m["choices"]) else m["choices"]
            if v not in choices:
                raise ConfigError(
                    f"unknown value {v!r}{suggest(v, choices)}; allowed: "
                    f"{', '.join(map(str, choices))}",
                    key=key,
                )
        kwargs[name] = v
    obj = cls(**kwargs)
    check = getattr(obj, "_check", None)
    if check is not None:
        check(prefix)
    return obj


def _option_type(annotation: Any) -> type | None:
    """``int``, ``float`` or ``bool`` for an annotation that is one of them, possibly with
    ``| None`` or ``| jax.Array`` (which no config value can be)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    args = typing.get_args(annotation) if union else (annotation,)
    if args == (bool,) or set(args) == {bool, type(None)}:
        return bool

    def unreachable(a: Any) -> bool:  # alternatives no config value can be (jax.Array, ...)
        return (a is type(None) or a is Callable or typing.get_origin(a) is Callable
                or getattr(a, "__module__", "").split(".")[0] in ("jax", "jaxlib"))

    if any(a not in (int, float) and not unreachable(a) for a in args):
        return None  # bool, str, a tuple or sequence also allowed: not checked here
    scalars = [a for a in args if a in (int, float)]
    return scalars[0] if len(scalars) == 1 else None


def typed_options(fn: Callable, kwargs: Mapping[str, Any], key: str) -> dict[str, Any]:
    """``kwargs`` checked against ``fn``'s ``int`` / ``float`` / ``bool`` annotations: an
    integral float for an int becomes an int (YAML reads ``1e3`` as a float); a value of
    another type -> ConfigError naming ``<key>.<argument>``."""
    params = inspect.signature(fn, eval_str=True).parameters
    out = dict(kwargs)
    for name, v in kwargs.items():
        tp = _option_type(params[name].annotation) if name in params else None
        if tp is None or v is None:
            continue
        if tp is bool:
            if not isinstance(v, bool):
                raise ConfigError(f"expected true or false, got {type(v).__name__} {v!r}",
                                  key=f"{key}.{name}")
            continue
        number = isinstance(v, int | float) and not isinstance(v, bool)
        if tp is int and number and float(v).is_integer():
            out[name] = int(v)
        elif tp is int or not number:
            want = "int" if tp is int else "number"
            raise ConfigError(f"expected {want}, got {type(v).__name__} {v!r}",
                              key=f"{key}.{name}")
    return out


# ----------------------------------------------------------------------------- choices


def _optimizers() -> list[str]:
    from nnkit import optim

    return sorted(optim.OPTIMIZERS)


def _losses() -> list[str]:
    from nnkit import losses

    return sorted(losses.LOSSES)


def _datasets() -> list[str]:
    from nnkit import data

    return list(data.available())


def _dataset_name(name: str) -> str:
    from nnkit.data.registry import normalize_name

    return normalize_name(name)


def _grad_modes() -> tuple[str, ...]:
    from nnkit.train.step import GRAD_MODES

    return GRAD_MODES


AUGMENTATIONS = ("random_translate", "random_rotate", "random_flip_lr", "random_crop",
                 "gaussian_noise")
"""Names allowed in ``data.augmentation`` (functions of :mod:`nnkit.data.augment`)."""


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DataConfig:
    """``data`` section: which data set, how it is split, batched and preprocessed.

    ``split`` gives (train, val, test) fractions summing to 1 (1 to 3 entries; a missing or
    zero part is absent). A data set with an official test split uses it as the test part
    when the test fraction is missing or 0. ``standardize`` fits per-feature mean/std on
    the training part only. ``dataset`` is case-insensitive. ``options.path`` (files read
    from disk) is taken from the working directory (``~`` expanded) and kept absolute, so
    the run's ``config.yaml`` names the files it read wherever it is used from.
    """

    dataset: str = _field(choices=_datasets, normalize=_dataset_name)
    options: dict[str, Any] = _field(factory=dict)
    split: tuple[float, ...] = _field((0.8, 0.1, 0.1))
    stratify: bool = _field(True)
    split_seed: int = _field(0, ge=0)
    batch_size: int = _field(32, ge=1)
    eval_batch_size: int = _field(1024, ge=1)
    standardize: bool = _field(False)
    augmentation: tuple[dict[str, Any], ...] = _field(())

    def _check(self, prefix: str) -> None:
        path = self.options.get("path")
        if path is not None:
            if not isinstance(path, str) or not path.strip():
                raise ConfigError(f"expected a directory or file path (a string), got "
                                  f"{type(path).__name__} {path!r}", key=f"{prefix}.options.path")
            # relative to the working directory, recorded absolute in the run's config.yaml:
            # `nnkit eval` and `--resume` from elsewhere read the same files
            full = os.path.abspath(os.path.expanduser(path))
            object.__setattr__(self, "options", {**self.options, "path": full})
        if not 1 <= len(self.split) <= 3:
            raise ConfigError(
                f"needs 1 to 3 fractions (train, val, test), got {len(self.split)}",
                key=f"{prefix}.split",
            )
        if any(f < 0 for f in self.split) or abs(sum(self.split) - 1.0) > 1e-6:
            raise ConfigError(
                f"fractions must be >= 0 and sum to 1, got {list(self.split)} "
                f"(sum {sum(self.split):g})",
                key=f"{prefix}.split",
            )
        if self.split[0] <= 0:
            raise ConfigError("the train fraction must be > 0", key=f"{prefix}.split")
        for i, aug in enumerate(self.augmentation):
            key = f"{prefix}.augmentation[{i}]"
            name = aug.get("name")
            if name not in AUGMENTATIONS:
                raise ConfigError(
                    f"unknown augmentation {name!r}{suggest(name, AUGMENTATIONS)}; "
                    f"allowed: {', '.join(AUGMENTATIONS)}",
                    key=f"{key}.name",
                )
            _check_kwargs(_augment_fn(name), {k: v for k, v in aug.items() if k != "name"},
                          key, skip=("key", "img", "x"))


def _augment_fn(name: str) -> Any:
    from nnkit.data import augment

    return getattr(augment, name)


def _check_kwargs(fn: Any, kwargs: Mapping[str, Any], key: str, *,
                  skip: Sequence[str] = (), require: bool = True) -> None:
    """Unknown (with a suggestion) or missing keyword arguments of ``fn`` -> ConfigError."""
    sig = inspect.signature(fn)
    params = {n: p for n, p in sig.parameters.items() if n not in skip}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    names = [n for n, p in params.items() if p.kind is not p.VAR_POSITIONAL]
    for k in kwargs:
        if k not in names and not names:
            raise ConfigError(f"unknown argument: {fn.__name__.lstrip('_')} takes no arguments",
                              key=f"{key}.{k}")
        if k not in names:
            raise ConfigError(
                f"unknown argument{suggest(k, names)}; arguments: {', '.join(names)}",
                key=f"{key}.{k}",
            )
    if require:
        missing = [n for n, p in params.items() if p.default is p.empty
                   and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in kwargs]
        if missing:
            raise ConfigError(f"missing argument(s): {', '.join(missing)}", key=key)


@dataclass(frozen=True)
class PlateauConfig:
    """``optimizer.plateau``: reduce-on-plateau (see :class:`nnkit.optim.Plateau`)."""

    monitor: str = _field("val_loss")
    mode: str = _field("auto", choices=("min", "max", "auto"))
    patience: int = _field(3, ge=1)
    factor: float = _field(0.1, gt=0.0, lt=1.0)
    min_delta: float = _field(0.0, ge=0.0)
    cooldown: int = _field(0, ge=0)
    min_scale: float = _field(0.0, ge=0.0)


@dataclass(frozen=True)
class OptimizerConfig:
    """``optimizer`` section -> :func:`nnkit.optim.make` (+ :func:`nnkit.optim.schedule`).

    ``schedule`` is ``{name: <schedule>, ...its arguments}``; its peak rate, the
    ``learning_rate`` (``max_lr`` for ``one_cycle`` and ``cyclic``) argument, is always
    ``lr`` and may not be given in the schedule (``lr`` has a default, so a rate given in
    both places could not tell which one was meant; a sweep over ``optimizer.lr`` varies
    it). A step count given as ``auto`` means all optimizer steps of the run (``epochs *
    (n_train // batch_size) // accumulate``). ``options`` go to the Optax factory (``b1``,
    ``momentum``, ...).
    """

    name: str = _field("adam", choices=_optimizers)
    lr: float = _field(1e-3, gt=0.0)
    schedule: dict[str, Any] | None = _field(None)
    weight_decay: float = _field(0.0, ge=0.0)
    clip_norm: float | None = _field(None, gt=0.0)
    accumulate: int = _field(1, ge=1)
    plateau: PlateauConfig | None = _field(None)
    options: dict[str, Any] = _field(factory=dict)

    def _check(self, prefix: str) -> None:
        from nnkit import optim

        factory = optim.OPTIMIZERS[self.name][0]
        if self.name in ("sgd",):
            import optax

            factory = optax.sgd
        _check_kwargs(factory, self.options, f"{prefix}.options",
                      skip=("learning_rate",), require=False)
        if self.schedule is not None:
            key = f"{prefix}.schedule"
            name = self.schedule.get("name")
            if name not in optim.SCHEDULES:
                raise ConfigError(
                    f"unknown schedule {name!r}{suggest(name, optim.SCHEDULES)}; allowed: "
                    f"{', '.join(sorted(optim.SCHEDULES))}",
                    key=f"{key}.name",
                )
            args = {k: v for k, v in self.schedule.items() if k != "name"}
            fn = optim.SCHEDULES[name]
            for peak in _schedule_defaults(fn, self.lr):
                if peak in args:
                    raise ConfigError(
                        f"the schedule's peak rate is {prefix}.lr ({self.lr:g} here), which "
                        f"this would override: give {prefix}.lr: {args[peak]!r} instead and "
                        f"drop {peak} from {key}", key=f"{key}.{peak}")
            _check_kwargs(fn, {**_schedule_defaults(fn, self.lr), **args}, key)
            for k, v in args.items():
                if v == "auto" and not k.endswith("steps"):
                    raise ConfigError("'auto' is only allowed for *_steps arguments",
                                      key=f"{key}.{k}")


def _schedule_defaults(fn: Any, lr: float) -> dict[str, float]:
    params = inspect.signature(fn).parameters
    for name in ("learning_rate", "max_lr"):
        if name in params:
            return {name: lr}
    return {}


@dataclass(frozen=True)
class EarlyStoppingConfig:
    """``training.early_stopping`` (see :class:`nnkit.train.EarlyStopping`).

    ``mode`` is ``min``, ``max`` or ``auto`` (the default, as for ``optimizer.plateau``:
    the direction of ``monitor``, :func:`nnkit.metrics.lower_is_better`); ``null``, which
    older run directories' ``config.yaml`` hold, also means ``auto``.
    """

    monitor: str = _field("val_loss")
    mode: str | None = _field("auto", choices=("min", "max", "auto"))
    patience: int = _field(5, ge=1)
    min_delta: float = _field(0.0, ge=0.0)
    restore_best: bool = _field(True)

    @property
    def resolved_mode(self) -> str:
        """``"min"`` or ``"max"``: ``mode``, with ``auto`` (or ``null``) ``"min"`` for
        losses/errors and ``"max"`` otherwise."""
        from nnkit import metrics as M

        return M.monitor_mode(self.monitor, self.mode or "auto")


@dataclass(frozen=True)
class TrainingConfig:
    """``training`` section -> the arguments of :func:`nnkit.train.fit`."""

    epochs: int = _field(10, ge=1)
    early_stopping: EarlyStoppingConfig | None = _field(None)
    grad_mode: str = _field("batch", choices=_grad_modes)
    microbatches: int = _field(1, ge=1)
    l1: float = _field(0.0, ge=0.0)
    l2: float = _field(0.0, ge=0.0)
    mode: str = _field("auto", choices=("auto", "scan", "step"))

    def _check(self, prefix: str) -> None:
        if self.microbatches > 1 and self.grad_mode != "accumulate":
            raise ConfigError("microbatches > 1 needs grad_mode: accumulate",
                              key=f"{prefix}.microbatches")


@dataclass(frozen=True)
class LoggingConfig:
    """``logging`` section: what the run directory gets besides metrics and summary.

    ``checkpoint_keep``: numbered checkpoints kept (the latest ones). ``checkpoint_every``:
    write one after epoch ``e`` when ``(e + 1) % checkpoint_every == 0``, and always after the
    last epoch trained (the last one, early stopping, a stopping callback, SIGINT/SIGTERM,
    the epoch before a non-finite one); ``best.npz`` is written whenever the monitored
    metric improves. A resume goes on from the latest checkpoint, so a run killed outright
    redoes the epochs after it (at most ``checkpoint_every - 1``).
    ``histograms_every``: layer histograms every N epochs (0: off), as TensorBoard events
    and, with ``plots``, PNGs in ``<run>/diagnostics``. ``plots``: the run's PNG figures
    (curves, the model's figures, the diagnostics' histograms); ``false`` writes none.
    """

    tensorboard: bool = _field(True)
    checkpoint_keep: int = _field(3, ge=1)
    checkpoint_every: int = _field(1, ge=1)
    plots: bool = _field(True)
    histograms_every: int = _field(0, ge=0)


@dataclass(frozen=True)
class Config:
    """A whole run configuration (see the module docstring for the layout).

    ``model`` is the model spec for :func:`nnkit.models.build`, validated on load.
    ``parallel`` is a mapping checked by :func:`nnkit.parallel.from_config` when a run
    starts; ``precision`` a policy name or mapping (:func:`nnkit.precision.from_config`),
    validated on load.
    """

    model: dict[str, Any] = _field()
    data: DataConfig = _field()
    optimizer: OptimizerConfig = _field(factory=OptimizerConfig)
    training: TrainingConfig = _field(factory=TrainingConfig)
    loss: str = _field("cross_entropy", choices=_losses)
    metrics: tuple[str, ...] = _field(("accuracy",))
    seed: int = _field(0, ge=0, le=2**32 - 1)
    logging: LoggingConfig = _field(factory=LoggingConfig)
    parallel: dict[str, Any] = _field(factory=dict)
    precision: str | dict[str, Any] | None = _field(None)

    def _check(self, prefix: str) -> None:
        from nnkit import metrics as M
        from nnkit import models
        from nnkit import precision as prec

        try:
            prec.from_config(self.precision)
        except ValueError as e:
            head, sep, rest = str(e).partition(": ")
            if sep and (head == "precision" or head.startswith("precision.")):
                raise ConfigError(rest, key=head) from None
            raise ConfigError(str(e), key="precision") from None

        mb = self.training.microbatches
        if self.data.batch_size % mb:
            raise ConfigError(f"{mb} does not divide data.batch_size {self.data.batch_size} "
                              "(each step splits its batch into equal microbatches)",
                              key="training.microbatches")
        for i, m in enumerate(self.metrics):
            if m in self.metrics[:i]:
                raise ConfigError(f"{m!r} is listed twice (also metrics[{self.metrics.index(m)}])",
                                  key=f"metrics[{i}]")
            try:
                M.get(m)
            except (ValueError, KeyError, TypeError):
                known = list(M.METRICS) + ["top_5_accuracy"]
                raise ConfigError(f"unknown metric {m!r}{suggest(m, known)}; known: "
                                  f"{', '.join(known)}", key=f"metrics[{i}]") from None
        logged = ["train_loss", "val_loss"] + [f"{p}_{m}" for p in ("train", "val")
                                               for m in self.metrics]
        monitors = []
        if self.training.early_stopping is not None:
            monitors.append(("training.early_stopping.monitor",
                             self.training.early_stopping.monitor))
        if self.optimizer.plateau is not None:
            monitors.append(("optimizer.plateau.monitor", self.optimizer.plateau.monitor))
        for key, mon in monitors:
            if mon not in logged:
                raise ConfigError(f"{mon!r} is not logged{suggest(mon, logged)}; logged: "
                                  f"{', '.join(logged)}", key=key)
        models.validate(self.model, key="model")


# ----------------------------------------------------------------------------- API


def parse_config(raw: Mapping[str, Any], *, file: str | None = None,
                 overrides: Sequence[str] = ()) -> Config:
    """A validated :class:`Config` from a mapping (as read by :func:`read_yaml`).

    ``overrides`` (``"a.b=value"``) are applied first; an error in an overridden key says
    ``--set``, other errors name ``file``.

    Raises:
      ConfigError: unknown key (with the closest valid one), wrong type, out-of-range value.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected a mapping, got {type(raw).__name__}", file=file)
    try:  # an override that cannot be applied is the override's fault
        raw = apply_overrides(dict(raw), overrides) if overrides else dict(raw)
    except ConfigError as e:
        raise e.with_file("--set") from None
    try:
        _check_finite(raw)
        return _from_dict(Config, raw, "")
    except ConfigError as e:
        raise e.with_source(file, overrides) from None


def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Reads and validates YAML config ``path`` with ``--set`` style ``overrides``."""
    return parse_config(read_yaml(path), file=str(path), overrides=overrides)


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dicts/lists of a config (every default filled in)."""
    return _plain(cfg)


def dump_config(cfg: Config | Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> str:
    """YAML text of a fully resolved config (``extra`` sections appended, e.g. ``run``)."""
    d = config_to_dict(cfg) if isinstance(cfg, Config) else dict(cfg)
    if extra:
        d = {**d, **extra}
    return yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=100)
