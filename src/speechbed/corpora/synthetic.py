"""The synthetic TIMIT: speakers, voices and prompts laid out like the LDC corpus, spoken by eSpeak NG.

Called by scripts/make_synthetic_timit.py; scripts/prep_timit.py then reads it like the real corpus.

Every speaker reads SA1 and SA2 (the two shared prompts), five SX prompts (each SX prompt
is read by about seven speakers of the same LDC split, as in TIMIT; TRAIN and TEST share no
SX or SI prompt) and three SI prompts of their own. Dev and core-test speakers carry the ids
of the standard lists (core-test speakers in their real dialect regions; dev speakers spread
over DR1..DR8), so the standard partitioning applies unchanged. Training speakers get
invented ids in the same scheme. A speaker's voice (accent of their dialect region, voice
variant of their gender, rate, pitch, level, background noise) depends only on the seed,
their id and their region, so dev and core-test speakers sound the same at every scale.
"""

from __future__ import annotations

import json
import math
import string
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.espeak import Voice
from speechbed.corpora.sentences import SHARED_PROMPTS, SentenceGenerator
from speechbed.corpora.sphere import write_sphere
from speechbed.corpora.synthesis import SAMPLE_RATE, synthesize_utterance
from speechbed.corpora.timit import CORE_TEST_SPEAKERS, DEV_SPEAKERS
from speechbed.errors import UserInputError
from speechbed.lineage import FINGERPRINT_FILE, digest, write_folder_fingerprint
from speechbed.outputs import atomic_output, write_text_atomic

#: Bump when the generator's output changes, so corpora made by older code are redone.
GENERATOR_VERSION = CODE_VERSIONS["synthetic_timit"]
#: Written at the corpus root: the settings it was made with (also marks it as ours).
STAMP_FILE = "SPEECHBED_SYNTHETIC.json"

DIALECTS = tuple(f"dr{number}" for number in range(1, 9))
#: The eSpeak accent of each dialect region (TIMIT: New England, Northern, North Midland,
#: South Midland, Southern, New York City, Western, Army Brat).
DIALECT_ACCENTS = {
    "dr1": "en-GB-x-rp",
    "dr2": "en-us",
    "dr3": "en-GB-x-gbcwmd",
    "dr4": "en-GB-x-gbclan",
    "dr5": "en-029",
    "dr6": "en-US-nyc",
    "dr7": "en",
    "dr8": "en-GB-scotland",
}
MALE_VARIANTS = "m1 m2 m3 m4 m5 m6 m7 Andy Denis Hugo Lee antonio michel travis victor".split()
FEMALE_VARIANTS = (
    "f1 f2 f3 f4 f5 Alicia Andrea Annie anika aunty belinda linda steph steph2 steph3".split()
)
#: TIMIT's speakers per dialect region.
TIMIT_TRAIN_PER_DIALECT = (38, 76, 76, 68, 70, 35, 77, 22)
TIMIT_TEST_PER_DIALECT = (11, 26, 26, 32, 28, 11, 23, 11)
#: The real dialect region of each core-test speaker (a published fact about TIMIT).
CORE_TEST_DIALECTS = {
    "mdab0": "dr1", "mwbt0": "dr1", "felc0": "dr1", "mtas1": "dr2", "mwew0": "dr2",
    "fpas0": "dr2", "mjmp0": "dr3", "mlnt0": "dr3", "fpkt0": "dr3", "mlll0": "dr4",
    "mtls0": "dr4", "fjlm0": "dr4", "mbpm0": "dr5", "mklt0": "dr5", "fnlp0": "dr5",
    "mcmj0": "dr6", "mjdh0": "dr6", "fmgd0": "dr6", "mgrt0": "dr7", "mnjm0": "dr7",
    "fdhc0": "dr7", "mjln0": "dr8", "mpam0": "dr8", "fmld0": "dr8",
}  # fmt: skip
SX_PER_SPEAKER = 5
SI_PER_SPEAKER = 3
READERS_PER_SX = 7
FIRST_SX, FIRST_SI = 3, 453  # TIMIT's numbering: SX3.., SI453..


