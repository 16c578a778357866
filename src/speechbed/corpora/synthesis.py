"""Speech synthesis with eSpeak NG (speechbed.corpora.espeak) and its TIMIT phone and word alignments.

Called by speechbed.corpora.synthetic to make each utterance of the synthetic corpus.

eSpeak reports a phoneme event (its mnemonic, e.g. ``'aI``, and the sample where it starts)
for every phoneme it speaks. We synthesize at eSpeak's 22050 Hz, resample to 16 kHz, and
turn the events into a TIMIT ``.PHN`` alignment:

1. Each event opens a segment that runs to the next event; stress marks (``'`` ``,``) are
   dropped, linking markers (``;``) and empty segments vanish.
2. The mnemonic is looked up in ``ESPEAK_TO_TIMIT`` (American accents) or, for accents
   that are not American or not rhotic, first in the override tables beside it
   (speechbed.corpora.espeak_phones). An entry
   may give two TIMIT labels (``A@`` -> ``aa r``): the segment is then split at
   ``SPLIT_FRACTION`` of its length (the only boundary not taken from eSpeak). A rhotic
   entry's ``r`` is left out when eSpeak's next phoneme is itself ``r``.
3. eSpeak renders a stop's closure as the quiet tail of the phoneme before the stop and
   puts the stop's event at the burst. So the closure label (``pcl`` ``tcl`` ``kcl``
   ``bcl`` ``dcl`` ``gcl``; ``tcl``/``dcl`` before ``ch``/``jh``) is cut from the end of the
   previous segment where the audio is quiet (1 ms windows under ``CLOSURE_LEVEL`` of the
   utterance's loud level, at least 10 ms; at most 60 ms out of a pause, and the previous
   phone keeps at least a quarter of itself).
4. Pauses inside the sentence (commas) are ``pau``; silence before the first phone and after
   the last is ``h#``, with ``padding`` of extra low-level noise at both ends.

Words (``.WRD``) run from their first phone (closure included) to their last, matched to
eSpeak's phonemes through the text position each event carries.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.signal import resample_poly

from speechbed.corpora.espeak import ESPEAK_RATE, Espeak, PhonemeEvent, Voice
from speechbed.corpora.espeak_phones import ACCENTS, CLOSURE_OF, PAUSES, SILENT_MARKERS, Accent
from speechbed.corpora.manifest import Segment
from speechbed.corpora.sentences import sentence_words

SAMPLE_RATE = 16000

#: Where a two-label eSpeak phoneme is split (fraction of its length given to the first label).
SPLIT_FRACTION = 0.6
#: A closure is audio under this fraction of the utterance's loud (95th percentile) level.
CLOSURE_LEVEL = 0.08
CLOSURE_WINDOW = 16  # samples (1 ms)
MIN_CLOSURE = 160  # samples (10 ms)
MAX_CLOSURE_FROM_PAUSE = 960  # samples (60 ms)


@dataclass(frozen=True)
class SynthesizedUtterance:
    """16 kHz samples with TIMIT-labelled phone and word alignments covering them."""

    samples: np.ndarray
    phones: list[Segment]
    words: list[Segment]


@dataclass
class _Piece:
    """An eSpeak phoneme's stretch of 16 kHz audio and its TIMIT labels, while aligning."""

    start: int
    end: int
    labels: tuple[str, ...]
    text_position: int
    event: int  # index of the eSpeak phoneme it comes from
    is_pause: bool = False


