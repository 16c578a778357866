"""The RNN-T deployment checkpoint: one file that transcribes audio with no other file present.

Written by the rnnt task's evaluation (from a run's EMA weights) and read by scripts/transcribe.py
and evaluation; imports the models, features and decoding layers, never the trainer or tasks.

The file (torch.save, loadable with ``weights_only=True``) holds::

    format, version          "speechbed-rnnt-deployment", 1
    state_dict               the transducer's (EMA) weights
    transducer               speechbed.models.rnnt.RnntSettings as a mapping
    lstm_activations         null, or [gate, cell] of speechbed.models.hard_lstm
    front_end                speechbed.features.log_mel.LogMelSettings as a mapping
    frame_stacking, frame_subsampling
    mel_statistics           melmeans, melvars (float64 tensors), meln (the frame count)
    alpha                    the streaming normalisation's weight of the newest frame
    tokenizer_model          the sentencepiece model's bytes
    model_config, source     the run's model section and where the weights came from (for people)
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from speechbed.corpora.tokenizer import Tokenizer
from speechbed.decoding.transducer_search import transducer_greedy_search
from speechbed.errors import UserInputError
from speechbed.features.log_mel import LogMelFrontEnd, LogMelSettings, stack_frames
from speechbed.features.streaming_normalization import (
    COUNT,
    DEFAULT_ALPHA,
    MEANS,
    VARIANCES,
    LogMelFunction,
    MelStatistics,
    StreamingNormalizer,
)
from speechbed.models.hard_lstm import replace_lstms
from speechbed.models.rnnt import RnntModel, RnntSettings
from speechbed.outputs import atomic_output

FORMAT = "speechbed-rnnt-deployment"
VERSION = 1
_REQUIRED = (
    "format", "version", "state_dict", "transducer", "lstm_activations", "front_end",
    "frame_stacking", "frame_subsampling", "mel_statistics", "alpha", "tokenizer_model",
)  # fmt: skip


@dataclass
class DeploymentCheckpoint:
    """Everything a streaming server needs to turn 16 kHz audio into text."""

    state_dict: dict[str, torch.Tensor]
    transducer: RnntSettings
    front_end: LogMelSettings
    frame_stacking: int
    frame_subsampling: int
    statistics: MelStatistics | None  # None: per-utterance normalisation (not saveable)
    tokenizer_model: bytes
    alpha: float = DEFAULT_ALPHA
    lstm_activations: tuple[str, str] | None = None  # (gate, cell) when fine-tuned hard
    model_config: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        statistics = self.statistics
        if statistics is None:
            raise UserInputError(
                "a deployment checkpoint needs the training set's mel statistics "
                "(scripts/dump_mel_stats.py; the run's data.mel_statistics)"
            )
        return {
            "format": FORMAT,
            "version": VERSION,
            "state_dict": {key: value.detach().cpu() for key, value in self.state_dict.items()},
            "transducer": dataclasses.asdict(self.transducer),
            "lstm_activations": list(self.lstm_activations) if self.lstm_activations else None,
            "front_end": dataclasses.asdict(self.front_end),
            "frame_stacking": self.frame_stacking,
            "frame_subsampling": self.frame_subsampling,
            "mel_statistics": {
                MEANS: statistics.mean.double().cpu(),
                VARIANCES: statistics.variance.double().cpu(),
                COUNT: statistics.count,
            },
            "alpha": float(self.alpha),
            "tokenizer_model": bytes(self.tokenizer_model),
            "model_config": dict(self.model_config),
            "source": dict(self.source),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> DeploymentCheckpoint:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise UserInputError(f"{where}: not an RNN-T deployment checkpoint ({FORMAT})")
        if data["version"] != VERSION:
            raise UserInputError(
                f"{where}: deployment checkpoint version {data['version']}; this code reads "
                f"version {VERSION}"
            )
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise UserInputError(f"{where}: deployment checkpoint lacks {', '.join(missing)}")
        statistics = data["mel_statistics"]
        try:
            mel = MelStatistics(statistics[MEANS], statistics[VARIANCES], int(statistics[COUNT]))
            transducer = RnntSettings(**data["transducer"])
            front_end = LogMelSettings(**data["front_end"])
        except (KeyError, TypeError, ValueError) as error:
            raise UserInputError(f"{where}: deployment checkpoint: {error}") from None
        activations = data["lstm_activations"]
        return cls(
            state_dict=dict(data["state_dict"]),
            transducer=transducer,
            front_end=front_end,
            frame_stacking=int(data["frame_stacking"]),
            frame_subsampling=int(data["frame_subsampling"]),
            statistics=mel,
            tokenizer_model=bytes(data["tokenizer_model"]),
            alpha=float(data["alpha"]),
            lstm_activations=tuple(activations) if activations else None,
            model_config=dict(data.get("model_config", {})),
            source=dict(data.get("source", {})),
        )

    def build_model(self) -> RnntModel:
        """The transducer in eval mode with the checkpoint's weights (hard LSTMs if fine-tuned so)."""
        model = RnntModel(self.transducer)
        if self.lstm_activations:
            replace_lstms(model, *self.lstm_activations)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as error:
            raise UserInputError(f"deployment checkpoint weights do not fit: {error}") from None
        return model.eval()


