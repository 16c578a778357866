"""TIMIT preparation on a hand-made LDC tree: SPHERE by hand, both name cases, every bad input.

The tree is written byte by byte here (not with speechbed's writer) so the reader is checked
against an independent encoding; soundfile (libsndfile) is the second reference for SPHERE.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from speechbed.corpora.manifest import TOKENS_FILE, manifest_path, read_manifest, read_tokens
from speechbed.corpora.phones import PHONES_48
from speechbed.corpora.sphere import read_sphere, write_sphere
from speechbed.corpora.timit import build_partitions, prepare_timit
from speechbed.errors import UserInputError

REPOSITORY = Path(__file__).resolve().parents[1]


def sphere_bytes(
    samples: np.ndarray,
    rate: int = 16000,
    channels: int = 1,
    big_endian: bool = False,
    coding: str | None = None,
    count: int | None = None,
) -> bytes:
    """A SPHERE file spelled out field by field, as the LDC discs have them."""
    count = len(samples) // channels if count is None else count
    header = (
        b"NIST_1A\n   1024\n"
        b"database_id -s5 TIMIT\n"
        b"database_version -s3 1.0\n"
        b"utterance_id -s8 test_sx1\n"
        + f"channel_count -i {channels}\n".encode()
        + f"sample_count -i {count}\n".encode()
        + f"sample_rate -i {rate}\n".encode()
        + b"sample_n_bytes -i 2\n"
        + (b"sample_byte_format -s2 10\n" if big_endian else b"sample_byte_format -s2 01\n")
        + b"sample_sig_bits -i 16\n"
        + (f"sample_coding -s{len(coding)} {coding}\n".encode() if coding else b"")
        + b"end_head\n"
    )
    header += b" " * (1024 - len(header))
    assert len(header) == 1024
    return header + samples.astype(">i2" if big_endian else "<i2").tobytes()


# Two utterances per speaker: SA1 (excluded from every partition) and one SX.
# Phones in samples; each alignment covers the audio exactly, h# at both ends.
UTTERANCES = {
    "sa1": (
        "She ran.",
        [(0, 1000, "h#"), (1000, 2000, "sh"), (2000, 3000, "iy"), (3000, 4000, "r"),
         (4000, 5000, "ae"), (5000, 6000, "n"), (6000, 8000, "h#")],
        [(1000, 3000, "she"), (3000, 6000, "ran")],
    ),
    "sx7": (
        "A cat sat.",
        [(0, 800, "h#"), (800, 1500, "q"), (1500, 2200, "ax"), (2200, 2600, "kcl"),
         (2600, 3000, "k"), (3000, 3800, "ae"), (3800, 4200, "tcl"), (4200, 5000, "s"),
         (5000, 5800, "ae"), (5800, 6200, "tcl"), (6200, 6400, "t"), (6400, 8000, "h#")],
        [(800, 2200, "a"), (2200, 4200, "cat"), (4200, 6400, "sat")],
    ),
}  # fmt: skip
NUM_SAMPLES = 8000


def write_speaker(folder: Path, upper: bool, seed: int) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    audio = {}
    for prompt, (text, phones, words) in UTTERANCES.items():
        name = prompt.upper() if upper else prompt
        samples = np.random.default_rng(seed).integers(-2000, 2000, NUM_SAMPLES, dtype=np.int16)
        audio[prompt] = samples
        extension = (lambda ext: ext.upper()) if upper else (lambda ext: ext)
        (folder / f"{name}.{extension('wav')}").write_bytes(
            sphere_bytes(samples, big_endian=not upper)
        )
        (folder / f"{name}.{extension('phn')}").write_text(
            "".join(f"{start} {end} {label}\n" for start, end, label in phones)
        )
        (folder / f"{name}.{extension('wrd')}").write_text(
            "".join(f"{start} {end} {word}\n" for start, end, word in words)
        )
        (folder / f"{name}.{extension('txt')}").write_text(f"0 {NUM_SAMPLES} {text}\n")
        seed += 1
    return audio


@pytest.fixture
def ldc_tree(tmp_path: Path) -> Path:
    """TRAIN/DR1/MABC0 in upper case; test/dr7/fdhc0 (a core-test speaker) in lower case."""
    root = tmp_path / "timit"
    write_speaker(root / "TRAIN" / "DR1" / "MABC0", upper=True, seed=1)
    write_speaker(root / "test" / "dr7" / "fdhc0", upper=False, seed=10)
    return root


def test_hand_made_sphere_reads_like_libsndfile(tmp_path: Path) -> None:
    samples = np.array([0, 1, -1, 32767, -32768, 1234, -4321], dtype=np.int16)
    for big_endian in (False, True):
        path = tmp_path / f"x{big_endian}.wav"
        path.write_bytes(sphere_bytes(samples, big_endian=big_endian))
        read, rate = read_sphere(path)
        assert rate == 16000 and read.dtype == np.int16
        np.testing.assert_array_equal(read, samples)
        reference, reference_rate = soundfile.read(path, dtype="int16")
        np.testing.assert_array_equal(read, reference)
        assert reference_rate == rate


def test_write_sphere_round_trip_and_header_layout(tmp_path: Path) -> None:
    samples = np.random.default_rng(0).integers(-30000, 30000, 5000, dtype=np.int16)
    path = tmp_path / "SA1.WAV"
    write_sphere(path, samples, fields={"utterance_id": "mabc0_sa1"})
    raw = path.read_bytes()
    assert raw[:16] == b"NIST_1A\n   1024\n"
    assert len(raw) == 1024 + 2 * len(samples)
    assert b"sample_count -i 5000\n" in raw[:1024] and b"end_head\n" in raw[:1024]
    np.testing.assert_array_equal(np.frombuffer(raw[1024:], "<i2"), samples)
    np.testing.assert_array_equal(soundfile.read(path, dtype="int16")[0], samples)
    np.testing.assert_array_equal(read_sphere(path)[0], samples)


def test_two_speaker_tree_reads_correctly(ldc_tree: Path, tmp_path: Path) -> None:
    counts = prepare_timit(ldc_tree, tmp_path / "manifests", progress=False)
    assert counts == {"train": 1, "dev": 0, "test": 1}  # SA1 excluded; fdhc0 is core test
    train = read_manifest(manifest_path(tmp_path / "manifests", "train"))
    test = read_manifest(manifest_path(tmp_path / "manifests", "test"))
    (utterance,) = train
    assert utterance.id == "mabc0-sx7" and utterance.speaker == "mabc0"
    assert (utterance.dialect, utterance.gender) == ("dr1", "m")
    assert utterance.audio_path == str((ldc_tree / "TRAIN/DR1/MABC0/SX7.WAV").resolve())
    assert Path(utterance.audio_path).is_absolute()
    assert utterance.num_samples == NUM_SAMPLES and utterance.text == "A cat sat."
    assert [(w.start, w.end, w.label) for w in utterance.words] == UTTERANCES["sx7"][2]
    assert [(p.start, p.end, p.label) for p in utterance.phones] == UTTERANCES["sx7"][1]
    # Folding by hand from phones.map: q deleted; kcl,tcl -> cl; h# -> sil; ax -> ah in 39.
    assert utterance.phones_61 == "h# ax kcl k ae tcl s ae tcl t h#".split()
    assert utterance.phones_48 == "sil ax cl k ae cl s ae cl t sil".split()
    assert utterance.phones_39 == "sil ah sil k ae sil s ae sil t sil".split()
    (core,) = test
    assert (core.id, core.dialect, core.gender) == ("fdhc0-sx7", "dr7", "f")
    assert read_tokens(tmp_path / "manifests" / TOKENS_FILE) == list(PHONES_48)
    assert len(PHONES_48) == 48


def test_manifest_audio_matches_the_tree(ldc_tree: Path) -> None:
    partitions = build_partitions(ldc_tree, progress=False)
    utterance = partitions["test"][0]
    samples, _ = read_sphere(utterance.audio_path)  # big-endian file in the lowercase speaker
    expected = np.random.default_rng(11).integers(-2000, 2000, NUM_SAMPLES, dtype=np.int16)
    np.testing.assert_array_equal(samples, expected)


def test_prep_skips_an_unchanged_corpus_and_redoes_a_changed_one(
    ldc_tree: Path, tmp_path: Path
) -> None:
    output = tmp_path / "manifests"
    assert prepare_timit(ldc_tree, output, progress=False) is not None
    before = manifest_path(output, "train").read_bytes()
    assert prepare_timit(ldc_tree, output, progress=False) is None
    assert prepare_timit(ldc_tree, output, force=True, progress=False) is not None
    assert manifest_path(output, "train").read_bytes() == before
    text = ldc_tree / "TRAIN/DR1/MABC0/SX7.TXT"
    text.write_text(f"0 {NUM_SAMPLES} A dog sat.\n")
    assert prepare_timit(ldc_tree, output, progress=False) is not None
    assert read_manifest(manifest_path(output, "train"))[0].text == "A dog sat."


def test_prep_finds_the_root_one_folder_down(ldc_tree: Path, tmp_path: Path) -> None:
    disc = tmp_path / "disc"
    disc.mkdir()
    ldc_tree.rename(disc / "TIMIT")
    assert prepare_timit(disc, tmp_path / "m", progress=False) == {"train": 1, "dev": 0, "test": 1}


def error_of(root: Path, **options: object) -> str:
    with pytest.raises(UserInputError) as caught:
        build_partitions(root, progress=False, **options)
    return str(caught.value)


SX7 = "TRAIN/DR1/MABC0/SX7"


def test_missing_phn(ldc_tree: Path) -> None:
    (ldc_tree / f"{SX7}.PHN").unlink()
    message = error_of(ldc_tree)
    assert "MABC0/SX7.PHN" in message and "missing" in message


def test_label_outside_the_61_set(ldc_tree: Path) -> None:
    phn = ldc_tree / f"{SX7}.PHN"
    phn.write_text(phn.read_text().replace("2600 3000 k\n", "2600 3000 kk\n"))
    message = error_of(ldc_tree)
    assert f"{phn}:5:" in message and "'kk'" in message and "61" in message


def test_alignment_past_the_end_of_the_audio(ldc_tree: Path) -> None:
    phn = ldc_tree / f"{SX7}.PHN"
    phn.write_text(phn.read_text().replace("6400 8000 h#", "6400 8001 h#"))
    message = error_of(ldc_tree)
    assert f"{phn}:12:" in message and "8001" in message and "8000 samples" in message


def test_word_alignment_past_the_end_of_the_audio(ldc_tree: Path) -> None:
    wrd = ldc_tree / f"{SX7}.WRD"
    wrd.write_text(wrd.read_text().replace("4200 6400 sat", "4200 9000 sat"))
    assert f"{wrd}:3:" in error_of(ldc_tree)


def test_malformed_alignment_line(ldc_tree: Path) -> None:
    phn = ldc_tree / f"{SX7}.PHN"
    phn.write_text(phn.read_text().replace("800 1500 q", "800 q"))
    assert f"{phn}:2: expected 'start end label'" in error_of(ldc_tree)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"coding": "pcm,embedded-shorten-v2.00"}, "compressed SPHERE"),
        ({"rate": 8000}, "8000 Hz"),
        ({"channels": 2}, "2 channels"),
        ({"count": NUM_SAMPLES + 10}, "truncated"),
    ],
)
def test_unreadable_audio_is_named(ldc_tree: Path, options: dict, expected: str) -> None:
    wav = ldc_tree / f"{SX7}.WAV"
    samples = np.zeros(NUM_SAMPLES * options.get("channels", 1), dtype=np.int16)
    wav.write_bytes(sphere_bytes(samples, **options))
    message = error_of(ldc_tree)
    assert str(wav) in message and expected in message


def test_riff_wave_is_not_sphere(ldc_tree: Path) -> None:
    wav = ldc_tree / f"{SX7}.WAV"
    soundfile.write(wav, np.zeros(NUM_SAMPLES, dtype=np.int16), 16000, format="WAV")
    message = error_of(ldc_tree)
    assert str(wav) in message and "not a NIST SPHERE file" in message


def test_not_an_ldc_root(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert "no TRAIN and TEST folders" in error_of(tmp_path / "empty")
    assert "TIMIT folder not found" in error_of(tmp_path / "absent")


def test_bad_speaker_folder_name(ldc_tree: Path) -> None:
    (ldc_tree / "TRAIN/DR1/SPEAKER1").mkdir()
    assert "SPEAKER1: not a TIMIT speaker folder name" in error_of(ldc_tree)


def test_same_name_in_two_cases(ldc_tree: Path) -> None:
    (ldc_tree / "TRAIN/DR1/MABC0/sx7.phn").write_text("0 8000 h#\n")
    assert "both SX7.PHN and sx7.phn exist" in error_of(ldc_tree)


def test_strict_counts(ldc_tree: Path) -> None:
    message = error_of(ldc_tree, strict=True)
    assert "train: 1 utterances, expected 3696" in message and "strict" in message


def test_no_core_test_speaker(ldc_tree: Path) -> None:
    (ldc_tree / "test/dr7/fdhc0").rename(ldc_tree / "test/dr7/fxyz0")
    assert "no test utterances" in error_of(ldc_tree)


def test_script_reports_bad_input_without_traceback(ldc_tree: Path, tmp_path: Path) -> None:
    (ldc_tree / f"{SX7}.PHN").unlink()
    job = tmp_path / "prep.yml"
    job.write_text(
        json.dumps({"input_path": str(ldc_tree), "output_path": str(tmp_path / "manifests")})
    )
    run = subprocess.run(
        [sys.executable, str(REPOSITORY / "scripts/prep_timit.py"), "-y", str(job)],
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "SX7.PHN: missing" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "manifests").exists()  # nothing half-written
