"""Checkpoints of pytrees (e.g. :class:`nnkit.train.TrainState`) without pickle.

Format: ONE ``.npz`` file (a zip of ``.npy`` arrays, read back with ``allow_pickle=False``):

* one entry per leaf, keyed by its tree path joined with ``/`` (``params/dense_0/w``,
  ``opt_state/inner_state/0/mu/dense_0/w``, ``key``);
* one entry ``__nnkit_meta__``: UTF-8 JSON with the format version, nnkit and jax versions,
  ``step``, ``epoch``, ``config``, ``metrics``, the tree structure (text) and, per leaf, its
  dtype, shape and CRC-32.

Restoring needs a *target* with the same structure (e.g. the state built by
``create_train_state``, or ``jax.eval_shape(lambda: create_train_state(...))``), so
NamedTuple optimizer states come back as their own types; the file only supplies arrays.
Typed PRNG keys are stored as raw ``uint32`` key data and re-wrapped; ``bfloat16`` and
other ml_dtypes leaves are stored as same-width unsigned ints and viewed back.

Writes are atomic: a temporary file in the same directory is written, ``fsync``-ed and
``os.replace``-d over the target, so a crash mid-write leaves the previous file intact.

Writing while training goes on: :func:`to_host` copies a tree to host memory on the thread
that owns its arrays (one transfer; the copy does not alias device buffers that a donating
step may reuse), and :class:`BackgroundWriter` runs ``save(path, host_tree)`` on one
background thread, one write at a time, raising a failed write's error in the caller.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import threading
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import jax
import jax.numpy as jnp
import numpy as np

from nnkit._checks import check_int

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointManager",
    "save",
    "to_host",
    "HostTree",
    "BackgroundWriter",
    "restore",
    "load_meta",
    "load_arrays",
    "path_str",
    "atomic_write",
    "FORMAT_VERSION",
]

FORMAT = "nnkit-checkpoint"
FORMAT_VERSION = 1
_META = "__nnkit_meta__"


class CheckpointError(ValueError):
    """A checkpoint is corrupt, truncated, not an nnkit checkpoint, or does not fit the
    target (the message names the file and, for a mismatch, the leaf path and both shapes).
    """

    def __init__(self, message: str, *, file: str | os.PathLike | None = None) -> None:
        self.file = None if file is None else os.fspath(file)
        super().__init__(f"{self.file}: {message}" if self.file else message)


class CheckpointMismatchError(CheckpointError):
    """A readable, intact checkpoint whose leaves do not fit the target (a missing or extra
    leaf, another shape or dtype): the file is fine, the target (model, optimizer) differs
    from the one it was saved from."""


# ----------------------------------------------------------------------------- paths


def _escape(s: str) -> str:
    return s.replace("%", "%25").replace("/", "%2F")


def path_str(path: tuple) -> str:
    """A tree path as ``a/b/0/c`` (dict keys, attribute names and sequence indices)."""
    parts = []
    for p in path:
        if isinstance(p, jax.tree_util.DictKey):
            parts.append(_escape(str(p.key)))
        elif isinstance(p, jax.tree_util.GetAttrKey):
            parts.append(_escape(p.name))
        elif isinstance(p, jax.tree_util.SequenceKey):
            parts.append(str(p.idx))
        elif isinstance(p, jax.tree_util.FlattenedIndexKey):
            parts.append(str(p.key))
        else:  # pragma: no cover - custom key types
            parts.append(_escape(str(p)))
    return "/".join(parts) or "."


def _is_key(x: Any) -> bool:
    dt = getattr(x, "dtype", None)
    return dt is not None and jnp.issubdtype(dt, jax.dtypes.prng_key)


def _storage(arr: np.ndarray) -> np.ndarray:
    """Arrays NumPy cannot save natively (bfloat16, float8, int4) as same-width uints."""
    if type(arr.dtype).__module__.startswith("ml_dtypes") or arr.dtype.kind == "V":
        return arr.view(np.dtype(f"uint{arr.dtype.itemsize * 8}"))
    return arr


def _crc(arr: np.ndarray) -> int:
    return zlib.crc32(np.asarray(arr).tobytes(order="C")) & 0xFFFFFFFF


# ----------------------------------------------------------------------------- writing


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):  # not supported everywhere (e.g. Windows)
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _temp_file(path: Path) -> tuple[int, str]:
    """A new temporary file ``.<name>.<random>.tmp`` next to ``path``, opened for writing,
    with the permissions ``open(path, "w")`` would give: those of ``path`` if it exists,
    else ``0o666`` less the umask (``tempfile.mkstemp`` makes ``0o600`` files)."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        mode = None
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)  # the kernel applies the umask
        except FileExistsError:
            continue
        if mode is not None:
            with contextlib.suppress(OSError):
                os.chmod(fd if os.chmod in os.supports_fd else tmp, mode)
        return fd, str(tmp)
    raise FileExistsError(f"no free temporary file name next to {path}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> Path:
    """Runs ``write(f)`` on a temporary file next to ``path``, fsyncs it and renames it over
    ``path`` (``os.replace``). On any error the temporary file is removed and ``path`` is
    left as it was. The file gets the permissions a plain ``open`` would give it (an
    existing file's, else ``0o666`` less the umask)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file name to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def jsonable(x: Any) -> Any:
    """``x`` as JSON-ready Python: mappings with string keys, lists, and scalars (0-d arrays
    become Python numbers, non-finite floats ``None``, anything else its ``str``)."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic | np.ndarray | jax.Array) and np.ndim(x) == 0:
        x = np.asarray(x).item()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    if x is None or isinstance(x, bool | int | float | str):
        return x
    return str(x)


def _is_python_scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float | complex) and not isinstance(value, np.generic)


