"""The subword tokenizer of the RNN-T recipe: a sentencepiece model trained on training transcripts.

Trained by scripts/train_tokenizer.py (a pipeline step) through ``train_tokenizer``; runs load
it with ``load_tokenizer`` and copy ``tokenizer.model`` into their run folder.

A tokenizer folder holds ``tokenizer.model`` (the sentencepiece model, the file a run copies),
``tokenizer.vocab`` (its pieces and scores, for people) and ``tokenizer.json`` (the settings and
the digest of the transcripts it was trained on: the step is skipped while they match). Token
ids run from 0 to ``spm_size - 1``; id 0 is ``<unk>`` and there are no BOS/EOS/padding ids,
so the RNN-T blank can take id ``spm_size``. Training is deterministic (one thread, every
sentence used, no sampling): the same transcripts and settings give the same bytes.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from speechbed.code_versions import CODE_VERSIONS
from speechbed.corpora.asr_manifest import read_manifests
from speechbed.corpora.text_normalization import normalize_transcript
from speechbed.errors import UserInputError
from speechbed.jobs import JobSchema, input_path, output_path
from speechbed.lineage import digest, write_folder_fingerprint
from speechbed.outputs import atomic_output

MODEL_FILE = "tokenizer.model"
VOCAB_FILE = "tokenizer.vocab"
SETTINGS_FILE = "tokenizer.json"
#: Bumped (in speechbed.code_versions) when training changes what it writes for the same input.
TOKENIZER_VERSION = CODE_VERSIONS["tokenizer"]

ModelType = Literal["unigram", "bpe"]


@dataclass(frozen=True)
class TokenizerSettings:
    spm_size: int
    model_type: ModelType = "unigram"
    character_coverage: float = 1.0

    def to_json(self) -> dict:
        return {
            "spm_size": self.spm_size,
            "model_type": self.model_type,
            "character_coverage": self.character_coverage,
            "version": TOKENIZER_VERSION,
        }


class Tokenizer:
    """Text to token ids and back with a trained sentencepiece model."""

    def __init__(self, model: bytes, source: str = "<bytes>") -> None:
        import sentencepiece

        self.model_bytes = model
        self.source = source
        self._processor = sentencepiece.SentencePieceProcessor()
        try:
            self._processor.LoadFromSerializedProto(model)
        except (RuntimeError, OSError) as error:
            raise UserInputError(f"{source}: not a sentencepiece model: {error}") from None

    @property
    def vocab_size(self) -> int:
        """How many token ids there are (the RNN-T blank is the next id)."""
        return self._processor.GetPieceSize()

    @property
    def pieces(self) -> list[str]:
        return [self._processor.IdToPiece(index) for index in range(self.vocab_size)]

    def score(self, index: int) -> float:
        """The model's log probability (unigram) or merge rank (bpe) of a piece."""
        return self._processor.GetScore(index)

    def encode(self, text: str) -> list[int]:
        return list(self._processor.EncodeAsIds(text))

    def decode(self, ids: Sequence[int]) -> str:
        return self._processor.DecodeIds([int(index) for index in ids])


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A tokenizer from a ``tokenizer.model`` file or a tokenizer folder holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    try:
        model = path.read_bytes()
    except FileNotFoundError:
        raise UserInputError(
            f"{path}: no tokenizer model (train it with scripts/train_tokenizer.py)"
        ) from None
    except OSError as error:
        raise UserInputError(f"{path}: cannot read tokenizer model: {error}") from None
    return Tokenizer(model, str(path))


def transcripts_digest(transcripts: Sequence[str]) -> str:
    return digest(transcripts)


