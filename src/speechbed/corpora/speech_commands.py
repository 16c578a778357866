"""Google Speech Commands (v2 layout): reading the corpus and writing keyword-spotting manifests.

Called by scripts/prep_speech_commands.py (``prepare_speech_commands``); the synthetic corpus
(speechbed.corpora.synthetic_speech_commands) uses the split rule and the word list.

The layout, as a user extracts the archive: one folder per word holding 1 s, 16 kHz, 16-bit
WAV files named ``<speaker>_nohash_<n>.wav``; ``validation_list.txt`` and
``testing_list.txt`` (one ``<word>/<file>`` per line; training is everything not listed);
``_background_noise_/`` with long noise recordings. A partition's manifest holds its
keyword clips, ``unknown`` clips drawn from the other words and ``silence`` clips cut from
the background noise, each extra class at a proportion of the keyword clips (as HANNAH's
``kws`` dataset and TensorFlow's speech_commands example). Each noise file is divided in
time (``NOISE_SPANS``): train's silence and the training noise (``noise.jsonl``, for
augmentation) come from its first 80 %, dev's from the next 10 %, test's from the last 10 %,
so no noise crosses partitions, just as no speaker does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.manifest import read_json_lines, write_json_lines
from speechbed.errors import UserInputError
from speechbed.lineage import fingerprint
from speechbed.outputs import atomic_output

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # every clip is 1 s (shorter files are padded when read)
#: The 35 words of Speech Commands v2.
WORDS_V2 = (
    "backward bed bird cat dog down eight five follow forward four go happy house learn left "
    "marvin nine no off on one right seven sheila six stop three tree two up visual wow yes zero"
).split()
#: The ten keywords of the 12-class task.
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE, UNKNOWN = "silence", "unknown"
NOISE_FOLDER = "_background_noise_"
VALIDATION_LIST, TESTING_LIST = "validation_list.txt", "testing_list.txt"
PARTITIONS = ("train", "dev", "test")
#: Share of each background noise file, in time, that each partition draws from.
NOISE_SPANS = {"train": (0.0, 0.8), "dev": (0.8, 0.9), "test": (0.9, 1.0)}
CLASSES_FILE = "classes.txt"
PREP_RECORD = "prep.json"
PREP_VERSION = CODE_VERSIONS["prep_speech_commands"]
#: The dataset's split rule: a hash of the speaker id, mapped to a percentage.
MAX_FILES_PER_WORD = 2**27 - 1
_CLIP_NAME = re.compile(r"^(?P<speaker>[^_/]+)_nohash_(?P<number>\d+)\.wav$")


@dataclass(frozen=True)
class Clip:
    """One 1 s example of a manifest: a stretch of a WAV file and its class."""

    id: str  # "yes/0a7c2a8d_nohash_0", or "silence/<noise>-<offset>" for cut noise
    label: str  # a class name: a keyword, "unknown" or "silence"
    word: str  # the word spoken (the noise file's stem for silence)
    speaker: str  # the speaker id ("" for noise)
    audio_path: str  # absolute path of the WAV file
    offset: int = 0  # first sample of the clip in the file
    num_samples: int = CLIP_SAMPLES  # samples taken from the file (fewer: zero-padded to 1 s)
    gain: float = 1.0  # the samples are multiplied by this (silence: a random level)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))


def split_of_speaker(
    speaker: str, validation_percent: float = 10.0, testing_percent: float = 10.0
) -> str:
    """The dataset's own rule: SHA-1 of the speaker id as a percentage picks the partition."""
    value = int(hashlib.sha1(speaker.encode("utf-8")).hexdigest(), 16)
    percent = (value % (MAX_FILES_PER_WORD + 1)) * (100.0 / MAX_FILES_PER_WORD)
    if percent < validation_percent:
        return "dev"
    if percent < validation_percent + testing_percent:
        return "test"
    return "train"


def speaker_of(name: str) -> str:
    """The speaker id of a ``<speaker>_nohash_<n>.wav`` name; ValueError for another name."""
    match = _CLIP_NAME.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not named <speaker>_nohash_<n>.wav")
    return match["speaker"]


def read_clip(clip: Clip) -> np.ndarray:
    """The clip's 16000 samples as int16-valued float32 (gain applied, zero-padded to 1 s)."""
    try:
        with soundfile.SoundFile(clip.audio_path) as stream:
            if stream.samplerate != SAMPLE_RATE or stream.channels != 1:
                raise UserInputError(
                    f"{clip.audio_path}: {stream.samplerate} Hz, {stream.channels} channel(s); "
                    f"Speech Commands is {SAMPLE_RATE} Hz mono"
                )
            stream.seek(clip.offset)
            samples = stream.read(min(clip.num_samples, CLIP_SAMPLES), dtype="int16")
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise UserInputError(f"{clip.audio_path}: not a readable WAV file ({error})") from None
    clip_samples = np.zeros(CLIP_SAMPLES, np.float32)
    clip_samples[: len(samples)] = samples.astype(np.float32) * clip.gain
    return clip_samples


