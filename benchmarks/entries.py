"""The registry of benchmark entries: key -> (label, builder(workload, data) -> Runner).

Peer builders import their library lazily, so a missing peer is a skipped entry, not an
import error of this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np

from benchmarks import (
    conv_probe,
    handwritten,
    nnkit_entries,
    peers_equinox,
    peers_flax,
    peers_haiku,
    peers_torch,
)
from benchmarks.harness import Entry, Runner
from benchmarks.workloads import Workload

__all__ = ["REGISTRY", "DEFAULT", "EXTRA", "EXTRA_BY_WORKLOAD", "TARGET_ENTRIES", "REFERENCE",
           "make_entries"]

Builder = Callable[[Workload, tuple[np.ndarray, np.ndarray]], Runner]

REFERENCE = "jax"
"""The entry every ratio is relative to."""

REGISTRY: dict[str, tuple[str, Builder]] = {
    "jax": ("hand-written jax.jit + optax (donated)", handwritten.build_step_entry),
    "jax-scan": ("hand-written, K steps in one lax.scan", handwritten.build_scan_entry),
    "nnkit-step": ("nnkit make_train_step, per step", nnkit_entries.build_step_entry),
    "nnkit-epoch": ("nnkit epoch-in-scan (fit mode='scan')", nnkit_entries.build_epoch_entry),
    "nnx": ("Flax NNX (nnx.jit)", peers_flax.build_nnx),
    "nnx-split": ("Flax NNX (split/merge + jax.jit)", peers_flax.build_nnx_split),
    "linen": ("Flax Linen", peers_flax.build_linen),
    "equinox": ("Equinox (filter_jit)", peers_equinox.build_equinox),
    "haiku": ("Haiku", peers_haiku.build_haiku),
    "torch": ("PyTorch eager", peers_torch.build_torch),
    "torch-fused": ("PyTorch eager, fused Adam", peers_torch.build_torch_fused),
    "torch-1t": ("PyTorch eager, fused Adam, 1 thread", peers_torch.build_torch_1thread),
    # extra entries for the analyses (not in the default list)
    "nnkit-fit-step": ("nnkit step as fit(mode='step') calls it (grad_norm once per epoch)",
                       nnkit_entries.build_fit_step_entry),
    "nnkit-step-norm": ("nnkit step with log_grad_norm=True (norm every step)",
                        partial(nnkit_entries.build_step_entry, grad_norm=True)),
    "nnkit-step-lean": ("nnkit step, no metrics, no grad_norm, plain optax.adam",
                        partial(nnkit_entries.build_step_entry, lean=True)),
    "nnkit-step-xla": ("nnkit step, Conv2D impl='xla'",
                       partial(nnkit_entries.build_step_entry, conv_impl="xla")),
    "nnkit-epoch-xla": ("nnkit epoch, Conv2D impl='xla'",
                        partial(nnkit_entries.build_epoch_entry, conv_impl="xla")),
    "nnkit-step-im2col": ("nnkit step, Conv2D impl='im2col'",
                          partial(nnkit_entries.build_step_entry, conv_impl="im2col")),
    "nnkit-epoch-im2col": ("nnkit epoch, Conv2D impl='im2col'",
                           partial(nnkit_entries.build_epoch_entry, conv_impl="im2col")),
    "nnkit-epoch-dp": ("nnkit epoch, data parallel over every device (fit parallel=)",
                       partial(nnkit_entries.build_epoch_entry, data_parallel=True)),
    "nnkit-stepscan": ("nnkit step in a bare lax.scan (K steps)",
                       nnkit_entries.build_stepscan_entry),
    "jax-cfpatch": ("hand-written, channels-first patch conv (probe)", conv_probe.build_cf_step),
    "jax-cfpatch-scan": ("same, K steps in one lax.scan", conv_probe.build_cf_scan),
    "jax-hoisted": ("hand-written LSTM, input projection hoisted out of the loop",
                    handwritten.build_hoisted_entry),
}

EXTRA_BY_WORKLOAD: dict[str, tuple[str, ...]] = {
    "W1": ("nnkit-fit-step", "nnkit-step-norm", "nnkit-step-lean", "nnkit-epoch-dp"),
    "W2": ("nnkit-fit-step", "nnkit-step-im2col", "nnkit-epoch-im2col", "nnkit-step-xla",
           "nnkit-epoch-xla", "jax-cfpatch", "jax-cfpatch-scan"),
    "W3": ("nnkit-step-lean", "nnkit-stepscan", "nnkit-epoch-dp"),
    "W5": ("nnkit-fit-step", "nnkit-stepscan", "jax-hoisted", "nnkit-epoch-dp"),
}
"""Analysis entries added to the default list in a full run."""

TARGET_ENTRIES: dict[str, tuple[str, ...]] = {
    "W1": ("jax", "nnkit-step", "nnkit-fit-step", "nnkit-epoch", "linen", "haiku", "torch-1t"),
    "W2": ("jax", "nnkit-step", "nnkit-fit-step", "nnkit-epoch", "linen", "torch",
           "torch-fused", "torch-1t"),
    "W3": ("jax", "nnkit-step", "nnkit-epoch", "linen", "haiku"),
    "W5": ("jax", "nnkit-step", "nnkit-fit-step", "nnkit-epoch", "linen", "nnx-split", "torch",
           "torch-fused", "torch-1t"),
}
"""The focused re-measurement of the targets: the nnkit entries, the reference and the peers
that come closest, with more windows."""

DEFAULT: tuple[str, ...] = (
    "jax", "jax-scan", "nnkit-step", "nnkit-epoch", "nnx", "nnx-split", "linen", "equinox",
    "haiku", "torch", "torch-fused", "torch-1t",
)
"""Entries of the main tables (peers without a model for a workload are skipped)."""

EXTRA: tuple[str, ...] = tuple(k for k in REGISTRY if k not in DEFAULT)


def make_entries(
    wl: Workload, data: tuple[np.ndarray, np.ndarray], keys: Sequence[str] = DEFAULT
) -> list[Entry]:
    """:class:`Entry` objects for ``keys`` on ``wl`` (builders close over ``data``).

    Raises ValueError naming unknown keys.
    """
    unknown = [k for k in keys if k not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown entries {unknown}; known: {sorted(REGISTRY)}")
    out = []
    for k in keys:
        label, builder = REGISTRY[k]
        out.append(Entry(k, label, lambda w, b=builder: b(w, data)))
    return out
