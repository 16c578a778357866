"""The rnnt task: log-mel front end + RNN transducer, RNN-T loss, greedy decoding scored by WER.

Registered as ``rnnt`` in speechbed.tasks; the training loop and evaluation call it. Token ids
are the run's sentencepiece pieces (0 .. spm_size - 1) and the blank is spm_size. The
tokenizer is copied into the run folder (``tokenizer.model``) and its bytes kept in model.pt,
so a trained run decodes without the tokenizer folder it was trained with.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from speechbed.corpora.tokenizer import MODEL_FILE, Tokenizer, load_tokenizer
from speechbed.decoding import transducer_greedy_search, word_error_counts
from speechbed.deployment.rnnt_checkpoint import DeploymentCheckpoint, save_deployment_checkpoint
from speechbed.errors import UserInputError
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
from speechbed.features.streaming_normalization import StreamingNormalizer
from speechbed.losses import rnnt_loss
from speechbed.models.hard_lstm import replace_lstms
from speechbed.models.rnnt import RnntModel, RnntSettings
from speechbed.outputs import write_bytes_atomic, write_text_atomic
from speechbed.run_folder import RunFolder
from speechbed.tasks.rnnt import scoring
from speechbed.tasks.rnnt.config import RnntModelConfig, RnntRunConfig
from speechbed.tasks.rnnt.data import (
    UNTRANSCRIBED,
    SpeechBatch,
    open_speech_loader,
    partition_entries,
    utterance_id,
)
from speechbed.training.task import BuiltModel, Task

_FRONT_END_KEYS = ("num_mels", "fft_size", "window_seconds", "hop_seconds", "preemphasis", "dither")
#: Keys of the model section that are not the transducer's sizes.
_NOT_TRANSDUCER_KEYS = (
    "frame_stacking", "frame_subsampling", "seed", "lstm_gate_activation",
    "lstm_cell_activation", *_FRONT_END_KEYS,
)  # fmt: skip


def front_end_settings(model: RnntModelConfig) -> LogMelSettings:
    return LogMelSettings(**{key: getattr(model, key) for key in _FRONT_END_KEYS})


def transducer_settings(model: RnntModelConfig, num_tokens: int) -> RnntSettings:
    """The transducer's plain sizes: the model section's, the input of the stacked features."""
    sizes = model.model_dump(exclude=set(_NOT_TRANSDUCER_KEYS))
    return RnntSettings(
        input_size=model.num_mels * model.frame_stacking, num_tokens=num_tokens, **sizes
    )


def lstm_activations(model: RnntModelConfig) -> tuple[str, str] | None:
    """(gate, cell) when the LSTMs are speechbed.models.hard_lstm's, None for torch's."""
    chosen = (model.lstm_gate_activation, model.lstm_cell_activation)
    return None if chosen == ("sigmoid", "tanh") else chosen


def deployment_from_record(
    saved: Mapping[str, Any], where: str, weights: Path | None = None
) -> DeploymentCheckpoint:
    """A run's model.pt record as a deployment checkpoint without mel statistics (per-utterance
    normalisation), optionally with a checkpoint file's weights (scripts/transcribe.py)."""
    from speechbed.tasks.rnnt.fine_tuning import source_weights

    if (
        not isinstance(saved, Mapping)
        or "model_config" not in saved
        or "tokenizer_model" not in saved
    ):
        raise UserInputError(f"{where}: not an rnnt run's model.pt nor a deployment checkpoint")
    config = RnntModelConfig(**saved["model_config"])
    if weights is not None:
        saved = {**saved, "model": source_weights(weights)}
    return scoring.deployment_checkpoint(
        saved, transducer_settings(config, saved["num_tokens"]), front_end_settings(config),
        saved["model_config"], None, 0.0, {"model": where},
    )  # fmt: skip


def word_trn_lines(transcripts: Mapping[str, str]) -> str:
    """``words (utt_id)`` per utterance, sorted by id (the sclite trn format)."""
    return "".join(f"{transcripts[utt_id]} ({utt_id})\n" for utt_id in sorted(transcripts))