def save_deployment_checkpoint(checkpoint: DeploymentCheckpoint, path: str | Path) -> None:
    """Write the checkpoint to ``path`` atomically (speechbed.outputs)."""
    with atomic_output(path) as temporary:
        torch.save(checkpoint.to_dict(), temporary)


def load_deployment_checkpoint(path: str | Path) -> DeploymentCheckpoint:
    """Read a checkpoint written by ``save_deployment_checkpoint`` (no code is unpickled)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserInputError(f"{path}: deployment checkpoint not found") from None
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as error:
        raise UserInputError(f"{path}: cannot read deployment checkpoint: {error}") from None
    return DeploymentCheckpoint.from_dict(data, str(path))


class DeployedTranscriber:
    """Audio to text with a deployment checkpoint: un-normalised log-mel, streaming
    normalisation (carried across calls unless ``reset_stream_stats``), stacking, greedy search.
    A checkpoint without statistics normalises each utterance by its own, as training does."""

    def __init__(
        self,
        checkpoint: DeploymentCheckpoint,
        log_mel: LogMelFunction | None = None,
        reset_stream_stats: bool = False,
        max_symbols_per_step: int | None = 30,
        device: str | torch.device = "cpu",
    ) -> None:
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.model = checkpoint.build_model().to(self.device)
        self.tokenizer = Tokenizer(checkpoint.tokenizer_model, "deployment checkpoint")
        front_end = LogMelFrontEnd(checkpoint.front_end).to(self.device)
        self.normalizer = None
        if checkpoint.statistics is None:
            self.log_mel = log_mel or front_end
        else:
            self.log_mel = log_mel or (
                lambda audio, counts: front_end(audio, counts, normalize=False)
            )
            self.normalizer = StreamingNormalizer(
                checkpoint.statistics, checkpoint.alpha, reset_per_utterance=reset_stream_stats
            )
        self.max_symbols_per_step = max_symbols_per_step

    def transcribe(self, audio: Sequence[torch.Tensor]) -> list[str]:
        """The transcripts of 16 kHz mono utterances, in order (a carried stream runs through
        them one after another)."""
        if not audio:
            return []
        counts = torch.tensor([len(samples) for samples in audio])
        padded = torch.zeros((len(audio), int(counts.max())))
        for row, samples in enumerate(audio):
            padded[row, : len(samples)] = samples
        with torch.no_grad():
            features, frames = self.log_mel(padded.to(self.device), counts.to(self.device))
            if self.normalizer is not None:
                features = self.normalizer(features, frames)
            stacked, frames = stack_frames(
                features, frames, self.checkpoint.frame_stacking, self.checkpoint.frame_subsampling
            )
            encoded, lengths = self.model.encode(stacked, frames)
            decoded = transducer_greedy_search(
                self.model, encoded, lengths, self.model.settings.blank, self.max_symbols_per_step
            )
        return [" ".join(self.tokenizer.decode(ids).split()) for ids in decoded]
