"""The LibriSpeech and Common Voice readers on tiny trees written here: WAV, manifests, errors."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile
from test_asr_data_manifest import run_step

from speechbed.corpora.asr_manifest import read_manifest

#: speaker -> chapter -> (utterance number, transcript as LibriSpeech writes it, seconds)
LIBRI_TREE = {
    "dev-clean": {
        "84": {"121123": [(0, "GO DO YOU HEAR", 0.5), (1, "BUT IN LESS THAN FIVE MINUTES", 1.0)]},
        "174": {"50561": [(0, "FORGOTTEN TOO THE NAME OF GILLIAN THE LOVELY CAPTIVE", 1.5)]},
    },
    "test-clean": {"1089": {"134686": [(0, "HE HOPED THERE WOULD BE STEW FOR DINNER", 0.75)]}},
}


def utterance_samples(key: str, seconds: float) -> np.ndarray:
    """Deterministic int16 noise for one utterance (the reference its WAV must equal)."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    return rng.integers(-3000, 3000, int(seconds * 16000)).astype(np.int16)


def write_librispeech(root: Path) -> dict[str, np.ndarray]:
    samples = {}
    for subset, speakers in LIBRI_TREE.items():
        for speaker, chapters in speakers.items():
            for chapter, utterances in chapters.items():
                folder = root / subset / speaker / chapter
                folder.mkdir(parents=True)
                lines = []
                for number, text, seconds in utterances:
                    key = f"{speaker}-{chapter}-{number:04d}"
                    samples[key] = utterance_samples(key, seconds)
                    soundfile.write(folder / f"{key}.flac", samples[key], 16000, subtype="PCM_16")
                    lines.append(f"{key} {text}\n")
                (folder / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
    return samples


def prep_job(source: Path, output: Path, **settings) -> dict:
    return {"input_path": str(source), "output_path": str(output), **settings}


def test_librispeech_layout_to_wav_and_manifests(tmp_path, capsys):
    samples = write_librispeech(tmp_path / "LibriSpeech")
    output = tmp_path / "wav"
    job = prep_job(tmp_path, output, subsets=["dev-clean", "test-clean"], workers=2)
    assert run_step("scripts/prep_librispeech.py", job, tmp_path) == 0  # finds LibriSpeech/
    assert "dev-clean: 3 utterances" in capsys.readouterr().out
    dev = read_manifest(output / "dev-clean.json")
    assert [entry.files[0].fname for entry in dev] == [
        "dev-clean/174/50561/174-50561-0000.wav",
        "dev-clean/84/121123/84-121123-0000.wav",
        "dev-clean/84/121123/84-121123-0001.wav",
    ]
    assert dev[1].transcript == "go do you hear"
    assert dev[2].transcript == "but in less than five minutes"
    for entry in dev + read_manifest(output / "test-clean.json"):
        audio, rate = soundfile.read(output / entry.files[0].fname, dtype="int16")
        key = Path(entry.files[0].fname).stem
        assert rate == 16000 and np.array_equal(audio, samples[key])  # lossless 16 kHz copy
        assert entry.original_num_samples == len(samples[key]) == entry.files[0].num_samples
        assert entry.original_duration == pytest.approx(len(samples[key]) / 16000)
        assert soundfile.info(output / entry.files[0].fname).subtype == "PCM_16"

    # Again: everything reused; a lost WAV is converted again; raw transcripts and max_duration.
    (output / "dev-clean/84/121123/84-121123-0001.wav").unlink()
    job.update(max_duration=1.2, normalize=False, workers=1)
    assert run_step("scripts/prep_librispeech.py", job, tmp_path) == 0
    printed = capsys.readouterr().out
    assert "dev-clean: 2 utterances, 0.00 h; 1 converted, 1 already there; 1 over max_duration" in printed  # fmt: skip
    dev = read_manifest(output / "dev-clean.json")
    assert [entry.transcript for entry in dev] == [
        "GO DO YOU HEAR",
        "BUT IN LESS THAN FIVE MINUTES",
    ]
    assert not list(output.rglob(".*partial*"))


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda r: (r / "dev-clean/84/121123/84-121123-0001.flac").unlink(),
         "84-121123.trans.txt: 84-121123-0001 has a transcript but no 84-121123-0001.flac"),
        (lambda r: (r / "dev-clean/84/121123/84-121123.trans.txt").write_text(
            "84-121123-0000 GO DO YOU HEAR\n84-121124-0001 BUT\n"),
         "84-121123.trans.txt:2: expected '84-121123-<number> TRANSCRIPT'"),
        (lambda r: (r / "dev-clean/174/50561/174-50561.trans.txt").unlink(),
         "50561: 1 .flac files but no 174-50561.trans.txt"),
        (lambda r: (r / "dev-clean/84/121123/84-121123-0007.flac").write_bytes(b""),
         "84-121123-0007.flac: no line for it in"),
        (lambda r: None, "no subset folder dev-other (present: dev-clean, test-clean)"),
    ],
)  # fmt: skip
def test_a_broken_librispeech_layout_is_named_and_writes_nothing(tmp_path, capsys, breakage, message):  # fmt: skip
    write_librispeech(tmp_path / "LibriSpeech")
    breakage(tmp_path / "LibriSpeech")
    subsets = ["dev-clean", "dev-other"] if "dev-other" in message else ["dev-clean"]
    job = prep_job(tmp_path / "LibriSpeech", tmp_path / "wav", subsets=subsets, workers=1)
    assert run_step("scripts/prep_librispeech.py", job, tmp_path) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "wav").exists()


