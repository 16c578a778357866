"""Sweep grammar: turn one experiment (nested dicts plus a ``sweep:`` list) into run configs.

Called by ``speechbed.sweep.experiment`` (and its tests) on plain dicts; never imports ML code.

Each sweep entry expands to the Cartesian product of its list-valued keys. A dotted key
(``model.recurrent_size``) sets that path; a bare key (``seed``) replaces every key of that
name wherever it occurs; a key that matches nothing is an error naming it. A key starting
with ``multiple_parameters`` holds bundles (mappings) whose settings vary together: either a
mapping of labels to bundles (``lcorr: {convolutional_mellin: false}``), the label naming the
run's condition, or a list of bundles, each named by its first setting. An unlabelled setting
shows in the condition as ``name=value`` (the last part of a dotted key). ``populate_cache`` in
an entry is a flag for the expansion, not a setting. No ``sweep:`` (or an empty one) means one
run with the base settings.

``overrides`` (``set=`` on the command line) apply the same key grammar to every run after
its sweep settings; they become part of the run configs, and so of the run ids. Labels never
do: they live in the runs' conditions only.
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


class BundleLabel(str):
    """A bundle's label, as a key of ``Run.labels`` (its value is the bundle's sweep key)."""


@dataclass
class Run:
    """One resolved run: its id, its config and the settings the sweep gave it."""

    run_id: str
    config: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    sweep_index: int | None = None
    labels: dict[str, Any] = field(default_factory=dict)

    def condition(self) -> str:
        """The swept settings other than seeds, as ``label, name=value, ...`` (``base`` when
        none): a labelled bundle shows its label, an unlabelled one its first setting."""
        labels = self.labels or self.settings
        parts = []
        for key, value in sorted(labels.items(), key=lambda item: str(item[0])):
            if isinstance(key, BundleLabel):
                parts.append(str(key))
            elif key.split(".")[-1] != "seed":
                parts.append(f"{key.split('.')[-1]}={_short(value)}")
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


def _unknown_key_error(
    key: str, where: str, candidates: Iterable[str], what: str = "sweep key"
) -> UserInputError:
    close = difflib.get_close_matches(key, sorted(set(candidates)), n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return UserInputError(f"{where}: {what} '{key}' matches no setting of the experiment{hint}")


def set_setting(
    config: dict[str, Any],
    key: str,
    value: Any,
    where: str,
    known_paths: set[tuple[str, ...]] | None = None,
    what: str = "sweep key",
) -> None:
    """Apply one sweep key in place: dotted = that path, bare = every key of that name."""
    known_paths = known_paths or set()
    present = key_paths(config)
    if "." in key:
        path = tuple(key.split("."))
        if path not in present and path not in known_paths:
            names = [".".join(p) for p in present] + [".".join(p) for p in known_paths]
            raise _unknown_key_error(key, where, names, what)
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
        raise _unknown_key_error(key, where, names, what)
    for path in matches:
        section = config
        for part in path[:-1]:
            section = section.setdefault(part, {})
        section[path[-1]] = copy.deepcopy(value)


def bundle_items(value: Any, where: str) -> list[tuple[str | None, Mapping[str, Any]]]:
    """A ``multiple_parameters*`` value as (label or None, bundle) pairs, in file order."""
    if isinstance(value, Mapping):
        items: list[tuple[str | None, Any]] = [(str(label), b) for label, b in value.items()]
    else:
        items = [(None, bundle) for bundle in (value if isinstance(value, list) else [value])]
    if not items or not all(isinstance(bundle, Mapping) for _, bundle in items):
        raise UserInputError(
            f"{where} must be a list of mappings (each a bundle of settings that vary "
            "together) or a mapping of labels to such bundles"
        )
    if any(not bundle for _, bundle in items):
        raise UserInputError(f"{where} holds an empty bundle")
    return items


Alternative = tuple[dict[str, Any], dict[str, Any]]  # (settings, the part shown in the condition)


def _entry_axes(entry: Mapping[str, Any], where: str) -> list[list[Alternative]]:
    """The entry as a list of axes; each axis lists its alternatives (settings, label)."""
    axes: list[list[Alternative]] = []
    for key, value in entry.items():
        if key in ENTRY_FLAGS:
            continue
        if str(key).startswith(BUNDLE_PREFIX):
            alternatives: list[Alternative] = []
            for label, bundle in bundle_items(value, f"{where}: '{key}'"):
                shown = {BundleLabel(label): key} if label else dict([next(iter(bundle.items()))])
                alternatives.append((dict(bundle), shown))
            axes.append(alternatives)
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
    overrides: Mapping[str, Any] | None = None,
) -> Expansion:
    """Expand an experiment's sweep into runs (deduplicated by run id, in sweep order).

    ``run_sections`` are the top-level sections that make up a run config; other keys
    (``report``, ``sweep``) stay at the experiment level. ``known_paths`` are key paths the
    run schema accepts even when the experiment file leaves them at their defaults.
    ``overrides`` (key -> value, the sweep's key grammar) are set in every run, last.
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
            for key, value in (overrides or {}).items():
                set_setting(config, key, value, f"{source}: set=", known_paths, what="key")
            run_id = run_id_of(config)
            if run_id not in runs:
                runs[run_id] = Run(run_id, config, settings, index, labels)
    return Expansion(list(runs.values()), populate_cache)