def _read_list(path: Path, root: Path) -> set[str]:
    if not path.is_file():
        raise UserInputError(f"{root}: no {path.name}; is this a Speech Commands v2 folder?")
    listed = set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        entry = line.strip()
        if not entry:
            continue
        word, _, name = entry.partition("/")
        if not name or _CLIP_NAME.match(name) is None:
            raise UserInputError(
                f"{path}:{number}: {entry!r} is not <word>/<speaker>_nohash_<n>.wav"
            )
        listed.add(entry)
    return listed


@dataclass(frozen=True)
class CorpusListing:
    """Every word clip of a corpus by partition, and its background noise files."""

    clips: dict[str, list[Clip]]  # partition -> word clips (label = the word)
    noise_files: list[tuple[Path, int]]  # (path, frames), sorted by name


def list_corpus(root: str | Path) -> CorpusListing:
    """Read the layout: word folders, the two lists, ``_background_noise_``; check the speakers.

    A clip listed twice, a listed file that is missing, or a speaker in two partitions is an
    error naming the files.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserInputError(f"{root}: no Speech Commands folder here")
    listed = {
        "dev": _read_list(root / VALIDATION_LIST, root),
        "test": _read_list(root / TESTING_LIST, root),
    }
    both = listed["dev"] & listed["test"]
    if both:
        raise UserInputError(
            f"{root}: {sorted(both)[0]} is in both {VALIDATION_LIST} and {TESTING_LIST}"
        )
    clips: dict[str, list[Clip]] = {partition: [] for partition in PARTITIONS}
    speaker_partition: dict[str, tuple[str, str]] = {}
    seen: set[str] = set()
    for folder in sorted(path for path in root.iterdir() if path.is_dir()):
        if folder.name.startswith((".", "_")):
            continue
        for path in sorted(folder.glob("*.wav")):
            relative = f"{folder.name}/{path.name}"
            try:
                speaker = speaker_of(path.name)
            except ValueError as error:
                raise UserInputError(f"{path}: {error}") from None
            partition = next((p for p, names in listed.items() if relative in names), "train")
            earlier = speaker_partition.setdefault(speaker, (partition, relative))
            if earlier[0] != partition:
                raise UserInputError(
                    f"{root}: speaker {speaker} is in {earlier[0]} ({earlier[1]}) and in "
                    f"{partition} ({relative}); the lists must keep each speaker in one partition"
                )
            seen.add(relative)
            clip_id = relative[: -len(".wav")]
            clips[partition].append(
                Clip(
                    clip_id, folder.name, folder.name, speaker, str(path.resolve()), 0, CLIP_SAMPLES
                )
            )
    for partition, names in listed.items():
        missing = sorted(names - seen)
        if missing:
            raise UserInputError(
                f"{root}: {missing[0]} (and {len(missing) - 1} more) listed for {partition} but not there"
            )
    noise_folder = root / NOISE_FOLDER
    if not noise_folder.is_dir():
        raise UserInputError(f"{root}: no {NOISE_FOLDER}/ folder (silence is cut from it)")
    noise_files = []
    for path in sorted(noise_folder.glob("*.wav")):
        info = soundfile.info(str(path))
        if info.samplerate != SAMPLE_RATE or info.channels != 1:
            raise UserInputError(
                f"{path}: {info.samplerate} Hz, {info.channels} channel(s); need 16 kHz mono"
            )
        if info.frames < 10 * CLIP_SAMPLES:
            raise UserInputError(
                f"{path}: {info.frames / SAMPLE_RATE:.1f} s; noise files need at least 10 s"
            )
        noise_files.append((path.resolve(), int(info.frames)))
    if not noise_files:
        raise UserInputError(f"{noise_folder}: no .wav files")
    return CorpusListing(clips, noise_files)


def noise_span(frames: int, partition: str) -> tuple[int, int]:
    """The samples ``[start, end)`` of a noise file that ``partition`` may use."""
    low, high = NOISE_SPANS[partition]
    return int(frames * low), int(frames * high)


def silence_clips(
    noise_files: Sequence[tuple[Path, int]], partition: str, count: int, rng: np.random.Generator
) -> list[Clip]:
    """``count`` 1 s stretches of noise from the partition's span, each at a random level."""
    clips = []
    for _ in range(count):
        path, frames = noise_files[int(rng.integers(len(noise_files)))]
        start, end = noise_span(frames, partition)
        offset = int(rng.integers(start, end - CLIP_SAMPLES + 1))
        gain = round(float(rng.uniform(0.0, 1.0)), 4)
        clip_id = f"{SILENCE}/{path.stem}-{offset}"
        clips.append(Clip(clip_id, SILENCE, path.stem, "", str(path), offset, CLIP_SAMPLES, gain))
    return clips


