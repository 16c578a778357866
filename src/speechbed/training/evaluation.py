"""Scoring a trained run: decode dev and test, write trn files and ``results.json``.

``scripts/evaluate.py`` calls ``evaluate_run``; the experiments' reports read ``results.json``
(its ``data_fingerprints`` say which feature stores the numbers come from).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, ClassVar

import torch

from speechbed.code_versions import CODE_VERSIONS
from speechbed.decoding.transcribe import ids_to_phones_39, phone_error_counts, transcribe
from speechbed.errors import UserInputError
from speechbed.outputs import write_text_atomic
from speechbed.training.config import RunConfig
from speechbed.training.data import open_loader, store_path
from speechbed.training.loop import MODEL_FILE, load_trained_model
from speechbed.training.run_lineage import store_fingerprints

RESULTS_FILE = "results.json"
#: Bump when a change of the decoding or scoring code changes results; results of older code
#: are then recomputed.
EVALUATION_CODE_VERSION = CODE_VERSIONS["evaluation"]


class EvaluationJob(RunConfig):
    """The run config as the job of scripts/evaluate.py: reads model.pt and the scored stores."""

    code_versions: ClassVar[dict[str, int]] = {"evaluation": EVALUATION_CODE_VERSION}

    def lineage_paths(self) -> tuple[list[Path], list[Path]]:
        run_dir = Path(self.info.run_dir)
        partitions = {"dev": self.data.dev_partition, "test": self.data.test_partition}
        stores = [store_path(self.data, partitions[role]) for role in self.evaluation.partitions]
        return [run_dir / MODEL_FILE, *stores], [run_dir / RESULTS_FILE]


def trn_lines(transcripts: dict[str, list[int]]) -> str:
    """``phones (utt_id)`` per utterance, 39-phone set, sorted by id (the sclite trn format)."""
    return "".join(
        f"{' '.join(ids_to_phones_39(transcripts[utt_id]))} ({utt_id})\n"
        for utt_id in sorted(transcripts)
    )


def evaluate_run(config: RunConfig, force: bool = False) -> dict[str, Any]:
    """Decode every partition in ``evaluation.partitions`` with the run's best model; returns results."""
    evaluation = config.evaluation
    if evaluation.device == "cuda" and not torch.cuda.is_available():
        raise UserInputError("evaluation.device is 'cuda' but torch sees no CUDA device; use 'cpu'")
    if config.training.num_threads is not None:
        torch.set_num_threads(config.training.num_threads)
    run_dir = Path(config.info.run_dir)
    model, saved = load_trained_model(run_dir, evaluation.device)
    partitions = {"dev": config.data.dev_partition, "test": config.data.test_partition}
    data_fingerprints = _data_fingerprints(
        config, saved, [partitions[role] for role in evaluation.partitions]
    )
    settings = {
        "fingerprint": saved["fingerprint"],
        "code_version": EVALUATION_CODE_VERSION,
        **evaluation.model_dump(mode="json"),
    }
    results_path = run_dir / RESULTS_FILE
    if results_path.exists() and not force:
        previous = json.loads(results_path.read_text())
        if (
            previous.get("settings") == settings
            and previous.get("data_fingerprints") == data_fingerprints
        ):
            print(f"{results_path}: up to date; skipped")
            return previous
    results: dict[str, Any] = {
        "name": config.info.name,
        "epoch": saved["epoch"],
        "beam_width": evaluation.beam_width,
        "training_dev_per": saved["dev_per"],
        "settings": settings,
        "data_fingerprints": data_fingerprints,
    }
    for role in evaluation.partitions:
        loader = open_loader(
            config.data, partitions[role], shuffle=False, batch_size=evaluation.batch_size
        )
        started = time.perf_counter()
        hypotheses, references = transcribe(model, loader, evaluation.beam_width, evaluation.device)
        seconds = time.perf_counter() - started
        counts = phone_error_counts(references, hypotheses)
        write_text_atomic(run_dir / f"{role}.hyp.trn", trn_lines(hypotheses))
        write_text_atomic(run_dir / f"{role}.ref.trn", trn_lines(references))
        results[f"{role}_per"] = counts.error_rate
        results[role] = {
            "partition": partitions[role],
            "per": counts.error_rate,
            "errors": counts.errors,
            "substitutions": counts.substitutions,
            "deletions": counts.deletions,
            "insertions": counts.insertions,
            "reference_phones": counts.reference_length,
            "utterances": len(references),
            "decoding_seconds": round(seconds, 3),
        }
        print(
            f"{config.info.name} {role} ({partitions[role]}): PER {100 * counts.error_rate:.2f}% "
            f"(S {counts.substitutions}, D {counts.deletions}, I {counts.insertions} / "
            f"{counts.reference_length}), beam {evaluation.beam_width}, {seconds:.1f} s"
        )
    write_text_atomic(results_path, json.dumps(results, indent=2) + "\n")
    return results


def _data_fingerprints(
    config: RunConfig, saved: dict[str, Any], scored: list[str]
) -> dict[str, str]:
    """The stores behind the results: those the model was trained on and those scored now.

    A scored store that the model was trained on (dev) must not have changed since: the model
    is then stale, and train.py moves it aside and trains it again.
    """
    model_path = Path(config.info.run_dir) / MODEL_FILE
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
                f"{store_path(config.data, partition)} holds now; train it again with "
                "scripts/train.py (it moves the old run aside)"
            )
        found[partition] = now
    return found
