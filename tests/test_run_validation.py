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


@pytest.mark.parametrize("name, overrides, expect", [
    ("digits_mlp.yaml", ["data.options.size=0"], "size must be >= 1"),
    ("moons_mlp.yaml", ["data.options.n=1"], "need at least one point per class"),
    ("moons_mlp.yaml", ["data.dataset=spirals", "data.options={arms: 0}"], "arms must be >= 1"),
    ("fashion_mnist_mlp.yaml", ["data.options.limit=0"], "limit must be >= 1"),
])
def test_loader_range_errors_name_data_options(name, overrides, expect):
    e = error_of(name, *overrides)
    assert e.key == "data.options" and expect in e.message


def test_data_format_errors_stay_data_format_errors(monkeypatch):
    from nnkit import data

    def corrupt(name, **options):
        raise data.DataFormatError("x.idx", "truncated", offset=16)

    monkeypatch.setattr(data, "load", corrupt)
    with pytest.raises(data.DataFormatError, match="x.idx: truncated"):
        prepare("digits_mlp.yaml")
