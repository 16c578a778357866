"""The RNN-T deployment checkpoint (issue 17): one file round-trips every part, is written
atomically, and alone transcribes audio the same way as the pieces it was made from."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from speechbed.corpora.tokenizer import TokenizerSettings, train_tokenizer
from speechbed.decoding.transducer_search import transducer_greedy_search
from speechbed.deployment.rnnt_checkpoint import (
    DeployedTranscriber,
    DeploymentCheckpoint,
    load_deployment_checkpoint,
    save_deployment_checkpoint,
)
from speechbed.errors import UserInputError
from speechbed.features.log_mel import LogMelFrontEnd, LogMelSettings, stack_frames
from speechbed.features.streaming_normalization import MelStatistics, StreamingNormalizer
from speechbed.models.rnnt import RnntModel, RnntSettings

SENTENCES = ["the cat sat on the mat", "a dog ran to the park", "she said hello there"] * 5


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer = train_tokenizer(SENTENCES, folder / "spm", TokenizerSettings(24))
    settings = RnntSettings(
        input_size=16 * 2, num_tokens=tokenizer.vocab_size, encoder_hidden=12,
        encoder_pre_layers=1, encoder_post_layers=1, prediction_hidden=8, prediction_layers=1,
        joint_hidden=8,
    )  # fmt: skip
    torch.manual_seed(0)
    model = RnntModel(settings)
    generator = torch.Generator().manual_seed(1)
    statistics = MelStatistics(
        torch.randn(16, generator=generator, dtype=torch.float64) - 5,
        torch.rand(16, generator=generator, dtype=torch.float64) + 0.5,
        1234,
    )
    return DeploymentCheckpoint(
        state_dict=model.state_dict(), transducer=settings,
        front_end=LogMelSettings(num_mels=16), frame_stacking=2,
        frame_subsampling=2, statistics=statistics, tokenizer_model=tokenizer.model_bytes,
        alpha=0.01, model_config={"encoder_hidden": 12}, source={"run": "unit"},
    )  # fmt: skip


def test_round_trip(tmp_path, checkpoint):
    path = tmp_path / "deploy" / "rnnt.pt"
    save_deployment_checkpoint(checkpoint, path)
    assert [p.name for p in path.parent.iterdir()] == ["rnnt.pt"]  # no temporary left
    loaded = load_deployment_checkpoint(path)
    assert loaded.state_dict.keys() == checkpoint.state_dict.keys()
    for key, value in checkpoint.state_dict.items():
        assert torch.equal(loaded.state_dict[key], value)
    for name in ("transducer", "front_end", "frame_stacking", "frame_subsampling", "alpha",
                 "tokenizer_model", "lstm_activations", "model_config", "source"):  # fmt: skip
        assert getattr(loaded, name) == getattr(checkpoint, name), name
    assert torch.equal(loaded.statistics.mean, checkpoint.statistics.mean)
    assert torch.equal(loaded.statistics.variance, checkpoint.statistics.variance)
    assert loaded.statistics.count == 1234
    hard = dataclasses.replace(checkpoint, lstm_activations=("hard_sigmoid", "hard_tanh"))
    save_deployment_checkpoint(hard, path)
    model = load_deployment_checkpoint(path).build_model()
    assert type(model.encoder_pre).__name__ == "HardLstm"


def test_bad_files_are_clear_errors(tmp_path, checkpoint):
    with pytest.raises(UserInputError, match="not found"):
        load_deployment_checkpoint(tmp_path / "none.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(UserInputError, match="other.pt: not an RNN-T deployment checkpoint"):
        load_deployment_checkpoint(tmp_path / "other.pt")
    data = checkpoint.to_dict()
    del data["alpha"]
    torch.save(data, tmp_path / "partial.pt")
    with pytest.raises(UserInputError, match="partial.pt: deployment checkpoint lacks alpha"):
        load_deployment_checkpoint(tmp_path / "partial.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(UserInputError, match="text.pt: cannot read"):
        load_deployment_checkpoint(tmp_path / "text.pt")


def test_the_file_alone_transcribes_as_its_pieces_do(tmp_path, checkpoint):
    save_deployment_checkpoint(checkpoint, tmp_path / "rnnt.pt")
    front_end = LogMelFrontEnd(checkpoint.front_end)
    log_mel = front_end  # any (audio, counts) -> (features, frames); the task passes raw log-mel
    torch.set_num_threads(1)  # tiny LSTM steps: threads only contend
    loaded = load_deployment_checkpoint(tmp_path / "rnnt.pt")
    transcriber = DeployedTranscriber(loaded, log_mel, max_symbols_per_step=3)
    audio = [torch.randn(4000, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    got = transcriber.transcribe(audio) + transcriber.transcribe(audio[:1])
    # the same steps by hand, the stream carried over both calls
    model = RnntModel(checkpoint.transducer).eval()
    model.load_state_dict(checkpoint.state_dict)
    normalizer = StreamingNormalizer(checkpoint.statistics, checkpoint.alpha)
    from speechbed.corpora.tokenizer import Tokenizer

    tokenizer = Tokenizer(checkpoint.tokenizer_model)
    expected = []
    for batch in (audio, audio[:1]):
        padded = torch.stack(batch)
        features, frames = log_mel(padded, torch.full((len(batch),), 4000))
        stacked, frames = stack_frames(normalizer(features, frames), frames, 2, 2)
        encoded, lengths = model.encode(stacked, frames)
        ids = transducer_greedy_search(model, encoded, lengths, model.settings.blank, 3)
        expected += [" ".join(tokenizer.decode(row).split()) for row in ids]
    assert got == expected
    assert any(got)  # an untrained model still emits something to compare
