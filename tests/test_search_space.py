"""Tests of schema-derived search spaces: include/exclude regexes over the run config's tunable
settings, their default ranges, and errors that name the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechbed.errors import UserInputError
from speechbed.search.search_file import load_search
from speechbed.search.space import DEFAULT_RANGES, UNTUNABLE, tunable_names
from speechbed.tasks.ctc_phones.config import CtcPhonesRunConfig as RunConfig

HEAD = "num_trials: 2\ndata: {cache_directory: /nowhere}\n"


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "search.yml"
    path.write_text(HEAD + body)
    return path


def test_every_tunable_setting_has_a_default_range_the_run_config_accepts(tmp_path: Path):
    assert set(tunable_names(RunConfig)) == set(DEFAULT_RANGES)
    assert not set(DEFAULT_RANGES) & set(UNTUNABLE)
    # include: every setting; load_search checks each bound and choice against RunConfig
    search = load_search(write(tmp_path, "include: ['.*']\n"))
    assert set(search.settings.space) == set(DEFAULT_RANGES)


def test_include_and_exclude_pick_whole_dotted_names_and_space_overrides(tmp_path: Path):
    path = write(
        tmp_path,
        "include:\n  - 'model\\.recurrent_.*'\n  - training.optimizer\n"
        "exclude: ['.*bidirectional']\n"
        "space:\n  model.recurrent_size: {int: [8, 16]}\n  training.dropout_prob: {float: [0, .2]}\n",
    )
    space = load_search(path).settings.space
    assert set(space) == {
        "model.recurrent_type",
        "model.recurrent_size",
        "model.recurrent_layers",
        "training.optimizer",
        "training.dropout_prob",
    }
    assert (
        space["model.recurrent_size"].int_range == [8, 16] and not space["model.recurrent_size"].log
    )
    assert space["model.recurrent_type"].choice == ["LSTM", "GRU", "RNN"]
    # 'training.optimizer' matches whole names only: not a longer name that starts with it
    assert (
        "model.recurrent_size"
        in load_search(write(tmp_path, "include: [model.recurrent_size]\n")).settings.space
    )
    log_range = load_search(write(tmp_path, "include: ['data\\..*']\n")).settings.space
    assert list(log_range) == ["data.batch_size"] and log_range["data.batch_size"].log


@pytest.mark.parametrize(
    ("body", "line", "message"),
    [
        (
            "include:\n  - model\\..*\n  - model.recurent_size\n",
            5,
            "did you mean 'model.recurrent_size'",
        ),
        (
            "include:\n  - training.device\n",
            4,
            "'training.device' is not tunable: where a trial runs",
        ),
        ("include: [info.seed]\n", 3, "only data, model, training settings"),
        ("include: ['model\\.(']\n", 3, "is no regular expression"),
        ("include: [model]\n", 3, "matches no tunable setting (whole dotted names"),
        ("include: [training.optim]\n", 3, "did you mean 'training.optimizer'"),
        (
            "include: ['model\\..*']\nexclude:\n  - data.batch_sise\n",
            5,
            "did you mean 'data.batch_size'",
        ),
        (
            "include: ['model\\.recurrent_size']\nexclude: ['model\\..*']\n",
            4,
            "drops every setting",
        ),
        ("sampler: random\n", 1, "space: {...} and/or include: [...]"),
        (
            "include: ['.*']\nspace:\n  training.num_epochs: {int: [1, 4]}\n",
            5,
            "every trial's budget",
        ),
    ],
)
def test_schema_space_errors_name_file_and_line(tmp_path: Path, body: str, line: int, message: str):
    path = write(tmp_path, body)
    with pytest.raises(UserInputError) as error:
        load_search(path)
    assert f"{path}:{line}:" in str(error.value) and message in str(error.value), str(error.value)