def _host_array(value: Any) -> np.ndarray:
    """A leaf as a NumPy array; a Python scalar with the dtype JAX gives it (``1.5`` ->
    float32 unless ``jax_enable_x64``), so it restores into what ``jax.eval_shape`` of the
    same tree describes, bit for bit."""
    if _is_python_scalar(value):
        try:
            return np.asarray(jnp.asarray(value))
        except OverflowError:  # an int beyond int32 without x64: keep NumPy's int64
            return np.asarray(value)
    return np.asarray(value)


class HostTree:
    """A pytree's leaves copied to host memory, with what :func:`save` records about them:
    made by :func:`to_host` on the thread that owns the arrays, then writable by :func:`save`
    (or :meth:`CheckpointManager.save`) on any other thread while training goes on.

    Attributes:
      treedef: the tree structure, as text (the checkpoint's ``tree`` entry).
      leaves: ``(key, array, key_impl)`` per leaf: its tree path joined with ``/``, its
        values (NumPy, owning its memory: no device buffer is read later) and, for a typed
        PRNG key (stored as its raw key data), the key implementation's name, else ``None``.
    """

    __slots__ = ("treedef", "leaves")

    def __init__(self, treedef: str, leaves: list[tuple[str, np.ndarray, str | None]]) -> None:
        self.treedef = treedef
        self.leaves = leaves

    @property
    def nbytes(self) -> int:
        """Host memory the leaves hold."""
        return sum(a.nbytes for _, a, _ in self.leaves)


