"""Streaming normalisation of log-mel frames: the training set's statistics, then running ones.

scripts/dump_mel_stats.py dumps a training set's per-bin means and variances of the un-normalised
log-mel frames (``dump_mel_stats``); the rnnt task's validation and the deployment checkpoint
(speechbed.deployment.rnnt_checkpoint) normalise with ``StreamingNormalizer``, frame by frame,
as a streaming server does, instead of with each whole utterance's statistics.

For each frame x_t (per bin), with alpha the weight of the newest frame::

    m_t = (1 - alpha) m_{t-1} + alpha x_t
    v_t = (1 - alpha) v_{t-1} + alpha (x_t - m_t)^2
    y_t = (x_t - m_t) / (sqrt(v_t) + STD_GUARD)

m_0 and v_0 are the dumped means and variances. The running statistics are either carried
from one utterance to the next (a server that never restarts) or reset to the dumped ones at
every utterance (``reset_stream_stats``). Padded frames neither update them nor are kept (0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from speechbed.errors import UserInputError
from speechbed.features.log_mel import STD_GUARD, LogMelFrontEnd, LogMelSettings
from speechbed.jobs import JobSchema, input_path, output_path
from speechbed.outputs import atomic_output

#: The files of a statistics folder (torch tensors and NumPy arrays of the same values).
MEANS, VARIANCES, COUNT = "melmeans", "melvars", "meln"
DEFAULT_ALPHA = 0.001

#: (B, N) padded audio and sample counts -> (B, T, F) un-normalised log-mel frames and counts.
LogMelFunction = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class MelStatistics:
    """Per-bin mean and (unbiased) variance of log-mel frames, and how many frames."""

    mean: torch.Tensor  # (F,) float64
    variance: torch.Tensor  # (F,) float64
    count: int

    def __post_init__(self) -> None:
        if self.mean.shape != self.variance.shape or self.mean.dim() != 1:
            raise ValueError(
                f"mean {tuple(self.mean.shape)} and variance {tuple(self.variance.shape)} "
                "must be vectors of the same length"
            )

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            MEANS: self.mean.numpy(),
            VARIANCES: self.variance.numpy(),
            COUNT: np.array(self.count, dtype=np.int64),
        }

    @classmethod
    def from_arrays(cls, arrays: dict, source: str = "<arrays>") -> MelStatistics:
        try:
            mean = torch.as_tensor(np.asarray(arrays[MEANS]), dtype=torch.float64)
            variance = torch.as_tensor(np.asarray(arrays[VARIANCES]), dtype=torch.float64)
            count = int(np.asarray(arrays[COUNT]))
        except KeyError as missing:
            raise UserInputError(f"{source}: mel statistics lack {missing}") from None
        try:
            return cls(mean, variance, count)
        except ValueError as error:
            raise UserInputError(f"{source}: {error}") from None


class StatisticsAccumulator:
    """Sums of frames and of their squares per bin, in float64 (one pass over a training set)."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None
        self.count = 0

    def add(self, features: torch.Tensor, frames: torch.Tensor) -> None:
        """(B, T, F) features of which the first ``frames[b]`` of row b are real."""
        valid = torch.arange(features.shape[1])[None, :] < frames.cpu()[:, None]
        chosen = features.detach().cpu().double()[valid]  # (frames, F)
        if self.total is None:
            self.total = chosen.new_zeros(chosen.shape[1])
            self.squares = chosen.new_zeros(chosen.shape[1])
        self.total += chosen.sum(0)
        self.squares += chosen.square().sum(0)
        self.count += chosen.shape[0]

    def result(self) -> MelStatistics:
        if self.total is None or self.count < 2:
            raise UserInputError("mel statistics need at least two frames")
        mean = self.total / self.count
        variance = (self.squares - self.count * mean.square()) / (self.count - 1)
        return MelStatistics(mean, variance.clamp(min=0.0), self.count)


def dump_mel_stats(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]], log_mel: LogMelFunction
) -> MelStatistics:
    """The statistics of ``log_mel``'s un-normalised frames over (audio, sample counts) batches."""
    accumulator = StatisticsAccumulator()
    with torch.no_grad():
        for audio, counts in batches:
            features, frames = log_mel(audio, counts)
            accumulator.add(features, frames)
    return accumulator.result()


def save_mel_statistics(statistics: MelStatistics, folder: str | Path) -> None:
    """``folder/{melmeans,melvars,meln}.{pt,npy}``, written as one atomic folder."""
    with atomic_output(folder) as temporary:
        temporary.mkdir()
        for name, array in statistics.to_arrays().items():
            np.save(temporary / f"{name}.npy", array)
            torch.save(torch.from_numpy(np.array(array)), temporary / f"{name}.pt")


def load_mel_statistics(folder: str | Path) -> MelStatistics:
    """The statistics saved by ``save_mel_statistics`` (from the torch files)."""
    folder = Path(folder)
    arrays = {}
    for name in (MEANS, VARIANCES, COUNT):
        path = folder / f"{name}.pt"
        try:
            arrays[name] = torch.load(path, weights_only=True).numpy()
        except FileNotFoundError:
            raise UserInputError(
                f"{path}: mel statistics not found (make them with scripts/dump_mel_stats.py)"
            ) from None
    return MelStatistics.from_arrays(arrays, str(folder))


