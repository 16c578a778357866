"""Training throughput of the demo-sized lcorr and mcorr acoustic models on CPU (forward + backward),
and the cost of the trainer's own step (gradient norm, clipping, weight average) on lcorr.

Run by ``make bench`` (benchmarks/run_all.py); the baseline is the lcorr model measured in the same run.
"""

from __future__ import annotations

import time

import torch

from speechbed.models import build_model
from speechbed.tasks.ctc_phones import BLANK_INDEX, NUM_CLASSES, acoustic_settings
from speechbed.tasks.ctc_phones.config import AcousticModelConfig as ModelConfig
from speechbed.training.ema import WeightAverage
from speechbed.training.optimization import GradientStep

#: The demo-sized model (the one reported for experiments/demo.yml: about 12% dev PER on the
#: small synthetic corpus after 7 epochs); only convolutional_mellin differs between the two.
DEMO_MODEL = {
    "use_log_compression": True,
    "window_size": 5,
    "window_stride": 3,
    "convolutional_layers": 2,
    "convolutional_initial_channels": 8,
    "convolutional_kernel_time": 3,
    "convolutional_kernel_freq": 5,
    "convolutional_freq_factor": 2,
    "convolutional_channel_factor": 2,
    "recurrent_type": "GRU",
    "recurrent_size": 96,
    "recurrent_layers": 2,
    "recurrent_bidirectional": True,
}
BATCH_SIZE = 8
NUM_FEATURES = 81
REPEATS = 5


def make_batch(
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """BATCH_SIZE utterances of 150-300 frames (1.5-3 s at 10 ms), a phone per 8 frames."""
    lengths = torch.randint(150, 301, (BATCH_SIZE,), generator=generator)
    features = torch.randn(BATCH_SIZE, int(lengths.max()), NUM_FEATURES, generator=generator)
    target_lengths = lengths // 8
    targets = torch.randint(0, BLANK_INDEX, (int(target_lengths.sum()),), generator=generator)
    return features, lengths, targets, target_lengths


def time_steps(mellin: bool, batch: tuple) -> float:
    """Median seconds of one forward + backward + Adam step over REPEATS steps (after a warm-up)."""
    settings = acoustic_settings(ModelConfig(**DEMO_MODEL, convolutional_mellin=mellin))
    model = build_model(settings, NUM_FEATURES, NUM_CLASSES, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    ctc = torch.nn.CTCLoss(blank=BLANK_INDEX, zero_infinity=True)
    features, lengths, targets, target_lengths = batch
    times = []
    for repeat in range(REPEATS + 1):
        started = time.perf_counter()
        logits, counts = model(features, lengths)
        loss = ctc(logits.log_softmax(-1).transpose(0, 1), targets, counts, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if repeat:  # the first step warms caches and index maps
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def time_trainer_steps(batch: tuple, watched: bool, average: bool) -> float:
    """Median seconds of one lcorr training step through the trainer's GradientStep, with the
    gradient norm measured and clipped (``watched``) and a weight average updated (``average``)."""
    settings = acoustic_settings(ModelConfig(**DEMO_MODEL))
    model = build_model(settings, NUM_FEATURES, NUM_CLASSES, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = GradientStep(
        optimizer, torch.amp.GradScaler("cpu", enabled=False), 1, 1.0 if watched else None
    )
    weights = WeightAverage(model, 0.999) if average else None
    ctc = torch.nn.CTCLoss(blank=BLANK_INDEX, zero_infinity=True)
    features, lengths, targets, target_lengths = batch
    times = []
    for repeat in range(REPEATS + 1):
        started = time.perf_counter()
        logits, counts = model(features, lengths)
        loss = ctc(logits.log_softmax(-1).transpose(0, 1), targets, counts, target_lengths)
        step(loss, 0, 1)
        if weights is not None:
            weights.update(model)
        if repeat:
            times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def main() -> None:
    # one thread: on a machine whose cores are shared, OpenMP threads spinning for a busy core
    # make multi-threaded steps many times slower (and the numbers meaningless)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    batch = make_batch(torch.Generator().manual_seed(0))
    frames = int(batch[1].sum())
    rows = []
    for name, mellin in (("lcorr", False), ("mcorr", True)):
        seconds = time_steps(mellin, batch)
        rows.append((name, seconds, BATCH_SIZE / seconds, frames / seconds))
    # the trainer's own step: gradient norm always measured, clipping and the weight average
    for name, watched, average in (
        ("lcorr, trainer step (norm)", False, False),
        ("  + clipping", True, False),
        ("  + clipping + EMA", True, True),
    ):
        seconds = time_trainer_steps(batch, watched, average)
        rows.append((name, seconds, BATCH_SIZE / seconds, frames / seconds))
    baseline = rows[0][1]
    print(
        f"CPU, torch {torch.__version__}, {torch.get_num_threads()} threads; batch of {BATCH_SIZE} "
        f"utterances, {frames} frames x {NUM_FEATURES}; median of {REPEATS} steps (fwd+bwd+Adam)"
    )
    print(f"{'model':<28}{'s/batch':>10}{'utt/s':>10}{'frames/s':>12}{'time / lcorr':>15}")
    for name, seconds, utterances, frame_rate in rows:
        print(
            f"{name:<28}{seconds:>10.3f}{utterances:>10.1f}{frame_rate:>12.0f}"
            f"{seconds / baseline:>15.2f}"
        )


if __name__ == "__main__":
    main()
