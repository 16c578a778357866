"""A synthetic LibriSpeech: grammar sentences spoken by many eSpeak NG voices, in LibriSpeech's layout.

Called by scripts/make_synthetic_librispeech.py; scripts/prep_librispeech.py then reads it like
the real corpus, so the RNN-T recipe runs anywhere without downloading anything.

The corpus root holds ``train-clean-100/``, ``dev-clean/`` and ``test-clean/`` with
``<speaker>/<chapter>/<speaker>-<chapter>-<nnnn>.flac`` (16 kHz, 16-bit) and a
``<speaker>-<chapter>.trans.txt`` per chapter (upper case, no punctuation, as LibriSpeech
writes them), plus ``SPEAKERS.TXT`` and ``CHAPTERS.TXT``. Sentences come from the grammar of
speechbed.corpora.sentences (a vocabulary of about 400 words); every utterance has its own
sentence, so the three subsets share words but no sentence. Each speaker has their own voice
(eSpeak accent and variant, rate, pitch, level, background noise), and no speaker is in two
subsets.

Everything is a function of the scale and the seed: the same settings give the same bytes.
Each FLAC and transcript file is written atomically and kept when the corpus is made again,
so a killed run continues where it stopped; ``STAMP_FILE`` records the settings from the start
(a corpus of other settings is removed first) and the folder's fingerprint is written last.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import soundfile
from pydantic import Field

from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.asr_prep import default_workers, run_in_parallel
from speechbed.corpora.espeak import Voice
from speechbed.corpora.sentences import SHARED_PROMPTS, SentenceGenerator
from speechbed.corpora.synthesis import SAMPLE_RATE, synthesize_utterance
from speechbed.corpora.synthetic import DIALECT_ACCENTS, FEMALE_VARIANTS, MALE_VARIANTS
from speechbed.corpora.text_normalization import normalize_transcript
from speechbed.errors import UserInputError
from speechbed.jobs import JobSchema, output_path
from speechbed.lineage import FINGERPRINT_FILE, digest
from speechbed.outputs import atomic_output, make_folder, remove_path, write_text_atomic

#: Bump when the generator's output changes, so corpora made by older code are made again.
GENERATOR_VERSION = CODE_VERSIONS["synthetic_librispeech"]
STAMP_FILE = "SPEECHBED_SYNTHETIC.json"
#: LibriSpeech is mostly American English; other accents are rarer.
ACCENT_WEIGHTS = {
    DIALECT_ACCENTS["dr2"]: 6,  # en-us
    DIALECT_ACCENTS["dr6"]: 1,  # en-US-nyc
    DIALECT_ACCENTS["dr7"]: 1,  # en (British)
    DIALECT_ACCENTS["dr1"]: 1,  # en-GB-x-rp
    DIALECT_ACCENTS["dr8"]: 1,  # en-GB-scotland
}


@dataclass(frozen=True)
class SubsetScale:
    speakers: int
    chapters_per_speaker: int
    utterances_per_chapter: int

    @property
    def utterances(self) -> int:
        return self.speakers * self.chapters_per_speaker * self.utterances_per_chapter


SCALES: dict[str, dict[str, SubsetScale]] = {
    "tiny": {
        "train-clean-100": SubsetScale(8, 1, 8),
        "dev-clean": SubsetScale(2, 1, 6),
        "test-clean": SubsetScale(2, 1, 6),
    },
    "small": {
        "train-clean-100": SubsetScale(100, 2, 8),
        "dev-clean": SubsetScale(10, 1, 16),
        "test-clean": SubsetScale(10, 1, 16),
    },
}


@dataclass(frozen=True)
class Chapter:
    """One chapter to speak: where it goes, who reads it, its utterances (id, transcript, text)."""

    subset: str
    speaker: int
    chapter: int
    gender: str  # "M" | "F"
    voice: Voice
    utterances: tuple[tuple[str, str, str], ...]

    def folder(self, root: Path) -> Path:
        return root / self.subset / str(self.speaker) / str(self.chapter)


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def make_voice(seed: int, speaker: int, gender: str) -> Voice:
    """A speaker's voice: a function of the seed and the speaker id only."""
    rng = _rng(seed, f"voice-{speaker}")
    accents = list(ACCENT_WEIGHTS)
    weights = np.array(list(ACCENT_WEIGHTS.values()), dtype=float)
    variants = MALE_VARIANTS if gender == "M" else FEMALE_VARIANTS
    return Voice(
        accent=accents[int(rng.choice(len(accents), p=weights / weights.sum()))],
        variant=variants[int(rng.integers(len(variants)))],
        rate=int(rng.integers(140, 201)),
        pitch=int(rng.integers(25, 56) if gender == "M" else rng.integers(45, 81)),
        pitch_range=int(rng.integers(30, 71)),
        level=float(rng.uniform(0.2, 0.6)),
        noise=float(rng.uniform(1.0, 6.0)),
    )


