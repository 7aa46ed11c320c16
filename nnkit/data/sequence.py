"""Sequence tasks: ``sine_wave`` forecasting, the ``adding_problem`` and ``chars`` (char-level LM).

``files/tiny_text.txt`` (the default text of ``chars``) was written for nnkit and is dedicated
to the public domain.
"""

from __future__ import annotations

import os
from importlib import resources
from os import PathLike

import numpy as np

from nnkit.data.dataset import DataFormatError, Dataset, check_generated_size
from nnkit.data.registry import register

__all__ = ["sine_wave", "adding_problem", "chars", "default_text"]


def sine_wave(
    n: int = 1000,
    length: int = 20,
    dt: float = 0.1,
    freq: float | tuple[float, float] = 1.0,
    noise: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """Forecast the next sample of a sine: x (n, length, 1), y (n, 1), float32.

    Window ``i`` is ``sin(ω·k·dt + φ)`` for ``k = 0..length-1`` with random phase ``φ`` and
    ``ω`` = ``freq`` (or ``~ U(*freq)`` for a pair); the target is the clean value at
    ``k = length``. ``noise`` is the std of Gaussian noise added to the inputs only.
    """
    if length < 1 or n < 1:
        raise ValueError(f"n and length must be >= 1, got n={n}, length={length}")
    check_generated_size("sine_wave", n, length + 1)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    lo, hi = (freq, freq) if np.isscalar(freq) else freq
    omega = rng.uniform(lo, hi, (n, 1)) if hi != lo else np.full((n, 1), float(lo))
    t = np.arange(length + 1) * dt
    wave = np.sin(omega * t + phase)
    x = wave[:, :length] + noise * rng.standard_normal((n, length))
    return Dataset(
        x=x[..., None].astype(np.float32),
        y=wave[:, length:].astype(np.float32),
        input_shape=(length, 1),
        num_classes=None,
        num_targets=1,
        class_names=(),
        task="sequence",
        name="sine_wave",
    )


def adding_problem(n: int = 1000, length: int = 50, seed: int = 0) -> Dataset:
    """Hochreiter & Schmidhuber's adding problem: x (n, length, 2), y (n, 1), float32.

    Channel 0 holds values ``~ U(0, 1)``; channel 1 is 0 except for two 1-markers, one in each
    half of the sequence. The target is the sum of the two marked values.
    """
    if length < 2:
        raise ValueError(f"length must be >= 2, got {length}")
    check_generated_size("adding_problem", n, length, 2)
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 1, (n, length))
    half = length // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, length, n)
    marks = np.zeros((n, length))
    rows = np.arange(n)
    marks[rows, first] = 1.0
    marks[rows, second] = 1.0
    y = values[rows, first] + values[rows, second]
    return Dataset(
        x=np.stack([values, marks], -1).astype(np.float32),
        y=y[:, None].astype(np.float32),
        input_shape=(length, 2),
        num_classes=None,
        num_targets=1,
        class_names=(),
        task="sequence",
        name="adding_problem",
    )


def default_text() -> str:
    """The small public-domain English text shipped with nnkit (about 7 KB)."""
    return resources.files("nnkit.data").joinpath("files/tiny_text.txt").read_text("utf-8")


def _read_text(path: str | PathLike) -> str:
    if os.path.isdir(path):
        raise IsADirectoryError(f"chars: path {os.fspath(path)} is a directory; pass path= a "
                                "UTF-8 text file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"chars: no text file at path {os.fspath(path)}")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(
            str(path), f"not UTF-8 text at byte {e.start}", offset=e.start
        ) from None


def chars(
    path: str | PathLike | None = None,
    length: int = 32,
    stride: int = 1,
    lowercase: bool = False,
    one_hot: bool = False,
) -> Dataset:
    """Character-level next-token prediction on a UTF-8 text file (default: :func:`default_text`).

    Returns ``x`` (N, length) int32 token ids (``one_hot=True``: (N, length, V) float32) and
    ``y`` (N, length) int32 where ``y[i, t]`` is the token after ``x[i, t]``. Windows start
    every ``stride`` characters. The vocabulary (sorted distinct characters, V of them) is in
    ``class_names``; ``num_classes == num_targets == V``.

    Windows closer than ``length + 1`` characters share text, so the set's ``overlap`` is
    ``ceil((length + 1) / stride) - 1``: split it with :func:`nnkit.data.split_contiguous`
    (``gap=ds.overlap``; the config runner does), not at random, or held-out windows would
    be mostly training text.
    """
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length}, {stride}")
    text = default_text() if path is None else _read_text(path)
    if lowercase:
        text = text.lower()
    if len(text) < length + 1:
        src = "default text" if path is None else str(path)
        raise ValueError(f"{src}: {len(text)} characters, need at least length+1={length + 1}")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    vocab, tokens = np.unique(codes, return_inverse=True)
    windows = np.lib.stride_tricks.sliding_window_view(tokens.astype(np.int32), length + 1)
    windows = windows[::stride]
    x = np.ascontiguousarray(windows[:, :-1])
    y = np.ascontiguousarray(windows[:, 1:])
    v = len(vocab)
    if one_hot:
        x = np.eye(v, dtype=np.float32)[x]
    return Dataset(
        x=x,
        y=y,
        input_shape=x.shape[1:],
        num_classes=v,
        num_targets=v,
        class_names=tuple(chr(int(c)) for c in vocab),
        task="sequence",
        name="chars",
        overlap=-(-(length + 1) // stride) - 1,
    )


register("sine_wave", sine_wave, "forecast the next value of a sine from a window (n, length)")
register("adding_problem", adding_problem, "sum the two marked values in a (length, 2) sequence")
register("chars", chars, "character-level next-char prediction on a text file (path, length)")
