"""A run's inputs besides its partitions (``RunConfig.training_inputs``/``evaluation_inputs``):
rnnt's tokenizer, fine-tune checkpoint and mel statistics are fingerprinted, so rewriting one
makes the trained run or its results stale, while the other tasks keep their fingerprints.

Unit tests of the run identity on fake files, then tiny one-epoch rnnt runs on the tone corpus
of tests/test_rnnt_task.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_rnnt_task import SENTENCES, run_config, tone_corpus  # noqa: F401 (a fixture)

from speechbed.corpora.tokenizer import TokenizerSettings, train_tokenizer
from speechbed.errors import UserInputError
from speechbed.features.streaming_normalization import DumpMelStatsJob, run_dump_mel_stats_job
from speechbed.lineage import digest, fingerprint
from speechbed.tasks import TASKS
from speechbed.training.config import RunConfig, run_config_class
from speechbed.training.evaluation import EvaluationJob, _input_fingerprints, evaluate_run
from speechbed.training.loop import TrainingJob, train_run
from speechbed.training.run_lineage import (
    TRAINING_CODE_VERSION,
    RunIdentity,
    settings_fingerprint,
)

TRAINING = {"num_epochs": 1, "num_threads": 1, "seed": 0, "log10_learning_rate": -2.0}


def _fake_rnnt(root: Path, **sections) -> RunConfig:
    """An rnnt config over fake manifests, tokenizer, checkpoint and statistics (never read)."""
    (root / "wav").mkdir(parents=True)
    for partition in ("train", "dev", "test"):
        (root / "wav" / f"{partition}.json").write_text(f"[] {partition}")
    (root / "spm").mkdir()
    (root / "spm" / "tokenizer.model").write_bytes(b"pieces v1")
    (root / "start.pt").write_bytes(b"weights v1")
    (root / "stats").mkdir()
    (root / "stats" / "means.npy").write_bytes(b"means v1")
    return run_config(root, data={"mel_statistics": str(root / "stats")}, **sections)


def _with(config: RunConfig, section: str, **changes) -> RunConfig:
    return config.model_copy(update={section: getattr(config, section).model_copy(update=changes)})


def test_other_tasks_name_no_inputs_and_keep_their_fingerprint(tmp_path):
    for task in sorted(set(TASKS) - {"rnnt"}):
        config_class = run_config_class(task)
        assert config_class.training_inputs is RunConfig.training_inputs, task
        assert config_class.evaluation_inputs is RunConfig.evaluation_inputs, task
    cache = tmp_path / "cache"
    for partition in ("train", "dev"):
        (cache / f"{partition}.zarr").mkdir(parents=True)
        (cache / f"{partition}.zarr" / "frames").write_bytes(partition.encode())
    config = TrainingJob.model_validate(
        {"info": {"run_dir": str(tmp_path / "run")}, "data": {"cache_directory": str(cache)}}
    )
    identity = RunIdentity.of(config)
    stores = {name: fingerprint(cache / f"{name}.zarr") for name in ("train", "dev")}
    # the formula runs were fingerprinted with before runs recorded other inputs
    before = digest(
        ["run", settings_fingerprint(config), json.dumps(stores, sort_keys=True),
         f"code {TRAINING_CODE_VERSION}"]
    )  # fmt: skip
    assert identity.record() == {
        "fingerprint": before,
        "settings_fingerprint": settings_fingerprint(config),
        "data_fingerprints": stores,
        "code_version": TRAINING_CODE_VERSION,
    }
    assert config.lineage_paths()[0] == [cache / "train.zarr", cache / "dev.zarr"]


def test_rnnt_records_its_inputs_and_says_which_changed(tmp_path):
    config = _fake_rnnt(tmp_path)
    assert config.training_inputs() == {"data.tokenizer": tmp_path / "spm"}
    assert config.evaluation_inputs() == {"data.mel_statistics": tmp_path / "stats"}
    tuned = _with(config, "training", fine_tune=True, checkpoint=tmp_path / "start.pt")
    streamed = _with(tuned, "evaluation", normalizations=["stream_carried", "utterance"])
    assert streamed.training_inputs() == {
        "data.tokenizer": tmp_path / "spm",
        "training.checkpoint": tmp_path / "start.pt",
        "data.mel_statistics": tmp_path / "stats",
    }

    identity = RunIdentity.of(tuned)
    recorded = identity.record()
    assert recorded["input_fingerprints"] == {
        "data.tokenizer": fingerprint(tmp_path / "spm"),
        "training.checkpoint": fingerprint(tmp_path / "start.pt"),
    }
    assert identity.difference(recorded, tuned) is None
    (tmp_path / "spm" / "tokenizer.model").write_bytes(b"pieces v2")
    assert RunIdentity.of(tuned).difference(recorded, tuned) == (
        False, "data.tokenizer changed since it was trained"
    )  # fmt: skip
    (tmp_path / "start.pt").write_bytes(b"weights v2")
    assert RunIdentity.of(tuned).difference(recorded, tuned) == (
        False,
        "data.tokenizer changed since it was trained; "
        "training.checkpoint changed since it was trained",
    )
    older = {key: value for key, value in recorded.items() if key != "input_fingerprints"}
    assert RunIdentity.of(tuned).difference(older, tuned) == (
        False,
        "data.tokenizer was not recorded when it was trained; "
        "training.checkpoint was not recorded when it was trained",
    )
    # the dev metric normalised with the statistics: they became a training input
    assert RunIdentity.of(streamed).difference(RunIdentity.of(tuned).record(), streamed) == (
        False, "data.mel_statistics was not recorded when it was trained"
    )  # fmt: skip


def test_the_jobs_name_the_inputs_for_the_pipeline(tmp_path):
    config = _fake_rnnt(tmp_path)
    document = config.model_dump(mode="json")
    document["training"].update(fine_tune=True, checkpoint=str(tmp_path / "start.pt"))
    wav, run = tmp_path / "wav", tmp_path / "run"
    assert TrainingJob.model_validate(document).lineage_paths() == (
        [wav / "train.json", wav / "dev.json", tmp_path / "spm", tmp_path / "start.pt"],
        [run, run / "model.pt"],
    )
    assert EvaluationJob.model_validate(document).lineage_paths() == (
        [run / "model.pt", wav / "dev.json", wav / "test.json", tmp_path / "stats"],
        [run / "results.json"],
    )


def test_a_missing_input_is_an_error_naming_its_key_and_path(tmp_path):
    config = _fake_rnnt(tmp_path)
    shutil.rmtree(tmp_path / "spm")
    with pytest.raises(UserInputError, match=r"data\.tokenizer: .*spm not found"):
        RunIdentity.of(config)
    (tmp_path / "spm").mkdir()
    tuned = _with(config, "training", fine_tune=True, checkpoint=tmp_path / "gone.pt")
    with pytest.raises(UserInputError, match=r"training\.checkpoint: .*gone\.pt not found"):
        RunIdentity.of(tuned)
    shutil.rmtree(tmp_path / "stats")
    with pytest.raises(UserInputError, match=r"data\.mel_statistics: .*stats not found"):
        _input_fingerprints(config, {})


def test_statistics_the_model_was_selected_with_must_not_change_at_evaluation(tmp_path):
    config = _fake_rnnt(tmp_path)
    streamed = _with(config, "evaluation", normalizations=["stream_reset"])
    saved = RunIdentity.of(streamed).record()
    assert _input_fingerprints(streamed, saved) == saved["input_fingerprints"]
    (tmp_path / "stats" / "means.npy").write_bytes(b"means v2")
    with pytest.raises(UserInputError, match=r"trained with another data\.mel_statistics"):
        _input_fingerprints(streamed, saved)
    # as an evaluation input only, new statistics are simply recorded
    evaluated = _input_fingerprints(config, RunIdentity.of(config).record())
    assert evaluated["data.mel_statistics"] == fingerprint(tmp_path / "stats")


# Tiny runs on the tone corpus: one epoch each.


@pytest.fixture(scope="module")
def corpus(tone_corpus, tmp_path_factory):  # noqa: F811
    """The tone corpus with its own tokenizer copy and mel statistics (this module rewrites them)."""
    root = tmp_path_factory.mktemp("inputs")
    shutil.copytree(tone_corpus / "spm", root / "spm")
    job = DumpMelStatsJob(
        manifests=[tone_corpus / "wav" / "train.json"], output_path=root / "stats", num_mels=80
    )
    run_dump_mel_stats_job(job, progress=False)
    return tone_corpus, root


def _tone_run(corpus, run_dir: Path, **training) -> RunConfig:
    tones, root = corpus
    config = run_config(
        tones,
        data={"tokenizer": str(root / "spm"), "mel_statistics": str(root / "stats")},
        training={**TRAINING, **training},
    )
    config = _with(config, "info", run_dir=run_dir)
    return _with(
        config, "evaluation", partitions=["dev"], normalizations=["utterance", "stream_carried"]
    )


@pytest.fixture(scope="module")
def source_run(corpus, tmp_path_factory):
    torch.set_num_threads(1)
    config = _tone_run(corpus, tmp_path_factory.mktemp("source") / "run")
    train_run(config, progress=False)
    return config


def test_rewritten_tokenizer_makes_the_trained_run_stale(corpus, tmp_path, capsys):
    torch.set_num_threads(1)
    _, root = corpus
    tokenizer = tmp_path / "spm"
    shutil.copytree(root / "spm", tokenizer)
    config = _with(_tone_run(corpus, tmp_path / "run"), "data", tokenizer=tokenizer)
    train_run(config, progress=False)
    assert train_run(config, progress=False).skipped
    assert "already trained" in capsys.readouterr().out

    train_tokenizer(SENTENCES, tokenizer, TokenizerSettings(spm_size=14))
    summary = train_run(config, progress=False)
    out = capsys.readouterr().out
    assert not summary.skipped and summary.epochs_run == 1
    assert "data.tokenizer changed since it was trained; moved it to run.stale-" in out
    assert len(list(tmp_path.glob("run.stale-*"))) == 1
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert saved["input_fingerprints"] == {"data.tokenizer": fingerprint(tokenizer)}
    assert saved["num_tokens"] == 14


def test_changed_fine_tune_checkpoint_makes_the_tuned_run_stale(
    corpus, source_run, tmp_path, capsys
):
    start = tmp_path / "start.pt"
    shutil.copyfile(Path(source_run.info.run_dir) / "model.pt", start)
    config = _tone_run(corpus, tmp_path / "tuned", fine_tune=True, checkpoint=start)
    train_run(config, progress=False)
    assert train_run(config, progress=False).skipped
    capsys.readouterr()

    record = torch.load(start, weights_only=False)
    name = next(iter(record["model"]))
    record["model"][name] = record["model"][name] + 0.5
    torch.save(record, start)  # as if the source run were trained again
    assert not train_run(config, progress=False).skipped
    out = capsys.readouterr().out
    assert "training.checkpoint changed since it was trained; moved it to tuned.stale-" in out
    saved = torch.load(tmp_path / "tuned" / "model.pt", weights_only=False)
    assert saved["input_fingerprints"]["training.checkpoint"] == fingerprint(start)


def test_new_mel_statistics_recompute_the_results(corpus, source_run, capsys):
    tones, root = corpus
    first = evaluate_run(source_run)
    run_dir = Path(source_run.info.run_dir)
    trained = torch.load(run_dir / "model.pt", weights_only=False)["input_fingerprints"]
    assert first["input_fingerprints"] == {
        **trained, "data.mel_statistics": fingerprint(root / "stats")
    }  # fmt: skip
    capsys.readouterr()
    assert evaluate_run(source_run) == first
    assert "up to date; skipped" in capsys.readouterr().out

    job = DumpMelStatsJob(
        manifests=[tones / "wav" / "dev.json"], output_path=root / "stats", num_mels=80
    )
    run_dump_mel_stats_job(job, progress=False)  # other statistics, same folder
    second = evaluate_run(source_run)
    assert "skipped" not in capsys.readouterr().out
    assert second["input_fingerprints"]["data.mel_statistics"] == fingerprint(root / "stats")
    assert second["input_fingerprints"] != first["input_fingerprints"]
    written = json.loads((run_dir / "results.json").read_text())
    assert written["input_fingerprints"] == second["input_fingerprints"]
