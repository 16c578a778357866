"""The RNN-T recipe at scale and in deployment (issue 17), through the rnnt task on the tone
corpus of tests/test_rnnt_task.py: training from shards, evaluation with streaming
normalisation, predictions of a manifest without transcripts, the deployment checkpoint alone
transcribing files, fine-tuning (into hard LSTM cells) leaving the source run untouched."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from test_rnnt_task import SENTENCES, run_config, tone_corpus  # noqa: F401 (a fixture)

from speechbed.corpora.asr_manifest import read_manifest
from speechbed.corpora.shards import write_shards
from speechbed.features.streaming_normalization import DumpMelStatsJob, run_dump_mel_stats_job
from speechbed.tasks.rnnt.task import RnntTask

ROOT = Path(__file__).resolve().parents[1]
TRAINING = {
    "num_epochs": 40, "optimizer": "adam", "log10_learning_rate": -2.0, "max_grad_norm": 1.0,
    "ema_decay": 0.5, "seed": 0, "lr_schedule": "warmup_hold_decay", "warmup_steps": 1,
    "hold_steps": 1000, "half_life_steps": 1000, "min_lr": 1e-3,
}  # fmt: skip


def _folder_digests(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _with_run_dir(config, run_dir: Path):
    return config.model_copy(update={"info": config.info.model_copy(update={"run_dir": run_dir})})


@pytest.fixture(scope="module")
def statistics(tone_corpus):  # noqa: F811
    job = DumpMelStatsJob(
        manifests=[tone_corpus / "wav" / "train.json"], output_path=tone_corpus / "melstats"
    )
    run_dump_mel_stats_job(job, progress=False)
    return tone_corpus / "melstats"


@pytest.fixture(scope="module")
def trained(tone_corpus, statistics, tmp_path_factory):  # noqa: F811
    """A run trained from shards of the train manifest, evaluated in all three normalisations."""
    from speechbed.training.evaluation import evaluate_run
    from speechbed.training.loop import train_run

    torch.set_num_threads(1)
    entries = read_manifest(tone_corpus / "wav" / "train.json")
    shards = tone_corpus / "shards"
    write_shards(entries, tone_corpus / "wav", shards, 2, progress=False)
    run_dir = tmp_path_factory.mktemp("source")
    config = run_config(
        tone_corpus,
        data={"train_shards": str(shards), "shuffle_buffer": 4, "batch_size": 2,
              "mel_statistics": str(statistics)},
        training=TRAINING,
    )  # fmt: skip
    config = config.model_copy(
        update={
            "evaluation": config.evaluation.model_copy(
                update={"normalizations": ["utterance", "stream_carried", "stream_reset"],
                        "dump_predictions": True, "alpha": 0.01}
            )
        }
    )  # fmt: skip
    config = _with_run_dir(config, run_dir)
    summary = train_run(config, progress=False)
    results = evaluate_run(config)
    return config, summary, results


def test_trains_from_shards_and_scores_three_normalisations(trained):
    config, summary, results = trained
    assert summary.epochs_run == TRAINING["num_epochs"]
    entry = results["test"]
    for mode in ("utterance", "stream_carried", "stream_reset"):
        assert 0.0 <= entry[f"wer_{mode}"] <= 2.0
    assert entry["wer"] == entry["wer_utterance"] < 0.6  # it learned something
    run = Path(config.info.run_dir)
    predictions = (run / "test.preds.txt").read_text().splitlines()
    assert len(predictions) == len(SENTENCES)
    assert (run / "deployment.pt").is_file()


def test_predictions_of_a_manifest_without_transcripts(trained, tone_corpus):  # noqa: F811
    from speechbed.training.evaluation import evaluate_run

    config, _, results = trained
    run = Path(config.info.run_dir)
    labelled = (run / "test.preds.txt").read_text()
    records = json.loads((tone_corpus / "wav" / "test.json").read_text())
    for record in records:
        del record["transcript"]
    (tone_corpus / "wav" / "unlabelled.json").write_text(json.dumps(records))
    unlabelled = config.model_copy(
        update={
            "data": config.data.model_copy(update={"test_partition": "unlabelled"}),
            "evaluation": config.evaluation.model_copy(
                update={"partitions": ["test"], "normalizations": ["utterance"]}
            ),
        }
    )
    again = evaluate_run(unlabelled, force=True)
    assert again["test"]["wer"] is None and again["test"]["utterances"] == len(SENTENCES)
    assert (run / "test.preds.txt").read_text() == labelled  # the same audio, the same order
    without = _with_run_dir(unlabelled, run).model_copy(
        update={"evaluation": unlabelled.evaluation.model_copy(update={"dump_predictions": False})}
    )
    with pytest.raises(Exception, match="transcript"):
        evaluate_run(without, force=True)
    evaluate_run(config, force=True)  # the run's own results back for the other tests


def test_the_deployment_checkpoint_alone_transcribes_files(trained, tmp_path, capsys):
    config, _, _ = trained
    run = Path(config.info.run_dir)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "rnnt.pt").write_bytes((run / "deployment.pt").read_bytes())
    import soundfile

    from speechbed.corpora.asr_manifest import read_audio_16k

    wav = Path(config.data.data_folder) / "test" / "001.wav"
    flac = tmp_path / "001.flac"
    soundfile.write(flac, read_audio_16k(wav), 16000, subtype="PCM_16")
    spec = importlib.util.spec_from_file_location("transcribe", ROOT / "scripts/transcribe.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--model", str(alone / "rnnt.pt"), "--reset-stream-stats",
                        str(wav), str(flac)]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    streamed = [line.split("\t")[1] for line in lines]
    assert streamed[0] and streamed[0] == streamed[1]  # FLAC and WAV of the same samples
    # the same as evaluation's stream_reset decoding of that utterance
    task = RnntTask(config)
    from speechbed.run_folder import RunFolder
    from speechbed.training.model_file import load_trained_model

    model, _ = load_trained_model(task, RunFolder(run))
    loader = task.open_loader("test", shuffle=False)
    hypotheses, _ = task.transcribe(
        model, loader, torch.device("cpu"), task._normalizer("stream_reset")
    )
    assert streamed[0] == hypotheses["test/001"]
    # a run's model.pt: per-utterance normalisation, as test.hyp.trn
    assert script.main(["--model", str(run / "model.pt"), str(wav)]) == 0
    text = capsys.readouterr().out.split("\t")[1].strip()
    assert f"{text} (test/001)" in (run / "test.hyp.trn").read_text().splitlines()
    assert script.main(["--model", str(tmp_path / "none.pt"), str(wav)]) == 2
    assert "none.pt: not found" in capsys.readouterr().err


def test_fine_tuning_into_hard_cells_leaves_the_source_run_untouched(trained, tmp_path):
    from speechbed.training.evaluation import evaluate_run
    from speechbed.training.loop import train_run

    config, _, _ = trained
    source = Path(config.info.run_dir)
    before = _folder_digests(source)
    tuned = config.model_copy(
        update={
            "info": config.info.model_copy(update={"run_dir": tmp_path / "tuned", "name": "tuned"}),
            "model": config.model.model_copy(
                update={"lstm_gate_activation": "hard_sigmoid", "lstm_cell_activation": "hard_tanh"}
            ),
            "training": config.training.model_copy(
                update={"fine_tune": True, "checkpoint": source / "model.pt", "num_epochs": 1,
                        "lr_schedule": "warmup_hold_decay", "warmup_steps": 2, "hold_steps": 1,
                        "half_life_steps": 2, "min_lr": 1e-4}
            ),
        }
    )  # fmt: skip
    (tmp_path / "tuned").mkdir()
    built = RnntTask(tuned).build_model(None)
    saved = torch.load(source / "model.pt", weights_only=False)
    for key, value in saved["model"].items():  # the source's (EMA) weights, in hard cells
        assert torch.equal(built.model.state_dict()[key], value), key
    assert type(built.model.encoder_pre).__name__ == "HardLstm"
    assert train_run(tuned, progress=False).epochs_run == 1
    results = evaluate_run(tuned)
    assert results["test"]["wer"] is not None
    assert torch.load(tmp_path / "tuned/model.pt", weights_only=False)["lstm_activations"] == [
        "hard_sigmoid", "hard_tanh"]  # fmt: skip
    assert _folder_digests(source) == before
    with pytest.raises(ValueError, match="fine_tune: true needs checkpoint"):
        run_config(Path(config.data.data_folder).parent, training={"fine_tune": True})


def test_greedy_search_caps_symbols_per_utterance():
    from speechbed.decoding.transducer_search import transducer_greedy_search

    class AlwaysToken:  # emits token 1 whenever asked
        def predict(self, tokens, state, batch_size):
            return torch.zeros(batch_size, 1), state

        def join(self, encoded, predicted):
            return torch.tensor([0.0, 1.0, 0.0]).expand(encoded.shape[0], 3)

    encoded, lengths = torch.zeros(2, 5, 1), torch.tensor([5, 2])
    capped = transducer_greedy_search(AlwaysToken(), encoded, lengths, 2, 3, 7)
    assert [len(row) for row in capped] == [7, 6]
    uncapped = transducer_greedy_search(AlwaysToken(), encoded, lengths, 2, 3)
    assert [len(row) for row in uncapped] == [15, 6]


def test_dump_mel_stats_matches_utterance_by_utterance_frames(tone_corpus, statistics):  # noqa: F811
    from speechbed.corpora.asr_manifest import load_audio
    from speechbed.features.log_mel import LogMelFrontEnd, LogMelSettings
    from speechbed.features.streaming_normalization import load_mel_statistics

    front_end = LogMelFrontEnd(LogMelSettings(dither=0.0))
    frames = []
    for entry in read_manifest(tone_corpus / "wav" / "train.json"):
        audio = load_audio(entry, tone_corpus / "wav")
        features, _ = front_end(audio[None], torch.tensor([len(audio)]), normalize=False)
        frames.append(features[0].double())
    every = torch.cat(frames)
    loaded = load_mel_statistics(statistics)
    assert loaded.count == every.shape[0]
    torch.testing.assert_close(loaded.mean, every.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loaded.variance, every.var(0), rtol=1e-4, atol=1e-5)