class DumpMelStatsJob(JobSchema):
    """scripts/dump_mel_stats.py's job: the training manifests, the front end, the output."""

    manifests: list[Path] = input_path(
        min_length=1,
        description="the training partition's manifests (JSON, speechbed.corpora.asr_manifest), "
        "e.g. [${CACHE_DIRECTORY}/synthetic_librispeech/wav/train-clean-100.json]",
    )
    output_path: Path = output_path(
        description=f"folder to write: {MEANS}, {VARIANCES} and {COUNT}, each .pt and .npy"
    )
    num_mels: int = Field(80, ge=1, description="mel bands (the run's model.num_mels)")
    fft_size: int = Field(512, ge=16, description="FFT points (the run's model.fft_size)")
    window_seconds: float = Field(
        0.02, gt=0.0, description="window, seconds (model.window_seconds)"
    )
    hop_seconds: float = Field(0.01, gt=0.0, description="frame shift, seconds (model.hop_seconds)")
    preemphasis: float = Field(0.97, ge=0.0, lt=1.0, description="pre-emphasis (model.preemphasis)")
    batch_size: int = Field(16, ge=1, description="utterances per front-end batch")
    max_duration: float | None = Field(
        None, gt=0.0, description="leave out utterances longer than this (seconds), as training"
    )


def run_dump_mel_stats_job(job: DumpMelStatsJob, progress: bool = True) -> MelStatistics:
    """The statistics of the job's manifests through an undithered front end, saved."""
    from speechbed.corpora.asr_manifest import filter_by_duration, load_audio, read_manifest

    entries = [
        (entry, manifest.parent)
        for manifest in job.manifests
        for entry in filter_by_duration(read_manifest(manifest), job.max_duration)
    ]
    if not entries:
        raise UserInputError(f"{job.manifests[0]}: no utterances to compute statistics on")
    settings = LogMelSettings(
        num_mels=job.num_mels, fft_size=job.fft_size, window_seconds=job.window_seconds,
        hop_seconds=job.hop_seconds, preemphasis=job.preemphasis, dither=0.0,
    )  # fmt: skip
    front_end = LogMelFrontEnd(settings)

    def batches():
        starts = range(0, len(entries), job.batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="mel statistics", unit="batch")
        for start in starts:
            audio = [
                load_audio(entry, folder)
                for entry, folder in entries[start : start + job.batch_size]
            ]
            counts = torch.tensor([len(samples) for samples in audio])
            padded = torch.zeros((len(audio), int(counts.max())))
            for row, samples in enumerate(audio):
                padded[row, : len(samples)] = samples
            yield padded, counts

    statistics = dump_mel_stats(
        batches(), lambda audio, counts: front_end(audio, counts, normalize=False)
    )
    save_mel_statistics(statistics, job.output_path)
    return statistics


# --------------------------------------------------------------------------- normalising


class StreamingNormalizer:
    """Frame-by-frame normalisation with exponentially weighted running means and variances."""

    def __init__(
        self, statistics: MelStatistics, alpha: float = DEFAULT_ALPHA, reset_per_utterance=False
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.statistics = statistics
        self.alpha = alpha
        self.reset_per_utterance = reset_per_utterance
        self.mean = self.variance = torch.empty(0)
        self.reset()

    def reset(self) -> None:
        """Back to the dumped statistics (a carried stream restarts)."""
        self.mean = self.statistics.mean.clone()
        self.variance = self.statistics.variance.clone()

    def _run(
        self, features: torch.Tensor, frames: torch.Tensor, mean: torch.Tensor, variance
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows of (B, T, F) in parallel from (B, F) states; padded frames leave them alone."""
        keep = 1.0 - self.alpha
        output = torch.zeros_like(features)
        for t in range(features.shape[1]):
            inside = (t < frames)[:, None]
            frame = features[:, t]
            new_mean = keep * mean + self.alpha * frame
            new_variance = keep * variance + self.alpha * (frame - new_mean).square()
            mean = torch.where(inside, new_mean, mean)
            variance = torch.where(inside, new_variance, variance)
            normalised = (frame - mean) / (variance.sqrt() + STD_GUARD)
            output[:, t] = torch.where(inside, normalised, 0.0)
        return output, mean, variance

    def __call__(self, features: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, F) un-normalised frames, in stream order row by row -> normalised frames."""
        if features.dim() != 3 or features.shape[2] != self.statistics.mean.shape[0]:
            raise ValueError(
                f"features must be (batch, frames, {self.statistics.mean.shape[0]}), "
                f"got {tuple(features.shape)}"
            )
        dtype, device = features.dtype, features.device
        work = features.detach().to(torch.float64)
        frames = frames.to(device)
        if self.reset_per_utterance:
            batch = features.shape[0]
            start_mean = self.statistics.mean.to(device).expand(batch, -1)
            start_variance = self.statistics.variance.to(device).expand(batch, -1)
            output, _, _ = self._run(work, frames, start_mean, start_variance)
            return output.to(dtype)
        rows = []
        mean, variance = self.mean.to(device)[None], self.variance.to(device)[None]
        for row in range(features.shape[0]):  # a carried stream: one utterance after another
            output, mean, variance = self._run(
                work[row : row + 1], frames[row : row + 1], mean, variance
            )
            rows.append(output)
        self.mean, self.variance = mean[0].cpu(), variance[0].cpu()
        return torch.cat(rows).to(dtype)