def librispeech_transcript(sentence: str) -> str:
    """A sentence as LibriSpeech writes transcripts: upper case, no punctuation."""
    return normalize_transcript(sentence).upper()


def plan_chapters(scale: str, seed: int) -> list[Chapter]:
    """Every chapter of the corpus with its speaker, voice and sentences, subset by subset."""
    rng = _rng(seed, "ids")
    sentences = SentenceGenerator(seed)
    used = set(SHARED_PROMPTS)
    speaker_ids = iter(rng.permutation(np.arange(100, 10000))[:1000].tolist())
    chapter_ids = iter(rng.permutation(np.arange(10000, 300000))[:5000].tolist())
    chapters = []
    for subset, sizes in SCALES[scale].items():
        for index in range(sizes.speakers):
            speaker = int(next(speaker_ids))
            gender = "F" if index % 2 else "M"
            voice = make_voice(seed, speaker, gender)
            for _ in range(sizes.chapters_per_speaker):
                chapter = int(next(chapter_ids))
                texts = sentences.unique_sentences(sizes.utterances_per_chapter, exclude=used)
                used.update(texts)
                utterances = tuple(
                    (f"{speaker}-{chapter}-{number:04d}", librispeech_transcript(text), text)
                    for number, text in enumerate(texts)
                )
                chapters.append(Chapter(subset, speaker, chapter, gender, voice, utterances))
    return chapters