def training_noise(noise_files: Sequence[tuple[Path, int]]) -> list[Clip]:
    """The train span of every noise file in 1 s clips (the augmentation's noise)."""
    clips = []
    for path, frames in noise_files:
        start, end = noise_span(frames, "train")
        for offset in range(start, end - CLIP_SAMPLES + 1, CLIP_SAMPLES):
            clips.append(
                Clip(f"noise/{path.stem}-{offset}", SILENCE, path.stem, "", str(path), offset)
            )
    return clips


def partition_clips(
    word_clips: Sequence[Clip],
    noise_files: Sequence[tuple[Path, int]],
    partition: str,
    keywords: Sequence[str],
    silence_proportion: float,
    unknown_proportion: float,
    seed: int,
) -> list[Clip]:
    """A partition's manifest: its keyword clips, then ``unknown`` and ``silence`` clips.

    Each extra class has ``ceil(proportion * keyword clips)`` clips (unknown: at most as many
    clips of other words as there are).
    """
    rng = np.random.default_rng([seed, PARTITIONS.index(partition)])
    wanted = [clip for clip in word_clips if clip.word in keywords]
    others = [clip for clip in word_clips if clip.word not in keywords]
    unknown_count = min(len(others), math.ceil(unknown_proportion * len(wanted)))
    picked = sorted(rng.choice(len(others), unknown_count, replace=False)) if unknown_count else []
    unknown = [dataclasses.replace(others[index], label=UNKNOWN) for index in picked]
    silence_count = math.ceil(silence_proportion * len(wanted))
    return wanted + unknown + silence_clips(noise_files, partition, silence_count, rng)


def class_names(keywords: Sequence[str]) -> list[str]:
    """The classes in label-id order: silence, unknown, then the keywords."""
    return [SILENCE, UNKNOWN, *keywords]


def write_clips(path: Path, clips: Iterable[Clip]) -> None:
    write_json_lines(path, clips)


def read_clips(path: str | Path) -> list[Clip]:
    """A KWS manifest; a malformed line is an error naming the file and line."""
    return read_json_lines(
        path,
        lambda line: Clip(**json.loads(line)),
        missing="manifest not found (run scripts/prep_speech_commands.py)",
        record="clip",
    )


def prepare_speech_commands(
    corpus: str | Path,
    output: str | Path,
    keywords: Sequence[str] = KEYWORDS,
    silence_proportion: float = 0.1,
    unknown_proportion: float = 0.1,
    seed: int = 0,
    force: bool = False,
) -> dict[str, dict[str, int]] | None:
    """Write ``<partition>.jsonl`` (train, dev, test), ``noise.jsonl`` and ``classes.txt``.

    Returns the clips per class per partition, or None when ``output`` is already up to date
    with the corpus and the settings (``prep.json`` records both).
    """
    unknown_words = sorted(set(keywords) - set(WORDS_V2))
    if unknown_words or len(set(keywords)) != len(keywords) or not keywords:
        raise UserInputError(
            f"keywords must be distinct words of Speech Commands v2; not {unknown_words}"
        )
    corpus, output = Path(corpus), Path(output)
    settings = {
        "keywords": list(keywords),
        "silence_proportion": silence_proportion,
        "unknown_proportion": unknown_proportion,
        "seed": seed,
        "version": PREP_VERSION,
        "corpus": fingerprint(corpus),
    }
    record_path = output / PREP_RECORD
    if not force and record_path.is_file():
        if json.loads(record_path.read_text()).get("settings") == settings:
            return None
    listing = list_corpus(corpus)
    counts: dict[str, dict[str, int]] = {}
    with atomic_output(output) as temporary:
        temporary.mkdir(parents=True)
        for partition in PARTITIONS:
            clips = partition_clips(
                listing.clips[partition], listing.noise_files, partition, keywords,
                silence_proportion, unknown_proportion, seed,
            )  # fmt: skip
            if not any(clip.label in keywords for clip in clips):
                raise UserInputError(f"{corpus}: partition {partition} has no keyword clips")
            write_clips(temporary / f"{partition}.jsonl", clips)
            counts[partition] = {
                name: sum(c.label == name for c in clips) for name in class_names(keywords)
            }
        write_clips(temporary / "noise.jsonl", training_noise(listing.noise_files))
        (temporary / CLASSES_FILE).write_text(
            "".join(f"{name}\n" for name in class_names(keywords))
        )
        (temporary / PREP_RECORD).write_text(
            json.dumps({"settings": settings, "counts": counts}, indent=1)
        )
    return counts
