"""Config-driven runs: run directories, training with checkpoints and exact resume, eval,
LR finder, sweeps and diagnosis (the engine behind the ``nnkit`` command line).

Modules: ``prepare`` (config -> model, data, optimizer; all user-input checks), ``rundir``
(directory layout and writers), ``fingerprint`` (the data a run started with, checked on
resume and eval), ``trainer`` (train / resume, signals), ``evaluate``, ``tools`` (summary,
lr-find, sweep, diagnose).
"""

from nnkit.run.evaluate import evaluate_run
from nnkit.run.prepare import Prepared, initial_state, make_parallel, policy_of, prepare
from nnkit.run.rundir import RunError, read_resume_config, read_run_config
from nnkit.run.tools import (
    DiagnoseResult,
    SweepRunResult,
    diagnose_run,
    lr_find_run,
    model_summary,
    parse_grid,
    sweep_run,
)
from nnkit.run.trainer import RunResult, StopFlag, resume, train

__all__ = [
    "Prepared", "prepare", "initial_state", "RunError", "read_run_config", "read_resume_config",
    "RunResult",
    "StopFlag", "train", "resume", "evaluate_run", "model_summary", "lr_find_run",
    "parse_grid", "sweep_run", "SweepRunResult", "diagnose_run", "DiagnoseResult",
    "make_parallel", "policy_of",
]
