"""The kws task: keyword spotting on 1 s clips, cross-entropy, accuracy, confusion matrices.

Registered as ``kws`` in speechbed.tasks; the training loop and evaluation call it. Classes
are the clip stores' ``token_list`` (silence, unknown, then the keywords). A run that augments
audio trains on the raw clip store: each training batch is shifted and mixed with noise
(speechbed.tasks.kws.augmentation), then its features are computed with the same computer
that made the cached ones (dev and test read the cache). Deployment backends
(``evaluation.backend``) are scored through speechbed.deployment, imported only then.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from speechbed.errors import UserInputError
from speechbed.features.cache import read_store_attributes
from speechbed.features.clip_computers import ClipFeatureComputer
from speechbed.features.clip_settings import ClipFeatureSettings
from speechbed.models.tc_resnet import KwsLstm, TCResNet
from speechbed.run_folder import RunFolder
from speechbed.tasks.kws.augmentation import mix_noise, shift_clips
from speechbed.tasks.kws.config import KwsModelConfig, KwsRunConfig
from speechbed.tasks.kws.data import ClipBatch, ClipStore, clip_loader
from speechbed.tasks.kws.scoring import (
    accuracy,
    confusion_matrix,
    per_class_scores,
    write_confusion_csv,
    write_confusion_png,
)
from speechbed.training.task import BuiltModel, Task

#: Training clips whose features fit the input standardisation.
STATISTICS_CLIPS = 512


def kws_model(model: KwsModelConfig, num_features: int, num_classes: int) -> torch.nn.Module:
    """The classifier a ``model`` section describes (parameters from torch's global generator)."""
    if model.architecture == "lstm":
        return KwsLstm(
            num_features, num_classes, model.hidden_size, model.num_layers, model.dropout
        )
    return TCResNet(num_features, num_classes, width=model.width, dropout=model.dropout)


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, features: torch.Tensor, device: torch.device, batch_size: int = 256
) -> torch.Tensor:
    """Logits (clips, classes) of ``features`` (clips, frames, dims), in eval mode."""
    model.eval()
    pieces = [
        model(features[start : start + batch_size].to(device)).float().cpu()
        for start in range(0, len(features), batch_size)
    ]
    return torch.cat(pieces)