# --------------------------------------------------------------------------- Common Voice

CV_HEADER = "client_id\tpath\tsentence_id\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale\tsegment"  # fmt: skip
CV_ROWS = {
    "train": [("common_voice_en_1.mp3", 'He said "Hello" to 2 friends.', 440.0),
              ("common_voice_en_2.mp3", "It's 5 o'clock — time to go!", 660.0)],
    "dev": [("common_voice_en_3.mp3", "Café au lait, please.", 550.0)],
    "test": [("common_voice_en_4.mp3", "Good night.", 330.0)],
}  # fmt: skip


def sine(frequency: float, rate: int, seconds: float = 0.6) -> np.ndarray:
    return 0.4 * np.sin(2 * np.pi * frequency * np.arange(int(rate * seconds)) / rate)


def write_commonvoice(root: Path) -> None:
    (root / "clips").mkdir(parents=True)
    for split, rows in CV_ROWS.items():
        lines = [CV_HEADER]
        for index, (clip, sentence, frequency) in enumerate(rows):
            soundfile.write(root / "clips" / clip, sine(frequency, 32000), 32000, format="MP3")
            lines.append(f"c{index}\t{clip}\ts{index}\t{sentence}\t2\t0\t\t\t\ten\t")
        (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")


def test_commonvoice_layout_decodes_mp3_to_16k_wav(tmp_path, capsys):
    root = tmp_path / "CommonVoice" / "cv-test-1.0" / "en"
    write_commonvoice(root)
    output = tmp_path / "cv"
    assert run_step("scripts/prep_commonvoice.py", prep_job(root, output, workers=2), tmp_path) == 0
    assert "train: 2 utterances" in capsys.readouterr().out
    train = read_manifest(output / "train.json")
    assert [entry.transcript for entry in train] == [
        "he said hello to two friends",
        "it's five o'clock time to go",
    ]
    assert read_manifest(output / "dev.json")[0].transcript == "cafe au lait please"
    for split, rows in CV_ROWS.items():
        for entry, (clip, _, frequency) in zip(read_manifest(output / f"{split}.json"), rows, strict=True):  # fmt: skip
            bucket = f"{zlib.crc32(Path(clip).stem.encode()) & 0xFF:02x}"
            assert entry.files[0].fname == f"{split}/{bucket}/{Path(clip).stem}.wav"
            audio, rate = soundfile.read(output / entry.files[0].fname)
            assert rate == 16000 and abs(len(audio) - 9600) <= 1152  # 0.6 s; MP3 frame padding
            reference = sine(frequency, 16000)
            middle = slice(1600, 8000)  # the 32 -> 16 kHz sine, away from the edges
            assert np.max(np.abs(audio[middle] - reference[middle])) < 0.05


def test_a_broken_commonvoice_folder_is_named(tmp_path, capsys):
    root = tmp_path / "en"
    write_commonvoice(root)
    (root / "clips" / "common_voice_en_2.mp3").unlink()
    assert run_step("scripts/prep_commonvoice.py", prep_job(root, tmp_path / "cv"), tmp_path) == 1
    assert f"{root / 'train.tsv'}:3: no clip" in capsys.readouterr().err
    (root / "dev.tsv").write_text("client_id\tfile\tsentence\n")
    job = prep_job(root, tmp_path / "cv", splits=["dev"])
    assert run_step("scripts/prep_commonvoice.py", job, tmp_path) == 1
    assert "dev.tsv:1: the header has no column path (found: client_id, file, sentence)" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "cv").exists()
