"""The rnnt task: log-mel front end + RNN transducer, RNN-T loss, greedy decoding scored by WER.

Registered as ``rnnt`` in speechbed.tasks; the training loop and evaluation call it. Token ids
are the run's sentencepiece pieces (0 .. spm_size - 1) and the blank is spm_size. The
tokenizer is copied into the run folder (``tokenizer.model``) and its bytes kept in model.pt,
so a trained run decodes without the tokenizer folder it was trained with.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch.utils.data import DataLoader

from speechbed.corpora.tokenizer import MODEL_FILE, Tokenizer, load_tokenizer
from speechbed.decoding import transducer_greedy_search, word_error_counts
from speechbed.features.log_mel import (
    LogMelFrontEnd,
    LogMelSettings,
    SpecAugmentSettings,
    apply_spec_augment,
    draw_spec_augment,
    speed_perturb,
    speed_rates,
    stack_frames,
)
from speechbed.losses import rnnt_loss
from speechbed.models.rnnt import RnntModel, RnntSettings
from speechbed.outputs import write_bytes_atomic, write_text_atomic
from speechbed.run_folder import RunFolder
from speechbed.tasks.rnnt.config import RnntModelConfig, RnntRunConfig
from speechbed.tasks.rnnt.data import SpeechBatch, open_speech_loader
from speechbed.training.task import BuiltModel, Task

_FRONT_END_KEYS = ("num_mels", "fft_size", "window_seconds", "hop_seconds", "preemphasis", "dither")
#: Keys of the model section that are not the transducer's sizes.
_NOT_TRANSDUCER_KEYS = ("frame_stacking", "frame_subsampling", "seed", *_FRONT_END_KEYS)


def front_end_settings(model: RnntModelConfig) -> LogMelSettings:
    return LogMelSettings(**{key: getattr(model, key) for key in _FRONT_END_KEYS})


def transducer_settings(model: RnntModelConfig, num_tokens: int) -> RnntSettings:
    """The transducer's plain sizes: the model section's, the input of the stacked features."""
    sizes = model.model_dump(exclude=set(_NOT_TRANSDUCER_KEYS))
    return RnntSettings(
        input_size=model.num_mels * model.frame_stacking, num_tokens=num_tokens, **sizes
    )


def word_trn_lines(transcripts: Mapping[str, str]) -> str:
    """``words (utt_id)`` per utterance, sorted by id (the sclite trn format)."""
    return "".join(f"{transcripts[utt_id]} ({utt_id})\n" for utt_id in sorted(transcripts))


class RnntTask(Task):
    """Speech recognition with an RNN transducer, scored by word error rate (lower is better)."""

    metric: ClassVar[str] = "dev_wer"
    lower_is_better: ClassVar[bool] = True
    score_key: ClassVar[str] = "wer"
    score_is_percent: ClassVar[bool] = True
    config: RnntRunConfig

    def __init__(self, config: RnntRunConfig) -> None:
        super().__init__(config)
        self.tokenizer: Tokenizer | None = None
        self.front_end = LogMelFrontEnd(front_end_settings(config.model))
        data = config.data
        self.spec_augment = SpecAugmentSettings(
            data.freq_masks, data.max_freq, data.time_masks, data.max_time
        )

    def _tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.config.data.tokenizer)
        return self.tokenizer

    @property
    def blank(self) -> int:
        return self._tokenizer().vocab_size

    def open_loader(
        self,
        partition: str,
        *,
        shuffle: bool,
        seed: int = 0,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> DataLoader:
        data = self.config.data
        training = partition == data.train_partition and shuffle
        return open_speech_loader(
            data, partition, self._tokenizer(), shuffle=shuffle, seed=seed,
            batch_size=batch_size, max_duration=data.max_duration if training else None,
            generator=generator,
        )  # fmt: skip

    def build_model(self, train_loader: DataLoader) -> BuiltModel:
        config, tokenizer = self.config, self._tokenizer()
        torch.manual_seed(config.model_seed)
        model = RnntModel(transducer_settings(config.model, tokenizer.vocab_size))
        write_bytes_atomic(config.info.run_dir / MODEL_FILE, tokenizer.model_bytes)
        description = {
            "model_config": config.model.model_dump(mode="json"),
            "num_tokens": tokenizer.vocab_size,
            "tokenizer_model": tokenizer.model_bytes,
        }
        return BuiltModel(model, description)

    def load_model(self, description: Mapping[str, Any]) -> torch.nn.Module:
        self.tokenizer = Tokenizer(description["tokenizer_model"], "model.pt")
        model_config = RnntModelConfig(**description["model_config"])
        self.front_end = LogMelFrontEnd(front_end_settings(model_config))
        return RnntModel(transducer_settings(model_config, description["num_tokens"]))

    def parameter_groups(self, model: torch.nn.Module) -> list[dict[str, Any]] | None:
        """The joint's output layer at ``joint_net_lr_factor`` times the rate (None when 1)."""
        factor = self.config.training.joint_net_lr_factor
        if factor == 1.0:
            return None
        joint = {id(parameter) for parameter in model.joint_output_parameters()}
        rest = [parameter for parameter in model.parameters() if id(parameter) not in joint]
        return [
            {"params": rest, "lr_factor": 1.0},
            {"params": model.joint_output_parameters(), "lr_factor": factor},
        ]

    def augment(self, batch: SpeechBatch, generator: torch.Generator) -> SpeechBatch:
        """Speed perturbation of the audio here; the masks and dither drawn here, applied on the
        training device in ``forward``."""
        data = self.config.data
        size = len(batch.utt_ids)
        if (data.speed_min_rate, data.speed_max_rate) != (1.0, 1.0):
            rates = speed_rates(size, data.speed_min_rate, data.speed_max_rate, generator)
            audio, lengths = speed_perturb(batch.audio, batch.audio_lengths, rates)
            batch = batch._replace(audio=audio, audio_lengths=lengths)
        draws = draw_spec_augment(size, self.spec_augment, generator)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return batch._replace(spec_augment=draws, dither_seed=seed)

    def features(
        self, batch: SpeechBatch, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked log-mel frames of a batch on ``device`` (in float32, outside autocast)."""
        front_end = self.front_end.to(device)
        generator = None
        if batch.dither_seed is not None:
            generator = torch.Generator(device=device).manual_seed(batch.dither_seed)
        with torch.autocast(device.type, enabled=False):
            features, frames = front_end(
                batch.audio.to(device), batch.audio_lengths.to(device), generator
            )
            if batch.spec_augment is not None and self.spec_augment.active:
                features = apply_spec_augment(
                    features, frames, batch.spec_augment, self.spec_augment
                )
            model = self.config.model
            return stack_frames(features, frames, model.frame_stacking, model.frame_subsampling)

    def forward(
        self, model: torch.nn.Module, batch: SpeechBatch, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features, frames = self.features(batch, device)
        return model(features, frames, batch.targets.to(device))

    def loss(
        self, outputs: tuple[torch.Tensor, torch.Tensor], batch: SpeechBatch, device: torch.device
    ) -> torch.Tensor:
        """Mean RNN-T loss per utterance."""
        logits, frames = outputs
        return rnnt_loss(
            logits.float(), batch.targets.to(device), frames.to(device).int(),
            batch.target_lengths.to(device), blank=logits.shape[-1] - 1,
        )  # fmt: skip

    def batch_size(self, batch: SpeechBatch) -> int:
        return len(batch.utt_ids)

    def transcribe(
        self, model: torch.nn.Module, loader: DataLoader, device: torch.device
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Greedy hypotheses and the references, as text per utterance id (eval mode)."""
        hypotheses: dict[str, str] = {}
        references: dict[str, str] = {}
        cap = self.config.evaluation.max_symbols_per_step
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for batch in loader:
                    features, frames = self.features(batch, device)
                    encoded, lengths = model.encode(features, frames)
                    decoded = transducer_greedy_search(model, encoded, lengths, self.blank, cap)
                    for utt_id, ids, reference in zip(
                        batch.utt_ids, decoded, batch.transcripts, strict=True
                    ):
                        hypotheses[utt_id] = " ".join(self._tokenizer().decode(ids).split())
                        references[utt_id] = " ".join(reference.split())
        finally:
            model.train(was_training)
        return hypotheses, references

    def dev_metric(self, model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
        """Greedy-decoded WER of the dev partition."""
        hypotheses, references = self.transcribe(model, loader, device)
        return word_error_counts(
            (references[key], hypotheses[key]) for key in references
        ).error_rate

    def describe_metric(self, value: float) -> str:
        return f"dev WER {100 * value:.2f}% (greedy)"

    def result_header(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "max_symbols_per_step": self.config.evaluation.max_symbols_per_step,
            "training_dev_wer": saved[self.metric],
        }

    def evaluate(
        self,
        model: torch.nn.Module,
        saved: Mapping[str, Any],
        role: str,
        partition: str,
        run: RunFolder,
    ) -> dict[str, Any]:
        """WER of one partition with its counts; writes ``<role>.hyp.trn`` and ``.ref.trn``."""
        evaluation, name = self.config.evaluation, self.config.info.name
        loader = self.open_loader(partition, shuffle=False, batch_size=evaluation.batch_size)
        started = time.perf_counter()
        hypotheses, references = self.transcribe(model, loader, torch.device(evaluation.device))
        seconds = time.perf_counter() - started
        counts = word_error_counts((references[key], hypotheses[key]) for key in references)
        write_text_atomic(run.transcript(role, "hyp"), word_trn_lines(hypotheses))
        write_text_atomic(run.transcript(role, "ref"), word_trn_lines(references))
        print(
            f"{name} {role} ({partition}): WER {100 * counts.error_rate:.2f}% "
            f"(S {counts.substitutions}, D {counts.deletions}, I {counts.insertions} / "
            f"{counts.reference_length} words), greedy, {seconds:.1f} s"
        )
        return {
            "partition": partition,
            "wer": counts.error_rate,
            "errors": counts.errors,
            "substitutions": counts.substitutions,
            "deletions": counts.deletions,
            "insertions": counts.insertions,
            "reference_words": counts.reference_length,
            "utterances": len(references),
            "decoding_seconds": round(seconds, 3),
        }