def resample_to_16k(samples: np.ndarray) -> np.ndarray:
    """22050 Hz -> 16000 Hz (polyphase, 320/441), float64; sample n sits at input n*441/320."""
    return resample_poly(samples.astype(np.float64), SAMPLE_RATE // 50, ESPEAK_RATE // 50)


def _to_16k(sample: int) -> int:
    return round(sample * SAMPLE_RATE / ESPEAK_RATE)


def _pieces(events: list[PhonemeEvent], length: int, accent: Accent, text: str) -> list[_Piece]:
    kept = [event for event in events if event.mnemonic not in SILENT_MARKERS]
    pieces: list[_Piece] = []
    if kept and _to_16k(kept[0].sample) > 0:  # leading silence, where a first stop's closure lies
        start = min(_to_16k(kept[0].sample), length)
        pieces.append(_Piece(0, start, ("pau",), 0, -1, is_pause=True))
    for index, event in enumerate(kept):
        start = min(_to_16k(event.sample), length)
        end = min(_to_16k(kept[index + 1].sample), length) if index + 1 < len(kept) else length
        if end <= start:
            continue
        if event.mnemonic in PAUSES:
            if pieces and pieces[-1].is_pause and pieces[-1].end == start:
                pieces[-1].end = end  # eSpeak often ends a clause with two pauses
            else:
                pieces.append(
                    _Piece(start, end, ("pau",), event.text_position, index, is_pause=True)
                )
            continue
        try:
            labels = accent.timit_labels(event.mnemonic)
        except KeyError:
            raise ValueError(
                f"eSpeak phoneme {event.mnemonic!r} ({accent.espeak_voice}, in {text!r}) has no "
                "entry in ESPEAK_TO_TIMIT; add one"
            ) from None
        following = kept[index + 1].mnemonic if index + 1 < len(kept) else ""
        if len(labels) == 2 and labels[1] == "r" and following in ("r", "r-"):
            labels = labels[:1]
        pieces.append(_Piece(start, end, labels, event.text_position, index))
    return pieces


def _cut_closures(pieces: list[_Piece], audio: np.ndarray) -> list[_Piece]:
    """Give each stop release its closure, cut from the quiet end of the piece before it."""
    windows = len(audio) // CLOSURE_WINDOW
    levels = np.sqrt(
        np.mean(audio[: windows * CLOSURE_WINDOW].reshape(windows, CLOSURE_WINDOW) ** 2, axis=1)
    )
    quiet = CLOSURE_LEVEL * (np.percentile(levels, 95) if windows else 0.0)
    result: list[_Piece] = []
    for piece in pieces:
        closure_label = CLOSURE_OF.get(piece.labels[0])
        previous = result[-1] if result else None
        if closure_label is None or previous is None or previous.labels == (closure_label,):
            result.append(piece)
            continue
        if previous.is_pause:
            earliest = max(previous.start, previous.end - MAX_CLOSURE_FROM_PAUSE)
        else:
            earliest = previous.start + max((previous.end - previous.start) // 4, MIN_CLOSURE)
        cut = previous.end
        while cut - CLOSURE_WINDOW >= earliest:
            window = (cut - CLOSURE_WINDOW) // CLOSURE_WINDOW
            if window >= len(levels) or levels[window] >= quiet:
                break
            cut -= CLOSURE_WINDOW
        if previous.end - cut >= MIN_CLOSURE:
            previous.end = cut
            closure = _Piece(cut, piece.start, (closure_label,), piece.text_position, piece.event)
            result.append(closure)
        result.append(piece)
    return result


def _split_labels(pieces: list[_Piece]) -> list[_Piece]:
    result = []
    for piece in pieces:
        if len(piece.labels) == 1:
            result.append(piece)
            continue
        middle = piece.start + round(SPLIT_FRACTION * (piece.end - piece.start))
        result.append(
            _Piece(piece.start, middle, piece.labels[:1], piece.text_position, piece.event)
        )
        result.append(_Piece(middle, piece.end, piece.labels[1:], piece.text_position, piece.event))
    return [piece for piece in result if piece.end > piece.start]


def _word_groups(text: str, pieces: list[_Piece]) -> list[list[tuple[int, str]]]:
    """Words with their offsets, grouped where eSpeak spoke several as one (``in the``)."""
    positions = {piece.text_position for piece in pieces if not piece.is_pause}
    groups: list[list[tuple[int, str]]] = []
    for offset, word in sentence_words(text):
        if offset + 1 in positions:
            groups.append([(offset, word)])
        elif groups:
            groups[-1].append((offset, word))
        else:
            raise ValueError(f"eSpeak reported no phonemes for the word {word!r} in {text!r}")
    return groups


def _divide_group(
    group: list[tuple[int, str]],
    pieces: list[_Piece],
    phoneme_count: Callable[[str], int],
    text: str,
) -> list[tuple[str, list[_Piece]]]:
    """Share a group's pieces among its words by each word's phoneme count (eSpeak's own)."""
    position = group[0][0] + 1
    spoken = [piece for piece in pieces if piece.text_position == position and not piece.is_pause]
    if len(group) == 1:
        return [(group[0][1], spoken)]
    events = sorted({piece.event for piece in spoken})
    counts = [max(1, phoneme_count(word)) for _, word in group]
    if len(events) < len(group):
        raise ValueError(f"eSpeak spoke {len(group)} words in {len(events)} phonemes in {text!r}")
    # Word boundaries between eSpeak phonemes, scaled if context changed the counts.
    cumulative = np.cumsum(counts)
    bounds = [0] + [round(len(events) * int(c) / int(cumulative[-1])) for c in cumulative]
    for index in range(1, len(bounds)):  # every word keeps at least one phoneme
        bounds[index] = max(bounds[index], bounds[index - 1] + 1)
    bounds[-1] = len(events)
    for index in range(len(bounds) - 2, 0, -1):
        bounds[index] = min(bounds[index], bounds[index + 1] - 1)
    divided = []
    for index, (_, word) in enumerate(group):
        mine = set(events[bounds[index] : bounds[index + 1]])
        divided.append((word, [piece for piece in spoken if piece.event in mine]))
    return divided


def align(
    text: str,
    events: list[PhonemeEvent],
    audio: np.ndarray,
    accent: Accent,
    padding: tuple[int, int],
    phoneme_count: Callable[[str], int],
) -> tuple[list[Segment], list[Segment]]:
    """TIMIT phone and word segments for 16 kHz ``audio`` with ``padding`` samples added at each end.

    ``phoneme_count(word)`` says how many eSpeak phonemes a word has on its own; it divides
    phrases that eSpeak speaks as one word (``in the``) between their words.
    """
    if min(padding) < 1:
        raise ValueError(f"padding must be at least one sample at each end (h#), got {padding}")
    pieces = _split_labels(_cut_closures(_pieces(events, len(audio), accent, text), audio))
    while pieces and pieces[0].is_pause:
        pieces.pop(0)
    while pieces and pieces[-1].is_pause:
        pieces.pop()
    if not pieces:
        raise ValueError(f"eSpeak produced no phonemes for {text!r}")
    before, after = padding
    total = before + len(audio) + after
    phones = [Segment(0, before + pieces[0].start, "h#")]
    phones += [Segment(before + p.start, before + p.end, p.labels[0]) for p in pieces]
    phones.append(Segment(before + pieces[-1].end, total, "h#"))
    words = []
    for group in _word_groups(text, pieces):
        for word, spoken in _divide_group(group, pieces, phoneme_count, text):
            start = before + min(piece.start for piece in spoken)
            words.append(Segment(start, before + max(piece.end for piece in spoken), word))
    return phones, words


def synthesize_utterance(
    text: str, voice: Voice, rng: np.random.Generator, padding: tuple[int, int]
) -> SynthesizedUtterance:
    """Speak ``text`` in ``voice`` at 16 kHz with noise, level and ``padding``, and align it."""
    raw, events = Espeak.get().synthesize(text, voice)
    audio = resample_to_16k(raw)
    espeak = Espeak.get()
    accent = ACCENTS[voice.accent]
    phones, words = align(
        text, events, audio, accent, padding, lambda word: espeak.phoneme_count(word, accent)
    )
    peak = float(np.max(np.abs(audio))) or 1.0
    scaled = audio * (voice.level * 32767.0 / peak)
    padded = np.concatenate([np.zeros(padding[0]), scaled, np.zeros(padding[1])])
    noisy = padded + rng.normal(0.0, voice.noise, padded.shape)
    samples = np.clip(np.round(noisy), -32768, 32767).astype(np.int16)
    return SynthesizedUtterance(samples, phones, words)
