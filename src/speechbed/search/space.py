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
"""

from __future__ import annotations

import difflib
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
