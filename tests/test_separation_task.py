"""The separation task end to end on the tiny synthetic mixtures: config, training through the
one trainer, evaluation (results.json, per-mixture CSV, separated WAVs), every head.

The tiny synthetic TIMIT (about 5 s to speak) gives 48/12/12 two-speaker mixtures at 8 kHz; a
one-layer BLSTM of 32 units trained for a few epochs must beat the unprocessed mixture.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pydantic
import pytest
import soundfile
import torch

from speechbed.corpora.synthetic import make_synthetic_timit
from speechbed.corpora.synthetic_mixtures import MixingSettings, make_mixtures
from speechbed.corpora.timit import prepare_timit
from speechbed.corpora.wsj0_2mix import prepare_wsj0_2mix
from speechbed.errors import UserInputError
from speechbed.features.separation_job import SeparationFeatureSettings
from speechbed.features.separation_store import build_separation_store
from speechbed.tasks.separation.config import SeparationRunConfig
from speechbed.training.config import RunConfig
from speechbed.training.evaluation import evaluate_run
from speechbed.training.loop import train_run


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("separation")
    make_synthetic_timit(root / "timit", "tiny", 0, progress=False)
    prepare_timit(root / "timit", root / "timit_manifests")
    make_mixtures(root / "timit_manifests", root / "mixtures", MixingSettings(), progress=False)
    prepare_wsj0_2mix(root / "mixtures", root / "manifests", 8000, "max")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for partition in ("train", "dev", "test"):
            build_separation_store(
                root / "manifests",
                partition,
                SeparationFeatureSettings(),
                root / "cache",
                progress=False,
            )
    finally:
        torch.set_num_threads(threads)
    return root / "cache"


def run_config(cache: Path, run_dir: Path, heads: str, epochs: int, **evaluation) -> RunConfig:
    return RunConfig.model_validate(
        {
            "task": "separation",
            "info": {"name": heads, "seed": 0, "run_dir": str(run_dir)},
            "data": {"cache_directory": str(cache), "batch_size": 8, "segment_frames": 200},
            "model": {"heads": heads, "recurrent_size": 32, "recurrent_layers": 1},
            "training": {"num_epochs": epochs, "log10_learning_rate": -2, "num_threads": 1},
            "evaluation": {"bss_eval": False, "examples": 2, **evaluation},
        }
    )


def test_run_config_is_the_separation_config_with_strict_keys(tmp_path: Path) -> None:
    config = run_config(tmp_path, tmp_path / "run", "chimera", 1)
    assert isinstance(config, SeparationRunConfig)
    assert config.model.chimera_weight == 0.975 and config.data.segment_frames == 200
    assert config.data.source("dev") == tmp_path / "dev.zarr"
    with pytest.raises(pydantic.ValidationError, match="heads"):
        RunConfig.model_validate(
            {"task": "separation", "info": {"run_dir": "r"}, "data": {"cache_directory": "c"},
             "model": {"heads": "kmeans"}}
        )  # fmt: skip
    with pytest.raises(pydantic.ValidationError, match="embeding_dimension"):
        RunConfig.model_validate(
            {"task": "separation", "info": {"run_dir": "r"}, "data": {"cache_directory": "c"},
             "model": {"embeding_dimension": 3}}
        )  # fmt: skip


def test_missing_cache_is_a_clear_error(tmp_path: Path) -> None:
    config = run_config(tmp_path / "nowhere", tmp_path / "run", "mask", 1)
    with pytest.raises(UserInputError, match="no separation cache for partition 'train'"):
        train_run(config, progress=False)


def test_tiny_mask_network_beats_the_mixture(tiny_cache: Path, tmp_path: Path) -> None:
    config = run_config(tiny_cache, tmp_path / "mask", "mask", 5)
    summary = train_run(config, progress=False)
    assert summary.epochs_run == 5
    results = evaluate_run(config)
    assert results["score"] == {"key": "si_sdri", "lower_is_better": False, "is_percent": False}
    assert results["dev"]["si_sdri"] > 0.5  # dB over the mixture, on unseen speakers
    assert results["test"]["si_sdri"] > 0.0
    assert results["test_si_sdri"] == results["test"]["si_sdri"]
    assert results["test"]["mixtures"] == 12
    saved = json.loads((tmp_path / "mask" / "results.json").read_text())
    assert saved["separated_by"] == "mask"
    with open(tmp_path / "mask" / "test.scores.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 12
    mean = sum(float(row["si_sdri"]) for row in rows) / len(rows)
    assert mean == pytest.approx(results["test"]["si_sdri"], abs=1e-3)
    examples = sorted((tmp_path / "mask" / "separated" / "test").iterdir())
    assert len(examples) == 2
    names = sorted(path.name for path in examples[0].iterdir())
    assert names == ["estimate_1.wav", "estimate_2.wav", "mixture.wav"] + [
        "reference_1.wav",
        "reference_2.wav",
    ]
    assert soundfile.info(examples[0] / "estimate_1.wav").samplerate == 8000


def test_chimera_trains_and_separates_by_k_means(tiny_cache: Path, tmp_path: Path) -> None:
    config = run_config(
        tiny_cache, tmp_path / "chimera", "chimera", 1, output="clustering", partitions=["dev"],
        examples=0,
    )  # fmt: skip
    assert train_run(config, progress=False).epochs_run == 1
    results = evaluate_run(config)
    assert results["separated_by"] == "clustering"
    assert -30 < results["dev"]["si_sdri"] < 30