def _train_model(transcripts: Sequence[str], settings: TokenizerSettings) -> bytes:
    import sentencepiece

    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.Train(
            sentence_iterator=iter(transcripts),
            model_writer=model,
            vocab_size=settings.spm_size,
            model_type=settings.model_type,
            character_coverage=settings.character_coverage,
            normalization_rule_name="identity",  # transcripts come normalised (or raw, as asked)
            input_sentence_size=0,  # every sentence, no sampling
            shuffle_input_sentence=False,
            num_threads=1,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            hard_vocab_limit=True,
            minloglevel=2,
        )
    except RuntimeError as error:
        message = str(error)
        too_high = re.search(r"Vocabulary size too high.*", message)
        if too_high:
            raise UserInputError(
                f"spm_size {settings.spm_size} is too large for these transcripts "
                f"(sentencepiece: {too_high[0].strip()}); choose a smaller spm_size"
            ) from None
        too_small = re.search(
            r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)", message
        )
        if too_small:
            raise UserInputError(
                f"spm_size {settings.spm_size} is too small: these transcripts have "
                f"{int(too_small[2]) - 1} characters, each a piece, plus <unk>; choose at least "
                f"{too_small[2]} (or lower character_coverage)"
            ) from None
        raise UserInputError(f"sentencepiece training failed: {message}") from None
    return model.getvalue()


def train_tokenizer(
    transcripts: Iterable[str], output: str | Path, settings: TokenizerSettings, force: bool = False
) -> Tokenizer | None:
    """Train on ``transcripts`` and write the tokenizer folder ``output`` atomically.

    Returns None (and writes nothing) when ``output`` already holds a tokenizer trained with
    the same settings on the same transcripts, unless ``force``.
    """
    texts = [text for text in transcripts if text.strip()]
    if not texts:
        raise UserInputError("no transcripts to train the tokenizer on")
    output = Path(output)
    recorded = {"settings": settings.to_json(), "transcripts": transcripts_digest(texts)}
    stamp = output / SETTINGS_FILE
    if not force and stamp.is_file() and (output / MODEL_FILE).is_file():
        try:
            if json.loads(stamp.read_text(encoding="utf-8")) == recorded:
                return None
        except (OSError, ValueError):
            pass  # unreadable: train again
    model = _train_model(texts, settings)
    tokenizer = Tokenizer(model)
    with atomic_output(output) as temporary:
        temporary.mkdir()
        (temporary / MODEL_FILE).write_bytes(model)
        vocab = "".join(
            f"{piece}\t{tokenizer.score(index):g}\n" for index, piece in enumerate(tokenizer.pieces)
        )
        (temporary / VOCAB_FILE).write_text(vocab, encoding="utf-8")
        (temporary / SETTINGS_FILE).write_text(json.dumps(recorded, indent=1) + "\n")
        write_folder_fingerprint(temporary, digest([json.dumps(recorded, sort_keys=True), model]))
    return Tokenizer(model, str(output / MODEL_FILE))


# --------------------------------------------------------------------------- the pipeline step


class TrainTokenizerJob(JobSchema):
    """scripts/train_tokenizer.py's job: which manifests, how many pieces, where to write."""

    code_versions: ClassVar[dict[str, int]] = {"tokenizer": CODE_VERSIONS["tokenizer"]}

    manifests: list[Path] = input_path(
        min_length=1,
        description="the training partition's manifests (JSON, speechbed.corpora.asr_manifest), "
        "e.g. [${CACHE_DIRECTORY}/librispeech/wav/train-clean-100.json]",
    )
    output_path: Path = output_path(
        description=f"tokenizer folder to write: {MODEL_FILE} (what runs copy), {VOCAB_FILE}, "
        f"{SETTINGS_FILE}"
    )
    spm_size: int = Field(
        ge=3, le=1_000_000, description="vocabulary size (token ids 0..spm_size-1; 0 is <unk>)"
    )
    model_type: ModelType = Field("unigram", description="sentencepiece model: unigram | bpe")
    character_coverage: float = Field(
        1.0, gt=0.9, le=1.0, description="share of characters the pieces must cover"
    )
    normalize: bool = Field(
        True,
        description="normalise transcripts to the 28-character set first (for manifests kept "
        "raw); false trains on them as written",
    )


def run_tokenizer_job(job: TrainTokenizerJob, force: bool = False) -> Tokenizer | None:
    """Train the job's tokenizer; None when its folder is already up to date."""
    transcripts = [entry.transcript for entry in read_manifests(job.manifests)]
    if job.normalize:
        transcripts = [normalize_transcript(text) for text in transcripts]
    settings = TokenizerSettings(job.spm_size, job.model_type, job.character_coverage)
    return train_tokenizer(transcripts, job.output_path, settings, force=force)