def write_chapter(task: tuple[Path, Chapter, int]) -> int:
    """Speak one chapter's missing utterances into FLAC files, then its transcript file;
    returns the chapter's number of samples."""
    root, chapter, seed = task
    folder = make_folder(chapter.folder(root))
    total = 0
    for utterance, _, text in chapter.utterances:
        target = folder / f"{utterance}.flac"
        if target.is_file():
            total += soundfile.info(str(target)).frames
            continue
        rng = _rng(seed, utterance)
        padding = (int(rng.integers(1600, 4001)), int(rng.integers(1600, 4001)))  # 100-250 ms
        samples = synthesize_utterance(text, chapter.voice, rng, padding).samples
        with atomic_output(target) as temporary:
            soundfile.write(temporary, samples, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        total += len(samples)
    lines = "".join(
        f"{utterance} {transcript}\n" for utterance, transcript, _ in chapter.utterances
    )
    write_text_atomic(folder / f"{chapter.speaker}-{chapter.chapter}.trans.txt", lines)
    return total


def _index_files(chapters: list[Chapter], minutes: dict[int, float]) -> tuple[str, str]:
    """SPEAKERS.TXT and CHAPTERS.TXT in LibriSpeech's pipe-separated form."""
    speakers = [";ID  |SEX| SUBSET           |MINUTES| NAME\n"]
    chapter_lines = [";ID    |READER|MINUTES| SUBSET           | PROJ.|BOOK ID| CH. TITLE\n"]
    seen: dict[int, float] = {}
    for chapter in chapters:
        seen[chapter.speaker] = seen.get(chapter.speaker, 0.0) + minutes[chapter.chapter]
    for chapter in chapters:
        chapter_lines.append(
            f"{chapter.chapter:<7}| {chapter.speaker:<5}| {minutes[chapter.chapter]:5.2f} | "
            f"{chapter.subset:<17}| 0    | 0     | synthetic chapter {chapter.chapter}\n"
        )
        if chapter.speaker in seen:
            speakers.append(
                f"{chapter.speaker:<5}| {chapter.gender} | {chapter.subset:<17}| "
                f"{seen.pop(chapter.speaker):5.2f} | eSpeak {chapter.voice.espeak_name}\n"
            )
    return "".join(speakers), "".join(chapter_lines)


def synthetic_fingerprint(scale: str, seed: int) -> str:
    return digest(["synthetic-librispeech", scale, str(seed), f"generator {GENERATOR_VERSION}"])


def make_synthetic_librispeech(
    output_path: str | Path,
    scale: str,
    seed: int,
    workers: int = 0,
    force: bool = False,
    progress: bool = True,
) -> dict | None:
    """Write (or finish) the corpus at ``output_path``; None when it is already complete."""
    if scale not in SCALES:
        raise UserInputError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    output = Path(output_path)
    settings = {"scale": scale, "seed": seed, "generator_version": GENERATOR_VERSION}
    stamp = output / STAMP_FILE
    if output.exists():
        if not stamp.is_file():
            raise UserInputError(
                f"{output}: exists and is not a synthetic corpus made by speechbed (no "
                f"{STAMP_FILE}); remove it or choose another output_path"
            )
        recorded = json.loads(stamp.read_text(encoding="utf-8"))
        if recorded.get("settings") != settings or force:
            remove_path(output)  # ours, made with other settings: start afresh
        elif recorded.get("complete") and (output / FINGERPRINT_FILE).is_file():
            return None
    make_folder(output)
    (output / FINGERPRINT_FILE).unlink(missing_ok=True)
    write_text_atomic(stamp, json.dumps({"settings": settings, "complete": False}, indent=1))
    chapters = plan_chapters(scale, seed)
    totals = run_in_parallel(
        write_chapter,
        [(output, chapter, seed) for chapter in chapters],
        default_workers(workers),
        f"speaking synthetic LibriSpeech ({scale})",
        progress,
        unit="chapter",
    )
    minutes = {
        c.chapter: total / SAMPLE_RATE / 60 for c, total in zip(chapters, totals, strict=True)
    }
    speakers_text, chapters_text = _index_files(chapters, minutes)
    write_text_atomic(output / "SPEAKERS.TXT", speakers_text)
    write_text_atomic(output / "CHAPTERS.TXT", chapters_text)
    subsets = {}
    for subset, sizes in SCALES[scale].items():
        hours = sum(minutes[c.chapter] for c in chapters if c.subset == subset) / 60
        subsets[subset] = {
            "speakers": sizes.speakers,
            "utterances": sizes.utterances,
            "hours": round(hours, 3),
        }
    vocabulary = {
        word for c in chapters for _, transcript, _ in c.utterances for word in transcript.split()
    }
    summary = {
        "settings": settings,
        "complete": True,
        "subsets": subsets,
        "vocabulary": len(vocabulary),
        "voices": {str(c.speaker): asdict(c.voice) for c in chapters},
    }
    write_text_atomic(stamp, json.dumps(summary, indent=1) + "\n")
    # the fingerprint last: it says the corpus is complete (speechbed.lineage)
    write_text_atomic(output / FINGERPRINT_FILE, synthetic_fingerprint(scale, seed) + "\n")
    return summary


class MakeSyntheticLibriSpeechJob(JobSchema):
    """scripts/make_synthetic_librispeech.py's job."""

    code_versions: ClassVar[dict[str, int]] = {
        "synthetic_librispeech": CODE_VERSIONS["synthetic_librispeech"]
    }

    output_path: Path = output_path(
        description="corpus root to write (receives train-clean-100/, dev-clean/, test-clean/)"
    )
    scale: Literal["tiny", "small"] = Field(
        "tiny",
        description="; ".join(
            f"{name}: "
            + ", ".join(
                f"{s} {sizes.speakers} speakers {sizes.utterances} utterances"
                for s, sizes in subsets.items()
            )
            for name, subsets in SCALES.items()
        ),
    )
    seed: int = Field(0, description="the same seed gives the same corpus, byte for byte")
    workers: int = Field(0, ge=0, description="synthesis processes (0: one per CPU core)")
