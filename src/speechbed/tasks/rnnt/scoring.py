"""How the rnnt task's evaluation normalises, scores and exports: the feature normalisation
modes, WER for each, ``<role>.preds.txt`` and the deployment checkpoint.

Called by speechbed.tasks.rnnt.task (``evaluate``, ``dev_metric``) and scripts/transcribe.py.
Normalisation modes: ``utterance`` (each utterance's own statistics, as training), and the
streaming ones of speechbed.features.streaming_normalization started from the training set's
dumped statistics (``data.mel_statistics``): ``stream_carried`` (running statistics carried
from one utterance to the next, in manifest order) and ``stream_reset`` (reset per utterance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from speechbed.deployment.rnnt_checkpoint import DeploymentCheckpoint
from speechbed.errors import UserInputError
from speechbed.features.log_mel import LogMelSettings
from speechbed.features.streaming_normalization import (
    MelStatistics,
    StreamingNormalizer,
    load_mel_statistics,
)
from speechbed.models.rnnt import RnntSettings
from speechbed.outputs import write_text_atomic

NORMALIZATIONS = ("utterance", "stream_carried", "stream_reset")
#: A scored partition's hypotheses, one line per manifest entry, in manifest order.
PREDICTIONS_SUFFIX = ".preds.txt"
#: The deployment checkpoint in a run folder.
DEPLOYMENT_FILE = "deployment.pt"


def make_normalizer(
    mode: str, statistics: MelStatistics | None, alpha: float
) -> StreamingNormalizer | None:
    """None for ``utterance``; a fresh streaming normaliser for the other modes."""
    if mode == "utterance":
        return None
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalisation {mode!r}: expected one of {', '.join(NORMALIZATIONS)}")
    if statistics is None:
        raise UserInputError(
            f"evaluation.normalizations: {mode} needs data.mel_statistics (the training set's "
            "statistics, from scripts/dump_mel_stats.py)"
        )
    return StreamingNormalizer(statistics, alpha, reset_per_utterance=mode == "stream_reset")


def optional_statistics(folder: Path | None) -> MelStatistics | None:
    return None if folder is None else load_mel_statistics(folder)


def predictions_path(run_path: Path, role: str) -> Path:
    return Path(run_path) / f"{role}{PREDICTIONS_SUFFIX}"


def write_predictions(path: Path, utt_ids: Sequence[str], hypotheses: Mapping[str, str]) -> None:
    """One hypothesis per line, in ``utt_ids`` order (the manifest's)."""
    write_text_atomic(path, "".join(f"{hypotheses[utt_id]}\n" for utt_id in utt_ids))


def deployment_checkpoint(
    saved: Mapping[str, Any],
    transducer: RnntSettings,
    front_end: LogMelSettings,
    model_config: Mapping[str, Any],
    statistics: MelStatistics,
    alpha: float,
    source: Mapping[str, Any],
) -> DeploymentCheckpoint:
    """The deployment checkpoint of a run's model.pt record (its weights are the EMA ones when
    the run kept an average)."""
    activations = saved.get("lstm_activations")
    return DeploymentCheckpoint(
        state_dict=dict(saved["model"]),
        transducer=transducer,
        front_end=front_end,
        frame_stacking=int(model_config["frame_stacking"]),
        frame_subsampling=int(model_config["frame_subsampling"]),
        statistics=statistics,
        tokenizer_model=bytes(saved["tokenizer_model"]),
        alpha=alpha,
        lstm_activations=tuple(activations) if activations else None,
        model_config=dict(model_config),
        source=dict(source),
    )
