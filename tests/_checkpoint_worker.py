"""Helper for tests/test_checkpoint.py: checkpoints restored into targets whose leaves are
split over 4 CPU devices (FSDP-style). The device count is fixed when JAX starts, so the
parent runs this in a fresh interpreter with ``JAX_NUM_CPU_DEVICES=4`` (``argv[1]``: a
directory to write in) and reads the ``RESULT {json}`` line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nnkit import checkpoint as C


def main() -> None:
    mesh = Mesh(np.array(jax.devices()), ("data",))
    rows = NamedSharding(mesh, PartitionSpec("data", None))
    tree = {"w": jax.device_put(jnp.arange(24.0).reshape(8, 3), rows),
            "b": jax.device_put(jnp.ones(3), NamedSharding(mesh, PartitionSpec())),
            "one": jax.device_put(jnp.arange(2), jax.devices()[2]),  # committed to device 2
            "free": jnp.zeros(2)}  # uncommitted: stays free to move
    path = C.save(Path(sys.argv[1]) / "s.npz", tree)
    abstract = {"w": jax.ShapeDtypeStruct((8, 3), jnp.float32, sharding=rows)}
    got, _ = C.restore(path, tree)
    got_abstract, _ = C.restore(path, abstract, strict=False)
    res = {"device_count": jax.device_count()}
    for name, (a, want) in {**{k: (got[k], tree[k]) for k in tree},
                            "abstract_w": (got_abstract["w"], tree["w"])}.items():
        res[name] = {"same_sharding": a.sharding.is_equivalent_to(want.sharding, a.ndim),
                     "devices": sorted(d.id for d in a.sharding.device_set),
                     "shard_shapes": sorted({tuple(s.data.shape) for s in a.addressable_shards}),
                     "equal": bool(np.array_equal(np.asarray(a), np.asarray(want)))}
    res["free_committed"] = bool(got["free"]._committed)
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
