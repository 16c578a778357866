"""The separation task: BLSTM deep clustering / mask inference / chimera, scored by SI-SDRi.

Registered as ``separation`` in speechbed.tasks; the one trainer and evaluation call it.
Batches come from separation stores (speechbed.features.separation_store); separated speech
is the mixture's STFT times the masks (mask head, or k-means on the embeddings), inverted
with the mixture's phase.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from speechbed.corpora.mixtures import write_wav
from speechbed.errors import UserInputError
from speechbed.features.separation_job import SeparationFeatureSettings
from speechbed.features.separation_store import istft, stft
from speechbed.models.separation import (
    SeparationModelSettings,
    SeparationOutput,
    build_separation_model,
    cluster_masks,
)
from speechbed.models.separation_losses import (
    chimera_loss,
    deep_clustering_loss,
    ideal_binary_assignments,
    pit_mask_loss,
    silence_weights,
)
from speechbed.outputs import write_text_atomic
from speechbed.run_folder import RunFolder
from speechbed.tasks.separation.config import SeparationModelConfig, SeparationRunConfig
from speechbed.tasks.separation.data import (
    SeparationBatch,
    crop_batch,
    open_separation_loader,
    open_separation_store,
    training_magnitudes,
)
from speechbed.tasks.separation.scoring import MixtureScores, score_mixture
from speechbed.training.task import BuiltModel, Task

#: Folder of the run holding the separated examples (``<role>/<mixture>/*.wav``).
EXAMPLES_FOLDER = "separated"


def model_settings(model: SeparationModelConfig) -> SeparationModelSettings:
    """The network's sizes from a run config's ``model`` section."""
    return SeparationModelSettings(
        heads=model.heads,
        recurrent_size=model.recurrent_size,
        recurrent_layers=model.recurrent_layers,
        embedding_dimension=model.embedding_dimension,
        mask_activation=model.mask_activation,
        dropout=model.dropout,
    )


class SeparationTask(Task):
    """Two-speaker separation; dev metric and headline score: SI-SDR improvement (dB)."""

    config: SeparationRunConfig

    def __init__(self, config: SeparationRunConfig) -> None:
        super().__init__(config)
        self.transform: SeparationFeatureSettings | None = None

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
        store = open_separation_store(data.existing_source(partition), data.in_memory)
        if self.transform is not None and store.settings != self.transform:
            raise UserInputError(
                f"{store.path}: its STFT settings differ from those the model was trained on"
            )
        return open_separation_loader(
            store,
            batch_size=batch_size or data.batch_size,
            shuffle=shuffle,
            seed=seed,
            num_workers=data.num_workers,
            generator=generator,
        )

    def build_model(self, train_loader: DataLoader) -> BuiltModel:
        store = train_loader.dataset.store
        self.transform = store.settings
        model = build_separation_model(
            model_settings(self.config.model),
            store.num_bins,
            store.num_sources,
            self.config.model_seed,
        )
        model.fit_input_normalization(training_magnitudes(store))
        description = {
            "model_config": self.config.model.model_dump(mode="json"),
            "num_bins": store.num_bins,
            "num_sources": store.num_sources,
            "stft": store.settings.model_dump(mode="json"),
        }
        return BuiltModel(model, description)

    def load_model(self, description: Mapping[str, Any]) -> torch.nn.Module:
        self.transform = SeparationFeatureSettings(**description["stft"])
        settings = model_settings(SeparationModelConfig(**description["model_config"]))
        return build_separation_model(
            settings, description["num_bins"], description["num_sources"], 0
        )

    def augment(self, batch: SeparationBatch, generator: torch.Generator) -> SeparationBatch:
        return crop_batch(batch, self.config.data.segment_frames, generator)

    def forward(
        self, model: torch.nn.Module, batch: SeparationBatch, device: torch.device
    ) -> SeparationOutput:
        return model(batch.mixture.to(device), batch.lengths.to(device))

    def loss(
        self, outputs: SeparationOutput, batch: SeparationBatch, device: torch.device
    ) -> torch.Tensor:
        """Mean over the batch of the objective of the network's heads."""
        model = self.config.model
        mixture, sources = batch.mixture.to(device), batch.sources.to(device)
        lengths = batch.lengths.to(device)
        clustering = mask = None
        if outputs.embeddings is not None:
            weights = silence_weights(mixture, lengths, model.silence_threshold_db)
            assignments = ideal_binary_assignments(sources)
            clustering = deep_clustering_loss(outputs.embeddings, assignments, weights)
        if outputs.masks is not None:
            mask = pit_mask_loss(outputs.masks, mixture, sources, lengths)[0]
        if clustering is not None and mask is not None:
            return chimera_loss(clustering, mask, model.chimera_weight).mean()
        return (clustering if clustering is not None else mask).mean()

    def batch_size(self, batch: SeparationBatch) -> int:
        return len(batch.lengths)

    def _masks(self, outputs: SeparationOutput, batch: SeparationBatch, row: int) -> torch.Tensor:
        """(C, T, F) masks of one mixture from the head the evaluation settings choose."""
        frames = int(batch.lengths[row])
        use_clustering = outputs.masks is None or (
            self.config.evaluation.output == "clustering" and outputs.embeddings is not None
        )
        if not use_clustering:
            return outputs.masks[row, :, :frames].float().cpu()
        mixture = batch.mixture[row : row + 1, :frames]
        weights = silence_weights(
            mixture, batch.lengths[row : row + 1], self.config.model.silence_threshold_db
        )[0]
        embeddings = outputs.embeddings[row, :frames].float().cpu()
        return cluster_masks(
            embeddings, weights, batch.sources.shape[1], self.config.evaluation.kmeans_iterations
        )

    @torch.no_grad()
    def separate(
        self, model: torch.nn.Module, batch: SeparationBatch, device: torch.device
    ) -> list[np.ndarray]:
        """Separated samples (C, n) of each mixture of an unaugmented batch."""
        if self.transform is None:
            raise RuntimeError("separate() before build_model or load_model")
        model.eval()
        outputs = model(batch.mixture.to(device), batch.lengths.to(device))
        separated = []
        for row, samples in enumerate(batch.mixture_samples):
            spectrum = stft(torch.from_numpy(np.ascontiguousarray(samples)), self.transform)
            masks = self._masks(outputs, batch, row)
            estimates = istft(masks * spectrum[: masks.shape[1]], self.transform, len(samples))
            separated.append(estimates.double().numpy())
        return separated

    def _scores(
        self, model: torch.nn.Module, loader: DataLoader, device: torch.device, bss_eval: bool
    ) -> tuple[list[int], list[MixtureScores], dict[int, np.ndarray]]:
        indices, scores, kept = [], [], {}
        for batch in loader:
            for row, estimates in enumerate(self.separate(model, batch, device)):
                index = batch.indices[row]
                scores.append(
                    score_mixture(
                        estimates,
                        batch.source_samples[row],
                        batch.mixture_samples[row],
                        bss_eval=bss_eval,
                    )
                )
                indices.append(index)
                if index < self.config.evaluation.examples:
                    kept[index] = estimates
        return indices, scores, kept

    def dev_metric(self, model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
        """Mean SI-SDR improvement (dB) over the dev mixtures' sources."""
        _, scores, _ = self._scores(model, loader, device, bss_eval=False)
        return float(np.mean([s.si_sdri.mean() for s in scores]))

    def describe_metric(self, value: float) -> str:
        return f"dev SI-SDRi {value:.2f} dB"

    def result_header(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        heads = saved.get("model_config", {}).get("heads", self.config.model.heads)
        output = "clustering" if heads == "clustering" else "mask"
        if heads == "chimera":
            output = self.config.evaluation.output
        return {"separated_by": output, "training_dev_si_sdri": saved[self.metric]}

    def evaluate(
        self,
        model: torch.nn.Module,
        saved: Mapping[str, Any],
        role: str,
        partition: str,
        run: RunFolder,
    ) -> dict[str, Any]:
        """Scores of one partition; writes ``<role>.scores.csv`` and a few separated WAVs."""
        evaluation = self.config.evaluation
        loader = self.open_loader(partition, shuffle=False, batch_size=evaluation.batch_size)
        store = loader.dataset.store
        started = time.perf_counter()
        indices, scores, kept = self._scores(
            model, loader, torch.device(evaluation.device), evaluation.bss_eval
        )
        seconds = time.perf_counter() - started
        order = np.argsort(indices, kind="stable")
        indices, scores = [indices[i] for i in order], [scores[i] for i in order]
        write_text_atomic(run.path / f"{role}.scores.csv", score_table(store.ids, indices, scores))
        for index, estimates in sorted(kept.items()):
            write_examples(
                run,
                role,
                store.ids[index],
                store.example(index),
                estimates,
                store.settings.sample_rate,
            )
        summary = summarise(scores)
        print(
            f"{self.config.info.name} {role} ({partition}): SI-SDRi {summary['si_sdri']:.2f} dB, "
            f"SI-SDR {summary['si_sdr']:.2f} dB"
            + (f", SDR {summary['sdr']:.2f} dB" if "sdr" in summary else "")
            + f" over {len(scores)} mixtures, {seconds:.1f} s"
        )
        return {
            "partition": partition,
            **summary,
            "mixtures": len(scores),
            "seconds": round(seconds, 3),
        }


def summarise(scores: list[MixtureScores]) -> dict[str, float]:
    """Means over every source of every mixture (dB)."""
    summary = {
        "si_sdri": float(np.mean([s.si_sdri for s in scores])),
        "si_sdr": float(np.mean([s.si_sdr for s in scores])),
        "mixture_si_sdr": float(np.mean([s.mixture_si_sdr for s in scores])),
    }
    if scores and scores[0].sdr is not None:
        for name in ("sdr", "sir", "sar"):
            summary[name] = float(np.mean([getattr(s, name) for s in scores]))
    return summary


def score_table(ids: list[str], indices: list[int], scores: list[MixtureScores]) -> str:
    """CSV text, one row per mixture: id, then each score per source (1-based) and SI-SDRi."""
    count = len(scores[0].si_sdr) if scores else 0
    names = ["si_sdr", "mixture_si_sdr", "si_sdri"]
    if scores and scores[0].sdr is not None:
        names += ["sdr", "sir", "sar"]
    header = ["mixture"] + [f"{n}_{c + 1}" for n in names for c in range(count)] + ["si_sdri"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for index, score in zip(indices, scores, strict=True):
        values = [f"{v:.4f}" for n in names for v in getattr(score, n)]
        writer.writerow([ids[index], *values, f"{score.si_sdri.mean():.4f}"])
    return out.getvalue()


def write_examples(
    run: RunFolder, role: str, name: str, example: Any, estimates: np.ndarray, rate: int
) -> None:
    """``separated/<role>/<mixture>/``: mixture.wav, estimate_<c>.wav, reference_<c>.wav."""
    folder = run.path / EXAMPLES_FOLDER / role / name
    peak = max(1.0, float(np.abs(estimates).max()) / 0.99)  # an estimate may exceed full scale
    write_wav(folder / "mixture.wav", example.mixture_samples, rate)
    for count, (estimate, reference) in enumerate(
        zip(estimates, example.source_samples, strict=True), 1
    ):
        write_wav(folder / f"estimate_{count}.wav", (estimate / peak).astype(np.float32), rate)
        write_wav(folder / f"reference_{count}.wav", reference, rate)