class RnntTask(Task):
    """Speech recognition with an RNN transducer, scored by word error rate (lower is better)."""

    config: RnntRunConfig

    def __init__(self, config: RnntRunConfig) -> None:
        super().__init__(config)
        self.tokenizer: Tokenizer | None = None
        self.front_end = LogMelFrontEnd(front_end_settings(config.model))
        data = config.data
        self.spec_augment = SpecAugmentSettings(
            data.freq_masks, data.max_freq, data.time_masks, data.max_time
        )

    def _statistics(self):
        return scoring.optional_statistics(self.config.data.mel_statistics)

    def _normalizer(self, mode: str) -> StreamingNormalizer | None:
        statistics = None if mode == "utterance" else self._statistics()
        return scoring.make_normalizer(mode, statistics, self.config.evaluation.alpha)

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
        if training and data.train_shards is not None:
            from speechbed.tasks.rnnt.shard_data import open_shard_loader

            return open_shard_loader(data, self._tokenizer(), seed, batch_size)
        return open_speech_loader(
            data, partition, self._tokenizer(), shuffle=shuffle, seed=seed,
            batch_size=batch_size, max_duration=data.max_duration if training else None,
            generator=generator,
        )  # fmt: skip

    def build_model(self, train_loader: DataLoader) -> BuiltModel:
        config, tokenizer = self.config, self._tokenizer()
        torch.manual_seed(config.model_seed)
        model = RnntModel(transducer_settings(config.model, tokenizer.vocab_size))
        if config.training.fine_tune:
            from speechbed.tasks.rnnt.fine_tuning import start_from

            start_from(model, config.training.checkpoint)
        activations = lstm_activations(config.model)
        if activations:
            replace_lstms(model, *activations)
        write_bytes_atomic(config.info.run_dir / MODEL_FILE, tokenizer.model_bytes)
        description = {
            "model_config": config.model.model_dump(mode="json"),
            "num_tokens": tokenizer.vocab_size,
            "tokenizer_model": tokenizer.model_bytes,
            "lstm_activations": list(activations) if activations else None,
        }
        if config.training.fine_tune:
            description["fine_tuned_from"] = str(config.training.checkpoint)
        return BuiltModel(model, description)

    def load_model(self, description: Mapping[str, Any]) -> torch.nn.Module:
        self.tokenizer = Tokenizer(description["tokenizer_model"], "model.pt")
        model_config = RnntModelConfig(**description["model_config"])
        self.front_end = LogMelFrontEnd(front_end_settings(model_config))
        model = RnntModel(transducer_settings(model_config, description["num_tokens"]))
        if description.get("lstm_activations"):
            replace_lstms(model, *description["lstm_activations"])
        return model

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
        self,
        batch: SpeechBatch,
        device: torch.device,
        normalizer: StreamingNormalizer | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked log-mel frames of a batch on ``device`` (in float32, outside autocast),
        normalised per utterance, or frame by frame by ``normalizer``."""
        front_end = self.front_end.to(device)
        generator = None
        if batch.dither_seed is not None:
            generator = torch.Generator(device=device).manual_seed(batch.dither_seed)
        with torch.autocast(device.type, enabled=False):
            features, frames = front_end(
                batch.audio.to(device), batch.audio_lengths.to(device), generator,
                normalize=normalizer is None,
            )  # fmt: skip
            if normalizer is not None:
                features = normalizer(features, frames)
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
        self,
        model: torch.nn.Module,
        loader: DataLoader,
        device: torch.device,
        normalizer: StreamingNormalizer | None = None,
    ) -> tuple[dict[str, str], dict[str, str]]:
        """Greedy hypotheses and the references, as text per utterance id (eval mode)."""
        hypotheses: dict[str, str] = {}
        references: dict[str, str] = {}
        evaluation = self.config.evaluation
        cap = evaluation.max_symbols_per_step
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for batch in loader:
                    features, frames = self.features(batch, device, normalizer)
                    encoded, lengths = model.encode(features, frames)
                    decoded = transducer_greedy_search(
                        model, encoded, lengths, self.blank, cap, evaluation.max_symbols_per_sample
                    )
                    for utt_id, ids, reference in zip(
                        batch.utt_ids, decoded, batch.transcripts, strict=True
                    ):
                        hypotheses[utt_id] = " ".join(self._tokenizer().decode(ids).split())
                        references[utt_id] = " ".join(reference.split())
        finally:
            model.train(was_training)
        return hypotheses, references

    def dev_metric(self, model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
        """Greedy-decoded WER of the dev partition (normalised as evaluation.normalizations[0])."""
        normalizer = self._normalizer(self.config.evaluation.normalizations[0])
        hypotheses, references = self.transcribe(model, loader, device, normalizer)
        return word_error_counts(
            (references[key], hypotheses[key]) for key in references
        ).error_rate

    def describe_metric(self, value: float) -> str:
        return f"dev WER {100 * value:.2f}% (greedy)"

    def result_header(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        """The decoding settings; writes the deployment checkpoint beside model.pt when the run
        has the training set's mel statistics (data.mel_statistics)."""
        evaluation, data = self.config.evaluation, self.config.data
        header = {
            "max_symbols_per_step": evaluation.max_symbols_per_step,
            "max_symbols_per_sample": evaluation.max_symbols_per_sample,
            "normalizations": list(evaluation.normalizations),
            "training_dev_wer": saved[self.metric],
        }
        if data.mel_statistics is not None:
            model_config = RnntModelConfig(**saved["model_config"])
            path = Path(self.config.info.run_dir) / scoring.DEPLOYMENT_FILE
            checkpoint = scoring.deployment_checkpoint(
                saved, transducer_settings(model_config, saved["num_tokens"]),
                front_end_settings(model_config), saved["model_config"], self._statistics(),
                evaluation.alpha, {"run": self.config.info.name, "epoch": saved.get("epoch")},
            )  # fmt: skip
            save_deployment_checkpoint(checkpoint, path)
            header["deployment_checkpoint"] = path.name
        return header

    def evaluate(
        self,
        model: torch.nn.Module,
        saved: Mapping[str, Any],
        role: str,
        partition: str,
        run: RunFolder,
    ) -> dict[str, Any]:
        """WER of one partition with its counts in each of evaluation.normalizations (the first
        is ``wer``, each also ``wer_<name>``); writes ``<role>.hyp.trn`` and ``.ref.trn`` (first
        normalisation) and, with dump_predictions, ``<role>.preds.txt`` in manifest order. A
        manifest without transcripts (accepted with dump_predictions) has ``wer`` null."""
        evaluation, name, data = self.config.evaluation, self.config.info.name, self.config.data
        loose = evaluation.dump_predictions
        entries = partition_entries(data, partition, without_transcripts=loose)
        loader = open_speech_loader(
            data, partition, self._tokenizer(), shuffle=False,
            batch_size=evaluation.batch_size, without_transcripts=loose,
        )  # fmt: skip
        transcribed = not any(entry.extra.get(UNTRANSCRIBED) for entry, _ in entries)
        result: dict[str, Any] = {"partition": partition, "wer": None, "utterances": len(entries)}
        for index, mode in enumerate(evaluation.normalizations):
            started = time.perf_counter()
            device = torch.device(evaluation.device)
            hypotheses, references = self.transcribe(model, loader, device, self._normalizer(mode))
            seconds = time.perf_counter() - started
            if index == 0:
                write_text_atomic(run.transcript(role, "hyp"), word_trn_lines(hypotheses))
                if loose:
                    ids = [utterance_id(entry) for entry, _ in entries]
                    scoring.write_predictions(
                        scoring.predictions_path(run.path, role), ids, hypotheses
                    )
            if not transcribed:
                print(f"{name} {role} ({partition}): no transcripts; {mode} hypotheses only")
                continue
            counts = word_error_counts((references[key], hypotheses[key]) for key in references)
            print(
                f"{name} {role} ({partition}) {mode}: WER {100 * counts.error_rate:.2f}% "
                f"(S {counts.substitutions}, D {counts.deletions}, I {counts.insertions} / "
                f"{counts.reference_length} words), greedy, {seconds:.1f} s"
            )
            result[f"wer_{mode}"] = counts.error_rate
            if index == 0:
                write_text_atomic(run.transcript(role, "ref"), word_trn_lines(references))
                result.update(
                    wer=counts.error_rate, errors=counts.errors,
                    substitutions=counts.substitutions, deletions=counts.deletions,
                    insertions=counts.insertions, reference_words=counts.reference_length,
                    decoding_seconds=round(seconds, 3),
                )  # fmt: skip
        return result
