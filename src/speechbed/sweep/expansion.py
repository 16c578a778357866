"""Sweep grammar: turn one experiment (nested dicts plus a ``sweep:`` list) into run configs.

Called by ``speechbed.sweep.experiment`` (and its tests) on plain dicts; never imports ML code.

Each sweep entry expands to the Cartesian product of its list-valued keys. A dotted key
(``model.recurrent_size``) sets that path; a bare key (``seed``) replaces every key of that
name wherever it occurs; a key that matches nothing is an error naming it. A key starting
with ``multiple_parameters`` holds a list of bundles (mappings) whose settings vary together;
a bundle is named in the run's condition by its first setting (write the telling one first).
``populate_cache`` in an entry is a flag for the expansion, not a setting. No ``sweep:`` (or
an empty one) means one run with the base settings.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from speechbed.errors import UserInputError

BUNDLE_PREFIX = "multiple_parameters"
ENTRY_FLAGS = ("populate_cache",)
# Keys that never take part in the run id: they are derived from it.
ID_EXCLUDED_PATHS = (("info", "run_dir"),)
RUN_ID_LENGTH = 10


@dataclass
class Run:
    """One resolved run: its id, its config and the settings the sweep gave it."""

    run_id: str
    config: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    sweep_index: int | None = None
    labels: dict[str, Any] = field(default_factory=dict)

    def condition(self) -> str:
        """The swept settings other than seeds, as ``key=value, ...`` (``base`` when none);
        a bundle shows only its first setting."""
        labels = self.labels or self.settings
        parts = [
            f"{key}={_short(value)}"
            for key, value in sorted(labels.items())
            if key.split(".")[-1] != "seed"
        ]
        return ", ".join(parts) if parts else "base"

    def seed(self) -> Any:
        """The seed the sweep set (or the config's ``info.seed``)."""
        for key, value in self.settings.items():
            if key.split(".")[-1] == "seed":
                return value
        return self.config.get("info", {}).get("seed")


@dataclass
class Expansion:
    """Everything a sweep expands to: the runs (deduplicated, in order) and its flags."""

    runs: list[Run]
    populate_cache: bool = False


def _short(value: Any) -> str:
    if isinstance(value, str | int | float | bool) or value is None:
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def run_id_of(config: Mapping[str, Any]) -> str:
    """Short hash of a resolved run config (sorted-key JSON), ignoring derived keys."""
    stripped = copy.deepcopy(dict(config))
    for path in ID_EXCLUDED_PATHS:
        section: Any = stripped
        for key in path[:-1]:
            section = section.get(key, {}) if isinstance(section, dict) else {}
        if isinstance(section, dict):
            section.pop(path[-1], None)
    text = json.dumps(stripped, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:RUN_ID_LENGTH]


def key_paths(config: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path in a nested mapping (mappings inside lists are not entered)."""
    paths = []
    if isinstance(config, Mapping):
        for key, value in config.items():
            paths.append(prefix + (str(key),))
            paths.extend(key_paths(value, prefix + (str(key),)))
    return paths


def _unknown_key_error(key: str, where: str, candidates: Iterable[str]) -> UserInputError:
    close = difflib.get_close_matches(key, sorted(set(candidates)), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return UserInputError(f"{where}: sweep key '{key}' matches no setting of the experiment{hint}")


def set_setting(
    config: dict[str, Any],
    key: str,
    value: Any,
    where: str,
    known_paths: set[tuple[str, ...]] | None = None,
) -> None:
    """Apply one sweep key in place: dotted = that path, bare = every key of that name."""
    known_paths = known_paths or set()
    present = key_paths(config)
    if "." in key:
        path = tuple(key.split("."))
        if path not in present and path not in known_paths:
            names = [".".join(p) for p in present] + [".".join(p) for p in known_paths]
            raise _unknown_key_error(key, where, names)
        section: Any = config
        for part in path[:-1]:
            if not isinstance(section.get(part), dict):
                section[part] = {}
            section = section[part]
        section[path[-1]] = copy.deepcopy(value)
        return
    matches = [path for path in present if path[-1] == key]
    if not matches:
        # A bare key absent from the file may still be a setting the schema knows (with a
        # default): set it where the schema has it.
        matches = sorted(path for path in known_paths if path[-1] == key)
    if not matches:
        names = {path[-1] for path in present} | {path[-1] for path in known_paths}
        raise _unknown_key_error(key, where, names)
    for path in matches:
        section = config
        for part in path[:-1]:
            section = section.setdefault(part, {})
        section[path[-1]] = copy.deepcopy(value)


Alternative = tuple[dict[str, Any], dict[str, Any]]  # (settings, the part shown in the condition)


def _entry_axes(entry: Mapping[str, Any], where: str) -> list[list[Alternative]]:
    """The entry as a list of axes; each axis lists its alternatives (settings, label)."""
    axes: list[list[Alternative]] = []
    for key, value in entry.items():
        if key in ENTRY_FLAGS:
            continue
        if str(key).startswith(BUNDLE_PREFIX):
            bundles = value if isinstance(value, list) else [value]
            if not bundles or not all(isinstance(bundle, Mapping) for bundle in bundles):
                raise UserInputError(
                    f"{where}: '{key}' must be a list of mappings (each a bundle of settings "
                    "that vary together)"
                )
            if any(not bundle for bundle in bundles):
                raise UserInputError(f"{where}: '{key}' holds an empty bundle")
            axes.append([(dict(bundle), dict([next(iter(bundle.items()))])) for bundle in bundles])
        elif isinstance(value, list):
            if not value:
                raise UserInputError(f"{where}: sweep key '{key}' has an empty list of values")
            axes.append([({key: item}, {key: item}) for item in value])
        else:
            axes.append([({key: value}, {key: value})])
    return axes


def expand(
    experiment: Mapping[str, Any],
    run_sections: Iterable[str] = ("info", "data", "model", "training", "evaluation"),
    known_paths: set[tuple[str, ...]] | None = None,
    source: str = "experiment",
) -> Expansion:
    """Expand an experiment's sweep into runs (deduplicated by run id, in sweep order).

    ``run_sections`` are the top-level sections that make up a run config; other keys
    (``report``, ``sweep``) stay at the experiment level. ``known_paths`` are key paths the
    run schema accepts even when the experiment file leaves them at their defaults.
    """
    base = {
        section: copy.deepcopy(experiment[section])
        for section in run_sections
        if section in experiment
    }
    sweep = experiment.get("sweep") or []
    if not isinstance(sweep, list):
        raise UserInputError(f"{source}: 'sweep' must be a list of mappings")
    populate_cache = False
    runs: dict[str, Run] = {}
    entries: list[tuple[int | None, Mapping[str, Any]]] = (
        list(enumerate(sweep)) if sweep else [(None, {})]
    )
    for index, entry in entries:
        where = f"{source}: sweep entry {index}" if index is not None else source
        if not isinstance(entry, Mapping):
            raise UserInputError(f"{where}: expected a mapping of settings")
        populate_cache = populate_cache or bool(entry.get("populate_cache", False))
        for combination in itertools.product(*_entry_axes(entry, where)):
            settings: dict[str, Any] = {}
            labels: dict[str, Any] = {}
            for part, label in combination:
                settings.update(part)
                labels.update(label)
            config = copy.deepcopy(base)
            for key, value in settings.items():
                set_setting(config, key, value, where, known_paths)
            run_id = run_id_of(config)
            if run_id not in runs:
                runs[run_id] = Run(run_id, config, settings, index, labels)
    return Expansion(list(runs.values()), populate_cache)
