"""What a run was trained from: its settings, the feature stores it read, the training code.

Used by the training loop (to skip, resume, refuse or move a run aside) and by evaluation
(to refuse a model whose data changed and to record the data in ``results.json``).

A run's ``fingerprint`` (in every checkpoint and in ``model.pt``) covers these parts, each
recorded beside it: ``settings_fingerprint`` (every setting that changes the trained
parameters), ``data_fingerprints`` (``{partition: lineage fingerprint}`` of the train and dev
stores, not the cache path as written), ``input_fingerprints`` (``{config key: fingerprint}``
of the other files the run trains from, ``RunConfig.training_inputs``: a tokenizer, a
fine-tune checkpoint; absent for a task that names none, so its runs keep their fingerprint)
and ``code_version`` (``TRAINING_CODE_VERSION``).
Other settings are refused (a person chose them: ``--force`` starts over); other data, inputs
or code make the old run stale: it is moved aside and the run is trained afresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from speechbed.code_versions import CODE_VERSIONS
from speechbed.errors import UserInputError
from speechbed.lineage import digest, fingerprint
from speechbed.outputs import OutputError, describe_os_error, make_folder, write_bytes_atomic
from speechbed.tasks import DEFAULT_TASK
from speechbed.training.config import RunConfig

#: Bump when a change of the training code changes what a run trains; runs of older code
#: are then moved aside and trained again.
TRAINING_CODE_VERSION = CODE_VERSIONS["training"]
#: Data keys that say where or how frames are read, not what a run trains on.
_NOT_SETTINGS = ("cache_directory", "test_partition", "num_workers", "in_memory")
#: Settings added after runs were first fingerprinted, with the value that trains what runs
#: trained before them: at that value they are left out, so those runs keep their fingerprint.
_ADDED_SETTINGS = {
    ("task",): DEFAULT_TASK,
    ("training", "gradient_accumulation"): 1,
    # the trainer's optimisers, schedules, clipping, weight average and checkpoint policy
    ("training", "weight_decay"): 0.0,
    ("training", "momentum"): None,
    ("training", "nesterov"): False,
    ("training", "adam_beta1"): 0.9,
    ("training", "adam_beta2"): 0.999,
    ("training", "optimizer_log10_epsilon"): None,
    ("training", "lr_schedule"): "plateau",
    ("training", "lr_gamma"): 0.1,
    ("training", "lr_step_epochs"): 10,
    ("training", "lr_milestones"): [],
    ("training", "onecycle_pct_start"): 0.3,
    ("training", "onecycle_div_factor"): 25.0,
    ("training", "onecycle_final_div_factor"): 1e4,
    ("training", "warmup_steps"): 0,
    ("training", "hold_steps"): 0,
    ("training", "half_life_steps"): 10000,
    ("training", "min_lr"): 0.0,
    ("training", "max_grad_norm"): None,
    ("training", "ema_decay"): None,
    ("training", "keep_best"): 1,
    ("training", "save_frequency"): None,
    ("training", "keep_epochs"): [],
    ("training", "global_batch_size"): None,
}


def _without_added_defaults(settings: dict[str, Any]) -> dict[str, Any]:
    for path, default in _ADDED_SETTINGS.items():
        *sections, key = path
        holder = settings
        for section in sections:
            holder = holder[section]
        if holder.get(key) == default:
            del holder[key]
    return settings


def settings_fingerprint(config: RunConfig) -> str:
    """Hash of every setting that changes the trained parameters (not names, paths, workers)."""
    settings = _without_added_defaults(config.model_dump(mode="json"))
    relevant = {
        "seed": config.info.seed,
        "data": {key: value for key, value in settings["data"].items() if key not in _NOT_SETTINGS},
        "model": settings["model"],
        "training": settings["training"],
    }
    if "task" in settings:
        relevant["task"] = settings["task"]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def legacy_fingerprint(config: RunConfig) -> str:
    """The fingerprint runs had before they recorded their data (the cache path as written)."""
    settings = _without_added_defaults(config.model_dump(mode="json"))
    relevant = {
        "seed": config.info.seed,
        "data": {
            key: value
            for key, value in settings["data"].items()
            if key not in ("num_workers", "in_memory")
        },
        "model": settings["model"],
        "training": settings["training"],
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def store_fingerprints(config: RunConfig, partitions: Iterable[str]) -> dict[str, str]:
    """``{partition: fingerprint}`` of the feature stores; a missing store is a UserInputError."""
    found = {}
    for partition in partitions:
        value = fingerprint(config.data.existing_source(partition))
        assert value is not None  # existing_source checked that the source exists
        found[partition] = value
    return found


def input_fingerprints(inputs: Mapping[str, Path]) -> dict[str, str]:
    """``{config key: fingerprint}`` of a run's other inputs (``RunConfig.training_inputs``,
    ``evaluation_inputs``); a missing one is a UserInputError naming its key and path."""
    found = {}
    for key, path in inputs.items():
        value = fingerprint(path)
        if value is None:
            raise UserInputError(
                f"{key}: {path} not found (the run reads it); fix the path or make it first"
            )
        found[key] = value
    return found


def _input_changes(before: Mapping[str, str], now: Mapping[str, str]) -> list[str]:
    """In words, the inputs that differ between a run's record and this config."""
    changes = []
    for key in sorted(set(before) | set(now)):
        if key not in before:
            changes.append(f"{key} was not recorded when it was trained")
        elif key not in now:
            changes.append(f"it was trained with a {key} this run no longer reads")
        elif before[key] != now[key]:
            changes.append(f"{key} changed since it was trained")
    return changes


