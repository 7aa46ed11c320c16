"""A fingerprint of the data a run trains on: recorded when it starts, checked on resume and eval.

``nnkit train --resume`` and ``nnkit eval`` rebuild a run's data from its ``config.yaml``
(data set, options such as ``path``, split, seed, standardisation). Files under
``data.options.path`` may have been replaced since, and a data set nnkit generates may come
out differently from another nnkit version; the config alone cannot tell. So when a run
starts, :func:`data_fingerprint` records per split (``train``, ``val``, ``test``) the number
of examples, the per-example shapes and dtypes of ``x`` and ``y``, and a BLAKE2b digest
(16 bytes) of the bytes of each, computed from the prepared arrays (after loading,
splitting and standardising: what training sees). It goes into the ``run`` section of the
run's ``config.yaml`` under :data:`FINGERPRINT_KEY`. About 0.15 s for MNIST's 70,000
float32 28x28 images on one CPU core.

``--resume`` refuses to go on when a split differs (:func:`check_resume_data`, before
anything is restored or written); ``nnkit eval`` warns when the split it evaluates differs
and evaluates it anyway (:func:`check_eval_data`). Runs from before the fingerprint was
recorded are not checked (a one-line note says so).
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from nnkit.config import Config
from nnkit.run.rundir import RunError

__all__ = ["FINGERPRINT_KEY", "DIGEST", "SPLITS", "DataChangedError", "split_fingerprint",
           "data_fingerprint", "data_differences", "data_source", "check_resume_data",
           "check_eval_data"]

FINGERPRINT_KEY = "data_fingerprint"
"""Key of the fingerprint in the ``run`` section of a run's ``config.yaml``."""

DIGEST = "blake2b-128"
"""The hash of the array bytes (``hashlib.blake2b`` with a 16-byte digest), recorded with
the fingerprint: a fingerprint made with another hash has its contents left unchecked."""

SPLITS = ("train", "val", "test")


class DataChangedError(RunError):
    """The data rebuilt from a run's config are not the data the run started with."""


def _digest(a: np.ndarray) -> str:
    """BLAKE2b (16 bytes, hex) of ``a``'s bytes in C order, little-endian."""
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.ascontiguousarray(a)
    h = hashlib.blake2b(digest_size=16)
    h.update(memoryview(a.reshape(-1)).cast("B"))
    return h.hexdigest()


def split_fingerprint(xy: tuple[Any, Any] | None) -> dict[str, Any] | None:
    """``{"n", "x_shape", "x_dtype", "y_shape", "y_dtype", "x_digest", "y_digest"}`` of one
    split (shapes per example, without the leading example axis), ``None`` for no split."""
    if xy is None:
        return None
    x, y = (np.asarray(a) for a in xy)
    return {"n": int(x.shape[0]),
            "x_shape": [int(d) for d in x.shape[1:]], "x_dtype": x.dtype.name,
            "y_shape": [int(d) for d in y.shape[1:]], "y_dtype": y.dtype.name,
            "x_digest": _digest(x), "y_digest": _digest(y)}


def data_fingerprint(prep: Any, splits: Sequence[str] = SPLITS) -> dict[str, Any]:
    """The fingerprint of a :class:`~nnkit.run.prepare.Prepared` run's data:
    ``{"digest": DIGEST, "train": ..., "val": ..., "test": ...}`` (each
    :func:`split_fingerprint`; ``splits`` picks which are computed)."""
    return {"digest": DIGEST, **{s: split_fingerprint(getattr(prep, s)) for s in splits}}


def _shape(rec: Mapping[str, Any], xy: str) -> str:
    shape = rec.get(f"{xy}_shape")
    dims = "x".join(str(d) for d in shape) if isinstance(shape, list) and shape else "scalar"
    return f"{dims} {rec.get(f'{xy}_dtype')}"


def _split_difference(split: str, was: Any, now: Mapping[str, Any] | None,
                      check_content: bool) -> str | None:
    """What differs in one split (count, shape/dtype, or content), or ``None``."""
    if not isinstance(was, Mapping) and was is not None:
        return f"{split} split: its record in the run is not a fingerprint nnkit wrote"
    if was is None and now is None:
        return None
    if was is None:
        return f"{split} split: {now['n']} examples now, none when the run started"
    if now is None:
        return f"{split} split: none now, {was.get('n')} examples when the run started"
    if was.get("n") != now["n"]:
        return (f"{split} split: count differs: {now['n']} examples now, {was.get('n')} when "
                "the run started")
    for xy, what in (("x", "inputs"), ("y", "targets")):
        if (was.get(f"{xy}_shape"), was.get(f"{xy}_dtype")) != (now[f"{xy}_shape"],
                                                                 now[f"{xy}_dtype"]):
            return (f"{split} split: shape of the {what} ({xy}) differs: {_shape(now, xy)} per "
                    f"example now, {_shape(was, xy)} when the run started")
    if check_content:
        changed = [f"{what} ({xy})" for xy, what in (("x", "inputs"), ("y", "targets"))
                   if was.get(f"{xy}_digest") != now[f"{xy}_digest"]]
        if changed:
            return (f"{split} split: content differs: same count ({now['n']}) and shapes, "
                    f"other {' and '.join(changed)}")
    return None


