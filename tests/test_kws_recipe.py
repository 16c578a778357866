"""The kws recipe end to end on the tiny synthetic Speech Commands: corpus, manifests, clip stores,
a TC-ResNet8 trained through the one trainer with audio augmentation, evaluation with the
ONNX Runtime and int8 backends; and the augmentation against brute-force references."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import yaml

from speechbed.corpora.speech_commands import prepare_speech_commands
from speechbed.corpora.synthetic_speech_commands import make_synthetic_speech_commands
from speechbed.features.cache import FeatureCache
from speechbed.features.clip_build import build_clip_store
from speechbed.tasks.kws.augmentation import mix_noise, shift_clips

#: The int8 model's test accuracy may fall at most this far below the float model's.
INT8_TOLERANCE = 0.10


@pytest.fixture(scope="module")
def tiny_stores(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("kws")
    make_synthetic_speech_commands(root / "corpus", "tiny", seed=0, progress=False)
    prepare_speech_commands(root / "corpus", root / "manifests")
    for feature in ("mfcc", "raw"):
        for partition in ("train", "dev", "test", "noise"):
            build_clip_store(root / "manifests", partition, feature, root / feature, progress=False)
    return root


def run_config(root: Path, run_dir: Path, **training: object) -> dict:
    return {
        "task": "kws",
        "info": {"name": "tiny", "seed": 1, "run_dir": str(run_dir)},
        "data": {
            "cache_directory": str(root / "mfcc"),
            "audio_directory": str(root / "raw"),
            "batch_size": 16,
        },
        "model": {"architecture": "tc-resnet"},
        "training": {
            "optimizer": "adam",
            "log10_learning_rate": -2.5,
            "num_epochs": 20,
            "num_threads": 1,
            "label_smoothing": 0.1,
            "time_shift_ms": 100,
            "noise_probability": 0.5,
            "min_snr_db": 10,
            "max_snr_db": 30,
            **training,
        },
        "evaluation": {"backend": {"onnx": True, "int8": True, "calibration_clips": 64}},
    }


def test_tiny_model_well_above_chance_and_its_backends(tiny_stores: Path, tmp_path: Path) -> None:
    from speechbed.training.config import RunConfig
    from speechbed.training.evaluation import evaluate_run
    from speechbed.training.loop import train_run

    config = RunConfig.model_validate(run_config(tiny_stores, tmp_path / "run"))
    assert type(config).__name__.startswith("Kws")
    summary = train_run(config, progress=False)
    results = evaluate_run(config)
    test = results["test"]
    chance = 1 / 12  # 12 balanced classes: 4 clips of each in the tiny test partition
    assert test["accuracy"] >= 0.4 > 4 * chance, test["accuracy"]
    assert summary.best_epoch >= 1
    # ONNX Runtime computes what torch does: logits within 1e-4, the same accuracy
    onnx = test["backends"]["onnx"]
    assert onnx["max_abs_difference"] < 1e-4
    assert onnx["accuracy"] == test["accuracy"]
    int8 = test["backends"]["int8"]
    assert int8["accuracy"] >= test["accuracy"] - INT8_TOLERANCE
    assert int8["bytes"] < onnx["bytes"] / 2
    # confusion matrices and per-class scores
    run = tmp_path / "run"
    rows = (run / "test.confusion.csv").read_text().splitlines()
    assert rows[0].split(",")[1:3] == ["silence", "unknown"] and len(rows) == 13
    counts = np.array([[int(v) for v in row.split(",")[1:]] for row in rows[1:]])
    assert counts.sum() == test["clips"] and np.trace(counts) == round(
        test["accuracy"] * test["clips"]
    )
    assert (run / "dev.confusion.png").read_bytes()[:4] == b"\x89PNG"
    recall = test["per_class"]["yes"]["recall"]
    assert recall == counts[2, 2] / counts[2].sum()
    saved = json.loads((run / "results.json").read_text())
    assert saved["test_accuracy"] == test["accuracy"]
    # scripts/export.py on the trained run: deployment.json with every backend's figures
    job_file = tmp_path / "run.yml"
    job_file.write_text(yaml.safe_dump(run_config(tiny_stores, run)))
    export = _script("export")
    assert export.run_jobs_cli(export.ExportJob, export.run, None, ["-y", str(job_file)]) == 0
    report = json.loads((run / "deployment" / "deployment.json").read_text())
    assert report["torch"]["parameters"] == 65148 and report["torch"]["macs_per_clip"] == 1_563_264
    assert report["torch"]["accuracy"] == test["accuracy"] == report["onnx"]["accuracy"]
    assert report["int8"]["latency"]["median_ms"] > 0 and report["int8"]["latency"]["clips"] == 48


def _script(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"script_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_features_match_the_cache(tiny_stores: Path, tmp_path: Path) -> None:
    """Unaugmented audio batches get exactly the cached features (one computer for both)."""
    from speechbed.tasks.kws.data import ClipBatch
    from speechbed.training.config import RunConfig
    from speechbed.training.task import make_task

    config = RunConfig.model_validate(run_config(tiny_stores, tmp_path / "run"))
    task = make_task(config)
    loader = task.open_loader("train", shuffle=False, batch_size=8)
    audio = loader.dataset
    assert audio.is_audio and config.data.source("train") == tiny_stores / "raw" / "train.zarr"
    batch = ClipBatch(audio.values[:8, :, 0], audio.labels[:8], True)
    cached = FeatureCache(tiny_stores / "mfcc" / "train.zarr")
    expected = np.stack([cached.feats(i) for i in range(8)])
    np.testing.assert_allclose(task.features(batch).numpy(), expected, atol=1e-4)


def test_augmentation_needs_audio(tiny_stores: Path, tmp_path: Path) -> None:
    from speechbed.training.config import RunConfig

    mapping = run_config(tiny_stores, tmp_path / "run")
    del mapping["data"]["audio_directory"]
    with pytest.raises(ValueError, match="data.audio_directory"):
        RunConfig.model_validate(mapping)


def test_time_shift_against_brute_force() -> None:
    audio = torch.arange(1, 2 * 50 + 1, dtype=torch.float32).reshape(2, 50)
    generator = torch.Generator().manual_seed(3)
    shifted = shift_clips(audio, 7, generator)
    shifts = torch.randint(-7, 8, (2,), generator=torch.Generator().manual_seed(3))
    for row, shift in enumerate(shifts.tolist()):
        expected = [audio[row, t - shift].item() if 0 <= t - shift < 50 else 0.0 for t in range(50)]
        assert shifted[row].tolist() == expected


def test_noise_at_the_drawn_snr() -> None:
    rng = np.random.default_rng(0)
    audio = torch.from_numpy(rng.normal(0, 0.3, (64, 16000)).astype(np.float32))
    noise = torch.from_numpy(rng.normal(0, 0.05, (5, 16000)).astype(np.float32))
    mixed = mix_noise(audio, noise, 1.0, 5.0, 5.0, torch.Generator().manual_seed(0))
    added = mixed - audio
    snr = 10 * torch.log10(audio.pow(2).mean(1) / added.pow(2).mean(1))
    torch.testing.assert_close(snr, torch.full((64,), 5.0), atol=1e-3, rtol=0)
    untouched = mix_noise(audio, noise, 0.0, 5.0, 5.0, torch.Generator())
    assert torch.equal(untouched, audio)
    half = mix_noise(audio, noise, 0.5, 0.0, 20.0, torch.Generator().manual_seed(1))
    changed = (half != audio).any(dim=1).float().mean().item()
    assert 0.25 < changed < 0.75