@dataclass(frozen=True)
class Scale:
    """How many speakers of each kind a corpus has."""

    train_speakers: int
    dev_speakers: int  # taken from the standard dev list
    core_speakers: int  # taken from the core-test list
    other_test_speakers: int  # TEST speakers in no partition (full scale, as in TIMIT)


SCALES = {
    "tiny": Scale(train_speakers=6, dev_speakers=2, core_speakers=2, other_test_speakers=0),
    "small": Scale(train_speakers=80, dev_speakers=10, core_speakers=8, other_test_speakers=0),
    "full": Scale(train_speakers=462, dev_speakers=50, core_speakers=24, other_test_speakers=94),
}


@dataclass(frozen=True)
class Speaker:
    split: str  # "train" | "test" (the LDC folder)
    dialect: str
    id: str  # lowercase, e.g. "mabc0"
    voice: Voice

    @property
    def gender(self) -> str:
        return self.id[0]

    def folder(self, root: Path) -> Path:
        return root / self.split.upper() / self.dialect.upper() / self.id.upper()


@dataclass(frozen=True)
class Prompt:
    speaker: Speaker
    name: str  # "sa1", "sx17", "si480"
    text: str

    @property
    def utterance_id(self) -> str:
        return f"{self.speaker.id}-{self.name}"


# --------------------------------------------------------------------------- speakers


def _speaker_rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def make_voice(seed: int, speaker_id: str, dialect: str) -> Voice:
    """The voice of a speaker: a function of the seed, the id and the region only."""
    rng = _speaker_rng(seed, speaker_id)
    male = speaker_id.startswith("m")
    variants = MALE_VARIANTS if male else FEMALE_VARIANTS
    return Voice(
        accent=DIALECT_ACCENTS[dialect],
        variant=variants[int(rng.integers(len(variants)))],
        rate=int(rng.integers(145, 196)),
        pitch=int(rng.integers(25, 56) if male else rng.integers(45, 81)),
        pitch_range=int(rng.integers(30, 71)),
        level=float(rng.uniform(0.2, 0.6)),
        noise=float(rng.uniform(1.0, 6.0)),
    )


def _spread(count: int, weights: tuple[int, ...]) -> list[int]:
    """Split ``count`` over the weights by largest remainder."""
    total = sum(weights)
    quotas = [count * weight / total for weight in weights]
    shares = [math.floor(quota) for quota in quotas]
    by_remainder = sorted(range(len(weights)), key=lambda index: shares[index] - quotas[index])
    for index in by_remainder[: count - sum(shares)]:
        shares[index] += 1
    return shares


def _alternate_genders(ids: list[str]) -> list[str]:
    """The ids reordered male, female, male, female, ... while both last."""
    males = [speaker for speaker in ids if speaker.startswith("m")]
    females = [speaker for speaker in ids if speaker.startswith("f")]
    ordered = []
    for index in range(max(len(males), len(females))):
        ordered += males[index : index + 1] + females[index : index + 1]
    return ordered


def _invent_ids(rng: np.random.Generator, genders: list[str], taken: set[str]) -> list[str]:
    ids = []
    for gender in genders:
        while True:
            letters = "".join(rng.choice(list(string.ascii_lowercase), 3))
            candidate = f"{gender}{letters}{int(rng.integers(0, 2))}"
            if candidate not in taken:
                taken.add(candidate)
                ids.append(candidate)
                break
    return ids


