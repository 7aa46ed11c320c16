"""nnkit.config: typed YAML configs, validation errors, overrides, round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nnkit import layers as L
from nnkit.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_to_dict,
    dump_config,
    load_config,
    parse_config,
    read_yaml,
)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BASE = {"model": {"arch": "mlp", "hidden": [8]}, "data": {"dataset": "digits"}}


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def parse(**sections) -> Config:
    return parse_config({**BASE, **sections})


# ----------------------------------------------------------------------------- shipped


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate_and_round_trip(path):
    if "lstm" in path.name and not hasattr(L, "LSTM"):
        pytest.skip("nnkit.layers.LSTM not available yet")
    cfg = load_config(path)
    assert parse_config(yaml.safe_load(dump_config(cfg))) == cfg


def test_defaults_are_filled_in():
    cfg = parse()
    assert cfg.optimizer.name == "adam" and cfg.optimizer.lr == 1e-3
    assert cfg.data.split == (0.8, 0.1, 0.1) and cfg.data.batch_size == 32
    assert cfg.training.early_stopping is None and cfg.logging.checkpoint_keep == 3
    assert cfg.metrics == ("accuracy",) and cfg.parallel == {} and cfg.precision is None


@pytest.mark.parametrize("value", ["mixed_bfloat16", "float16",
                                   {"name": "mixed_float16", "loss_scale": 512},
                                   {"name": "mixed_float16", "loss_scale": "static"},
                                   {"name": "float16", "loss_scale": {"period": 100}},
                                   {"compute_dtype": "bfloat16"}])
def test_precision_names_and_mappings(value):
    from nnkit import precision

    cfg = parse(precision=value)
    assert cfg.precision == value
    assert isinstance(precision.from_config(cfg.precision), precision.Policy)


@pytest.mark.parametrize("value,key,expect", [
    ("half", "precision", "unknown precision policy 'half'"),
    (16, "precision", "expected string or mapping or null, got int 16"),
    ({"name": "mixed_float16", "loss_scale": 0}, "precision.loss_scale", "finite number > 0"),
    ({"name": "mixed_float16", "loss_scale": "dynamc"}, "precision.loss_scale", "'dynamic'"),
    ({"name": "mixed_float16", "loss_scale": {"period": 0}}, "precision.loss_scale.period",
     "expected an int >= 1, got 0"),
    ({"name": "mixed_float16", "loss_scale": {"factor": 0.5}}, "precision.loss_scale.factor",
     "expected a finite number > 1, got 0.5"),
    ({"name": "mixed_float16", "loss_scale": {"perod": 10}}, "precision.loss_scale",
     "unknown key(s) ['perod']"),
    ({"nmae": "float32"}, "precision", "unknown key(s) ['nmae']"),
])
def test_precision_errors_name_the_key(value, key, expect):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "precision": value}, file="c.yaml")
    assert e.value.key == key and e.value.file == "c.yaml" and expect in str(e.value)
    # through --set too
    with pytest.raises(ConfigError, match="--set: precision"):
        parse_config(BASE, overrides=["precision=half"])


# ----------------------------------------------------------------------------- errors


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    p = write(tmp_path, "model: {arch: mlp}\ndata: {dataset: digits}\noptimizer: {lrr: 0.1}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert str(p) in msg and "optimizer.lrr" in msg and "did you mean 'lr'?" in msg
    assert e.value.key == "optimizer.lrr" and e.value.file == str(p)


def test_unknown_top_level_section(tmp_path):
    p = write(tmp_path, "model: {arch: mlp}\ndata: {dataset: digits}\ntrainig: {epochs: 3}\n")
    with pytest.raises(ConfigError, match=r"trainig: unknown key \(did you mean 'training'\?\)"):
        load_config(p)


def test_missing_required_sections():
    with pytest.raises(ConfigError, match="model: missing required key"):
        parse_config({"data": {"dataset": "digits"}})
    with pytest.raises(ConfigError, match="data.dataset: missing required key"):
        parse_config({"model": {"arch": "mlp"}, "data": {}})


@pytest.mark.parametrize(
    "section, value, key, expect",
    [
        ("training", {"epochs": "ten"}, "training.epochs", "expected int, got str"),
        ("training", {"epochs": 2.5}, "training.epochs", "expected int"),
        ("data", {"dataset": "digits", "standardize": "yes"}, "data.standardize", "bool"),
        ("data", {"dataset": "digits", "split": 0.8}, "data.split", "list of number"),
        ("optimizer", {"lr": [1]}, "optimizer.lr", "expected number"),
        ("optimizer", {"lr": True}, "optimizer.lr", "expected number"),
        ("logging", {"plots": 1}, "logging.plots", "bool"),
    ],
)
def test_wrong_types_name_key_and_type(section, value, key, expect):
    with pytest.raises(ConfigError) as e:
        parse(**{section: value})
    assert e.value.key == key and expect in str(e.value)


@pytest.mark.parametrize(
    "section, value, key, allowed",
    [
        ("optimizer", {"lr": -0.1}, "optimizer.lr", "> 0"),
        ("optimizer", {"lr": 0}, "optimizer.lr", "> 0"),
        ("optimizer", {"clip_norm": 0.0}, "optimizer.clip_norm", "> 0"),
        ("optimizer", {"weight_decay": -1e-4}, "optimizer.weight_decay", ">= 0"),
        ("optimizer", {"plateau": {"factor": 1.0}}, "optimizer.plateau.factor", "in (0.0, 1.0)"),
        ("data", {"dataset": "digits", "batch_size": 0}, "data.batch_size", ">= 1"),
        ("training", {"epochs": 0}, "training.epochs", ">= 1"),
        ("training", {"l2": -1}, "training.l2", ">= 0"),
        ("logging", {"checkpoint_keep": 0}, "logging.checkpoint_keep", ">= 1"),
        ("logging", {"checkpoint_every": 0}, "logging.checkpoint_every", ">= 1"),
    ],
)
def test_out_of_range_names_key_and_range(section, value, key, allowed):
    with pytest.raises(ConfigError) as e:
        parse(**{section: value})
    assert e.value.key == key and f"must be {allowed}" in str(e.value)


def test_dropout_must_be_below_one():
    with pytest.raises(ConfigError, match=r"model.dropout: must be in \[0, 1\), got 1.0"):
        parse(model={"arch": "mlp", "dropout": 1.0})
    with pytest.raises(ConfigError, match=r"model.layers\[1\].rate: must be in \[0, 1\)"):
        parse(model={"layers": [{"type": "dense", "features": 3}, {"type": "dropout",
                                                                    "rate": 1.5}]})


@pytest.mark.parametrize("split", [[0.5, 0.1], [0.8, 0.3, -0.1], [0.2, 0.2, 0.2, 0.4], [0, 1]])
def test_split_fractions_checked(split):
    with pytest.raises(ConfigError) as e:
        parse(data={"dataset": "digits", "split": split})
    assert e.value.key == "data.split"


def test_choices_with_suggestions():
    cases = [
        ({"optimizer": {"name": "adamm"}}, "optimizer.name", "'adam'"),
        ({"loss": "crossentropy"}, "loss", "'cross_entropy'"),
        ({"data": {"dataset": "digts"}}, "data.dataset", "'digits'"),
        ({"training": {"grad_mode": "batches"}}, "training.grad_mode", "'batch'"),
        ({"metrics": ["acuracy"]}, "metrics[0]", "'accuracy'"),
        ({"optimizer": {"schedule": {"name": "cosin"}}}, "optimizer.schedule.name", "'cosine'"),
        ({"optimizer": {"schedule": {"name": "cosine", "decay_step": 3}}},
         "optimizer.schedule.decay_step", "'decay_steps'"),
        ({"optimizer": {"options": {"b3": 0.9}}}, "optimizer.options.b3", "'b2'"),
        ({"training": {"early_stopping": {"monitor": "val_acc"}}},
         "training.early_stopping.monitor", "'val_accuracy'"),
        ({"data": {"dataset": "digits", "augmentation": [{"name": "random_flip"}]}},
         "data.augmentation[0].name", "'random_flip_lr'"),
        ({"model": {"arch": "mpl"}}, "model.arch", "'mlp'"),
    ]
    for sections, key, suggestion in cases:
        with pytest.raises(ConfigError) as e:
            parse(**sections)
        assert e.value.key == key, sections
        assert f"did you mean {suggestion}?" in str(e.value), str(e.value)


@pytest.mark.parametrize("schedule, peak", [
    ({"name": "cosine", "decay_steps": 10, "learning_rate": 0.1}, "learning_rate"),
    ({"name": "one_cycle", "total_steps": 10, "max_lr": 0.1}, "max_lr"),
    ({"name": "cyclic", "base_lr": 0.01, "max_lr": 0.1, "step_size": 5}, "max_lr"),
])
def test_the_schedule_takes_its_peak_rate_from_optimizer_lr_only(schedule, peak):
    with pytest.raises(ConfigError, match=rf"peak rate is optimizer\.lr \(0\.003 here\), which "
                                          rf"this would override: give optimizer\.lr: 0\.1 "
                                          rf"instead and drop {peak}") as e:
        parse(optimizer={"lr": 3e-3, "schedule": schedule})
    assert e.value.key == f"optimizer.schedule.{peak}"
    rest = {k: v for k, v in schedule.items() if k != peak}
    assert parse(optimizer={"lr": 0.1, "schedule": rest}).optimizer.schedule == rest


def test_schedule_missing_argument_and_auto_only_for_steps():
    with pytest.raises(ConfigError, match="missing argument"):
        parse(optimizer={"schedule": {"name": "cosine"}})
    with pytest.raises(ConfigError, match="'auto' is only allowed"):
        parse(optimizer={"schedule": {"name": "cosine", "decay_steps": 10, "alpha": "auto"}})
    assert parse(optimizer={"schedule": {"name": "cosine", "decay_steps": "auto"}})


@pytest.mark.parametrize("monitor, mode, direction", [
    ("val_loss", None, "min"), ("val_accuracy", None, "max"),
    ("val_loss", "auto", "min"), ("val_accuracy", "auto", "max"),
    ("val_accuracy", "min", "min"), ("val_loss", "max", "max"),
])
def test_early_stopping_mode_is_auto_by_default_like_plateau(monitor, mode, direction):
    es = {"monitor": monitor, **({} if mode is None else {"mode": mode})}
    cfg = parse(training={"early_stopping": es}, metrics=["accuracy"])
    assert cfg.training.early_stopping.mode == (mode or "auto")
    assert cfg.training.early_stopping.resolved_mode == direction
    assert cfg == parse_config(yaml.safe_load(dump_config(cfg)))
    # null (what older run directories hold) is auto too
    old = parse(training={"early_stopping": {"monitor": monitor, "mode": None}})
    assert old.training.early_stopping.resolved_mode == ("min" if "loss" in monitor else "max")
    with pytest.raises(ConfigError, match=r"unknown value 'up'.*allowed: min, max, auto"):
        parse(training={"early_stopping": {"monitor": monitor, "mode": "up"}})


def test_microbatches_need_accumulate():
    with pytest.raises(ConfigError, match="training.microbatches"):
        parse(training={"microbatches": 2})
    assert parse(training={"microbatches": 2, "grad_mode": "accumulate"}).training.microbatches == 2


def test_invalid_yaml_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"invalid YAML at line 2"):
        read_yaml(write(tmp_path, "model: {arch: mlp\ndata: [\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        read_yaml(write(tmp_path, "- 1\n- 2\n"))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        read_yaml(tmp_path / "nope.yaml")


def test_config_error_is_value_error_one_line():
    e = ConfigError("must be > 0", key="optimizer.lr", file="a.yaml")
    assert isinstance(e, ValueError) and str(e) == "a.yaml: optimizer.lr: must be > 0"


# ----------------------------------------------------------------------------- overrides


def test_overrides_are_yaml_scalars():
    cfg = parse_config(BASE, overrides=[
        "optimizer.lr=3e-3", "model.hidden=[64, 32]", "training.early_stopping.patience=3",
        "data.standardize=true", "optimizer.clip_norm=null", "loss=mse", "seed=7",
    ])
    assert cfg.optimizer.lr == 0.003 and isinstance(cfg.optimizer.lr, float)
    assert cfg.model["hidden"] == [64, 32]
    assert cfg.training.early_stopping.patience == 3
    assert cfg.data.standardize is True and cfg.optimizer.clip_norm is None
    assert cfg.loss == "mse" and cfg.seed == 7


def test_override_list_index_and_errors():
    raw = {**BASE, "model": {"layers": [{"type": "dense", "features": 4}]}}
    assert apply_overrides(raw, ["model.layers.0.features=32"])["model"]["layers"][0] == {
        "type": "dense", "features": 32}
    assert raw["model"]["layers"][0]["features"] == 4  # the input is not modified
    with pytest.raises(ConfigError, match="not of the form key=value"):
        apply_overrides(raw, ["optimizer.lr"])
    with pytest.raises(ConfigError, match="out of range"):
        apply_overrides(raw, ["model.layers.3.features=1"])


def test_override_errors_say_set_once_and_broken_yaml_is_reported():
    for item, msg in [("x", "override 'x' is not of the form key=value"),
                      ("=3", "override '=3' has an empty key"),
                      ("model.arch.x=1", "cannot set 'model.arch.x': its parent is not a "
                                         "mapping"),
                      ("model.arch.x.y=1", "cannot set 'model.arch.x.y': 'model.arch' is not a "
                                           "mapping")]:
        with pytest.raises(ConfigError) as e:
            parse_config(BASE, overrides=[item])
        assert str(e.value) == f"--set: {msg}"
    with pytest.raises(ConfigError) as e:
        parse_config(BASE, overrides=["model.hidden=[8"])
    assert str(e.value) == ("--set: model.hidden: invalid YAML '[8' at column 3: expected ',' "
                            "or ']', but got '<stream end>'")
    with pytest.raises(ConfigError, match=r"^--set: data\.options: invalid YAML '\{n: 1' at "):
        parse_config(BASE, overrides=["data.options={n: 1"])
    with pytest.raises(ConfigError, match=r"^--set: optimizer: key 'lr' repeated"):
        parse_config(BASE, overrides=["optimizer={lr: 0.1, lr: 0.2}"])
    # a plain value that is not YAML stays the string
    assert apply_overrides(BASE, ["data.options.path=a: b: c"])["data"]["options"] == {
        "path": "a: b: c"}


def test_an_argument_to_an_augmentation_without_arguments_says_so():
    with pytest.raises(ConfigError) as e:
        parse(data={"dataset": "digits", "augmentation": [{"name": "random_flip_lr", "p": 1}]})
    assert e.value.key == "data.augmentation[0].p"
    assert e.value.message == "unknown argument: random_flip_lr takes no arguments"


def test_a_run_directorys_config_points_to_resume(tmp_path):
    p = write(tmp_path, yaml.safe_dump({**BASE, "run": {"created": "2024-01-01"}}))
    with pytest.raises(ConfigError, match=r"run: unknown key; .*`run:` is the metadata nnkit "
                                          r"writes into a run directory's config\.yaml: to "
                                          r"continue that run use `nnkit train --resume DIR`, "
                                          r"to start a new one from this config delete"):
        load_config(p)
    with pytest.raises(ConfigError) as e:  # no hint for a `run` key inside a section
        parse(training={"run": 1})
    assert "--resume" not in str(e.value)


def test_override_errors_say_set(tmp_path):
    p = write(tmp_path, "model: {arch: mlp}\ndata: {dataset: digits}\n")
    with pytest.raises(ConfigError) as e:
        load_config(p, ["optimizer.lrr=0.1"])
    assert str(e.value).startswith("--set: optimizer.lrr") and "did you mean 'lr'?" in str(
        e.value)
    with pytest.raises(ConfigError, match="--set: optimizer.lr: must be > 0"):
        load_config(p, ["optimizer.lr=-3e-3"])


def test_exponent_strings_read_as_floats_everywhere(tmp_path):
    p = write(tmp_path, "model: {arch: mlp}\ndata: {dataset: digits}\n"
              "optimizer: {lr: 1e-3, schedule: {name: cosine, decay_steps: 100, alpha: 1e-2}}\n")
    cfg = load_config(p)
    assert cfg.optimizer.lr == 1e-3 and cfg.optimizer.schedule["alpha"] == 0.01


@settings(max_examples=30, deadline=None)
@given(st.floats(min_value=1e-12, max_value=1e3, allow_nan=False))
def test_lr_override_and_dump_round_trip_exactly(lr):
    cfg = parse_config(BASE, overrides=[f"optimizer.lr={lr!r}"])
    assert cfg.optimizer.lr == lr
    assert parse_config(yaml.safe_load(dump_config(cfg))).optimizer.lr == lr


# ----------------------------------------------------------------------------- round trip


def test_full_config_round_trip_and_dict(tmp_path):
    full = {
        "model": {"layers": [{"type": "flatten"}, {"type": "dense", "features": 16,
                                                   "name": "hidden"}, {"type": "relu"},
                             {"type": "dropout", "rate": 0.1}, {"type": "dense", "features": 10}]},
        "data": {"dataset": "digits", "options": {"size": 8}, "split": [0.7, 0.2, 0.1],
                 "stratify": False, "split_seed": 3, "batch_size": 16, "eval_batch_size": 64,
                 "standardize": True, "augmentation": [{"name": "gaussian_noise", "std": 0.1}]},
        "optimizer": {"name": "sgd", "lr": 0.05, "schedule": {"name": "step", "boundaries": [10],
                                                              "factor": 0.5},
                      "weight_decay": 1e-4, "clip_norm": 1.0, "accumulate": 2,
                      "plateau": {"monitor": "val_accuracy", "mode": "max", "patience": 2,
                                  "factor": 0.5, "min_delta": 0.01, "cooldown": 1,
                                  "min_scale": 0.01},
                      "options": {"momentum": 0.9}},
        "training": {"epochs": 3, "early_stopping": {"monitor": "val_loss", "mode": "min",
                                                     "patience": 2, "min_delta": 0.001,
                                                     "restore_best": False},
                     "grad_mode": "accumulate", "microbatches": 2, "l1": 0.0, "l2": 1e-5,
                     "mode": "step"},
        "loss": "cross_entropy", "metrics": ["accuracy", "macro_f1"], "seed": 5,
        "logging": {"tensorboard": False, "checkpoint_keep": 1, "checkpoint_every": 2,
                    "plots": False, "histograms_every": 3},
        "parallel": {"data_parallel": 2, "fsdp": False},
        "precision": {"name": "mixed_float16", "loss_scale": 1024},
    }
    cfg = parse_config(full)
    again = load_config(write(tmp_path, dump_config(cfg)))
    assert again == cfg
    assert config_to_dict(cfg) == {**full, "data": {**full["data"]},
                                   "training": full["training"]}
    assert dataclasses.is_dataclass(cfg) and cfg.parallel == {"data_parallel": 2, "fsdp": False}


def test_dump_extra_section():
    text = dump_config(parse(), {"run": {"jax_version": "x"}})
    assert yaml.safe_load(text)["run"] == {"jax_version": "x"}


# ----------------------------------------------------------------------------- duplicate keys


def test_duplicate_key_in_a_mapping_names_both_lines(tmp_path):
    p = write(tmp_path, "model: {arch: mlp, hidden: [8]}\ndata: {dataset: xor}\n"
              "optimizer: {lr: 0.05}\ntraining: {epochs: 5}\noptimizer: {name: sgd}\n")
    with pytest.raises(ConfigError) as e:
        read_yaml(p)
    msg = str(e.value)
    assert msg.startswith(str(p)) and "'optimizer'" in msg
    assert "line 5" in msg and "line 3" in msg
    nested = write(tmp_path, "model: {arch: mlp}\ndata:\n  dataset: xor\n  batch_size: 4\n"
                   "  batch_size: 8\n", "nested.yaml")
    with pytest.raises(ConfigError, match=r"'batch_size'.*line 5.*line 4"):
        read_yaml(nested)


def test_merge_keys_still_work_and_may_be_overridden(tmp_path):
    p = write(tmp_path, "base: &b {lr: 0.1, name: sgd}\nmodel: {arch: mlp}\n"
              "data: {dataset: xor}\noptimizer:\n  <<: *b\n  lr: 0.2\n")
    raw = read_yaml(p)
    assert raw["optimizer"] == {"lr": 0.2, "name": "sgd"}


def test_duplicate_key_in_a_set_value_is_an_error():
    with pytest.raises(ConfigError, match=r"--set.*'lr'.*repeated"):
        apply_overrides(BASE, ["optimizer={lr: 0.1, lr: 0.2}"])
