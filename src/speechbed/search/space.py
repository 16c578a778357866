"""The search-space grammar: dotted run-config names mapped to int, float or choice ranges.

Read by ``speechbed.search.search_file`` (checked against ``RunConfig`` with file:line errors)
and used by ``speechbed.search.worker`` to draw a trial's settings.

    model.recurrent_size: {int: [64, 1024], log: true}
    training.log10_learning_rate: {float: [-4, -2]}
    training.dropout_prob: {float: [0.0, 0.5], step: 0.1}
    model.recurrent_type: {choice: [LSTM, GRU]}

Ranges are inclusive. ``log`` draws uniformly in log space (positive bounds only); ``step``
draws on a grid from the low bound (not with ``log``). A name is ``section.key`` of the run
config's ``data``, ``model`` or ``training`` section; settings that do not change what a
trial learns, or that say where it runs, are not tunable (``UNTUNABLE`` says why).

Or the space comes from the schema: ``include:`` / ``exclude:`` regular expressions, each
matching whole dotted names, pick tunable settings, which are searched over their range in
``DEFAULT_RANGES`` (every tunable setting has one); entries under ``space:`` override them.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any

import pydantic
from pydantic import Field

from speechbed.jobs import JobSchema

TUNABLE_SECTIONS = ("data", "model", "training")

#: Names that exist in the run config but are no search parameter, and why.
UNTUNABLE: dict[str, str] = {
    "data.cache_directory": "it picks the data, which every trial must share",
    "data.feature": "it picks the data (and data.cache_directory with it)",
    "data.train_partition": "it picks the data, which every trial must share",
    "data.dev_partition": "the dev partition is what trials are compared on",
    "data.test_partition": "the test partition is never used to choose settings",
    "data.num_workers": "it changes how fast batches are read, not what is learnt",
    "data.in_memory": "it changes how frames are read, not what is learnt",
    "model.seed": "seeds are swept when the best settings are run, not tuned",
    "training.seed": "seeds are swept when the best settings are run, not tuned",
    "training.device": "where a trial runs is the worker's choice",
    "training.num_threads": "it changes speed, not what is learnt",
    "training.keep_last_and_best_only": "it changes which checkpoints are kept",
    "training.num_epochs": "it is every trial's budget (and the pruners' resource)",
    "training.mixed_precision": "it trades float16 rounding for speed on CUDA; set it once",
    "training.keep_best": "it changes which checkpoints are kept",
    "training.save_frequency": "it changes which checkpoints are kept",
    "training.keep_epochs": "it changes which checkpoints are kept",
    "training.global_batch_size": "it checks the batch settings, it sets nothing",
    "training.lr_milestones": "a list of epochs; search lr_gamma and lr_step_epochs instead",
}

#: The range each tunable setting is searched over when ``include:`` picks it (and no
#: ``space:`` entry gives another). Bounds are those a model of the demo's to TIMIT's size trains
#: with; ``test_search_space`` checks every tunable setting has one that the run config accepts.
DEFAULT_RANGES: dict[str, dict[str, Any]] = {
    "data.batch_size": {"int": [4, 64], "log": True},
    "model.use_log_compression": {"choice": [False, True]},
    "model.use_lift": {"choice": [False, True]},
    "model.window_size": {"int": [2, 20]},
    "model.window_stride": {"int": [1, 5]},
    "model.convolutional_layers": {"int": [0, 6]},
    "model.convolutional_initial_channels": {"int": [4, 64], "log": True},
    "model.convolutional_kernel_time": {"int": [1, 5]},
    "model.convolutional_kernel_freq": {"int": [1, 9]},
    "model.convolutional_mellin": {"choice": [False, True]},
    "model.convolutional_time_factor": {"int": [1, 2]},
    "model.convolutional_freq_factor": {"int": [1, 3]},
    "model.convolutional_channel_factor": {"int": [1, 2]},
    "model.convolutional_factor_schedule": {"int": [1, 3]},
    "model.convolutional_nonlinearity": {"choice": ["relu", "sigmoid", "tanh"]},
    "model.convolutional_dropout_2d": {"choice": [False, True]},
    "model.recurrent_type": {"choice": ["LSTM", "GRU", "RNN"]},
    "model.recurrent_size": {"int": [32, 1024], "log": True},
    "model.recurrent_layers": {"int": [0, 5]},
    "model.recurrent_bidirectional": {"choice": [False, True]},
    "training.optimizer": {"choice": ["adam", "adamw", "sgd", "rms", "lamb"]},
    "training.weight_decay": {"float": [0.0, 0.1]},
    "training.momentum": {"float": [0.0, 0.99]},
    "training.nesterov": {"choice": [False, True]},
    "training.adam_beta1": {"float": [0.8, 0.95]},
    "training.adam_beta2": {"float": [0.98, 0.9999]},
    "training.optimizer_log10_epsilon": {"float": [-10.0, -5.0]},
    "training.lr_schedule": {
        "choice": ["plateau", "onecycle", "cosine", "step", "exponential", "warmup_hold_decay"]
    },
    "training.lr_gamma": {"float": [0.1, 1.0]},
    "training.lr_step_epochs": {"int": [1, 20]},
    "training.onecycle_pct_start": {"float": [0.1, 0.5]},
    "training.onecycle_div_factor": {"float": [5.0, 100.0], "log": True},
    "training.onecycle_final_div_factor": {"float": [10.0, 1e5], "log": True},
    "training.warmup_steps": {"int": [0, 5000]},
    "training.hold_steps": {"int": [0, 20000]},
    "training.half_life_steps": {"int": [100, 100000], "log": True},
    "training.min_lr": {"float": [0.0, 1e-5]},
    "training.max_grad_norm": {"float": [0.1, 100.0], "log": True},
    "training.ema_decay": {"float": [0.9, 0.9999]},
    "training.log10_learning_rate": {"float": [-5.0, -1.0]},
    "training.dropout_prob": {"float": [0.0, 0.5]},
    "training.reduce_lr_burnin": {"int": [0, 10]},
    "training.reduce_lr_patience": {"int": [0, 5]},
    "training.reduce_lr_threshold": {"float": [0.0, 0.1]},
    "training.reduce_lr_factor": {"float": [0.1, 1.0]},
    "training.reduce_lr_cooldown": {"int": [0, 5]},
    "training.reduce_lr_log10_epsilon": {"float": [-10.0, -2.0]},
    "training.early_stopping_burnin": {"int": [0, 10]},
    "training.early_stopping_patience": {"int": [1, 10]},
    "training.early_stopping_threshold": {"float": [0.0, 0.1]},
    "training.max_time_warp": {"float": [0.0, 20.0]},
    "training.max_freq_warp": {"float": [0.0, 10.0]},
    "training.max_time_mask": {"int": [0, 100]},
    "training.max_freq_mask": {"int": [0, 20]},
    "training.max_time_mask_proportion": {"float": [0.0, 1.0]},
    "training.num_time_mask": {"int": [0, 4]},
    "training.num_time_mask_proportion": {"float": [0.0, 0.05]},
    "training.num_freq_mask": {"int": [0, 4]},
    "training.noise_eps": {"float": [0.0, 0.1]},
    "training.max_shift_proportion": {"float": [0.0, 0.1]},
    "training.gradient_accumulation": {"int": [1, 4]},
}


class ParameterRange(JobSchema):
    """One search parameter: exactly one of ``int``, ``float`` or ``choice``."""

    model_config = pydantic.ConfigDict(extra="forbid", populate_by_name=True)

    int_range: list[int] | None = Field(
        None, alias="int", min_length=2, max_length=2, description="[low, high] integers"
    )
    float_range: list[float] | None = Field(
        None, alias="float", min_length=2, max_length=2, description="[low, high] numbers"
    )
    choice: list[Any] | None = Field(None, min_length=1, description="the values to pick from")
    log: bool = Field(False, description="draw uniformly in log space (int and float)")
    step: float | None = Field(None, gt=0, description="grid spacing from low (int and float)")

    @pydantic.model_validator(mode="after")
    def _one_kind(self) -> ParameterRange:
        given = [
            name
            for name, value in (
                ("int", self.int_range),
                ("float", self.float_range),
                ("choice", self.choice),
            )
            if value is not None
        ]
        if len(given) != 1:
            raise ValueError(f"give exactly one of int, float, choice (got {given or 'none'})")
        bounds = self.int_range or self.float_range
        if bounds is not None and bounds[0] > bounds[1]:
            raise ValueError(f"low {bounds[0]} is above high {bounds[1]}")
        if self.choice is not None and (self.log or self.step is not None):
            raise ValueError("log and step apply to int and float ranges, not to choice")
        if self.log and bounds is not None and bounds[0] <= 0:
            raise ValueError(f"log needs a positive low bound (got {bounds[0]})")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both")
        if self.int_range is not None and self.step is not None and self.step != int(self.step):
            raise ValueError("an int range's step is a whole number")
        return self

    @property
    def kind(self) -> str:
        if self.int_range is not None:
            return "int"
        return "float" if self.float_range is not None else "choice"

    def values_to_check(self) -> list[Any]:
        """The values whose validity stands for the whole range: the bounds, or every choice."""
        return list(self.int_range or self.float_range or self.choice or [])

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw this parameter for an optuna trial."""
        if self.int_range is not None:
            low, high = self.int_range
            return trial.suggest_int(name, low, high, step=int(self.step or 1), log=self.log)
        if self.float_range is not None:
            low, high = self.float_range
            return trial.suggest_float(name, low, high, step=self.step, log=self.log)
        return trial.suggest_categorical(name, self.choice)