def _host_tree(tree: Any, *, copy: bool) -> HostTree:
    """``tree``'s leaves on the host: one device-to-host transfer for the whole tree; with
    ``copy``, arrays that view memory they do not own (a CPU device buffer, which the next
    donating step may reuse) are copied."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    host = jax.device_get([jax.random.key_data(x) if _is_key(x) else x for _, x in flat])
    leaves: list[tuple[str, np.ndarray, str | None]] = []
    seen: set[str] = set()
    for (p, leaf), value in zip(flat, host, strict=True):
        k = path_str(p)
        if k in seen or k == _META:
            raise ValueError(f"checkpoint: two leaves map to the same key {k!r}")
        seen.add(k)
        arr = _host_array(value)
        if arr.dtype == object:
            raise TypeError(f"checkpoint: leaf {k!r} is not an array ({type(leaf).__name__})")
        if copy and not arr.flags.owndata:
            arr = arr.copy()
        leaves.append((k, arr, str(jax.random.key_impl(leaf)) if _is_key(leaf) else None))
    return HostTree(str(treedef), leaves)


def to_host(tree: Any) -> HostTree:
    """``tree`` (arrays, typed keys, scalars) copied to host memory for :func:`save` on
    another thread: one device-to-host transfer; the copies own their memory, so the
    arrays of ``tree`` may be donated or deleted right after. A :class:`HostTree` is
    returned as it is.

    Raises:
      ValueError: two leaves map to the same key.
      TypeError: a leaf is not an array.
    """
    return tree if isinstance(tree, HostTree) else _host_tree(tree, copy=True)


def save(
    path: str | os.PathLike,
    tree: Any,
    *,
    step: int | None = None,
    epoch: int | None = None,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Writes ``tree`` (arrays, typed keys, scalars, or a :class:`HostTree` from
    :func:`to_host`) to ``path`` atomically; returns the path.

    ``step``, ``epoch``, ``config``, ``metrics`` and ``extra`` go into the JSON metadata
    (non-finite floats become ``null``). One device-to-host transfer for the whole tree.
    """
    from nnkit import __version__

    host = tree if isinstance(tree, HostTree) else _host_tree(tree, copy=False)
    arrays: dict[str, np.ndarray] = {}
    leaves: dict[str, dict[str, Any]] = {}
    for k, arr, key_impl in host.leaves:
        info: dict[str, Any] = {"dtype": arr.dtype.name, "shape": list(arr.shape)}
        if key_impl is not None:
            info["key_impl"] = key_impl
        stored = np.require(_storage(arr), requirements="C")
        info["crc32"] = _crc(stored)
        arrays[k] = stored
        leaves[k] = info
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "nnkit_version": __version__,
        "jax_version": jax.__version__,
        "step": None if step is None else int(step),
        "epoch": None if epoch is None else int(epoch),
        "config": jsonable(config) if config is not None else None,
        "metrics": jsonable(metrics) if metrics is not None else None,
        "extra": jsonable(extra) if extra is not None else None,
        "tree": host.treedef,
        "leaves": leaves,
    }
    blob = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    return atomic_write(path, lambda f: np.savez(f, **arrays, **{_META: blob}))


# ----------------------------------------------------------------------------- reading


