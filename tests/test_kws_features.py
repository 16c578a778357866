"""KWS clip features: parity with librosa (the field's reference, installed for the tests only),
and the zarr store the feature step writes from clip manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from speechbed.corpora import speech_commands as sc
from speechbed.errors import UserInputError
from speechbed.features.cache import FeatureCache
from speechbed.features.clip_build import UNIT_SCALE, build_clip_store
from speechbed.features.clip_computers import ClipFeatureComputer
from speechbed.features.clip_settings import (
    NAMED_CLIP_FEATURES,
    ClipFeatureSettings,
    resolve_clip_feature,
)

librosa = pytest.importorskip("librosa")

#: HANNAH's MFCC as librosa's arguments: 30 ms (480) window in 512 points, 10 ms hop,
#: 40 Slaney mel bands over 20-4000 Hz, power spectrum, dB with an 80 dB range, DCT-II ortho.
STFT = {
    "n_fft": 512,
    "hop_length": 160,
    "win_length": 480,
    "window": "hann",
    "center": True,
    "pad_mode": "constant",
}
MEL = {"sr": 16000, "n_mels": 40, "fmin": 20.0, "fmax": 4000.0, "power": 2.0}


def _signals() -> np.ndarray:
    rng = np.random.default_rng(7)
    time = np.arange(16000) / 16000
    chirp = 0.4 * np.sin(2 * np.pi * (200 + 1500 * time) * time)
    clips = [
        rng.normal(0, 0.05, 16000),
        chirp * (time > 0.3) * (time < 0.7) + rng.normal(0, 0.001, 16000),
        rng.integers(-32768, 32767, 16000) / 32768,
    ]
    return np.stack(clips).astype(np.float32)


def _reference(kind: str, clip: np.ndarray) -> np.ndarray:
    y = clip.astype(np.float64)
    if kind == "mfcc":
        return librosa.feature.mfcc(y=y, n_mfcc=40, **STFT, **MEL).T
    if kind == "melspec":
        return librosa.power_to_db(librosa.feature.melspectrogram(y=y, **STFT, **MEL)).T
    return librosa.power_to_db(np.abs(librosa.stft(y, **STFT)) ** 2).T


@pytest.mark.parametrize("kind", ["mfcc", "melspec", "spectrogram"])
def test_parity_with_librosa(kind: str) -> None:
    clips = _signals()
    ours = ClipFeatureComputer(NAMED_CLIP_FEATURES[kind])(torch.from_numpy(clips)).numpy()
    for index, clip in enumerate(clips):
        reference = _reference(kind, clip)
        assert ours[index].shape == reference.shape == (101, NAMED_CLIP_FEATURES[kind].num_features)
        # float32 STFT against librosa's float64: dB values agree to a few 1e-3
        np.testing.assert_allclose(ours[index], reference, atol=5e-3, rtol=0)


def test_mfcc_without_top_db_is_the_dct_of_the_log_mel() -> None:
    settings = ClipFeatureSettings(kind="mfcc", top_db=None, num_coefficients=13)
    clips = torch.from_numpy(_signals())
    mfcc = ClipFeatureComputer(settings)(clips).numpy()
    mel = ClipFeatureComputer(settings.model_copy(update={"kind": "melspec"}))(clips).numpy()
    from scipy.fft import dct

    np.testing.assert_allclose(
        mfcc, dct(mel.astype(np.float64), type=2, norm="ortho", axis=-1)[..., :13], atol=1e-3
    )


def test_bad_settings_are_named() -> None:
    with pytest.raises(UserInputError, match="unknown clip feature 'mfc'"):
        resolve_clip_feature("mfc")
    with pytest.raises(UserInputError, match="high_hz"):
        resolve_clip_feature({"kind": "mfcc", "high_hz": 9000})
    with pytest.raises(ValueError, match=r"clips must be \(batch, 16000\)"):
        ClipFeatureComputer(NAMED_CLIP_FEATURES["mfcc"])(torch.zeros(2, 8000))


def test_clip_store(tmp_path: Path) -> None:
    from test_kws_data import write_tree

    write_tree(tmp_path / "corpus")
    sc.prepare_speech_commands(tmp_path / "corpus", tmp_path / "manifests", keywords=["yes", "no"])
    clips = sc.read_clips(tmp_path / "manifests" / "dev.jsonl")
    first = build_clip_store(
        tmp_path / "manifests", "dev", "mfcc", tmp_path / "mfcc", progress=False
    )
    assert not first.skipped and first.num_clips == len(clips)
    store = FeatureCache(tmp_path / "mfcc" / "dev.zarr")
    classes = ["silence", "unknown", "yes", "no"]
    assert store.attributes["token_list"] == classes
    assert [classes[int(store.tokens(i)[0])] for i in range(len(store))] == [c.label for c in clips]
    expected = ClipFeatureComputer(NAMED_CLIP_FEATURES["mfcc"])(
        torch.from_numpy(sc.read_clip(clips[-1])[None] * UNIT_SCALE)
    )[0].numpy()
    np.testing.assert_array_equal(store.feats(len(clips) - 1), expected)
    assert build_clip_store(
        tmp_path / "manifests", "dev", "mfcc", tmp_path / "mfcc", progress=False
    ).skipped
    raw = build_clip_store(tmp_path / "manifests", "dev", "raw", tmp_path / "raw", progress=False)
    samples = FeatureCache(raw.path).feats(0)[:, 0]
    np.testing.assert_array_equal(samples, sc.read_clip(clips[0]) * UNIT_SCALE)
    # a damaged store is rebuilt, not read
    chunk = next(
        p
        for p in (tmp_path / "mfcc" / "dev.zarr" / "feats").rglob("*")
        if p.is_file() and p.name != "zarr.json"
    )
    chunk.write_bytes(chunk.read_bytes()[:-3])
    rebuilt = build_clip_store(
        tmp_path / "manifests", "dev", "mfcc", tmp_path / "mfcc", progress=False
    )
    assert not rebuilt.skipped and rebuilt.damage is not None