def _base_types(annotation: Any) -> set[type]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        found: set[type] = set()
        for argument in typing.get_args(annotation):
            found |= _base_types(argument)
        return found
    if origin is typing.Literal:
        return {type(value) for value in typing.get_args(annotation)}
    return {annotation} if isinstance(annotation, type) else set()


def field_of(name: str, schema: type[pydantic.BaseModel]) -> Any:
    """The pydantic field a dotted name points at, or None."""
    parts = name.split(".")
    model: Any = schema
    for index, part in enumerate(parts):
        if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        if index == len(parts) - 1:
            return field
        model = field.annotation
    return None


def name_problem(
    name: str, parameter: ParameterRange, schema: type[pydantic.BaseModel]
) -> str | None:
    """Why ``name`` cannot be searched with ``parameter`` (None: it can), for an error line."""
    section = name.split(".", 1)[0]
    field = field_of(name, schema)
    if (
        field is None
        or "." not in name
        or isinstance(field.annotation, type)
        and issubclass(field.annotation, pydantic.BaseModel)
    ):
        known = [
            f"{section}.{key}"
            for section in TUNABLE_SECTIONS
            for key in field_of(section, schema).annotation.model_fields
        ]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = (
            f"did you mean '{close[0]}'?"
            if close
            else "names are section.key, e.g. model.recurrent_size"
        )
        return f"'{name}' is no run-config setting ({hint})"
    if name in UNTUNABLE:
        return f"'{name}' is not tunable: {UNTUNABLE[name]}"
    if section not in TUNABLE_SECTIONS:
        return f"'{name}' is not tunable: only {', '.join(TUNABLE_SECTIONS)} settings are searched"
    kinds = _base_types(field.annotation)
    if parameter.kind == "int" and not kinds & {int, float}:
        return f"'{name}' is not a number; use choice: [...]"
    if parameter.kind == "float" and float not in kinds:
        wanted = "int: [low, high]" if int in kinds else "choice: [...]"
        return f"'{name}' does not take fractions; use {wanted}"
    return None


