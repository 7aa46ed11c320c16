"""nnkit.train: the jitted train step, the fit loop, LR finder, overfit check and sweeps.

Modules (one concept each): ``state`` (TrainState), ``gradients`` (batch / accumulated /
per-example gradients), ``step`` (train and eval steps), ``order`` (each epoch's data
order), ``epoch`` (one compiled epoch),
``early_stopping``, ``callbacks``, ``progress``, ``inputs`` (data checks), ``loop`` (fit),
``lr_find``, ``overfit``, ``sweep``, ``predict`` (outputs and metrics of a trained model).
"""

from nnkit.optim import Plateau, PlateauState
from nnkit.train.callbacks import INTERRUPT, print_logs, record, stop_when
from nnkit.train.early_stopping import EarlyStopping
from nnkit.train.gradients import clip_per_example, per_example_grads
from nnkit.train.loop import FitResult, fit
from nnkit.train.lr_find import LRFindResult, lr_find
from nnkit.train.order import epoch_order
from nnkit.train.overfit import OverfitResult, overfit_batch
from nnkit.train.predict import evaluate, predict
from nnkit.train.state import TrainState, as_key, create_train_state, key_data
from nnkit.train.step import make_eval_step, make_evaluator, make_train_step
from nnkit.train.sweep import SweepResult, sweep

__all__ = [
    "TrainState", "create_train_state", "key_data", "as_key",
    "make_train_step", "make_eval_step", "make_evaluator",
    "per_example_grads", "clip_per_example",
    "fit", "FitResult", "EarlyStopping", "Plateau", "PlateauState",
    "lr_find", "LRFindResult", "overfit_batch", "OverfitResult", "sweep", "SweepResult",
    "epoch_order", "stop_when", "print_logs", "record", "INTERRUPT", "predict", "evaluate",
]