def data_differences(recorded: Any, now: Mapping[str, Any],
                     splits: Sequence[str] = SPLITS) -> list[str]:
    """One line per split of ``splits`` whose fingerprint in ``now`` differs from
    ``recorded`` (what a run recorded when it started), naming what differs: the count, a
    shape or dtype, or the content. Contents are compared only when both were hashed with
    :data:`DIGEST`."""
    if not isinstance(recorded, Mapping):
        return ["the run's data fingerprint is not one nnkit wrote"]
    same_hash = recorded.get("digest") == now.get("digest") == DIGEST
    return [d for s in splits
            if (d := _split_difference(s, recorded.get(s), now.get(s), same_hash)) is not None]


def data_source(cfg: Config, meta: Mapping[str, Any] | None = None) -> str:
    """Where a run's data come from, as the messages about changed data name it: the files
    under ``data.options.path``, a loader's default location, or a data set nnkit builds
    (with both nnkit versions when the run started with another one)."""
    from nnkit import __version__
    from nnkit.data.registry import loader

    name = cfg.data.dataset
    path = cfg.data.options.get("path")
    if path:
        return f"the data under the config's data.options.path ({path})"
    try:
        takes_path = "path" in inspect.signature(loader(name)).parameters
    except (KeyError, ValueError, TypeError):  # pragma: no cover - prepare has loaded it
        takes_path = False
    if takes_path:
        return f"the files the data set {name!r} reads from its default location"
    was = (meta or {}).get("nnkit_version")
    versions = ("" if not was or was == __version__
                else f" (the run started with nnkit {was}, this is nnkit {__version__})")
    return f"the data set {name!r} as nnkit builds it from the config's data section{versions}"


def _note_unchecked(run_dir: Any, what: str) -> None:
    print(f"note: {run_dir} records no data fingerprint (a run from before nnkit recorded "
          f"one): {what}", file=sys.stderr, flush=True)


def check_resume_data(run_dir: Any, prep: Any, meta: Mapping[str, Any],
                      *, quiet: bool = False) -> None:
    """Compares the data of ``prep`` (rebuilt from ``run_dir``'s config) with the fingerprint
    in the run's ``meta`` (its ``config.yaml``'s ``run`` section).

    A run without a fingerprint (from before it was recorded) is not checked: a note on
    stderr says so (``quiet``: not even that).

    Raises:
      DataChangedError: naming each split that differs and what differs, and the source of
        the data (``data.options.path``) that changed since the run started.
    """
    recorded = meta.get(FINGERPRINT_KEY)
    if recorded is None:
        if not quiet:
            _note_unchecked(run_dir, "its data were not checked against the ones it trained on")
        return
    diffs = data_differences(recorded, data_fingerprint(prep))
    if diffs:
        raise DataChangedError(
            f"{run_dir}: cannot resume: the data are not the ones the run started with "
            f"({'; '.join(diffs)}): {data_source(prep.cfg, meta)} changed since the run "
            "started, and going on would train on other data: put back the data the run was "
            "trained on, or start a new run")


def check_eval_data(run_dir: Any, prep: Any, meta: Mapping[str, Any], split: str,
                    *, quiet: bool = False) -> str | None:
    """Compares ``split`` of ``prep`` (rebuilt from ``run_dir``'s config) with the run's
    fingerprint; a difference is printed as a warning on stderr (the metrics will describe
    other data) and returned. A run without a fingerprint gets a note (unless ``quiet``) and
    no check."""
    recorded = meta.get(FINGERPRINT_KEY)
    if recorded is None:
        if not quiet:
            _note_unchecked(run_dir, f"its {split} split was not checked against the data it "
                            "was trained and evaluated on")
        return None
    diffs = data_differences(recorded, data_fingerprint(prep, (split,)), (split,))
    if not diffs:
        return None
    msg = (f"{run_dir}: the {split} split is not the data the run started with "
           f"({'; '.join(diffs)}): {data_source(prep.cfg, meta)} changed since the run "
           f"started; these numbers describe other data than the run's {split} split")
    print(f"warning: {msg}", file=sys.stderr, flush=True)
    return msg