def plan_speakers(scale: Scale, seed: int) -> list[Speaker]:
    """Every speaker of a corpus: training speakers, then dev, core test and other test speakers."""
    rng = _speaker_rng(seed, "speaker-ids")
    taken = set(CORE_TEST_SPEAKERS) | set(DEV_SPEAKERS)
    speakers = []
    # Training: TIMIT's dialect proportions; 3 in 10 female, the second speaker female.
    dialects = [
        dialect
        for dialect, share in zip(
            DIALECTS, _spread(scale.train_speakers, TIMIT_TRAIN_PER_DIALECT), strict=True
        )
        for _ in range(share)
    ]
    genders = ["f" if index % 10 in (1, 4, 7) else "m" for index in range(len(dialects))]
    for dialect, speaker in zip(dialects, _invent_ids(rng, genders, taken), strict=True):
        speakers.append(Speaker("train", dialect, speaker, make_voice(seed, speaker, dialect)))
    # Dev: a gender-balanced prefix of the standard list, spread over the dialect regions.
    dev_dialects = {speaker: DIALECTS[index % 8] for index, speaker in enumerate(DEV_SPEAKERS)}
    for speaker in sorted(_alternate_genders(list(DEV_SPEAKERS))[: scale.dev_speakers]):
        dialect = dev_dialects[speaker]
        speakers.append(Speaker("test", dialect, speaker, make_voice(seed, speaker, dialect)))
    # Core test: one speaker per dialect region first (genders alternating), then the rest.
    by_dialect: dict[str, list[str]] = {dialect: [] for dialect in DIALECTS}
    for speaker in sorted(CORE_TEST_SPEAKERS):
        by_dialect[CORE_TEST_DIALECTS[speaker]].append(speaker)
    order: list[str] = []
    for round_ in range(3):
        for index, dialect in enumerate(DIALECTS):
            wanted = "m" if (index + round_) % 2 == 0 else "f"
            left = [speaker for speaker in by_dialect[dialect] if speaker not in order]
            order.append(next((s for s in left if s[0] == wanted), left[0]))
    for speaker in sorted(order[: scale.core_speakers]):
        dialect = CORE_TEST_DIALECTS[speaker]
        speakers.append(Speaker("test", dialect, speaker, make_voice(seed, speaker, dialect)))
    # Other test speakers (full scale): fill each region up to TIMIT's test count.
    if scale.other_test_speakers:
        placed = {dialect: 0 for dialect in DIALECTS}
        for speaker in speakers:
            if speaker.split == "test":
                placed[speaker.dialect] += 1
        room = [
            max(0, want - placed[d])
            for d, want in zip(DIALECTS, TIMIT_TEST_PER_DIALECT, strict=True)
        ]
        dialects = [
            dialect
            for dialect, share in zip(
                DIALECTS, _spread(scale.other_test_speakers, tuple(room)), strict=True
            )
            for _ in range(share)
        ]
        genders = ["f" if index % 10 in (1, 4, 7) else "m" for index in range(len(dialects))]
        for dialect, speaker in zip(dialects, _invent_ids(rng, genders, taken), strict=True):
            speakers.append(Speaker("test", dialect, speaker, make_voice(seed, speaker, dialect)))
    return speakers


# --------------------------------------------------------------------------- prompts


def plan_prompts(speakers: list[Speaker], seed: int) -> list[Prompt]:
    """SA1, SA2, the SX prompts (shared within an LDC split) and the SI prompts of every speaker."""
    generator = SentenceGenerator(seed)
    used = set(SHARED_PROMPTS)
    prompts = []
    next_sx, next_si = FIRST_SX, FIRST_SI
    for split in ("train", "test"):
        readers = [speaker for speaker in speakers if speaker.split == split]
        pool_size = max(SX_PER_SPEAKER, math.ceil(len(readers) * SX_PER_SPEAKER / READERS_PER_SX))
        pool = generator.unique_sentences(pool_size, exclude=used)
        used.update(pool)
        for position, speaker in enumerate(readers):
            for index, text in enumerate(SHARED_PROMPTS, start=1):
                prompts.append(Prompt(speaker, f"sa{index}", text))
            for offset in range(SX_PER_SPEAKER):
                number = (position * SX_PER_SPEAKER + offset) % pool_size
                prompts.append(Prompt(speaker, f"sx{next_sx + number}", pool[number]))
            for text in generator.unique_sentences(SI_PER_SPEAKER, exclude=used):
                used.add(text)
                prompts.append(Prompt(speaker, f"si{next_si}", text))
                next_si += 1
        next_sx += pool_size
    return prompts


