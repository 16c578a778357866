"""The synthetic Speech Commands: the 35 words of v2 spoken by eSpeak NG voices, in the v2 layout.

Called by scripts/make_synthetic_speech_commands.py; scripts/prep_speech_commands.py then reads
it like the real corpus (speechbed.corpora.speech_commands).

Speakers get random 8-hex-digit ids, drawn until each partition has its share under the
dataset's own rule (a hash of the id, ``split_of_speaker``), so the two lists come out of
that rule as in the real corpus. A speaker's voice is the synthetic TIMIT's
(``make_voice``: accent, voice variant of their gender, rate, pitch, level, noise); each
repetition varies rate and pitch a little. A word is cut to where it is audible and placed
at a random point of a 1 s clip (cut to 1 s if longer). ``_background_noise_`` holds white,
pink, mains hum and babble (words of four voices overlaid). Everything is a function of the
seed; clips are written one by one into a work folder (a restarted run skips those that are
there), which is renamed into place when complete.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.espeak import Espeak, Voice
from speechbed.corpora.speech_commands import (
    KEYWORDS,
    NOISE_FOLDER,
    SAMPLE_RATE,
    TESTING_LIST,
    VALIDATION_LIST,
    WORDS_V2,
    split_of_speaker,
)
from speechbed.corpora.synthesis import resample_to_16k
from speechbed.corpora.synthetic import DIALECTS, make_voice
from speechbed.errors import UserInputError
from speechbed.lineage import digest, write_folder_fingerprint
from speechbed.outputs import make_folder, remove_path, write_bytes_atomic

#: Bump when the generator's output changes, so corpora made by older code are redone.
GENERATOR_VERSION = CODE_VERSIONS["synthetic_speech_commands"]
STAMP_FILE = "SPEECHBED_SYNTHETIC.json"
NOISE_TYPES = ("white_noise", "pink_noise", "hum", "babble")
#: A word is audible where the audio exceeds this share of its peak.
AUDIBLE_LEVEL = 0.02


@dataclass(frozen=True)
class Scale:
    """Speakers per partition, repetitions of each keyword, and noise length."""

    train_speakers: int
    dev_speakers: int
    test_speakers: int
    keyword_repeats: int  # each keyword said this many times (the other words once)
    noise_seconds: int


SCALES = {
    "tiny": Scale(6, 2, 2, 2, 12),
    "small": Scale(100, 12, 12, 2, 60),
    "full": Scale(1000, 120, 120, 4, 300),
}


@dataclass(frozen=True)
class Speaker:
    id: str
    voice: Voice


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def plan_speakers(scale: Scale, seed: int) -> dict[str, list[Speaker]]:
    """Speakers per partition, ids drawn until the split rule has filled every partition."""
    rng = _rng(seed, "speaker-ids")
    wanted = {"train": scale.train_speakers, "dev": scale.dev_speakers, "test": scale.test_speakers}
    speakers: dict[str, list[Speaker]] = {partition: [] for partition in wanted}
    while any(len(speakers[p]) < count for p, count in wanted.items()):
        speaker = f"{int(rng.integers(0, 2**32)):08x}"
        partition = split_of_speaker(speaker)
        if len(speakers[partition]) >= wanted[partition] or any(
            speaker == known.id for known in speakers[partition]
        ):
            continue
        gender = "mf"[int(rng.integers(2))]
        dialect = DIALECTS[int(rng.integers(len(DIALECTS)))]
        speakers[partition].append(
            Speaker(speaker, make_voice(seed, f"{gender}{speaker}", dialect))
        )
    return speakers


def speak_word(word: str, voice: Voice) -> np.ndarray:
    """The word at 16 kHz (float, eSpeak's scale), cut to where it is audible."""
    raw, _ = Espeak.get().synthesize(word, voice)
    audio = resample_to_16k(raw)
    loud = np.flatnonzero(np.abs(audio) > AUDIBLE_LEVEL * (np.max(np.abs(audio)) or 1.0))
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


def word_clip(word: str, speaker: Speaker, repetition: int, seed: int) -> np.ndarray:
    """One 1 s int16 clip: the word at a random place, level and small rate/pitch change."""
    rng = _rng(seed, f"{speaker.id}/{word}/{repetition}")
    base = speaker.voice
    voice = dataclasses.replace(
        base,
        rate=int(np.clip(base.rate + rng.integers(-15, 16), 80, 450)),
        pitch=int(np.clip(base.pitch + rng.integers(-5, 6), 0, 100)),
    )
    audio = speak_word(word, voice)
    if len(audio) > SAMPLE_RATE:
        start = (len(audio) - SAMPLE_RATE) // 2
        audio = audio[start : start + SAMPLE_RATE]
    level = base.level * float(rng.uniform(0.6, 1.4))
    scaled = audio * (level * 32767.0 / (float(np.max(np.abs(audio))) or 1.0))
    clip = np.zeros(SAMPLE_RATE)
    offset = int(rng.integers(0, SAMPLE_RATE - len(scaled) + 1))
    clip[offset : offset + len(scaled)] = scaled
    clip += rng.normal(0.0, base.noise, SAMPLE_RATE)
    return np.clip(np.round(clip), -32768, 32767).astype(np.int16)


def _to_int16(signal: np.ndarray, peak: float) -> np.ndarray:
    scaled = signal * (peak * 32767.0 / (float(np.max(np.abs(signal))) or 1.0))
    return np.clip(np.round(scaled), -32768, 32767).astype(np.int16)


def white_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, 1.0, length)


def pink_noise(length: int, rng: np.random.Generator) -> np.ndarray:
    """White noise shaped to a 1/f power spectrum (amplitudes scaled by 1/sqrt(f))."""
    spectrum = np.fft.rfft(rng.normal(0.0, 1.0, length))
    frequencies = np.fft.rfftfreq(length, 1 / SAMPLE_RATE)
    spectrum[1:] /= np.sqrt(frequencies[1:])
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, length)


