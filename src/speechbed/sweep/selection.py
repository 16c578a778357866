"""Command-line picks of an experiment: ``set=`` overrides and ``only=`` selections of its runs.

Called by ``speechbed.sweep.experiment_file`` (``load_experiment``) for scripts/sweep_experiment.py
(``make experiment ... only="feature=fbank-81-10ms seed=1-5" set="training.num_epochs=2"``).

Both are space-separated ``key=value`` words. A ``set=`` key follows the sweep's grammar (dotted:
that path; bare: every key of that name) and its value is read as YAML (``2``, ``true``, ``[dev,
test]``); it is set in every run, so it is part of the run configs and of their ids. An ``only=``
word keeps the runs whose value at that key (the sweep's grammar again, or ``condition`` for the
condition's name) is one of the listed values: ``seed=1,3,5``, ``seed=1-5`` (integers, both ends
included), ``feature=fbank-81-10ms``. Words with different keys must all hold; a key given twice
adds values. A key that names no setting, or a pick that leaves no run, is an error.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from speechbed.errors import UserInputError
from speechbed.sweep.expansion import Run, key_paths

CONDITION_KEY = "condition"
_RANGE = re.compile(r"(-?\d+)-(-?\d+)")


def _words(text: str | Sequence[str] | None, what: str) -> list[tuple[str, str]]:
    if text is None:
        return []
    pieces = (
        shlex.split(text) if isinstance(text, str) else [w for t in text for w in shlex.split(t)]
    )
    pairs = []
    for word in pieces:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise UserInputError(f"{what}: '{word}' is not key=value (e.g. {what}seed=1)")
        pairs.append((key, value))
    return pairs


def _scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return text


def parse_overrides(text: str | Sequence[str] | None) -> dict[str, Any]:
    """``set=`` words as {key: value}, each value read as YAML."""
    return {key: _scalar(value) for key, value in _words(text, "set=")}


def parse_selection(text: str | Sequence[str] | None) -> dict[str, list[Any]]:
    """``only=`` words as {key: accepted values} (ranges expanded, YAML scalars)."""
    selection: dict[str, list[Any]] = {}
    for key, value in _words(text, "only="):
        accepted = selection.setdefault(key, [])
        for item in value.split(","):
            match = _RANGE.fullmatch(item)
            if match and int(match.group(1)) <= int(match.group(2)):
                accepted.extend(range(int(match.group(1)), int(match.group(2)) + 1))
            else:
                accepted.append(_scalar(item))
    return selection


def _values_at(run: Run, key: str) -> list[Any]:
    if key == CONDITION_KEY:
        return [run.condition()]
    if "." in key:
        paths = [tuple(key.split("."))]
    else:
        paths = [path for path in key_paths(run.config) if path[-1] == key]
    values = []
    for path in paths:
        section: Any = run.config
        for part in path:
            if not isinstance(section, Mapping) or part not in section:
                break
            section = section[part]
        else:
            values.append(section)
    return values


def _same(value: Any, accepted: Any) -> bool:
    return value == accepted or str(value) == str(accepted)


def select_runs(runs: list[Run], selection: Mapping[str, list[Any]], source: str) -> list[Run]:
    """The runs that match every ``only=`` key; unknown keys and empty picks are errors."""
    if not selection:
        return runs
    for key in selection:
        if key != CONDITION_KEY and not any(_values_at(run, key) for run in runs):
            known = {".".join(p) for run in runs for p in key_paths(run.config)}
            known |= {p[-1] for run in runs for p in key_paths(run.config)} | {CONDITION_KEY}
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserInputError(
                f"{source}: only=: key '{key}' matches no setting of the runs{hint}"
            )
    kept = [
        run
        for run in runs
        if all(
            any(_same(value, wanted) for value in _values_at(run, key) for wanted in accepted)
            for key, accepted in selection.items()
        )
    ]
    if not kept:
        offered = {
            key: list(dict.fromkeys(str(v) for run in runs for v in _values_at(run, key)))
            for key in selection
        }
        listed = "; ".join(f"{key}: {', '.join(values)}" for key, values in offered.items())
        raise UserInputError(f"{source}: only= leaves no run; the runs have {listed}")
    return kept