@dataclass(frozen=True)
class RunIdentity:
    """The parts of a run's fingerprint, as recorded in its checkpoints and model.pt."""

    settings_fingerprint: str
    data_fingerprints: dict[str, str]
    code_version: int
    input_fingerprints: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, config: RunConfig, data_fingerprints: Mapping[str, str] | None = None
    ) -> RunIdentity:
        data = config.data
        if data_fingerprints is None:
            data_fingerprints = store_fingerprints(
                config, (data.train_partition, data.dev_partition)
            )
        inputs = input_fingerprints(config.training_inputs())
        return cls(
            settings_fingerprint(config), dict(data_fingerprints), TRAINING_CODE_VERSION, inputs
        )

    @property
    def fingerprint(self) -> str:
        parts = [
            "run",
            self.settings_fingerprint,
            json.dumps(self.data_fingerprints, sort_keys=True),
        ]
        if self.input_fingerprints:  # left out when none, so such runs keep their fingerprint
            parts.append("inputs " + json.dumps(self.input_fingerprints, sort_keys=True))
        return digest([*parts, f"code {self.code_version}"])

    def record(self) -> dict[str, Any]:
        """The keys a checkpoint and model.pt carry (``input_fingerprints`` only when any)."""
        record = {
            "fingerprint": self.fingerprint,
            "settings_fingerprint": self.settings_fingerprint,
            "data_fingerprints": dict(self.data_fingerprints),
            "code_version": self.code_version,
        }
        if self.input_fingerprints:
            record["input_fingerprints"] = dict(self.input_fingerprints)
        return record

    def difference(self, recorded: Mapping[str, Any], config: RunConfig) -> tuple[bool, str] | None:
        """None when ``recorded`` is this run; else (whether the settings differ, why, in words)."""
        if recorded.get("fingerprint") == self.fingerprint:
            return None
        if "settings_fingerprint" not in recorded:
            if recorded.get("fingerprint") == legacy_fingerprint(config):
                return False, "it was trained before runs recorded the data they train on"
            return True, "it was trained with other settings"
        if recorded["settings_fingerprint"] != self.settings_fingerprint:
            return True, "it was trained with other settings"
        before = recorded.get("data_fingerprints") or {}
        changed = sorted(
            partition
            for partition in set(before) | set(self.data_fingerprints)
            if before.get(partition) != self.data_fingerprints.get(partition)
        )
        reasons = _input_changes(recorded.get("input_fingerprints") or {}, self.input_fingerprints)
        if changed:
            names = ", ".join(f"'{partition}'" for partition in changed)
            reasons.insert(0, f"the feature store of {names} changed since it was trained")
        if reasons:
            return False, "; ".join(reasons)
        return False, (
            f"it was trained by training code version {recorded.get('code_version')} "
            f"(now {self.code_version})"
        )


def move_run_aside(run_dir: Path, keep: Iterable[Path] = ()) -> Path:
    """Rename ``run_dir`` to ``<run_dir>.stale-<time>`` beside it; return the new name.

    The files of ``keep`` that lie directly in the run folder (its job file, when a sweep
    wrote it there) are copied into a fresh, empty ``run_dir``.
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stale = run_dir.with_name(f"{run_dir.name}.stale-{stamp}")
    number = 1
    while stale.exists():
        number += 1
        stale = run_dir.with_name(f"{run_dir.name}.stale-{stamp}-{number}")
    try:
        os.rename(run_dir, stale)
    except OSError as error:
        raise OutputError(describe_os_error(error, stale)) from None
    make_folder(run_dir)
    for path in keep:
        path = Path(path)
        if path.parent.resolve() == run_dir.resolve():
            kept = stale / path.name
            if kept.is_file():
                write_bytes_atomic(run_dir / path.name, kept.read_bytes())
    return stale
