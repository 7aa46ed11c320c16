"""Shared helpers for the experiment scripts: output folders, figures, results files.

Every experiment module ``experiments/eNN_name.py`` defines ``TITLE`` (one line) and
``main(out=None, quick=False) -> dict`` returning its measured results:
``{"summary": [markdown lines], "figures": [png paths], "metrics": {...}}``. ``out`` is the
experiment's output folder (default ``experiments/out/<name>``); ``quick=True`` runs a few
steps only (the smoke tests in ``tests/test_experiments.py``).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = ROOT / "out"


def out_dir(name: str, out: str | os.PathLike | None = None) -> Path:
    """The folder ``out`` if given, else ``experiments/out/<name>/``; created."""
    d = Path(out) if out is not None else DEFAULT_OUT / name
    d.mkdir(parents=True, exist_ok=True)
    return d


def savefig(fig, path: str | os.PathLike, dpi: int = 80) -> str:
    """Saves a matplotlib figure as a small PNG and closes it; returns the path."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return str(path)


def save_results(out: Path, results: dict[str, Any]) -> dict[str, Any]:
    """Writes ``results.json`` beside the figures and returns ``results``."""

    def default(o):
        try:
            return float(o)
        except Exception:  # noqa: BLE001
            return str(o)

    (Path(out) / "results.json").write_text(json.dumps(results, indent=2, default=default))
    return results


def run_cli(module_main) -> None:
    """``python -m experiments.X [--quick] [--out DIR]`` entry point for an experiment."""
    quick = "--quick" in sys.argv
    out = None
    if "--out" in sys.argv:
        out = sys.argv[sys.argv.index("--out") + 1]
    res = module_main(out, quick=quick)
    for line in res.get("summary", []):
        print(line)
