"""The claims the experiments' docstrings and gallery make, checked on the committed results.

``experiments/results.json`` holds the measured full runs the gallery page is generated
from (``test_experiments_a`` checks the page equals it). These tests read it: if a re-run
of an experiment stops supporting what its text says, they fail, and the text or the
experiment must change. (The quick-mode runs in the other experiment tests are too short
to test these claims.)
"""

import json
import math
from pathlib import Path

import pytest

RESULTS = json.loads((Path(__file__).parent.parent / "experiments" / "results.json").read_text())


def metrics(name):
    return RESULTS[name]["metrics"]


def test_e02_a_perceptron_cannot_learn_xor_and_a_hidden_layer_can():
    m = metrics("e02_logic_gates")
    assert all(m["perceptron_accuracy"][g] == 1.0 for g in ("and", "or", "nand"))
    assert m["perceptron_accuracy"]["xor"] <= 0.75
    assert m["mlp_xor_seeds_solved"] == len(m["mlp_xor_accuracy_per_seed"]) == 10


def test_e03_nonlinearity_separates_what_a_linear_stack_cannot():
    m = metrics("e03_activations")
    for d in ("circles", "spirals"):
        assert m["test_accuracy"][f"{d}_relu"] >= 0.95 > m["test_accuracy"][f"{d}_linear"] + 0.3
        assert m["linear_collapse_max_abs_diff"][d] < 1e-5
    c = m["compared"]
    assert set(c) == {"sigmoid", "tanh", "relu", "leaky_relu"}
    slowest = {a: max(e for e in r["epochs_to_95"] if e is not None) for a, r in c.items()}
    assert slowest["sigmoid"] > 3 * max(slowest[a] for a in ("tanh", "relu", "leaky_relu"))


def test_e04_softmax_cross_entropy_is_driven_to_about_zero():
    m = metrics("e04_five_points")
    assert m["final_loss"] < 1e-3 and m["accuracy"] == 1.0


def test_e05_width_helps_and_l1_resists_outliers():
    m = metrics("e05_regression")
    w = m["widths"].index(8)
    for f in ("sin", "abs"):  # orders of magnitude from 1 unit to 8
        errs = m["error_vs_width"][f]
        assert errs[0] > 100 * errs[w], f
    step = m["error_vs_width"]["step"]  # discontinuous: it shrinks, slowly
    assert step[-1] < step[0] / 3
    assert abs(m["line_fits"]["L1"]["slope"] - 2.0) < 0.1 < abs(m["line_fits"]["MSE"]["slope"] - 2)


def test_e12_random_labels_are_memorised_and_do_not_generalise():
    m = metrics("e12_random_labels")
    assert m["random_train_accuracy"] == 1.0 and m["true_train_accuracy"] == 1.0
    assert m["random_test_accuracy"] < 0.2 < 0.9 < m["true_test_accuracy"]
    assert m["random_first_epoch_100"] > m["true_first_epoch_100"]  # memorising takes longer


def test_e13_the_overfit_check_passes_a_correct_model_and_fails_a_broken_one():
    m = metrics("e13_overfit_batch")
    assert m["passed"] == {"correct MLP": True, "broken: rows shuffled every step": False}


def test_e15_he_init_trains_the_deep_relu_net_and_the_naive_inits_do_not():
    m = metrics("e15_init_depth")
    assert m["relu_He"]["val_accuracy"] > 0.9
    assert not m["relu_N(0,1)"]["val_accuracy"] > 0.2  # NaN (diverged) or chance
    for k in ("relu_N(0,0.01)", "sigmoid_N(0,0.01)", "sigmoid_He"):
        assert m[k]["val_accuracy"] < 0.2, k
    # the docstring's measured exceptions: saturated sigmoids keep their first-layer gradient
    g = m["sigmoid_N(0,1)"]["grad_norm"]
    assert g[0] > 0.05 * g[-1] and m["sigmoid_N(0,1)"]["val_accuracy"] > 0.5
    g = m["sigmoid_He"]["grad_norm"]
    assert g[0] < 1e-4 * g[-1]


def test_e18_the_lstm_beats_the_rnn_at_both_lengths():
    m = metrics("e18_rnn_vs_lstm")
    for t in m["lengths"]:
        assert m[f"LSTM_T{t}"]["final_over_baseline"] < 0.1 < m[f"RNN_T{t}"]["final_over_baseline"]


def test_e19_the_lstm_forecast_beats_both_baselines():
    m = metrics("e19_sine_forecast")
    assert m["test_mse"] < m["linear_extrapolation_mse"] < m["persistence_mse"]


def test_e21_the_gan_covers_most_modes_for_every_seed():
    m = metrics("e21_gan")
    assert all(v >= 7 for v in m["modes_covered"].values())


def test_e22_the_autoencoder_beats_pca_at_both_code_sizes():
    m = metrics("e22_autoencoder")
    for k, ae in m["test_mse"].items():
        assert ae < m["pca_test_mse"][k] < m["mean_image_mse"], k


def test_e10_schedules_are_compared_with_a_tuned_constant_rate():
    m = metrics("e10_schedules")
    tuned = [k for k in m["schedules"] if k.startswith("constant, tuned")]
    assert len(tuned) == 1
    grid = m["constant_grid_best_val_loss"]
    assert float(min(grid, key=grid.get)) == pytest.approx(m["constant_tuned_lr"])


def test_every_experiment_result_is_finite_where_it_reports_accuracy():
    for name, r in RESULTS.items():
        acc = r["metrics"].get("test_accuracy")
        if isinstance(acc, dict):
            assert all(isinstance(v, float) and math.isfinite(v) for v in acc.values()), name
