"""The ctc_phones task: CNN + RNN acoustic model, CTC loss, greedy dev PER, beam-search scoring.

Registered as ``ctc_phones`` in speechbed.training.task.TASKS; the training loop and
evaluation call it. Labels are the feature store's token list (``token_list`` attribute;
TIMIT's 48 phones in a store written before stores recorded it); outputs are its tokens
then the CTC blank; PER folds them to 39 phones.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader

from speechbed.corpora.phones import PHONES_48
from speechbed.decoding.transcribe import transcribe
from speechbed.errors import UserInputError
from speechbed.features.loader import PaddedBatch
from speechbed.models import AcousticModelSettings, build_model
from speechbed.outputs import write_text_atomic
from speechbed.run_folder import RunFolder
from speechbed.tasks.ctc_phones.config import AcousticModelConfig, CtcPhonesRunConfig
from speechbed.tasks.ctc_phones.scoring import phone_error_counts, trn_lines
from speechbed.training.augmentation import augment_batch
from speechbed.training.data import open_loader, sample_frames
from speechbed.training.task import BuiltModel, Task


def acoustic_settings(model: AcousticModelConfig) -> AcousticModelSettings:
    """The architecture of a run config's ``model`` section, as plain values."""
    return AcousticModelSettings(**model.model_dump(exclude={"seed"}))


def store_token_list(loader: DataLoader) -> tuple[str, ...]:
    """The token list of the loader's feature store (TIMIT's 48 phones when it records none)."""
    listed = loader.dataset.cache.attributes.get("token_list")
    return PHONES_48 if listed is None else tuple(listed)


class CtcPhonesTask(Task):
    """Phone recognition with CTC, scored by phone error rate on 39 phones (lower is better)."""

    config: CtcPhonesRunConfig

    def __init__(self, config: CtcPhonesRunConfig) -> None:
        super().__init__(config)
        self.token_list: tuple[str, ...] = PHONES_48

    @property
    def blank(self) -> int:
        """The CTC blank: the class after the last token."""
        return len(self.token_list)

    def open_loader(
        self,
        partition: str,
        *,
        shuffle: bool,
        seed: int = 0,
        batch_size: int | None = None,
        generator: torch.Generator | None = None,
    ) -> DataLoader:
        return open_loader(
            self.config.data,
            partition,
            shuffle=shuffle,
            seed=seed,
            batch_size=batch_size,
            generator=generator,
        )

    def _use_token_list(self, token_list: Sequence[str], partition: str) -> None:
        unknown = [token for token in token_list if token not in PHONES_48]
        if unknown:
            raise UserInputError(
                f"{self.config.data.source(partition)}: task ctc_phones scores 39-phone "
                f"PER, but the store's token list holds {', '.join(map(repr, unknown[:5]))}, "
                "which are not TIMIT's 48 phones"
            )
        self.token_list = tuple(token_list)

    def _check_tokens(self, loader: DataLoader, partition: str) -> None:
        if store_token_list(loader) != self.token_list:
            raise UserInputError(
                f"{self.config.data.source(partition)}: its token list differs from the "
                "one the model was trained with; token ids would not match"
            )

    def build_model(self, train_loader: DataLoader) -> BuiltModel:
        config = self.config
        self._use_token_list(store_token_list(train_loader), config.data.train_partition)
        num_features = int(train_loader.dataset[0].feats.shape[1])
        model = build_model(
            acoustic_settings(config.model),
            num_features,
            len(self.token_list) + 1,
            config.model_seed,
            config.training.dropout_prob,
        )
        model.fit_input_normalization(sample_frames(train_loader.dataset))
        description = {
            "model_config": config.model.model_dump(mode="json"),
            "num_features": num_features,
            "token_list": list(self.token_list),
        }
        return BuiltModel(model, description)

    def load_model(self, description: Mapping[str, Any]) -> torch.nn.Module:
        # model.pt of runs trained before it recorded a token list: TIMIT's 48 phones
        self.token_list = tuple(description.get("token_list", PHONES_48))
        settings = acoustic_settings(AcousticModelConfig(**description["model_config"]))
        return build_model(settings, description["num_features"], len(self.token_list) + 1, 0)

    def augment(self, batch: PaddedBatch, generator: torch.Generator) -> PaddedBatch:
        feats, lengths = augment_batch(batch.feats, batch.lengths, self.config.training, generator)
        return batch._replace(feats=feats, lengths=lengths)

    def forward(
        self, model: torch.nn.Module, batch: PaddedBatch, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return model(batch.feats.to(device), batch.lengths.to(device))

    def loss(
        self,
        outputs: tuple[torch.Tensor, torch.Tensor],
        batch: PaddedBatch,
        device: torch.device,
    ) -> torch.Tensor:
        """Mean CTC loss per utterance (an impossible alignment counts as zero)."""
        logits, counts = outputs
        ctc = torch.nn.CTCLoss(blank=self.blank, reduction="mean", zero_infinity=True)
        log_probs = torch.log_softmax(logits.float(), dim=-1).transpose(0, 1)
        return ctc(log_probs, batch.targets.to(device), counts, batch.target_lengths.to(device))

    def batch_size(self, batch: PaddedBatch) -> int:
        return len(batch.lengths)

    def dev_metric(self, model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
        """Greedy-decoded PER (39 phones) of the dev partition."""
        self._check_tokens(loader, self.config.data.dev_partition)
        hypotheses, references = transcribe(model, loader, 0, device, self.blank)
        return phone_error_counts(references, hypotheses, self.token_list).error_rate

    def describe_metric(self, value: float) -> str:
        # the epoch's PER is greedy; the reported one may come from a beam, so say which
        beam = self.config.evaluation.beam_width
        scored = f"; evaluation uses beam {beam}" if beam else ""
        return f"dev PER {100 * value:.2f}% (greedy{scored})"

    def result_header(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "beam_width": self.config.evaluation.beam_width,
            "training_dev_per": saved[self.metric],
        }

    def evaluate(
        self,
        model: torch.nn.Module,
        saved: Mapping[str, Any],
        role: str,
        partition: str,
        run: RunFolder,
    ) -> dict[str, Any]:
        """PER of one partition with its counts; writes ``<role>.hyp.trn`` and ``.ref.trn``."""
        evaluation, name = self.config.evaluation, self.config.info.name
        loader = self.open_loader(partition, shuffle=False, batch_size=evaluation.batch_size)
        self._check_tokens(loader, partition)
        device = torch.device(evaluation.device)
        started = time.perf_counter()
        hypotheses, references = transcribe(
            model, loader, evaluation.beam_width, device, self.blank
        )
        seconds = time.perf_counter() - started
        counts = phone_error_counts(references, hypotheses, self.token_list)
        write_text_atomic(run.transcript(role, "hyp"), trn_lines(hypotheses, self.token_list))
        write_text_atomic(run.transcript(role, "ref"), trn_lines(references, self.token_list))
        print(
            f"{name} {role} ({partition}): PER {100 * counts.error_rate:.2f}% "
            f"(S {counts.substitutions}, D {counts.deletions}, I {counts.insertions} / "
            f"{counts.reference_length}), beam {evaluation.beam_width}, {seconds:.1f} s"
        )
        return {
            "partition": partition,
            "per": counts.error_rate,
            "errors": counts.errors,
            "substitutions": counts.substitutions,
            "deletions": counts.deletions,
            "insertions": counts.insertions,
            "reference_phones": counts.reference_length,
            "utterances": len(references),
            "decoding_seconds": round(seconds, 3),
        }
