"""nnkit.run.prepare: bad config values are ConfigErrors naming the key, before any run
directory exists (data options, augmentation and optimizer values, loss/metrics vs task)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nnkit import run as runs
from nnkit.config import ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def prepare(name: str, *overrides: str) -> runs.Prepared:
    path = CONFIGS / name
    return runs.prepare(load_config(path, list(overrides)))


def error_of(name: str, *overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        prepare(name, *overrides)
    return e.value


# ----------------------------------------------------------------------------- data options


@pytest.mark.parametrize("name, overrides, option, expect", [
    ("digits_mlp.yaml", ["data.options.size=0"], "size", "size must be >= 1"),
    ("moons_mlp.yaml", ["data.options.n=1"], "n", "need at least one point per class"),
    ("moons_mlp.yaml", ["data.dataset=spirals", "data.options={arms: 0}"], "arms",
     "arms must be >= 1"),
    ("fashion_mnist_mlp.yaml", ["data.options.limit=0"], "limit", "limit must be >= 1"),
])
def test_loader_range_errors_name_the_option(name, overrides, option, expect):
    e = error_of(name, *overrides)
    assert e.key == f"data.options.{option}" and expect in e.message


def _mnist_files(d: Path, n: int = 60) -> Path:
    import numpy as np

    from nnkit.data import write_idx

    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        write_idx(d / f"{split}-images-idx3-ubyte",
                  rng.integers(0, 256, (n, 28, 28)).astype(np.uint8))
        write_idx(d / f"{split}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))
    return d


@pytest.mark.parametrize("limit", [0, -3])
def test_a_limit_below_1_with_a_path_names_the_limit(tmp_path, limit):
    sets = ["data.dataset=mnist", f"data.options={{path: {_mnist_files(tmp_path)}}}",
            f"data.options.limit={limit}"]
    e = error_of("digits_mlp.yaml", *sets)
    assert e.key == "data.options.limit" and f"limit must be >= 1, got {limit}" == e.message
    assert prepare("digits_mlp.yaml", *sets[:2], "data.options.limit=50").train[0].shape[1:] == (
        28, 28, 1)


def test_finding_the_option_at_fault_keeps_the_path(monkeypatch, tmp_path):
    """A loader error is pinned on an option by loading without it; never without ``path``
    (mnist has no default location: its FileNotFoundError used to be the message)."""
    from nnkit import data

    real = data.load

    def load(name, path=None, limit=None):
        if path is None:
            raise FileNotFoundError("mnist: no default location; pass path=")
        if limit is not None and limit > 60:
            raise ValueError(f"limit {limit} is more than the 60 examples")
        return real(name, path=path, limit=limit)

    monkeypatch.setattr(data, "load", load)
    e = error_of("digits_mlp.yaml", "data.dataset=mnist",
                 f"data.options={{path: {_mnist_files(tmp_path)}, limit: 80}}")
    assert e.key == "data.options.limit" and e.message == "limit 80 is more than the 60 examples"


def test_data_format_errors_stay_data_format_errors(monkeypatch):
    from nnkit import data

    def corrupt(name, **options):
        raise data.DataFormatError("x.idx", "truncated", offset=16)

    monkeypatch.setattr(data, "load", corrupt)
    with pytest.raises(data.DataFormatError, match="x.idx: truncated"):
        prepare("digits_mlp.yaml")


# ----------------------------------------------------------------------------- error sources


def test_prepare_errors_in_overridden_keys_name_set_else_the_file():
    from nnkit.run.prepare import prepare_named

    path = str(CONFIGS / "digits_mlp.yaml")
    sets = ["data.batch_size=2000"]
    with pytest.raises(ConfigError) as e:
        prepare_named(load_config(path, sets), path, sets)
    assert str(e.value).startswith("--set: data.batch_size: must be <=")
    sets = ["data.options={size: 0}"]
    with pytest.raises(ConfigError, match=r"^--set: data\.options\.size: size must be >= 1"):
        prepare_named(load_config(path, sets), path, sets)
    sets = ["data.options.size=0"]
    with pytest.raises(ConfigError, match=r"^--set: data\.options\.size: size must be >= 1"):
        prepare_named(load_config(path, sets), path, sets)
    sets = ["seed=3", "data.batch_size=2000"]
    with pytest.raises(ConfigError, match="^--set: data.batch_size"):
        prepare_named(load_config(path, sets), path, sets)
    sets = ["seed=3", "optimizer.schedule.decay_steps=-5"]
    with pytest.raises(ConfigError, match=r"^--set: optimizer\.schedule"):
        prepare_named(load_config(path, sets), path, sets)
    with pytest.raises(ConfigError, match=f"^{path}: data.batch_size"):
        prepare_named(load_config(path, ["data.split=[0.01, 0.99]"]), path, ["seed=1"])


def test_cli_summary_blames_set(capsys):
    from nnkit.cli import main

    rc = main(["summary", str(CONFIGS / "digits_mlp.yaml"), "--set", "data.batch_size=2000"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("nnkit summary: error: --set: data.batch_size:")


def test_loss_target_mismatch_is_reported_under_loss():
    e = error_of("digits_mlp.yaml", "loss=mse")
    assert e.key == "loss" and "'mse'" in e.message and "(batch, *(10,))" in e.message


# ------------------------------------------------------------------- loss, metrics vs task


@pytest.mark.parametrize("name, overrides, key, expect", [
    ("moons_mlp.yaml", ["metrics=[mae]"], "metrics[0]", "metric 'mae' cannot compare"),
    ("moons_mlp.yaml", ["metrics=[accuracy, rmse]"], "metrics[1]", "metric 'rmse'"),
    ("sine_lstm.yaml", ["metrics=[accuracy]"], "metrics[0]", "needs a classification"),
    ("sine_lstm.yaml", ["metrics=[mae, top_5_accuracy]"], "metrics[1]",
     "needs a classification"),
    ("sine_lstm.yaml", ["loss=cross_entropy"], "loss", "needs a classification"),
    ("sine_lstm.yaml", ["loss=nll"], "loss", "needs a classification"),
    ("moons_mlp.yaml", ["model.out=1", "metrics=[]"], "loss", "1 output unit"),
    ("moons_mlp.yaml", ["data.dataset=blobs", "data.options={centers: 3}", "model.out=1",
                        "loss=binary_cross_entropy"], "loss",
     "loss 'binary_cross_entropy' takes targets in [0, 1], but its train y holds 2 "),
    ("moons_mlp.yaml", ["data.dataset=blobs", "data.options={centers: 3}", "model.out=1",
                        "loss=bce_probs"], "loss", "3 classes found (0, 1, 2)"),
])
def test_loss_and_metrics_must_fit_the_task(name, overrides, key, expect):
    e = error_of(name, *overrides)
    assert e.key == key and expect in e.message


@pytest.mark.parametrize("name, overrides", [
    ("moons_mlp.yaml", ["metrics=[accuracy, macro_f1, top_1_accuracy]"]),
    ("moons_mlp.yaml", ["model.out=1", "loss=binary_cross_entropy"]),
    ("sine_lstm.yaml", ["metrics=[mae, mse, rmse, r2]", "loss=huber"]),
])
def test_fitting_loss_and_metrics_pass(name, overrides):
    prepare(name, *overrides)


# ------------------------------------------------------- augmentation and optimizer values


def aug(spec: str) -> str:
    return f"data.augmentation=[{spec}]"


@pytest.mark.parametrize("overrides, key, expect", [
    ([aug("{name: random_translate, max_shift: -1}")], "data.augmentation[0].max_shift",
     "must be >= 0"),
    ([aug("{name: random_translate, max_shift: 1.5}")], "data.augmentation[0].max_shift",
     "expected int"),
    ([aug("{name: random_translate, max_shift: 100}")], "data.augmentation[0].max_shift",
     "must be smaller than the images (28x28 pixels), got 100"),
    ([aug("{name: random_flip_lr}, {name: random_crop, padding: 28}")],
     "data.augmentation[1].padding", "must be smaller than the images (28x28 pixels), got 28"),
    ([aug("{name: random_crop, padding: 1, pad_mode: bogus}")],
     "data.augmentation[0].pad_mode", ""),
    ([aug("{name: random_flip_lr}, {name: random_crop, padding: -2, pad_mode: edge}")],
     "data.augmentation[1].padding", ""),
    ([aug("{name: random_rotate, max_degrees: abc}")], "data.augmentation[0].max_degrees",
     "expected number"),
    ([aug("{name: gaussian_noise, std: abc}")], "data.augmentation[0].std", ""),
    (["optimizer.options={b1: abc}"], "optimizer.options.b1", ""),
    (["optimizer.options={b1: 0.9, eps: abc}"], "optimizer.options.eps", ""),
    (["optimizer.options.b1=2"], "optimizer.options.b1", "b1 must be in [0, 1), got 2"),
    (["optimizer.options.eps=-1"], "optimizer.options.eps",
     "eps must be > 0 (or 0 with eps_root > 0), got -1"),
    (["optimizer.name=sgd", "optimizer.options={momentum: 0.9, nesterov: 1}"],
     "optimizer.options.nesterov", "nesterov must be true or false, got int 1"),
    (["optimizer.schedule={name: cosine, decay_steps: auto, alpha: abc}"],
     "optimizer.schedule.alpha", "expected number"),
    (["optimizer.schedule={name: cosine, decay_steps: 2.5}"],
     "optimizer.schedule.decay_steps", "expected int"),
    (["optimizer.schedule={name: cyclic, base_lr: 0.001, step_size: 10, mode: bogus}"],
     "optimizer.schedule.mode", ""),
    (["optimizer.schedule={name: cosine, decay_steps: auto, alpha: -1}"],
     "optimizer.schedule.alpha", "alpha (the final fraction of the rate) must be in [0, 1], "
                                 "got -1"),
    (["optimizer.schedule={name: exponential, decay_rate: -0.5}"],
     "optimizer.schedule.decay_rate", "decay_rate must be > 0, got -0.5"),
    (["optimizer.schedule={name: exponential, decay_rate: 1e6}"],
     "optimizer.schedule", "the learning rate is not finite (inf) at step 7 of the run's"),
])
def test_option_values_are_checked_before_training(overrides, key, expect):
    e = error_of("digits_lenet5.yaml", *overrides)
    assert e.key == key and expect in e.message, str(e)


def test_schedules_are_evaluated_over_the_run_for_negative_rates():
    import jax.numpy as jnp

    from nnkit.run.prepare import _check_rates

    def falls(t):  # 0 at step 150 (float rounding around 0 is no error), then negative
        return 1e-3 * (1.0 - jnp.asarray(t, jnp.float32) / 150)

    _check_rates(falls, 150)
    with pytest.raises(ConfigError, match=r"the learning rate is negative \(-6\.\d+e-06\) at "
                                          r"step 151 of the run's 200 optimizer steps") as e:
        _check_rates(falls, 200)
    assert e.value.key == "optimizer.schedule"
    with pytest.raises(ConfigError, match=r"negative .* of the run's 10000000 optimizer steps"):
        _check_rates(falls, 10_000_000)  # sampled, not all 10 million steps


def test_a_val_fraction_that_rounds_to_no_examples_is_named_with_the_counts():
    sets = ["data.dataset=xor", "data.options={}", "data.batch_size=2"]
    e = error_of("moons_mlp.yaml", *sets, "data.split=[0.9, 0.1]")
    assert e.key == "training.early_stopping.monitor"
    assert ("no validation split (data.split [0.9, 0.1] gives 4 train, 0 val and 0 test "
            "examples of 4: its val fraction 0.1 rounds to 0 examples" in e.message), e.message
    e = error_of("moons_mlp.yaml", *sets, "data.split=[1.0]")
    assert e.message.endswith("no validation split (data.split needs a val fraction)")


def test_integral_floats_are_accepted_for_ints():
    prep = prepare("digits_lenet5.yaml", "optimizer.schedule={name: cosine, decay_steps: 1e3}",
                   aug("{name: random_crop, padding: 2.0}"))
    assert prep.augment is not None


def test_cli_bad_augmentation_exit_2_and_no_run_dir(tmp_path, capsys):
    from nnkit.cli import main

    out = tmp_path / "run"
    rc = main(["train", str(CONFIGS / "digits_lenet5.yaml"), "--out", str(out), "--set",
               aug("{name: random_translate, max_shift: -1}")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "internal error" not in err
    assert "--set: data.augmentation[0].max_shift" in err and not out.exists()


# ------------------------------------------- mistakes that used to surface only after compiling


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("name, overrides, key, expect", [
    ("moons_mlp.yaml", ["model={layers: [{type: embedding, vocab_size: 10, features: 4}, "
                        "{type: flatten}, {type: dense, features: 2}]}"],
     "model", "expected integer token ids, got dtype float32"),
    ("digits_mlp.yaml", ["model={layers: [{type: flatten}, {type: dense, features: 8}, "
                         "{type: leaky_relu, alpha: abc}, {type: dense, features: 10}]}"],
     "model.layers[2].alpha", "expected number, got str 'abc'"),
    ("digits_mlp.yaml", ["model={layers: [{type: reshape, shape: [8, 8]}, "
                         "{type: lstm, hidden: 4, return_state: true}, "
                         "{type: dense, features: 10}]}"],
     "model", "dense_0: cannot be initialised on input shape ((8, 4), ((4,), (4,)))"),
    ("moons_mlp.yaml", ["data.dataset=poly", "data.options={coeffs: []}", "loss=mse",
                        "metrics=[mae]"], "data.options.coeffs", "coeffs must be a non-empty list"),
    ("moons_mlp.yaml", ["data.dataset=poly", "data.options={coeffs: [0, 1e308, 1e308]}",
                        "loss=mse", "metrics=[mae]"], "data", "NaN/inf value(s)"),
])
def test_model_and_data_mistakes_are_config_errors_before_training(name, overrides, key,
                                                                   expect):
    e = error_of(name, *overrides)
    assert e.key == key and expect in e.message, (e.key, e.message)


@pytest.mark.parametrize("overrides, key, expect", [
    (["training.grad_mode=accumulate", "training.microbatches=3", "data.batch_size=8"],
     "training.microbatches", "3 does not divide data.batch_size 8"),
    (["metrics=[accuracy, accuracy]"], "metrics[1]", "listed twice (also metrics[0])"),
    (["seed=4294967296"], "seed", "must be in [0, 4294967295]"),
    (["optimizer.lr=.inf"], "optimizer.lr", "must be a finite number, got inf"),
    (["training.l2=.nan"], "training.l2", "must be a finite number, got nan"),
    (["data.options={noise: .nan}"], "data.options.noise", "must be a finite number"),
])
def test_config_values_checked_when_read(overrides, key, expect):
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "moons_mlp.yaml", overrides)
    assert e.value.key == key and expect in e.value.message, (e.value.key, e.value.message)


def test_yaml_aliases_stay_shared_instead_of_expanding(tmp_path):
    """Nested aliases: 10**7 nodes if expanded; read in well under a second and refused for
    its unknown top-level key."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)]
    path = tmp_path / "aliases.yaml"
    path.write_text("\n".join(lines) + "\nmodel: {arch: mlp}\ndata: {dataset: xor}\n")
    with pytest.raises(ConfigError, match="a0: unknown key"):
        load_config(path)


