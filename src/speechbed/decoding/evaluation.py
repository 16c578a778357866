"""Scoring a trained run: decode dev and test, write trn files and ``results.json``.

``scripts/evaluate.py`` calls ``evaluate_run``; the experiments' reports read ``results.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from speechbed.decoding.transcribe import ids_to_phones_39, phone_error_counts, transcribe
from speechbed.errors import UserInputError
from speechbed.training.config import RunConfig
from speechbed.training.data import open_loader
from speechbed.training.loop import load_trained_model

RESULTS_FILE = "results.json"


def write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    temporary.write_text(text)
    os.replace(temporary, path)


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
    settings = {"fingerprint": saved["fingerprint"], **evaluation.model_dump(mode="json")}
    results_path = run_dir / RESULTS_FILE
    if results_path.exists() and not force:
        previous = json.loads(results_path.read_text())
        if previous.get("settings") == settings:
            print(f"{results_path}: up to date; skipped")
            return previous
    partitions = {"dev": config.data.dev_partition, "test": config.data.test_partition}
    results: dict[str, Any] = {
        "name": config.info.name,
        "epoch": saved["epoch"],
        "beam_width": evaluation.beam_width,
        "training_dev_per": saved["dev_per"],
        "settings": settings,
    }
    for role in evaluation.partitions:
        loader = open_loader(
            config.data, partitions[role], shuffle=False, batch_size=evaluation.batch_size
        )
        started = time.perf_counter()
        hypotheses, references = transcribe(model, loader, evaluation.beam_width, evaluation.device)
        seconds = time.perf_counter() - started
        counts = phone_error_counts(references, hypotheses)
        write_text_atomically(run_dir / f"{role}.hyp.trn", trn_lines(hypotheses))
        write_text_atomically(run_dir / f"{role}.ref.trn", trn_lines(references))
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
    write_text_atomically(results_path, json.dumps(results, indent=2) + "\n")
    return results
