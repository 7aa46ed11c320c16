"""The :class:`Dataset` record returned by :func:`nnkit.data.load`, and :class:`DataFormatError`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["Dataset", "DataFormatError", "Task"]

Task = Literal["classification", "regression", "sequence"]
_TASKS = ("classification", "regression", "sequence")


class DataFormatError(ValueError):
    """A data file is truncated, oversized or corrupt.

    The message always starts with the file name; ``file``, ``offset`` (byte offset into the
    decompressed content, when known) and ``field`` (the header field at fault, when known)
    are also available as attributes.
    """

    def __init__(
        self, file: str, detail: str, *, offset: int | None = None, field: str | None = None
    ) -> None:
        super().__init__(f"{file}: {detail}")
        self.file = file
        self.detail = detail
        self.offset = offset
        self.field = field


@dataclass(frozen=True, eq=False)
class Dataset:
    """A loaded data set: arrays plus the metadata a model needs.

    Attributes:
        x: inputs, shape ``(n, *input_shape)``; float32, except token sequences (``chars``)
            which are int32 ids.
        y: targets, shape ``(n,)`` int32 class ids for classification, ``(n, num_targets)``
            float32 for regression, per-task shapes for sequence tasks (see each loader).
        input_shape: shape of one example, no batch dimension.
        num_classes: number of classes (``None`` for real-valued targets).
        num_targets: width of the model's output layer: ``num_classes`` for class targets,
            ``y.shape[-1]`` for real-valued targets.
        class_names: one name per class (the vocabulary for ``chars``); ``()`` if none.
        task: ``"classification"``, ``"regression"`` or ``"sequence"``.
        name: the registry name the set was loaded under.
        x_test, y_test: the official test split where the set has one, else ``None``.
        overlap: how many following examples share data with each example (``chars``:
            windows of one text); such a set is split into contiguous blocks with
            ``overlap`` examples dropped between them (:func:`nnkit.data.split_contiguous`),
            not at random. ``0``: independent examples.
    """

    x: np.ndarray
    y: np.ndarray
    input_shape: tuple[int, ...]
    num_classes: int | None
    num_targets: int
    class_names: tuple[str, ...]
    task: Task
    name: str
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.task not in _TASKS:
            raise ValueError(f"{self.name}: task must be one of {_TASKS}, got {self.task!r}")
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        pairs = [("x", "y", self.x, self.y)]
        if self.x_test is not None or self.y_test is not None:
            if self.x_test is None or self.y_test is None:
                raise ValueError(f"{self.name}: x_test and y_test must be given together")
            pairs.append(("x_test", "y_test", self.x_test, self.y_test))
        for xn, yn, x, y in pairs:
            if tuple(x.shape[1:]) != self.input_shape:
                raise ValueError(
                    f"{self.name}: {xn}.shape {x.shape} does not match input_shape "
                    f"{self.input_shape}"
                )
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{self.name}: {xn} has {x.shape[0]} examples but {yn} has {y.shape[0]}"
                )
        if self.num_classes is not None and self.class_names:
            if len(self.class_names) != self.num_classes:
                raise ValueError(
                    f"{self.name}: {len(self.class_names)} class names for "
                    f"{self.num_classes} classes"
                )

    @classmethod
    def classification(
        cls,
        name: str,
        x: np.ndarray,
        y: np.ndarray,
        num_classes: int,
        class_names: tuple[str, ...] | None = None,
        x_test: np.ndarray | None = None,
        y_test: np.ndarray | None = None,
    ) -> Dataset:
        """Build a classification set: ``x`` cast to float32, ``y`` (n,) to int32."""
        if class_names is None:
            class_names = tuple(str(i) for i in range(num_classes))
        return cls(
            x=np.asarray(x, np.float32),
            y=np.asarray(y, np.int32),
            input_shape=tuple(np.shape(x)[1:]),
            num_classes=int(num_classes),
            num_targets=int(num_classes),
            class_names=tuple(class_names),
            task="classification",
            name=name,
            x_test=None if x_test is None else np.asarray(x_test, np.float32),
            y_test=None if y_test is None else np.asarray(y_test, np.int32),
        )

    @classmethod
    def regression(cls, name: str, x: np.ndarray, y: np.ndarray) -> Dataset:
        """Build a regression set: ``x`` and ``y`` (n, k) cast to float32."""
        y = np.asarray(y, np.float32)
        if y.ndim == 1:
            y = y[:, None]
        return cls(
            x=np.asarray(x, np.float32),
            y=y,
            input_shape=tuple(np.shape(x)[1:]),
            num_classes=None,
            num_targets=int(y.shape[-1]),
            class_names=(),
            task="regression",
            name=name,
        )

    def __len__(self) -> int:
        """Number of training examples (``x.shape[0]``)."""
        return int(self.x.shape[0])

    @property
    def has_test(self) -> bool:
        """Whether the set carries an official test split."""
        return self.x_test is not None

    def replace(self, **changes: object) -> Dataset:
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        test = f", test={self.x_test.shape[0]}" if self.x_test is not None else ""
        return (
            f"Dataset(name={self.name!r}, task={self.task!r}, n={len(self)}, "
            f"input_shape={self.input_shape}, x={self.x.dtype}, "
            f"y={self.y.dtype}{tuple(self.y.shape)}, num_classes={self.num_classes}, "
            f"num_targets={self.num_targets}{test})"
        )


GENERATED_MAX_BYTES = 1 << 30
"""The largest array a generator makes (1 GiB of float64, before the float32 copy)."""


def check_generated_size(name: str, n: int, *dims: int) -> None:
    """``ValueError`` naming the sizes before a generator allocates an ``(n, *dims)``
    float64 array over :data:`GENERATED_MAX_BYTES` (a ``MemoryError`` deep in NumPy
    otherwise)."""
    nbytes = 8 * int(n)
    for d in dims or (1,):
        nbytes *= int(d)
    if nbytes > GENERATED_MAX_BYTES:
        shape = " x ".join(str(v) for v in (n, *dims))
        raise ValueError(f"{name}: n={n} ({shape} values) would take {nbytes / 2**30:.1f} GiB "
                         f"(at most {GENERATED_MAX_BYTES >> 30} GiB)")