def test_seeds_beyond_32_bits_are_refused_not_folded():
    import jax
    import optax

    import nnkit
    from nnkit._checks import check_seed

    assert check_seed(2**32 - 1) == 2**32 - 1 and check_seed(-5) == -5
    with pytest.raises(ValueError, match=r"same key as 0"):
        check_seed(2**32)
    sgd = optax.sgd(0.1)
    with pytest.raises(ValueError, match="seed must be < 2\\*\\*32"):
        nnkit.train.create_train_state(nnkit.layers.Dense(2), (3,), sgd, 2**32 + 7)
    # the key for a seed in range is JAX's own
    ts = nnkit.train.create_train_state(nnkit.layers.Dense(2), (3,), sgd, 2**32 - 1)
    ref = nnkit.train.create_train_state(nnkit.layers.Dense(2), (3,), sgd,
                                         jax.random.key(2**32 - 1))
    assert (ts.params["w"] == ref.params["w"]).all()


def test_relative_data_path_is_kept_absolute_and_dataset_names_ignore_case(tmp_path,
                                                                          monkeypatch):
    """A relative ``data.options.path`` is read from the working directory and kept absolute
    (what the run's config.yaml records, so `nnkit eval`/`--resume` from elsewhere read the
    same files); option types are checked against the loader's signature, naming the option."""
    from nnkit.config import config_to_dict

    monkeypatch.chdir(tmp_path)
    cfg = load_config(CONFIGS / "digits_mlp.yaml",
                      ["data.dataset=MNIST", "data.options={path: mnist_files}"])
    assert cfg.data.dataset == "mnist"
    assert cfg.data.options["path"] == str(tmp_path / "mnist_files")
    assert config_to_dict(cfg)["data"]["options"]["path"] == str(tmp_path / "mnist_files")
    monkeypatch.chdir(CONFIGS)  # a saved config read from another directory: unchanged
    again = load_config(CONFIGS / "digits_mlp.yaml",
                        ["data.dataset=mnist", f"data.options={{path: {tmp_path}/mnist_files}}"])
    assert again.data.options["path"] == str(tmp_path / "mnist_files")
    with pytest.raises(ConfigError) as e:
        load_config(CONFIGS / "digits_mlp.yaml", ["data.dataset=mnist", "data.options={path: 5}"])
    assert e.value.key == "data.options.path"
    e = error_of("moons_mlp.yaml", "data.options={noise: abc}")
    assert e.key == "data.options.noise" and "expected number, got str 'abc'" in e.message