# --------------------------------------------------------------------------- writing


def write_utterance(root: Path, prompt: Prompt, seed: int) -> int:
    """Synthesize one prompt and write its .WAV/.PHN/.WRD/.TXT; returns its sample count."""
    rng = _speaker_rng(seed, prompt.utterance_id)
    padding = (int(rng.integers(1600, 4001)), int(rng.integers(1600, 4001)))  # 100-250 ms
    spoken = synthesize_utterance(prompt.text, prompt.speaker.voice, rng, padding)
    folder = prompt.speaker.folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / prompt.name.upper()
    write_sphere(
        stem.with_suffix(".WAV"),
        spoken.samples,
        SAMPLE_RATE,
        fields={
            "database_id": "SPEECHBED_SYNTHETIC_TIMIT",
            "database_version": str(GENERATOR_VERSION),
            "utterance_id": f"{prompt.speaker.id[1:]}_{prompt.name}",
        },
    )
    for extension, segments in ((".PHN", spoken.phones), (".WRD", spoken.words)):
        stem.with_suffix(extension).write_text(
            "".join(f"{s.start} {s.end} {s.label}\n" for s in segments), encoding="ascii"
        )
    stem.with_suffix(".TXT").write_text(
        f"0 {len(spoken.samples)} {prompt.text}\n", encoding="ascii"
    )
    return len(spoken.samples)


def synthetic_fingerprint(scale: str, seed: int) -> str:
    """The lineage fingerprint of a complete corpus: its settings say every byte it holds."""
    return digest(["synthetic-timit", scale, str(seed), f"generator {GENERATOR_VERSION}"])


def make_synthetic_timit(
    output_path: str | Path, scale: str, seed: int, force: bool = False, progress: bool = True
) -> dict | None:
    """Write the corpus at ``output_path`` (atomically); None when it already exists as asked.

    The corpus is written under a temporary name of this process (speechbed.outputs) and
    renamed into place once complete, with ``FINGERPRINT_FILE`` (see ``synthetic_fingerprint``),
    so a new seed or scale is a changed input to every step downstream.
    """
    if scale not in SCALES:
        raise UserInputError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    output = Path(output_path)
    settings = {"scale": scale, "seed": seed, "generator_version": GENERATOR_VERSION}
    fingerprint = synthetic_fingerprint(scale, seed)
    if output.exists():
        stamp = output / STAMP_FILE
        if not stamp.is_file():
            raise UserInputError(
                f"{output}: exists and is not a synthetic corpus made by speechbed "
                f"(no {STAMP_FILE}); remove it or choose another output_path"
            )
        recorded = json.loads(stamp.read_text())
        if not force and recorded.get("settings") == settings:
            if not (output / FINGERPRINT_FILE).is_file():  # made before corpora carried one
                write_text_atomic(output / FINGERPRINT_FILE, fingerprint + "\n")
            return None
    speakers = plan_speakers(SCALES[scale], seed)
    prompts = plan_prompts(speakers, seed)
    with atomic_output(output) as temporary:
        temporary.mkdir()
        total_samples = 0
        for prompt in tqdm(
            prompts, desc=f"synthesizing ({scale})", unit="utt", disable=not progress
        ):
            total_samples += write_utterance(temporary, prompt, seed)
        summary = {
            "settings": settings,
            "speakers": {
                split: sum(s.split == split for s in speakers) for split in ("train", "test")
            },
            "utterances": len(prompts),
            "hours": round(total_samples / SAMPLE_RATE / 3600, 3),
            "voices": {speaker.id: asdict(speaker.voice) for speaker in speakers},
        }
        (temporary / STAMP_FILE).write_text(json.dumps(summary, indent=1))
        write_folder_fingerprint(temporary, fingerprint)
    return summary