class KwsTask(Task):
    """Keyword spotting: a clip's class, scored by accuracy (higher is better)."""

    config: KwsRunConfig

    def __init__(self, config: KwsRunConfig) -> None:
        super().__init__(config)
        self.classes: list[str] = []
        self.computer: ClipFeatureComputer | None = None
        self.noise = torch.zeros(0, 0)

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
        store = ClipStore(data.existing_source(partition))
        if store.is_audio:
            noise_path = data.audio_directory / f"{data.noise_partition}.zarr"
            if not noise_path.is_dir():
                raise UserInputError(
                    f"data.audio_directory: no training noise store at {noise_path}"
                )
            self.noise = ClipStore(noise_path).values[..., 0]
            self.computer = ClipFeatureComputer(self._feature_settings())
        if self.classes and store.classes != self.classes:
            raise UserInputError(
                f"{store.path}: classes {store.classes} differ from the model's {self.classes}"
            )
        return clip_loader(store, batch_size or data.batch_size, shuffle, seed, generator)

    def _feature_settings(self) -> ClipFeatureSettings:
        """The settings of the cached features (the dev store's), which audio batches get too."""
        path = self.config.data.feature_store(self.config.data.dev_partition)
        attributes = read_store_attributes(path)
        if attributes is None or "feature_settings" not in attributes:
            raise UserInputError(
                f"{path}: no clip feature store (scripts/compute_clip_features.py)"
            )
        return ClipFeatureSettings(**attributes["feature_settings"])

    def features(self, batch: ClipBatch) -> torch.Tensor:
        """A batch's features; audio batches are computed here (unaugmented)."""
        if not batch.is_audio:
            return batch.values
        if self.computer is None:
            self.computer = ClipFeatureComputer(self._feature_settings())
        with torch.no_grad():
            return self.computer(batch.values)

    def build_model(self, train_loader: DataLoader) -> BuiltModel:
        config, store = self.config, train_loader.dataset
        self.classes = list(store.classes)
        picked = torch.as_tensor(
            np.linspace(0, len(store) - 1, min(len(store), STATISTICS_CLIPS)).astype(int)
        )
        sample = self.features(
            ClipBatch(
                store.values[picked][..., 0] if store.is_audio else store.values[picked],
                store.labels[picked],
                store.is_audio,
            )
        )
        num_frames, num_features = int(sample.shape[1]), int(sample.shape[2])
        with torch.random.fork_rng():
            torch.manual_seed(config.model_seed)
            model = kws_model(config.model, num_features, len(self.classes))
        model.standardize.fit(sample.reshape(-1, num_features))
        description = {
            "model_config": config.model.model_dump(mode="json"),
            "num_features": num_features,
            "num_frames": num_frames,
            "classes": self.classes,
        }
        return BuiltModel(model, description)

    def load_model(self, description: Mapping[str, Any]) -> torch.nn.Module:
        self.classes = list(description["classes"])
        model = KwsModelConfig(**description["model_config"])
        return kws_model(model, description["num_features"], len(self.classes))

    def augment(self, batch: ClipBatch, generator: torch.Generator) -> ClipBatch:
        if not batch.is_audio:
            return batch
        training = self.config.training
        shift = round(training.time_shift_ms * self._feature_settings().sampling_rate / 1000)
        audio = shift_clips(batch.values, shift, generator)
        audio = mix_noise(
            audio,
            self.noise,
            training.noise_probability,
            training.min_snr_db,
            training.max_snr_db,
            generator,
        )
        return ClipBatch(self.features(batch._replace(values=audio)), batch.labels, False)

    def forward(
        self, model: torch.nn.Module, batch: ClipBatch, device: torch.device
    ) -> torch.Tensor:
        return model(self.features(batch).to(device))

    def loss(self, outputs: torch.Tensor, batch: ClipBatch, device: torch.device) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(
            outputs.float(),
            batch.labels.to(device),
            label_smoothing=self.config.training.label_smoothing,
        )

    def batch_size(self, batch: ClipBatch) -> int:
        return len(batch.labels)

    def _logits(
        self, model: torch.nn.Module, loader: DataLoader, device: torch.device
    ) -> torch.Tensor:
        store = loader.dataset
        features = self.features(
            ClipBatch(
                store.values[..., 0] if store.is_audio else store.values,
                store.labels,
                store.is_audio,
            )
        )
        return predict_logits(model, features, device, loader.batch_sampler.batch_size or 256)

    def dev_metric(self, model: torch.nn.Module, loader: DataLoader, device: torch.device) -> float:
        logits = self._logits(model, loader, device)
        return accuracy(loader.dataset.labels.numpy(), logits.argmax(dim=1).numpy())

    def describe_metric(self, value: float) -> str:
        return f"dev accuracy {100 * value:.2f}%"

    def result_header(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        return {"training_dev_accuracy": saved[self.metric]}

    def evaluate(
        self,
        model: torch.nn.Module,
        saved: Mapping[str, Any],
        role: str,
        partition: str,
        run: RunFolder,
    ) -> dict[str, Any]:
        """Accuracy, per-class precision/recall; ``<role>.confusion.csv`` and ``.png``; backends."""
        evaluation = self.config.evaluation
        loader = self.open_loader(partition, shuffle=False, batch_size=evaluation.batch_size)
        store = loader.dataset
        started = time.perf_counter()
        logits = self._logits(model, loader, torch.device(evaluation.device))
        seconds = time.perf_counter() - started
        labels, predictions = store.labels.numpy(), logits.argmax(dim=1).numpy()
        counts = confusion_matrix(labels, predictions, len(self.classes))
        write_confusion_csv(run.path / f"{role}.confusion.csv", counts, self.classes)
        title = (
            f"{self.config.info.name} {role}: accuracy {100 * accuracy(labels, predictions):.1f}%"
        )
        write_confusion_png(run.path / f"{role}.confusion.png", counts, self.classes, title)
        entry: dict[str, Any] = {
            "partition": partition,
            "accuracy": accuracy(labels, predictions),
            "clips": len(labels),
            "per_class": per_class_scores(counts, self.classes),
            "scoring_seconds": round(seconds, 3),
        }
        backend = evaluation.backend
        if backend.onnx or backend.int8:
            from speechbed.deployment.backends import score_backends

            calibration = ClipStore(
                self.config.data.feature_store(self.config.data.train_partition)
            )
            scores = score_backends(
                model.cpu(),
                store.values,
                labels,
                logits.numpy(),
                calibration.values,
                backend,
                run.path / "deployment",
            )
            entry["backends"] = scores
            entry.update({f"{name}_accuracy": score["accuracy"] for name, score in scores.items()})
        shown = ", ".join(
            f"{name} {100 * entry[name + '_accuracy']:.2f}%" for name in entry.get("backends", {})
        )
        print(
            f"{self.config.info.name} {role} ({partition}): accuracy {100 * entry['accuracy']:.2f}% "
            f"of {len(labels)} clips" + (f"; {shown}" if shown else "")
        )
        return entry