def hum(length: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and odd and even harmonics, slowly swelling, over a little hiss."""
    mains = 50.0 if rng.integers(2) == 0 else 60.0
    time = np.arange(length) / SAMPLE_RATE
    signal = sum(
        rng.uniform(0.3, 1.0)
        / harmonic
        * np.sin(2 * np.pi * mains * harmonic * time + rng.uniform(0, 2 * np.pi))
        for harmonic in range(1, 9)
    )
    swell = 1.0 + 0.2 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * time)
    return signal * swell + rng.normal(0.0, 0.02, length)


def babble(length: int, rng: np.random.Generator, seed: int, streams: int = 4) -> np.ndarray:
    """Four voices (not the corpus's speakers) saying words one after another, overlaid."""
    total = np.zeros(length)
    for stream in range(streams):
        gender, dialect = "mf"[stream % 2], DIALECTS[int(rng.integers(len(DIALECTS)))]
        voice = make_voice(seed, f"{gender}babble{stream}", dialect)
        words = [
            speak_word(WORDS_V2[int(i)], voice) for i in rng.choice(len(WORDS_V2), 8, replace=False)
        ]
        position = int(rng.integers(0, SAMPLE_RATE // 2))
        while position < length:
            word = words[int(rng.integers(len(words)))]
            piece = word[: length - position] / (float(np.max(np.abs(word))) or 1.0)
            total[position : position + len(piece)] += piece
            position += len(piece) + int(rng.integers(SAMPLE_RATE // 50, SAMPLE_RATE // 4))
    return total


def noise_signal(name: str, length: int, seed: int) -> np.ndarray:
    """One ``_background_noise_`` file's samples (int16)."""
    rng = _rng(seed, f"noise/{name}")
    makers: dict[str, Callable[[], np.ndarray]] = {
        "white_noise": lambda: white_noise(length, rng),
        "pink_noise": lambda: pink_noise(length, rng),
        "hum": lambda: hum(length, rng),
        "babble": lambda: babble(length, rng, seed),
    }
    return _to_int16(makers[name](), peak=0.3)


def _wav_bytes(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def synthetic_fingerprint(scale: str, seed: int) -> str:
    """The lineage fingerprint of a complete corpus: its settings say every byte it holds."""
    return digest(["synthetic-speech-commands", scale, str(seed), f"generator {GENERATOR_VERSION}"])


def make_synthetic_speech_commands(
    output_path: str | Path, scale: str, seed: int, force: bool = False, progress: bool = True
) -> dict | None:
    """Write the corpus at ``output_path``; None when it is already there with these settings.

    Work goes into ``.<name>.incomplete`` beside it (clips already there are kept when the
    settings match, so a killed run resumes); the finished folder is renamed into place.
    """
    if scale not in SCALES:
        raise UserInputError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    output = Path(output_path)
    settings = {"scale": scale, "seed": seed, "generator_version": GENERATOR_VERSION}
    if output.exists():
        stamp = output / STAMP_FILE
        if not stamp.is_file():
            raise UserInputError(
                f"{output}: exists and is not a synthetic corpus made by speechbed (no "
                f"{STAMP_FILE}); remove it or choose another output_path"
            )
        if not force and json.loads(stamp.read_text()).get("settings") == settings:
            return None
    work = output.with_name(f".{output.name}.incomplete")
    work_stamp = work / ".settings.json"  # hidden: not part of the corpus
    if force or not work_stamp.is_file() or json.loads(work_stamp.read_text()) != settings:
        remove_path(work)
    make_folder(work)
    work_stamp.write_text(json.dumps(settings))
    chosen = SCALES[scale]
    speakers = plan_speakers(chosen, seed)
    jobs = [
        (word, speaker, repetition)
        for partition in ("train", "dev", "test")
        for speaker in speakers[partition]
        for word in WORDS_V2
        for repetition in range(chosen.keyword_repeats if word in KEYWORDS else 1)
    ]
    for name in NOISE_TYPES:
        path = work / NOISE_FOLDER / f"{name}.wav"
        if not path.is_file():
            make_folder(path.parent)
            write_bytes_atomic(
                path, _wav_bytes(noise_signal(name, chosen.noise_seconds * SAMPLE_RATE, seed))
            )
    for word, speaker, repetition in tqdm(
        jobs, desc=f"speaking ({scale})", unit="clip", disable=not progress
    ):
        path = work / word / f"{speaker.id}_nohash_{repetition}.wav"
        if not path.is_file():
            make_folder(path.parent)
            write_bytes_atomic(path, _wav_bytes(word_clip(word, speaker, repetition, seed)))
    for list_name, partition in ((VALIDATION_LIST, "dev"), (TESTING_LIST, "test")):
        ids = {speaker.id for speaker in speakers[partition]}
        lines = sorted(
            f"{word}/{speaker.id}_nohash_{repetition}.wav"
            for word, speaker, repetition in jobs
            if speaker.id in ids
        )
        (work / list_name).write_text("".join(f"{line}\n" for line in lines))
    summary = {
        "settings": settings,
        "speakers": {partition: len(found) for partition, found in speakers.items()},
        "clips": len(jobs),
        "voices": {s.id: dataclasses.asdict(s.voice) for found in speakers.values() for s in found},
    }
    (work / STAMP_FILE).write_text(json.dumps(summary, indent=1))
    write_folder_fingerprint(work, synthetic_fingerprint(scale, seed))
    work_stamp.unlink()
    if output.exists():
        shutil.rmtree(output)
    work.rename(output)
    return summary
