"""PyTorch entries (eager): ``torch.optim.Adam`` with the default implementation and with
``fused=True``. Raises :class:`benchmarks.harness.Skip` without PyTorch. They run where JAX
runs: on the CPU, or on CUDA when JAX is on a GPU and PyTorch sees one (else skipped, see
:func:`torch_device`); ``torch-1t`` is CPU-only.

Images are NCHW (PyTorch's native layout). ``torch`` and ``torch-fused`` use all cores
(``torch.set_num_threads(os.cpu_count())``, PyTorch's default); ``torch-1t`` runs fused Adam on
one thread, which on a machine shared with other jobs avoids OpenMP barrier stalls (each
entry sets its thread count at the start of every timed call).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from benchmarks.harness import Runner, Skip, require
from benchmarks.workloads import LR, Workload

__all__ = ["torch_device", "build_torch", "build_torch_fused", "build_torch_1thread"]


def _model(wl: Workload, torch: Any) -> Any:
    nn = torch.nn
    if wl.kind == "mlp":
        sizes = [wl.input_shape[-1], *wl.hidden, wl.num_classes]
        layers: list = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        return nn.Sequential(*layers)
    if wl.kind == "lenet":
        c = wl.input_shape[-1]
        return nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, wl.num_classes),
        )
    if wl.kind == "lstm":

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(wl.input_shape[-1], wl.hidden[0], batch_first=True)
                self.out = nn.Linear(wl.hidden[0], wl.num_classes)

            def forward(self, x):
                hs, _ = self.lstm(x)
                return self.out(hs[:, -1])

        return Net()
    raise Skip(f"no PyTorch model for workload kind {wl.kind!r}")


def torch_device(torch: Any, *, cpu_only: bool = False) -> str:
    """Where a PyTorch entry runs: ``"cpu"`` when JAX runs on the CPU, ``"cuda"`` when JAX
    runs on a GPU and PyTorch sees one. Raises :class:`Skip` otherwise (a PyTorch on the
    CPU against JAX on an accelerator would not be a peer), and for ``cpu_only`` entries
    (one CPU thread) when JAX is not on the CPU."""
    import jax

    backend = jax.default_backend()
    if backend == "cpu":
        return "cpu"
    if cpu_only:
        raise Skip(f"a CPU-only entry; JAX runs on {backend}")
    if backend == "gpu" and torch.cuda.is_available():
        return "cuda"
    raise Skip(f"PyTorch has no {backend} here; its CPU build is no peer for JAX on {backend}")


def _build(
    wl: Workload, data: tuple[np.ndarray, np.ndarray], fused: bool, threads: int | None = None
) -> Runner:
    torch = require("torch")
    device = torch_device(torch, cpu_only=threads is not None)
    threads = threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = _model(wl, torch).to(device)
    try:
        opt = torch.optim.Adam(model.parameters(), lr=LR, fused=True if fused else None)
    except (RuntimeError, TypeError) as e:
        raise Skip(f"fused Adam unavailable: {e}") from None
    x, y = data
    if wl.kind == "lenet":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    b, k = wl.batch, wl.steps_per_epoch
    xs = [torch.from_numpy(x[i * b:(i + 1) * b].copy()).to(device) for i in range(k)]
    ys = [torch.from_numpy(y[i * b:(i + 1) * b].astype(np.int64)).to(device)
          for i in range(k)]
    loss_fn = torch.nn.functional.cross_entropy
    box: dict[str, Any] = {"loss": None}

    def run(n: int) -> None:
        torch.set_num_threads(threads)
        loss = None
        for i in range(n):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xs[i % k]), ys[i % k])
            loss.backward()
            opt.step()
        if device == "cuda":  # the work is queued: wait for it, as block_until_ready does
            torch.cuda.synchronize()
        box["loss"] = loss.detach()

    return Runner(run, 1, loss=lambda: float(box["loss"]))


def build_torch(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``torch``: eager PyTorch, default Adam."""
    return _build(wl, data, fused=False)


def build_torch_fused(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``torch-fused``: eager PyTorch, ``Adam(fused=True)``."""
    return _build(wl, data, fused=True)


def build_torch_1thread(wl: Workload, data: tuple[np.ndarray, np.ndarray]) -> Runner:
    """``torch-1t``: eager PyTorch, ``Adam(fused=True)``, one thread."""
    return _build(wl, data, fused=True, threads=1)