def test_output_units_must_match_the_classes_of_the_data():
    e = error_of("moons_mlp.yaml", "model={arch: mlp, hidden: [4], out: 3}")
    assert e.key == "model" and "3 output units but the data set 'moons' has 2 classes" in (
        e.message)
    assert prepare("moons_mlp.yaml", "model={arch: mlp, hidden: [4]}").num_classes == 2


@pytest.mark.parametrize("overrides, key, expect", [
    (["model={layers: [{type: dense, features: 4, name: a}, {type: relu}, "
      "{type: dense, features: 2, name: a}]}"], "model.layers", "duplicate layer names"),
    (["model={layers: [{type: dense, features: 4}, {type: gelu, approximate: maybe}, "
      "{type: dense, features: 2}]}"], "model.layers[1].approximate",
     "expected true or false, got str 'maybe'"),
    (["model={layers: [{type: dense, features: true}, {type: dense, features: 2}]}"],
     "model.layers[0].features", "expected int, got bool True"),
    (["optimizer.accumulate=1000"], "optimizer.accumulate", "the parameters would never change"),
    (["data.augmentation=[{name: gaussian_noise, std: -1}]"], "data.augmentation[0].std",
     "std must be >= 0"),
])
def test_layer_option_types_names_and_never_updating_runs(overrides, key, expect):
    e = error_of("moons_mlp.yaml", *overrides)
    assert e.key == key and expect in e.message, (e.key, e.message)


def test_float16_state_with_an_eps_that_rounds_to_zero_is_refused():
    e = error_of("moons_mlp.yaml", "precision=float16", "optimizer.name=adam")
    assert e.key == "precision" and "eps rounds to 0 in float16" in e.message
    prepare("moons_mlp.yaml", "precision=float16", "optimizer.name=adam",
            "optimizer.options={eps: 1e-4}")
    prepare("moons_mlp.yaml", "precision=float16", "optimizer.name=sgd")
    prepare("moons_mlp.yaml", "precision=mixed_float16", "optimizer.name=adam")


def test_a_loader_error_names_the_option_at_fault_and_a_directory_is_no_config():
    e = error_of("moons_mlp.yaml", "data.options={seed: -1, n: 64}")
    assert e.key == "data.options.seed", (e.key, e.message)
    with pytest.raises(FileNotFoundError, match="is a directory, not a config file"):
        load_config(CONFIGS)
