"""The rnnt task (speechbed.tasks.rnnt) on a tiny corpus of tone "words": config, batches,
augmentation draws, and a tiny transducer overfitting a few utterances to WER near 0."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from speechbed.corpora.asr_manifest import entry_for_wav, write_manifest
from speechbed.corpora.tokenizer import MODEL_FILE, TokenizerSettings, train_tokenizer
from speechbed.errors import UserInputError
from speechbed.tasks.rnnt.config import RnntRunConfig
from speechbed.tasks.rnnt.task import RnntTask
from speechbed.training.config import RunConfig

#: Each word is a tone (Hz) 0.2 s long; an utterance says its words one after another.
TONES = {"red": 300.0, "green": 700.0, "blue": 1500.0, "yellow": 3100.0}
SENTENCES = ["red green", "blue red yellow", "green blue", "yellow yellow red", "blue", "red blue"]
TINY_MODEL = {
    "encoder_hidden": 48, "encoder_pre_layers": 1, "encoder_post_layers": 1,
    "prediction_hidden": 24, "prediction_layers": 1, "joint_hidden": 48,
    "encoder_dropout": 0.0, "prediction_dropout": 0.0, "joint_dropout": 0.0, "dither": 0.0,
}  # fmt: skip


def speak(sentence: str, rng: np.random.Generator) -> np.ndarray:
    time = np.arange(3200) / 16000
    words = [0.5 * np.sin(2 * np.pi * TONES[word] * time) for word in sentence.split()]
    pause = np.zeros(800)
    signal = np.concatenate([pause, *[np.concatenate([w, pause]) for w in words]])
    return (signal + 0.01 * rng.standard_normal(len(signal))).astype(np.float32)


@pytest.fixture(scope="module")
def tone_corpus(tmp_path_factory) -> Path:
    """``<root>/wav/{train,dev,test}.json`` over the same sentences, and ``<root>/spm``."""
    root = tmp_path_factory.mktemp("tones")
    rng = np.random.default_rng(0)
    for partition in ("train", "dev", "test"):
        entries = []
        for index, sentence in enumerate(SENTENCES):
            fname = f"{partition}/{index:03d}.wav"
            samples = speak(sentence, rng)
            (root / "wav" / partition).mkdir(parents=True, exist_ok=True)
            soundfile.write(root / "wav" / fname, samples, 16000, subtype="PCM_16")
            entries.append(entry_for_wav(sentence, fname, len(samples)))
        write_manifest(root / "wav" / f"{partition}.json", entries)
    train_tokenizer(SENTENCES, root / "spm", TokenizerSettings(spm_size=16))
    return root


def run_config(root: Path, **sections) -> RnntRunConfig:
    document = {
        "task": "rnnt",
        "info": {"name": "tones", "run_dir": str(root / "run")},
        "data": {
            "data_folder": str(root / "wav"), "tokenizer": str(root / "spm"),
            "train_partition": "train", "dev_partition": "dev", "test_partition": "test",
            "batch_size": 6, "freq_masks": 0, "time_masks": 0,
            **sections.get("data", {}),
        },
        "model": {**TINY_MODEL, **sections.get("model", {})},
        "training": {"num_epochs": 1, **sections.get("training", {})},
    }  # fmt: skip
    config = RunConfig.model_validate(document)
    assert isinstance(config, RnntRunConfig)
    return config


def test_config_checks_its_keys_and_joins_partitions(tone_corpus):
    config = run_config(tone_corpus)
    assert config.data.source("dev") == tone_corpus / "wav" / "dev.json"
    assert config.data.source("train+dev") == tone_corpus / "wav"
    assert config.data.manifests("train+dev")[1].name == "dev.json"
    with pytest.raises(ValueError, match="speed_min_rate 1.2 is above speed_max_rate 1.1"):
        run_config(tone_corpus, data={"speed_min_rate": 1.2, "speed_max_rate": 1.1})
    with pytest.raises(ValueError, match="encoder_hiden"):
        run_config(tone_corpus, model={"encoder_hiden": 3})


def test_batches_hold_audio_tokens_and_transcripts(tone_corpus):
    task = RnntTask(run_config(tone_corpus))
    loader = task.open_loader("dev", shuffle=False)
    batch = next(iter(loader))
    assert len(batch.utt_ids) == 6 and batch.audio.shape[0] == 6
    row = batch.utt_ids.index("dev/001")
    assert batch.transcripts[row] == "blue red yellow"
    tokens = batch.targets[row, : batch.target_lengths[row]].tolist()
    assert task._tokenizer().decode(tokens) == "blue red yellow"
    assert batch.audio_lengths[row] == 800 + 3 * 4000
    with pytest.raises(UserInputError, match="no manifest for partition 'nowhere'"):
        task.open_loader("nowhere", shuffle=False)


def test_augmentation_draws_come_from_the_generator(tone_corpus):
    config = run_config(
        tone_corpus,
        data={"freq_masks": 2, "time_masks": 3, "speed_min_rate": 0.9, "speed_max_rate": 1.1},
        model={"dither": 1e-5},
    )
    task = RnntTask(config)
    batch = next(iter(task.open_loader("train", shuffle=False)))
    first = task.augment(batch, torch.Generator().manual_seed(4))
    second = task.augment(batch, torch.Generator().manual_seed(4))
    assert torch.equal(first.audio, second.audio) and first.dither_seed == second.dither_seed
    assert not torch.equal(first.audio_lengths, batch.audio_lengths)
    cpu = torch.device("cpu")
    torch.testing.assert_close(task.features(first, cpu)[0], task.features(second, cpu)[0])
    assert first.spec_augment.time.shape == (6, 3, 2)


def test_a_tiny_transducer_overfits_a_few_utterances(tone_corpus):
    """About 5 s on one core: a hundred steps of Adam on six utterances, decoded greedily."""
    torch.set_num_threads(1)
    config = run_config(tone_corpus, training={"seed": 0})
    task = RnntTask(config)
    (tone_corpus / "run").mkdir(exist_ok=True)
    loader = task.open_loader("train", shuffle=True, seed=0)
    built = task.build_model(loader)
    assert (tone_corpus / "run" / MODEL_FILE).read_bytes() == task._tokenizer().model_bytes
    model, device = built.model, torch.device("cpu")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    batch = task.augment(next(iter(loader)), generator)
    losses = []
    for _ in range(200):
        loss = task.loss(task.forward(model, batch, device), batch, device)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if loss.item() < 0.03:
            break
    assert losses[-1] < 0.1 * losses[0]
    trained_on = task.open_loader("train", shuffle=False)
    assert task.dev_metric(model, trained_on, device) <= 0.05
    # a model rebuilt from its description decodes the same (tokenizer from model.pt's bytes)
    fresh = RnntTask(config)
    rebuilt = fresh.load_model(built.description)
    rebuilt.load_state_dict(model.state_dict())
    hypotheses, references = fresh.transcribe(rebuilt, trained_on, device)
    assert sum(hypotheses[key] == references[key] for key in references) >= 5


def test_joint_net_lr_factor_gives_the_joint_output_its_own_group(tone_corpus):
    task = RnntTask(run_config(tone_corpus, training={"joint_net_lr_factor": 2.0}))
    model = task.load_model(
        {"model_config": task.config.model.model_dump(), "num_tokens": 16,
         "tokenizer_model": task._tokenizer().model_bytes}
    )  # fmt: skip
    rest, joint = task.parameter_groups(model)
    assert joint["lr_factor"] == 2.0 and rest["lr_factor"] == 1.0
    assert [p.shape for p in joint["params"]] == [(17, 48), (17,)]
    assert len(rest["params"]) + 2 == len(list(model.parameters()))
    assert RnntTask(run_config(tone_corpus)).parameter_groups(model) is None


def test_train_and_evaluate_through_the_trainer(tone_corpus, tmp_path):
    """The one trainer (EMA, warmup-hold-decay, clipping) and evaluation: results.json's WER
    with its counts, word trn files, and the tokenizer in the run folder."""
    from speechbed.training.evaluation import evaluate_run
    from speechbed.training.loop import train_run

    torch.set_num_threads(1)
    config = run_config(
        tone_corpus,
        training={
            "num_epochs": 2, "optimizer": "adamw", "log10_learning_rate": -2.0,
            "lr_schedule": "warmup_hold_decay", "warmup_steps": 1, "hold_steps": 1,
            "half_life_steps": 2, "min_lr": 1e-3, "max_grad_norm": 1.0, "ema_decay": 0.5,
            "joint_net_lr_factor": 2.0,
        },
    )  # fmt: skip
    config = config.model_copy(
        update={"info": config.info.model_copy(update={"run_dir": tmp_path})}
    )
    summary = train_run(config, progress=False)
    assert summary.epochs_run == 2
    results = evaluate_run(config)
    entry = results["test"]
    assert results["score"]["key"] == "wer" and entry["wer"] == results["test_wer"]
    assert entry["reference_words"] == sum(len(s.split()) for s in SENTENCES)
    assert entry["errors"] == entry["substitutions"] + entry["deletions"] + entry["insertions"]
    lines = (tmp_path / "test.ref.trn").read_text().splitlines()
    assert lines[1] == "blue red yellow (test/001)"
    assert (tmp_path / MODEL_FILE).is_file()
