"""KWS speed: our batched torch MFCC/melspec of 1 s clips against librosa, and TC-ResNet8 per clip.

Run by `make bench` (benchmarks/run_all.py) or `.venv/bin/python benchmarks/run_all.py kws`.
Both feature sides run in this process on the same 256 clips of speech-like audio; the model
rows time batch-1 inference of TC-ResNet8 in torch and ONNX Runtime (float and int8).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from speechbed.deployment.costs import latency_per_clip
from speechbed.deployment.onnx_backend import export_onnx, open_session, quantize_int8
from speechbed.features.clip_computers import ClipFeatureComputer
from speechbed.features.clip_settings import NAMED_CLIP_FEATURES
from speechbed.models.tc_resnet import TCResNet

NUM_CLIPS = 256
BATCH_SIZE = 64
REPEATS = 3
TARGET_SPEEDUP = 10.0
LATENCY_CLIPS = 200
#: librosa's arguments for our settings (HANNAH's MFCC: 30 ms in 512 points, 10 ms, 20-4000 Hz).
LIBROSA = {
    "sr": 16000, "n_fft": 512, "hop_length": 160, "win_length": 480,
    "center": True, "pad_mode": "constant", "n_mels": 40, "fmin": 20.0, "fmax": 4000.0,
}  # fmt: skip


def _clips(rng: np.random.Generator) -> np.ndarray:
    time_axis = np.arange(16000) / 16000
    clips = []
    for _ in range(NUM_CLIPS):
        pitch = 120 + 60 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * time_axis)
        phase = 2 * np.pi * np.cumsum(pitch) / 16000
        voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
        envelope = np.clip(np.sin(2 * np.pi * rng.uniform(1, 3) * time_axis), 0, None)
        clips.append(0.1 * envelope * voiced + 0.01 * rng.standard_normal(16000))
    return np.stack(clips).astype(np.float32)


def _best(function: Callable[[], object], repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    import librosa

    torch.set_num_threads(1)
    clips = _clips(np.random.default_rng(0))
    rows = []
    for kind in ("mfcc", "melspec"):
        computer = ClipFeatureComputer(NAMED_CLIP_FEATURES[kind])

        def ours(computer: ClipFeatureComputer = computer) -> None:
            with torch.no_grad():
                for start in range(0, NUM_CLIPS, BATCH_SIZE):
                    computer(torch.from_numpy(clips[start : start + BATCH_SIZE]))

        def theirs(kind: str = kind) -> None:
            for clip in clips:
                if kind == "mfcc":
                    librosa.feature.mfcc(y=clip, n_mfcc=40, **LIBROSA)
                else:
                    librosa.power_to_db(librosa.feature.melspectrogram(y=clip, **LIBROSA))

        theirs()  # librosa's first call compiles and caches (numba, filter banks)
        ours_seconds, theirs_seconds = _best(ours), _best(theirs)
        ratio = theirs_seconds / ours_seconds
        verdict = "ok" if ratio >= TARGET_SPEEDUP else "BELOW TARGET"
        rows.append((f"{kind} librosa (clip by clip)", theirs_seconds, "1.0x", ""))
        rows.append(
            (f"{kind} speechbed (batches of {BATCH_SIZE})", ours_seconds, f"{ratio:.1f}x", verdict)
        )
    print(
        f"{NUM_CLIPS} clips of 1 s; torch on 1 CPU thread; best of {REPEATS}; on a shared machine "
        f"timings are noisy; target: >= {TARGET_SPEEDUP:.0f}x librosa"
    )
    width = max(len(row[0]) for row in rows)
    print(f"{'what':<{width}}  {'seconds':>8}  {'speed':>7}  {'x RTF':>7}  verdict")
    for label, seconds, ratio, verdict in rows:
        print(
            f"{label:<{width}}  {seconds:8.3f}  {ratio:>7}  {NUM_CLIPS / seconds:7.0f}  {verdict}"
        )

    model = TCResNet(40, 12).eval()
    features = ClipFeatureComputer(NAMED_CLIP_FEATURES["mfcc"])(torch.from_numpy(clips)).detach()
    model.standardize.fit(features.reshape(-1, 40))
    with tempfile.TemporaryDirectory() as folder:
        float_path = export_onnx(model, features[:1], Path(folder) / "model.onnx")
        int8_path = quantize_int8(
            float_path, Path(folder) / "model.int8.onnx", features[:64].numpy()
        )
        sample = features[:LATENCY_CLIPS].numpy()
        with torch.no_grad():
            reference = latency_per_clip(lambda clip: model(torch.from_numpy(clip)), sample)
        print(
            f"\nTC-ResNet8 (40 MFCCs, 12 classes), batch 1, 1 thread, median of {LATENCY_CLIPS} clips:"
        )
        print(f"{'backend':<12}  {'ms/clip':>8}  {'speed':>7}")
        print(f"{'torch':<12}  {reference['median_ms']:8.3f}  {'1.0x':>7}")
        for name, path in (("onnxruntime", float_path), ("ort int8", int8_path)):
            session = open_session(path)
            timing = latency_per_clip(
                lambda clip, s=session: s.run(None, {"features": clip}), sample
            )
            print(
                f"{name:<12}  {timing['median_ms']:8.3f}  {reference['median_ms'] / timing['median_ms']:6.1f}x"
            )


if __name__ == "__main__":
    main()