def _read(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All arrays (verified against the metadata's dtypes, shapes and CRCs) and the meta."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):  # a bare .npy array
            raise CheckpointError("not an nnkit checkpoint (a single .npy array, not an .npz "
                                  "archive)", file=path)
        with z:
            if _META not in z.files:
                raise CheckpointError("not an nnkit checkpoint (no metadata entry)", file=path)
            meta = json.loads(bytes(z[_META]).decode("utf-8"))
            arrays = {k: z[k] for k in z.files if k != _META}
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e):  # not a zip: NumPy would read it as a pickle, which we never do
            raise CheckpointError("not an nnkit checkpoint (not an .npz archive)",
                                  file=path) from None
        raise CheckpointError(f"corrupt or truncated checkpoint (ValueError: {e})",
                              file=path) from None
    except Exception as e:  # noqa: BLE001 - zip/npy/json errors all mean "unreadable"
        raise CheckpointError(
            f"corrupt or truncated checkpoint ({type(e).__name__}: {e})", file=path
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError("not an nnkit checkpoint (bad metadata)", file=path)
    if int(meta.get("format_version", -1)) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint format {meta.get('format_version')} is newer than this nnkit "
            f"reads ({FORMAT_VERSION})",
            file=path,
        )
    leaves = meta.get("leaves", {})
    if set(leaves) != set(arrays):
        raise CheckpointError(
            f"corrupt checkpoint: entries {sorted(set(arrays) ^ set(leaves))} do not match "
            "its metadata",
            file=path,
        )
    out = {}
    for k, arr in arrays.items():
        info = leaves[k]
        if list(arr.shape) != list(info["shape"]) or _crc(arr) != info["crc32"]:
            raise CheckpointError(f"corrupt checkpoint: leaf {k!r} fails its checksum",
                                  file=path)
        if arr.dtype.name != info["dtype"]:
            arr = arr.view(np.dtype(getattr(jnp, info["dtype"], info["dtype"])))
        out[k] = arr
    return out, meta


def load_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a checkpoint (verifies the whole file)."""
    return _read(path)[1]


def load_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``({leaf_path: array}, meta)`` without a target (typed keys stay raw key data)."""
    return _read(path)


def _placed(value: Any, leaf: Any) -> jax.Array:
    """``value`` as a jax array placed as the target ``leaf``: with its sharding when it is
    split over several devices (FSDP), committed to one device, or a ``ShapeDtypeStruct``
    that names a sharding; else on the default device, like ``jnp.asarray``. A 64-bit array
    without ``jax_enable_x64`` stays a NumPy array (JAX would narrow it to 32 bits)."""
    if isinstance(value, np.ndarray) and jax.dtypes.canonicalize_dtype(value.dtype) != value.dtype:
        return value
    sharding = getattr(leaf, "sharding", None)
    if isinstance(leaf, jax.Array):
        if len(sharding.device_set) == 1 and not getattr(leaf, "_committed", True):
            sharding = None  # an uncommitted array: keep the restored one free to move too
    elif not isinstance(leaf, jax.ShapeDtypeStruct):
        sharding = None
    return jnp.asarray(value) if sharding is None else jax.device_put(value, sharding)


def restore(path: str | os.PathLike, target: Any, *, strict: bool = True) -> tuple[Any, dict]:
    """Reads checkpoint ``path`` into the structure of ``target``; returns ``(tree, meta)``.

    ``target`` may hold arrays or ``jax.ShapeDtypeStruct`` leaves: only its structure,
    shapes and dtypes are used. Build one without allocating with
    ``nnkit.core.abstract_init(model, input_shape)`` (params and state) or
    ``jax.eval_shape(lambda: create_train_state(model, shape, opt, 0))`` (a train state);
    the input shape is static, so close over it rather than passing it to ``eval_shape``.
    Leaves come back as jax arrays, bit-identical to the saved ones (64-bit ones without
    ``jax_enable_x64`` as NumPy arrays: JAX would narrow them); typed-key leaves come back
    as typed keys. Each leaf is placed as the target's: with its sharding when the
    target leaf is a jax array split over devices (e.g. FSDP) or committed to one, or a
    ``ShapeDtypeStruct`` with a ``sharding``; else on the default device. A Python scalar
    leaf (``1.5``, ``3``) of a concrete target expects the dtype :func:`save` stored it with
    (JAX's: float32 / int32 without ``jax_enable_x64``), so the tree that was saved is a
    valid target.

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: corrupt/truncated file or not an nnkit checkpoint.
      CheckpointMismatchError: (a CheckpointError) a readable checkpoint that does not fit
        ``target``: a target leaf missing from the file; a leaf whose shape or dtype differs
        (the message names the leaf path and both shapes); with ``strict``, leaves in the
        file that the target lacks.
    """
    arrays, meta = _read(path)
    flat, treedef = jax.tree_util.tree_flatten_with_path(target)
    out = []
    seen = set()
    for p, leaf in flat:
        k = path_str(p)
        seen.add(k)
        if k not in arrays:
            raise CheckpointMismatchError(
                f"leaf {k!r} of the target is missing from the checkpoint "
                f"(it has {len(arrays)} leaves, e.g. {sorted(arrays)[:5]})",
                file=path,
            )
        arr = arrays[k]
        info = meta["leaves"][k]
        if _is_key(leaf):
            want_shape = tuple(leaf.shape)
            got_shape = tuple(arr.shape[: arr.ndim - 1]) if "key_impl" in info else None
            if got_shape != want_shape:
                have = (f"a key array of shape {got_shape}" if got_shape is not None
                        else f"raw data of shape {tuple(arr.shape)}")
                raise CheckpointMismatchError(
                    f"leaf {k!r}: checkpoint has {have}, target expects a key array of "
                    f"shape {want_shape}",
                    file=path,
                )
            impl = getattr(leaf.dtype, "_impl", None)
            key = (jax.random.wrap_key_data(jnp.asarray(arr), impl=impl)
                   if impl is not None else jax.random.wrap_key_data(jnp.asarray(arr)))
            out.append(_placed(key, leaf))
            continue
        # a Python scalar was saved with the dtype JAX gives it (``_host_array``)
        want = (_host_array(leaf).dtype if _is_python_scalar(leaf)
                else np.dtype(getattr(leaf, "dtype", np.asarray(leaf).dtype)))
        want_shape = tuple(np.shape(leaf))
        if tuple(arr.shape) != want_shape or arr.dtype != want:
            raise CheckpointMismatchError(
                f"leaf {k!r}: checkpoint has shape {tuple(arr.shape)} {arr.dtype}, target "
                f"expects shape {want_shape} {want}",
                file=path,
            )
        out.append(_placed(arr, leaf))
    if strict and set(arrays) - seen:
        extra = sorted(set(arrays) - seen)
        raise CheckpointMismatchError(
            f"checkpoint has {len(extra)} leaves the target lacks: {extra[:8]} "
            "(pass strict=False to ignore them)",
            file=path,
        )
    return jax.tree_util.tree_unflatten(treedef, out), meta


# ----------------------------------------------------------------------------- background


class BackgroundWriter:
    """Runs write jobs (e.g. :func:`save` of a :class:`HostTree`) on a background thread,
    one at a time: :meth:`submit` first waits for the job in flight, so at most one job (and
    the host copy it holds) is pending while the caller goes on.

    A job's exception is raised in the caller's thread by the next :meth:`submit` or
    :meth:`wait`, with a note naming the job; it is never dropped. Waiting uses the job's
    own completion event, not ``Thread.join`` (which, interrupted by Ctrl-C, can take a
    running thread for finished in Python 3.11), so a wait interrupted by
    ``KeyboardInterrupt`` can be repeated and still waits for the job. The thread is not a
    daemon, so a normal interpreter exit waits for it too.
    """

    def __init__(self, name: str = "nnkit-writer") -> None:
        self.name = name
        self._done = threading.Event()
        self._done.set()  # nothing in flight
        self._error: BaseException | None = None
        self._what = ""

    @property
    def busy(self) -> bool:
        """Whether a job is still running."""
        return not self._done.is_set()

    def submit(self, job: Callable[[], Any], what: str = "a write") -> None:
        """Waits for the job in flight (raising its error), then starts ``job()`` on the
        background thread; ``what`` names it in an error."""
        self.wait()
        done = threading.Event()

        def run() -> None:
            try:
                job()
            except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                self._error = e
            finally:
                done.set()

        self._what, self._done = what, done
        threading.Thread(target=run, name=self.name).start()

    def wait(self) -> None:
        """Blocks until the job in flight (if any) has finished; raises its exception."""
        self._done.wait()
        if self._error is not None:
            e, self._error = self._error, None
            e.add_note(f"(raised in the background while writing {self._what})")
            raise e


# ----------------------------------------------------------------------------- manager

_CKPT = re.compile(r"^ckpt-(\d+)\.npz$")


class CheckpointManager:
    """Numbered checkpoints ``ckpt-<step>.npz`` in ``directory``: the latest ``keep`` are
    kept, plus ``best.npz`` (a copy of the checkpoint last saved with ``is_best=True``).

    ``step`` is an integer >= 0 that increases from save to save (the training loop uses the
    epoch number); a step at or below the latest one in ``directory`` is refused, so that a
    new run in a directory that holds another run's checkpoints never mixes with them.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3) -> None:
        keep = check_int(keep, "CheckpointManager: keep")
        self.directory = Path(directory)
        self.keep = keep

    def path(self, step: int) -> Path:
        """The file of checkpoint ``step``."""
        return self.directory / f"ckpt-{int(step):09d}.npz"

    @property
    def best_path(self) -> Path:
        """``directory/best.npz`` (may not exist)."""
        return self.directory / "best.npz"

    def steps(self) -> list[int]:
        """Saved steps, ascending (temporary files are ignored)."""
        if not self.directory.is_dir():
            return []
        found = (_CKPT.match(p.name) for p in self.directory.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def latest_path(self) -> Path | None:
        """The newest checkpoint file, or ``None``."""
        steps = self.steps()
        return self.path(steps[-1]) if steps else None

    def save(self, tree: Any, step: int, *, is_best: bool = False, **meta: Any) -> Path:
        """Saves ``tree`` as checkpoint ``step`` (``meta``: ``epoch``, ``config``,
        ``metrics``, ``extra`` as :func:`save`), also as ``best.npz`` if ``is_best``, then
        deletes all but the latest ``keep`` numbered checkpoints.

        ``best.npz`` is written first: a process stopped between the two writes leaves the
        previous numbered checkpoint as the latest, so a resumed run redoes this step and
        writes both, instead of going on from a checkpoint whose ``best.npz`` is missing.

        Raises:
          ValueError: ``step`` is not an int >= 0.
          CheckpointError: ``step`` is not above the latest step in ``directory`` (the keep
            rule would delete the new file, or the new file would replace a step of another
            run); nothing is written or deleted.
        """
        step = check_int(step, "CheckpointManager.save: step", 0)
        steps = self.steps()
        if steps and step <= steps[-1]:
            raise CheckpointError(
                f"cannot save step {step}: the directory already holds checkpoints up to step "
                f"{steps[-1]} (steps must increase; save into another directory, or move the "
                "earlier checkpoints away)",
                file=self.directory,
            )
        if is_best:
            data = self.save_best(tree, step, **meta).read_bytes()
            path = self.path(step)
            atomic_write(path, lambda f: f.write(data))
        else:
            path = save(self.path(step), tree, step=step, **meta)
        for s in self.steps()[: -self.keep]:
            with contextlib.suppress(FileNotFoundError):
                self.path(s).unlink()
        return path

    def save_best(self, tree: Any, step: int, **meta: Any) -> Path:
        """Saves ``tree`` as ``best.npz`` only (``meta`` as :meth:`save`): the best state of
        a step that gets no numbered checkpoint. Returns :attr:`best_path`."""
        step = check_int(step, "CheckpointManager.save_best: step", 0)
        return save(self.best_path, tree, step=step, **meta)

    def restore(self, target: Any, which: str | int = "latest") -> tuple[Any, dict]:
        """``restore(file, target)`` for ``which`` = ``"latest"``, ``"best"`` or a step (an
        int >= 0).

        Raises:
          ValueError: ``which`` is none of these.
          FileNotFoundError: no such checkpoint (the message lists the saved steps).
          CheckpointError: as :func:`restore`.
        """
        bad = ValueError(f"CheckpointManager.restore: which must be 'latest', 'best' or a "
                         f"step (an int >= 0), got {which!r}")
        if isinstance(which, str) and which not in ("latest", "best"):
            raise bad
        if which == "best":
            path = self.best_path
        elif which == "latest":
            path = self.latest_path()
            if path is None:
                raise FileNotFoundError(f"no checkpoints in {self.directory}")
        else:
            try:
                step = check_int(which, "which", 0)
            except ValueError:
                raise bad from None
            path = self.path(step)
            if not path.is_file():
                raise FileNotFoundError(f"no checkpoint of step {step} in {self.directory} "
                                        f"(saved steps: {self.steps() or 'none'})")
        return restore(path, target)
