"""Data parallelism over the devices of one or many hosts, with ``jax.jit`` and shardings.

There is no ``pmap`` and no per-device code: the train step stays an ordinary ``jax.jit``
function of global arrays. We only *place* its inputs:

* the batch is split along its leading (batch) axis over the mesh axis ``"data"``
  (``NamedSharding(mesh, P("data"))``): device ``i`` holds rows ``[i*b/n, (i+1)*b/n)``;
* the train state (params, optimizer state, model state, key) is replicated on every device
  (``P()``), or, with FSDP, big arrays are split along one axis over ``"data"``.

XLA's sharding propagation (GSPMD) then partitions the step: the mean loss over the global
batch becomes a local mean plus an all-reduce, and so do the grads. The maths is the
one-device maths, so a data-parallel run matches a one-device run up to float rounding
(the sums are associated differently).

Several hosts: start one process per host (or per GPU) with :func:`initialize_distributed`
*before any other JAX call*; then ``jax.devices()`` lists the devices of every process and
the mesh spans them. Each process loads only its rows (:func:`process_shard`) and
contributes its part of each global batch (:func:`host_local_to_global`). Every process
runs the same program on the same schedule; only process 0 should log and write files
(:func:`is_main_process`). Replicated params are fully present on every process; gather
FSDP-sharded ones with :func:`gather` before process 0 writes a checkpoint, and put
:func:`sync_global_devices` after it so no process exits (or reads it) early.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nnkit._checks import check_int

__all__ = [
    "DATA_AXIS",
    "MODEL_AXIS",
    "DataParallel",
    "make_mesh",
    "data_sharding",
    "replicated",
    "shard_batch",
    "host_local_to_global",
    "replicate",
    "fsdp_shardings",
    "state_shardings",
    "process_shard",
    "local_batch_size",
    "gather",
    "initialize_distributed",
    "is_main_process",
    "sync_global_devices",
    "from_config",
]

DATA_AXIS = "data"
MODEL_AXIS = "model"
DEFAULT_FSDP_MIN_SIZE = 2**14


# ----------------------------------------------------------------------------- meshes


def make_mesh(
    num_devices: int | None = None,
    axis_name: str = DATA_AXIS,
    *,
    model_parallel: int = 1,
    devices: Sequence[Any] | None = None,
) -> Mesh:
    """A device mesh: 1-D ``(axis_name,)`` or 2-D ``(axis_name, "model")``.

    Args:
      num_devices: devices to use, the first ``num_devices`` of ``jax.devices()`` (all of them
        when ``None``). With several processes the mesh must span every device.
      axis_name: name of the batch axis (the first mesh axis).
      model_parallel: size of a second ``"model"`` axis; the mesh is then
        ``(num_devices // model_parallel, model_parallel)``. The batch is split over the first
        axis only; params may be split over ``"model"`` with ``fsdp_shardings(axis="model")``.
      devices: devices to choose from (default ``jax.devices()``, every process's devices).
    """
    devs = list(jax.devices() if devices is None else devices)
    n = len(devs) if num_devices is None else num_devices
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(devs):
        raise ValueError(
            f"make_mesh: num_devices={num_devices!r} but {len(devs)} "
            f"{devs[0].platform if devs else ''} device(s) are visible"
        )
    if jax.process_count() > 1 and n != len(devs):
        raise ValueError(
            f"make_mesh: with {jax.process_count()} processes the mesh must use all "
            f"{len(devs)} devices, got num_devices={n}"
        )
    if isinstance(model_parallel, bool) or not isinstance(model_parallel, int) or (
        model_parallel < 1 or n % model_parallel
    ):
        raise ValueError(
            f"make_mesh: model_parallel={model_parallel!r} must be a positive divisor of "
            f"num_devices={n}"
        )
    if model_parallel == 1:
        shape, names = (n,), (axis_name,)
    else:
        shape, names = (n // model_parallel, model_parallel), (axis_name, MODEL_AXIS)
    # Auto axes: shardings are hints that jit propagates (jax.make_mesh defaults to Explicit).
    return jax.make_mesh(shape, names, axis_types=(AxisType.Auto,) * len(shape), devices=devs[:n])


def _data_axis(mesh: Mesh) -> str:
    return mesh.axis_names[0]


def data_sharding(mesh: Mesh, batch_axis: int = 0) -> NamedSharding:
    """``NamedSharding`` splitting array axis ``batch_axis`` over the mesh's first axis."""
    return NamedSharding(mesh, P(*([None] * batch_axis), _data_axis(mesh)))


def replicated(mesh: Mesh) -> NamedSharding:
    """``NamedSharding`` keeping a full copy of an array on every device of ``mesh``."""
    return NamedSharding(mesh, P())


# ----------------------------------------------------------------------------- batches


def _leaf_batch_sizes(batch: Any, batch_axis: int) -> int:
    """The common size of axis ``batch_axis`` over the leaves; errors name the leaf."""
    sizes = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        shape = np.shape(leaf)
        name = jax.tree_util.keystr(path) or "batch"
        if len(shape) <= batch_axis:
            raise ValueError(
                f"shard_batch: leaf {name} has shape {shape}, no batch axis {batch_axis}"
            )
        sizes[name] = shape[batch_axis]
    if not sizes:
        raise ValueError("shard_batch: the batch has no arrays")
    if len(set(sizes.values())) != 1:
        raise ValueError(f"shard_batch: leaves have different batch sizes {sizes}")
    return next(iter(sizes.values()))


def _check_divisible(global_size: int, mesh: Mesh, detail: str = "") -> None:
    n = mesh.shape[_data_axis(mesh)]
    if global_size % n:
        raise ValueError(
            f"batch size {global_size}{detail} is not divisible by the {n} devices on mesh "
            f"axis {_data_axis(mesh)!r}; use a batch size that is a multiple of {n}"
        )


def shard_batch(batch: Any, mesh: Mesh, *, batch_axis: int = 0) -> Any:
    """Places a batch (pytree of arrays) split along ``batch_axis`` over the mesh's data axis.

    Shapes: every leaf ``(..., B, ...)`` with ``B`` at ``batch_axis`` (``batch_axis=1`` for a
    whole epoch stacked as ``(steps, B, ...)``). In one process ``batch`` is the global batch
    and this is ``jax.device_put(batch, NamedSharding(mesh, P("data")))``. With several
    processes ``batch`` is *this process's* rows and the global batch is their concatenation
    in process order (see :func:`host_local_to_global`).

    Raises:
      ValueError: the (global) batch size is not divisible by the data-axis device count.
    """
    if jax.process_count() > 1:
        return host_local_to_global(batch, mesh, batch_axis=batch_axis)
    _check_divisible(_leaf_batch_sizes(batch, batch_axis), mesh)
    return jax.device_put(batch, data_sharding(mesh, batch_axis))


def host_local_to_global(batch: Any, mesh: Mesh, *, batch_axis: int = 0) -> Any:
    """Global arrays from each process's rows (``jax.make_array_from_process_local_data``).

    Process ``p`` passes its local rows ``(b, ...)``; the result has shape
    ``(b * process_count, ...)`` with process ``p``'s rows at ``[p*b, (p+1)*b)``, split
    over the data axis. Every process must pass the same local batch size ``b``.
    """
    local = _leaf_batch_sizes(batch, batch_axis)
    nproc = jax.process_count()
    detail = f" (= {local} rows x {nproc} processes)" if nproc > 1 else ""
    _check_divisible(local * nproc, mesh, detail)
    sharding = data_sharding(mesh, batch_axis)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
    )


def local_batch_size(batch_size: int, mesh: Mesh | None = None) -> int:
    """Rows each process contributes to a global batch of ``batch_size`` (checked early).

    ``batch_size`` must be divisible by the data-axis device count (when ``mesh`` is given)
    and by ``jax.process_count()``.
    """
    batch_size = check_int(batch_size, "batch_size")
    if mesh is not None:
        _check_divisible(batch_size, mesh)
    nproc = jax.process_count()
    if batch_size % nproc:
        raise ValueError(f"batch size {batch_size} is not divisible by {nproc} processes")
    return batch_size // nproc


def process_shard(
    *arrays: Any, process_index: int | None = None, process_count: int | None = None
) -> tuple[Any, ...]:
    """This process's contiguous slice of each array (or pytree of arrays), along axis 0.

    With ``N`` rows and ``K`` processes, process ``p`` gets rows ``[p*m, (p+1)*m)`` with
    ``m = N // K``; the last ``N % K`` rows are dropped so every process runs the same number
    of steps (a process with more steps would wait for the others forever). Slicing is
    lazy for numpy memmaps, so a process reads only its part of a file.
    Returns a tuple with one entry per argument (``x, y = process_shard(x, y)``).
    """
    p = jax.process_index() if process_index is None else process_index
    k = jax.process_count() if process_count is None else process_count
    if not 0 <= p < k:
        raise ValueError(f"process_shard: process_index {p} not in [0, {k})")
    out = []
    for i, tree in enumerate(arrays):
        sizes = {np.shape(x)[0] if np.ndim(x) else None for x in jax.tree.leaves(tree)}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(
                f"process_shard: argument {i} has leaves with no or different leading sizes "
                f"{sorted(sizes, key=str)}"
            )
        n = sizes.pop()
        m = n // k
        if m == 0:
            raise ValueError(f"process_shard: argument {i} has {n} rows, fewer than {k} processes")
        out.append(jax.tree.map(lambda x, m=m: x[p * m : (p + 1) * m], tree))
    return tuple(out)


# ----------------------------------------------------------------------------- state


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` with every array copied to every device of ``mesh`` (``P()``).

    With several processes every process must pass the same values (e.g. params from the
    same init key), which is what makes them a valid replicated global array.
    """
    return jax.device_put(tree, replicated(mesh))


def _fsdp_spec(shape: tuple[int, ...], n: int, axis: str, min_size: int) -> P:
    if n == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    dims = [d for d in range(len(shape)) if shape[d] % n == 0]
    if not dims:
        return P()
    d = max(dims, key=lambda i: (shape[i], -i))  # largest divisible axis, first on ties
    return P(*([None] * d), axis)


def fsdp_shardings(
    tree: Any, mesh: Mesh, *, min_size: int = DEFAULT_FSDP_MIN_SIZE, axis: str | None = None
) -> Any:
    """Per-leaf ``NamedSharding`` for FSDP-style (ZeRO-3) sharding of params or train state.

    A float leaf with at least ``min_size`` elements is split along its largest axis whose
    size is divisible by the mesh's ``axis`` size (default: the data axis); smaller leaves,
    scalars, leaves with no divisible axis and every non-float leaf (the train key's
    ``uint32`` words, step and optimizer counters, integer model state) are replicated:
    the key is read whole on the host to draw the data order. Works on arrays or
    ``jax.ShapeDtypeStruct`` (from :func:`nnkit.core.abstract_init`). Applied to a whole train
    state it also shards Adam's moments, which have the params' shapes. ``jit`` inserts the
    all-gathers of params and reduce-scatters of grads.
    """
    axis = _data_axis(mesh) if axis is None else axis
    if axis not in mesh.shape:
        raise ValueError(f"fsdp_shardings: mesh has axes {mesh.axis_names}, not {axis!r}")
    n = mesh.shape[axis]

    def spec(x: Any) -> P:
        if not _is_float(x):
            return P()
        return _fsdp_spec(tuple(np.shape(x)), n, axis, min_size)

    return jax.tree.map(lambda x: NamedSharding(mesh, spec(x)), tree)


def _is_float(x: Any) -> bool:
    """Whether a leaf (array, ``ShapeDtypeStruct`` or Python number) holds floats."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = np.asarray(x).dtype
    return bool(jax.dtypes.issubdtype(dtype, np.inexact))


def state_shardings(
    tree: Any, mesh: Mesh, *, fsdp: bool = False, min_size: int = DEFAULT_FSDP_MIN_SIZE,
    axis: str | None = None,
) -> Any:
    """Per-leaf shardings for a train state: replicated, or :func:`fsdp_shardings`."""
    if fsdp:
        return fsdp_shardings(tree, mesh, min_size=min_size, axis=axis)
    return jax.tree.map(lambda _: replicated(mesh), tree)


def gather(tree: Any) -> Any:
    """Full numpy copies of (possibly sharded, possibly multi-host) arrays, on every process.

    Uses ``multihost_utils.process_allgather`` with several processes, so *every* process
    must call it (it is a collective); then process 0 alone writes the checkpoint.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        return multihost_utils.process_allgather(tree, tiled=True)
    return jax.device_get(tree)


# ----------------------------------------------------------------------------- processes


def is_main_process() -> bool:
    """``True`` on process 0: the one that logs, draws progress bars and writes files."""
    return jax.process_index() == 0


def sync_global_devices(name: str) -> None:
    """Barrier: returns once every process has reached the call with the same ``name``.

    A no-op with one process. Use after process 0 writes a checkpoint so no process reads
    it or exits early.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    v = env.get(name)
    if v is None or v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise ValueError(f"environment variable {name}={v!r} is not an integer") from None


def _cluster_size(env: Mapping[str, str]) -> int:
    """Process count of an ``srun`` step or Open MPI job that JAX can auto-detect (else 1).

    A SLURM batch script run without ``srun`` is one process, whatever ``--ntasks`` says.
    """
    if "SLURM_PROCID" in env and "SLURM_STEP_NODELIST" in env:
        n = _env_int(env, "SLURM_STEP_NUM_TASKS") or _env_int(env, "SLURM_NTASKS")
        if n is not None:
            return n
    if "OMPI_MCA_orte_hnp_uri" in env:
        return _env_int(env, "OMPI_COMM_WORLD_SIZE") or 1
    return 1


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    auto: bool = False,
    env: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> bool:
    """Starts JAX's multi-process runtime (``jax.distributed.initialize``) when needed.

    Call it first, before anything touches a device. Each argument falls back to an
    environment variable: ``NNKIT_COORDINATOR`` or ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of
    process 0), ``NNKIT_NUM_PROCESSES``, ``NNKIT_PROCESS_ID``. With none of them set:

    * under SLURM (``SLURM_NTASKS`` > 1) or Open MPI, or with ``auto=True`` /
      ``NNKIT_DISTRIBUTED=auto`` (e.g. a TPU pod slice), JAX detects everything itself;
    * otherwise this is a single process and nothing happens.

    ``num_processes == 1`` is also a no-op. Other keyword arguments (``local_device_ids``,
    ``coordinator_bind_address``, ``initialization_timeout``, ...) go to JAX. Calling it again
    after a successful start is a no-op. Returns ``True`` when the runtime is (now) running.
    """
    env = os.environ if env is None else env
    if jax.distributed.is_initialized():
        return True
    addr = coordinator_address or env.get("NNKIT_COORDINATOR") or env.get(
        "JAX_COORDINATOR_ADDRESS"
    )
    n = num_processes if num_processes is not None else _env_int(env, "NNKIT_NUM_PROCESSES")
    pid = process_id if process_id is not None else _env_int(env, "NNKIT_PROCESS_ID")
    auto = auto or env.get("NNKIT_DISTRIBUTED", "").lower() == "auto"
    if n is not None:
        n = check_int(n, "initialize_distributed: num_processes")
    if n == 1:
        return False
    if pid is not None and n is not None and not 0 <= pid < n:
        raise ValueError(f"initialize_distributed: process_id {pid} not in [0, {n})")
    given = {"coordinator_address": addr, "num_processes": n, "process_id": pid}
    detected = auto or _cluster_size(env) > 1
    if all(v is None for v in given.values()) and not detected:
        return False
    missing = [k for k, v in given.items() if v is None]
    if missing and not detected:
        raise ValueError(
            f"initialize_distributed: {missing} not given (nor NNKIT_COORDINATOR, "
            "NNKIT_NUM_PROCESSES, NNKIT_PROCESS_ID set) and no SLURM/MPI cluster detected"
        )
    jax.distributed.initialize(**{k: v for k, v in given.items() if v is not None}, **kwargs)
    return True


# ----------------------------------------------------------------------------- config object


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """How ``fit`` spreads training over devices: a mesh, and replicated or FSDP state.

    Typical use inside a training loop (``step`` is a ``jax.jit`` function)::

        dp = DataParallel(make_mesh())
        local_bs = dp.local_batch_size(batch_size)    # early error if not divisible
        x, y = dp.process_shard(x, y)                 # multi-host: only this process's rows
        state = dp.place_state(state)                 # replicate (or FSDP-shard) once
        for xb, yb in batches(x, y, local_bs):
            state, metrics = step(state, dp.shard_batch((xb, yb)))
        params = dp.gather(state.params)              # every process calls it
        if dp.is_main_process(): save(params)
        dp.sync("saved")
    """

    mesh: Mesh
    fsdp: bool = False
    fsdp_min_size: int = DEFAULT_FSDP_MIN_SIZE
    fsdp_axis: str | None = None

    @classmethod
    def create(
        cls,
        num_devices: int | None = None,
        *,
        model_parallel: int = 1,
        fsdp: bool = False,
        fsdp_min_size: int = DEFAULT_FSDP_MIN_SIZE,
    ) -> DataParallel:
        """``DataParallel(make_mesh(num_devices, model_parallel=...), fsdp, ...)``."""
        return cls(make_mesh(num_devices, model_parallel=model_parallel), fsdp, fsdp_min_size)

    @property
    def num_devices(self) -> int:
        """Number of data-parallel shards (the size of the mesh's first axis)."""
        return self.mesh.shape[_data_axis(self.mesh)]

    def local_batch_size(self, batch_size: int) -> int:
        """Rows per process for a global ``batch_size``; raises if it does not divide."""
        return local_batch_size(batch_size, self.mesh)

    def process_shard(self, *arrays: Any) -> tuple[Any, ...]:
        """This process's contiguous rows of each array (identity with one process)."""
        if jax.process_count() == 1:
            return arrays
        return process_shard(*arrays)

    def shard_batch(self, batch: Any, *, batch_axis: int = 0) -> Any:
        """:func:`shard_batch` on this mesh (this process's rows with several processes)."""
        return shard_batch(batch, self.mesh, batch_axis=batch_axis)

    def state_shardings(self, tree: Any) -> Any:
        """Per-leaf shardings of a train state: replicated, or FSDP when ``fsdp``."""
        return state_shardings(
            tree, self.mesh, fsdp=self.fsdp, min_size=self.fsdp_min_size, axis=self.fsdp_axis
        )

    def place_state(self, tree: Any) -> Any:
        """``tree`` (params / train state) put on the mesh with :meth:`state_shardings`."""
        return jax.device_put(tree, self.state_shardings(tree))

    def replicate(self, tree: Any) -> Any:
        """:func:`replicate` on this mesh (e.g. validation data; same values on every process)."""
        return replicate(tree, self.mesh)

    def shard_dataset(self, *arrays: Any, local: bool = False) -> tuple[Any, ...]:
        """Whole data sets (pytrees of arrays, rows on axis 0) as device-resident global arrays.

        One process: a full copy on every device (replicated), so a compiled epoch can index
        any example and results match a one-device run exactly. Several processes: each
        process keeps its contiguous rows (:func:`process_shard`, skipped if ``local``), trimmed
        to a multiple of its number of data shards, and the global array is split by rows
        over the data axis. Row order is process order, so the global data set is the
        concatenation of the processes' rows.
        """
        if jax.process_count() == 1:
            return tuple(self.replicate(a) for a in arrays)
        parts = arrays if local else process_shard(*arrays)
        per = max(1, self.num_devices // jax.process_count())
        out = []
        for tree in parts:
            n = np.shape(jax.tree.leaves(tree)[0])[0]
            m = (n // per) * per
            if m == 0:
                raise ValueError(
                    f"shard_dataset: {n} rows on process {jax.process_index()}, fewer than "
                    f"its {per} data shards"
                )
            out.append(host_local_to_global(jax.tree.map(lambda x, m=m: x[:m], tree), self.mesh))
        return tuple(out)

    def wrap_step(self, step: Callable[..., Any]) -> Callable[..., Any]:
        """An unjitted ``step(state, batch) -> (state, metrics)`` with its layout pinned.

        Inside the step the batch is constrained to the data sharding (so a batch cut from a
        replicated data set by ``jnp.take`` in a scanned epoch is split over devices) and the
        state to :meth:`state_shardings`, on the way in and out (so a ``lax.scan`` carry and
        a donated jit keep one layout and compile once). Jit or scan the result as before.
        """

        def pin(tree: Any) -> Any:
            return jax.lax.with_sharding_constraint(tree, self.state_shardings(tree))

        def wrapped(state: Any, batch: Any) -> Any:
            new_state, metrics = step(pin(state), self.constrain_batch(batch))
            return pin(new_state), metrics

        return wrapped

    def constrain_batch(self, batch: Any, *, batch_axis: int = 0) -> Any:
        """Inside ``jit``: mark a batch built in the step (e.g. by slicing) as data-sharded."""
        return jax.lax.with_sharding_constraint(batch, data_sharding(self.mesh, batch_axis))

    def jit_step(
        self, step: Callable[..., Any], state: Any, *, donate: bool = False
    ) -> Callable[..., Any]:
        """``step(state, batch) -> (state, metrics)`` jitted with fixed shardings.

        In: ``state`` per :meth:`state_shardings`, batch leaves on the data axis. Out: the same
        state shardings and replicated metrics, so the step compiles once and FSDP state
        keeps its layout. Optional: plain ``jit`` on placed inputs also works.
        """
        sh = self.state_shardings(state)
        return jax.jit(
            step,
            in_shardings=(sh, data_sharding(self.mesh)),
            out_shardings=(sh, replicated(self.mesh)),
            donate_argnums=(0,) if donate else (),
        )

    def gather(self, tree: Any) -> Any:
        """:func:`gather`: full numpy arrays on every process (a collective)."""
        return gather(tree)

    @staticmethod
    def is_main_process() -> bool:
        """``True`` on process 0."""
        return is_main_process()

    @staticmethod
    def sync(name: str) -> None:
        """:func:`sync_global_devices` barrier."""
        sync_global_devices(name)


# ----------------------------------------------------------------------------- config

_KEYS = ("data_parallel", "model_parallel", "fsdp", "fsdp_min_size", "distributed")
_DIST_KEYS = ("coordinator_address", "num_processes", "process_id", "local_device_ids")


def _parse_distributed(d: Any) -> dict[str, Any] | None:
    """``None`` (off), ``{}`` (auto-detect) or the explicit arguments."""
    if d is None or d is False:
        return None
    if d is True or d == "auto":
        return {"auto": True}
    if not isinstance(d, Mapping):
        raise ValueError(
            f"parallel.distributed: expected a mapping, true or 'auto', got {d!r}"
        )
    unknown = sorted(set(d) - set(_DIST_KEYS))
    if unknown:
        raise ValueError(
            f"parallel.distributed: unknown key(s) {unknown}; expected some of {list(_DIST_KEYS)}"
        )
    out: dict[str, Any] = {}
    if d.get("coordinator_address") is not None:
        a = d["coordinator_address"]
        if not isinstance(a, str) or ":" not in a:
            raise ValueError(
                f"parallel.distributed.coordinator_address: expected 'host:port', got {a!r}"
            )
        out["coordinator_address"] = a
    if d.get("num_processes") is not None:
        out["num_processes"] = check_int(
            d["num_processes"], "parallel.distributed.num_processes"
        )
    if d.get("process_id") is not None:
        out["process_id"] = check_int(d["process_id"], "parallel.distributed.process_id", 0)
    if d.get("local_device_ids") is not None:
        ids = d["local_device_ids"]
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise ValueError(
                f"parallel.distributed.local_device_ids: expected a list of ints, got {ids!r}"
            )
        out["local_device_ids"] = ids
    if not out:
        out["auto"] = True
    return out


def from_config(d: Mapping[str, Any] | None, *, initialize: bool = True) -> DataParallel | None:
    """A :class:`DataParallel` from a config's ``parallel:`` section, or ``None`` when off.

    Keys (all optional)::

        data_parallel: true | false | <device count>   # default false (true if fsdp/distributed)
        model_parallel: 1        # size of a second "model" mesh axis
        fsdp: false              # shard big params + optimizer state over "data"
        fsdp_min_size: 16384     # leaves smaller than this stay replicated
        distributed:             # omit: single process, or SLURM/MPI auto-detected
          coordinator_address: "10.0.0.1:1234"
          num_processes: 4
          process_id: 0          # or set NNKIT_PROCESS_ID per process
        # distributed: auto      # let JAX detect everything (TPU pod slice)

    Validates everything first (errors name the key, e.g. ``parallel.fsdp``), then, if
    ``initialize``, calls :func:`initialize_distributed` (a no-op in a single process)
    before building the mesh, since the mesh must see every process's devices.
    """
    if d is None:
        return None
    if not isinstance(d, Mapping):
        raise ValueError(f"parallel: expected a mapping, got {type(d).__name__} {d!r}")
    unknown = sorted(set(d) - set(_KEYS))
    if unknown:
        raise ValueError(f"parallel: unknown key(s) {unknown}; expected some of {list(_KEYS)}")
    fsdp = d.get("fsdp", False)
    if not isinstance(fsdp, bool):
        raise ValueError(f"parallel.fsdp: expected true or false, got {fsdp!r}")
    min_size = d.get("fsdp_min_size", DEFAULT_FSDP_MIN_SIZE)
    min_size = check_int(min_size, "parallel.fsdp_min_size", 0)
    model_parallel = check_int(d.get("model_parallel", 1), "parallel.model_parallel")
    dist = _parse_distributed(d.get("distributed"))
    dp = d.get("data_parallel", None)
    if dp is None:
        dp = fsdp or dist is not None or model_parallel > 1
    num_devices: int | None = None
    if isinstance(dp, bool):
        if not dp and (dist is not None or fsdp):
            raise ValueError(
                "parallel.data_parallel: false, but parallel.fsdp/parallel.distributed need it"
            )
    else:
        num_devices = check_int(dp, "parallel.data_parallel")
        dp = True
    if not dp:
        return None
    if initialize:
        initialize_distributed(**(dist or {}))
    try:
        mesh = make_mesh(num_devices, model_parallel=model_parallel)
    except ValueError as e:
        raise ValueError(f"parallel: {e}") from None
    return DataParallel(mesh, fsdp=fsdp, fsdp_min_size=min_size)