def tunable_names(schema: type[pydantic.BaseModel]) -> list[str]:
    """Every ``section.key`` of the tunable sections that is not in ``UNTUNABLE``, in order."""
    return [
        f"{section}.{key}"
        for section in TUNABLE_SECTIONS
        for key in field_of(section, schema).annotation.model_fields
        if f"{section}.{key}" not in UNTUNABLE
    ]


def default_range(name: str) -> ParameterRange:
    return ParameterRange.model_validate(DEFAULT_RANGES[name])


def pattern_problem(pattern: str, schema: type[pydantic.BaseModel]) -> str | None:
    """Why an ``include``/``exclude`` pattern is wrong (None: it matches a tunable setting)."""
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        return f"'{pattern}' is no regular expression: {error}"
    if any(compiled.fullmatch(name) for name in tunable_names(schema)):
        return None
    if pattern in UNTUNABLE:
        return f"'{pattern}' is not tunable: {UNTUNABLE[pattern]}"
    if field_of(pattern, schema) is not None and "." in pattern:
        return name_problem(pattern, ParameterRange(choice=[None]), schema) or (
            f"'{pattern}' is not tunable"
        )
    close = difflib.get_close_matches(pattern, tunable_names(schema), n=1, cutoff=0.6)
    hint = (
        f"did you mean '{close[0]}'?" if close else "e.g. 'model\\..*' or 'training.dropout_prob'"
    )
    return f"'{pattern}' matches no tunable setting (whole dotted names; {hint})"


def schema_space(
    include: list[str], exclude: list[str], schema: type[pydantic.BaseModel]
) -> dict[str, ParameterRange]:
    """The default ranges of the tunable settings matching an include and no exclude pattern."""
    wanted = [re.compile(pattern) for pattern in include]
    unwanted = [re.compile(pattern) for pattern in exclude]
    return {
        name: default_range(name)
        for name in tunable_names(schema)
        if any(p.fullmatch(name) for p in wanted) and not any(p.fullmatch(name) for p in unwanted)
    }
