"""Scoring a trained run for any task: rebuild its best model, score dev and test, ``results.json``.

``scripts/evaluate.py`` calls ``evaluate_run``; the task (speechbed.training.task) decodes and
scores each partition and names the result fields. The experiments' reports read
``results.json`` (its ``data_fingerprints`` say which feature stores the numbers come from,
its ``input_fingerprints`` which other files: those the model was trained from and those
evaluation reads, ``RunConfig.evaluation_inputs``; absent when there are none).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import torch

from speechbed.code_versions import CODE_VERSIONS
from speechbed.errors import UserInputError
from speechbed.outputs import write_text_atomic
from speechbed.run_folder import RunFolder
from speechbed.training.config import RunConfig
from speechbed.training.model_file import load_trained_model
from speechbed.training.run_lineage import input_fingerprints, store_fingerprints
from speechbed.training.task import make_task
from speechbed.training.trainer import resolve_device

#: Bump when a change of the decoding or scoring code changes results; results of older code
#: are then recomputed.
EVALUATION_CODE_VERSION = CODE_VERSIONS["evaluation"]


def scored_partitions(config: RunConfig) -> dict[str, str]:
    """``{role: partition}`` of the partitions ``evaluation.partitions`` names, in its order."""
    partitions = {"dev": config.data.dev_partition, "test": config.data.test_partition}
    return {role: partitions[role] for role in config.evaluation.partitions}


class EvaluationJob(RunConfig):
    """The run config as the job of scripts/evaluate.py: reads model.pt, the scored stores and
    the task's evaluation inputs (``evaluation_inputs``)."""

    code_versions: ClassVar[dict[str, int]] = {"evaluation": EVALUATION_CODE_VERSION}

    def lineage_paths(self) -> tuple[list[Path], list[Path]]:
        run = RunFolder(Path(self.info.run_dir))
        stores = [self.data.source(partition) for partition in scored_partitions(self).values()]
        return [run.model, *stores, *self.evaluation_inputs().values()], [run.results]


def evaluate_run(config: RunConfig, force: bool = False) -> dict[str, Any]:
    """Score every partition in ``evaluation.partitions`` with the run's best model; returns results."""
    evaluation = config.evaluation
    device = resolve_device(evaluation.device, "evaluation")
    if config.training.num_threads is not None:
        torch.set_num_threads(config.training.num_threads)
    run = RunFolder(Path(config.info.run_dir))
    task = make_task(config)
    model, saved = load_trained_model(task, run, device)
    partitions = scored_partitions(config)
    data_fingerprints = _data_fingerprints(config, saved, list(partitions.values()))
    inputs = _input_fingerprints(config, saved)
    settings = {
        "fingerprint": saved["fingerprint"],
        "code_version": EVALUATION_CODE_VERSION,
        **evaluation.model_dump(mode="json"),
    }
    if run.results.exists() and not force:
        previous = json.loads(run.results.read_text())
        if (
            previous.get("settings") == settings
            and previous.get("data_fingerprints") == data_fingerprints
            and previous.get("input_fingerprints", {}) == inputs
        ):
            print(f"{run.results}: up to date; skipped")
            return previous
    results: dict[str, Any] = {
        "name": config.info.name,
        "epoch": saved["epoch"],
        "score": {
            "key": task.score_key,
            "lower_is_better": task.lower_is_better,
            "is_percent": task.score_is_percent,
        },
        **task.result_header(saved),
        "settings": settings,
        "data_fingerprints": data_fingerprints,
        **({"input_fingerprints": inputs} if inputs else {}),
    }
    for role, partition in partitions.items():
        entry = task.evaluate(model, saved, role, partition, run)
        results[f"{role}_{task.score_key}"] = entry[task.score_key]
        results[role] = entry
    write_text_atomic(run.results, json.dumps(results, indent=2) + "\n")
    return results


def _data_fingerprints(
    config: RunConfig, saved: dict[str, Any], scored: list[str]
) -> dict[str, str]:
    """The stores behind the results: those the model was trained on and those scored now.

    A scored store that the model was trained on (dev) must not have changed since: the model
    is then stale, and train.py moves it aside and trains it again.
    """
    model_path = RunFolder(Path(config.info.run_dir)).model
    trained_on = saved.get("data_fingerprints")
    if trained_on is None:
        raise UserInputError(
            f"{model_path}: trained before runs recorded the data they train on; train it "
            "again with scripts/train.py (it moves the old run aside)"
        )
    found = dict(trained_on)
    for partition, now in store_fingerprints(config, scored).items():
        if found.get(partition, now) != now:
            raise UserInputError(
                f"{model_path}: trained on another '{partition}' feature store than "
                f"{config.data.source(partition)} holds now; train it again with "
                "scripts/train.py (it moves the old run aside)"
            )
        found[partition] = now
    return found


def _input_fingerprints(config: RunConfig, saved: dict[str, Any]) -> dict[str, str]:
    """The other files behind the results: those the model was trained from (as model.pt
    records them) and the evaluation inputs read now.

    An evaluation input the model was also trained from (rnnt's mel statistics when they gave
    the dev metric) must not have changed since: the model is then stale, as for a store.
    """
    model_path = RunFolder(Path(config.info.run_dir)).model
    found = dict(saved.get("input_fingerprints") or {})
    inputs = config.evaluation_inputs()
    for key, now in input_fingerprints(inputs).items():
        if found.get(key, now) != now:
            raise UserInputError(
                f"{model_path}: trained with another {key} than {inputs[key]} holds now; "
                "train it again with scripts/train.py (it moves the old run aside)"
            )
        found[key] = now
    return found
