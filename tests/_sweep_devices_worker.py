"""Helper for tests/test_train_tools.py: ``nnkit.sweep`` over 2 CPU devices against the same
sweep on one device. The device count is fixed when JAX starts, so the parent runs this in a
fresh interpreter with ``JAX_NUM_CPU_DEVICES=2`` and reads the ``RESULT {json}`` line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_train_tools import TRAIN, VAL, mlp  # noqa: E402

from nnkit.train import sweep  # noqa: E402
from nnkit.train.sweep import sweep_program  # noqa: E402

COLLECTIVES = ("all-reduce", "all-gather", "collective-permute", "all-to-all", "reduce-scatter")


def main() -> None:
    res: dict = {"device_count": jax.device_count()}
    one = [jax.devices()[0]]
    for seeds in ([0], [0, 1]):
        for vec in ("vmap", "map"):
            kw = dict(learning_rates=[1e-2, 5e-2], seeds=seeds, epochs=2, batch_size=16,
                      val_data=VAL, vectorize=vec)
            if seeds == [0]:
                kw["learning_rates"] = [1e-2, 2e-2, 5e-2, 1e-1]
            a = sweep(mlp(), "adam", TRAIN, **kw)  # devices="auto": both devices
            b = sweep(mlp(), "adam", TRAIN, devices=one, **kw)
            w = a.train_states.params["dense_0"]["w"]
            diff = max(float(np.max(np.abs(np.asarray(u) - np.asarray(v)))) for u, v in zip(
                jax.tree_util.tree_leaves(a.train_states), jax.tree_util.tree_leaves(
                    b.train_states), strict=True) if np.issubdtype(np.asarray(u).dtype,
                                                                   np.floating))
            res[f"{vec}-{len(seeds)}"] = {
                "devices": sorted(d.id for d in w.sharding.device_set),
                "ref_devices": sorted(d.id for d in b.train_states.params["dense_0"]["w"]
                                      .sharding.device_set),
                "shard_rows": sorted({s.data.shape[0] for s in w.addressable_shards}),
                "param_diff": diff,
                "val_loss": [h["val_loss"] for h in a.histories],
                "ref_val_loss": [h["val_loss"] for h in b.histories],
            }
    # the models never talk: the compiled sharded epoch(s) have no collective
    for vec in ("vmap", "map"):
        prog = sweep_program(mlp(), "adam", TRAIN, learning_rates=[1e-2, 2e-2, 5e-2, 1e-1],
                             batch_size=16, vectorize=vec)
        hlo = prog.epoch.lower(prog.train_states, prog.live, np.int32(0), prog.order(0),
                               *prog.data, None, None).compile().as_text()
        idxs = np.stack([prog.order(0), prog.order(1)])  # the many-epoch call sweep makes
        hlo += prog.epochs.lower(prog.train_states, prog.live, np.int32(0), np.int32(2), idxs,
                                 *prog.data, None, None).compile().as_text()
        res[f"collectives-{vec}"] = [c for c in COLLECTIVES if c in hlo]
        res[f"program-devices-{vec}"] = len(prog.devices)
    # 3 models cannot be shared evenly by 2 devices: "auto" falls back to one device...
    c = sweep(mlp(), "adam", TRAIN, learning_rates=[1e-2, 2e-2, 3e-2], epochs=1,
              batch_size=16)
    res["three_auto_devices"] = len(c.train_states.params["dense_0"]["w"].sharding.device_set)
    # ... and an explicit list is an error
    try:
        sweep(mlp(), "adam", TRAIN, learning_rates=[1e-2, 2e-2, 3e-2], epochs=1,
              batch_size=16, devices=jax.devices())
        res["three_explicit_error"] = None
    except ValueError as e:
        res["three_explicit_error"] = str(e)
    print("RESULT " + json.dumps(res))


if __name__ == "__main__":
    main()
