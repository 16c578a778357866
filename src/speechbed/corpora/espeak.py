"""eSpeak NG through ctypes (from the espeakng-loader wheel): speech and phoneme events for a voice.

Called by speechbed.corpora.synthesis for every utterance of the synthetic corpus.
"""

from __future__ import annotations

import _ctypes
import ctypes
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from speechbed.corpora.espeak_phones import ACCENTS, SILENT_MARKERS, Accent

ESPEAK_RATE = 22050


@dataclass(frozen=True)
class Voice:
    """Everything that makes a speaker sound like themself."""

    accent: str  # a key of ACCENTS
    variant: str  # an eSpeak voice variant (voices/!v), e.g. "m3", "f2"
    rate: int  # words per minute (eSpeak's default is 175)
    pitch: int  # 0..100 (default 50)
    pitch_range: int  # 0..100 (default 50)
    level: float  # peak amplitude as a fraction of full scale
    noise: float  # standard deviation of the background noise, in 16-bit units

    @property
    def espeak_name(self) -> str:
        return f"{ACCENTS[self.accent].espeak_voice}+{self.variant}"


@dataclass(frozen=True)
class PhonemeEvent:
    """One eSpeak phoneme: its mnemonic (stress removed), first sample, text position (1-based)."""

    mnemonic: str
    sample: int
    text_position: int


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_C_LIBRARY = ctypes.CDLL(None)
_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)
_EVENT_LIST_END = 0
_EVENT_PHONEME = 7
_SYNCHRONOUS = 2
_PHONEME_EVENTS = 1
_CHARS_UTF8 = 1
_PARAMETER_RATE, _PARAMETER_PITCH, _PARAMETER_RANGE = 1, 3, 4
_PHONEME_SEPARATOR = ord("|") << 8  # espeak_TextToPhonemes: mnemonics separated by "|"


class Espeak:
    """The eSpeak NG library, loaded afresh for every utterance.

    eSpeak keeps state between utterances in static variables (pitch flutter and the phase
    of the glottal wave), so the same text spoken twice in one process differs by a few
    samples, and it seeds its noise generator from the clock. Unloading the library (dlclose),
    loading it again and seeding the noise makes every utterance a function of its text and
    voice alone (reloading costs about 5 ms).
    """

    _instance: Espeak | None = None
    _lock = threading.RLock()

    def __init__(self) -> None:
        import espeakng_loader

        self.library_path = espeakng_loader.get_library_path()
        self.data_path = Path(espeakng_loader.get_data_path())
        self.library: ctypes.CDLL | None = None
        self._counts: dict[tuple[str, str], int] = {}
        self._chunks: list[np.ndarray] = []
        self._events: list[PhonemeEvent] = []
        self._callback = _CALLBACK(self._receive)  # kept referenced for the library's lifetime
        self._load()

    def _load(self) -> ctypes.CDLL:
        """Unload the library if loaded, then load and initialise it with fresh state."""
        if self.library is not None:
            self.library.espeak_Terminate()
            _ctypes.dlclose(self.library._handle)
            self.library = None
        library = ctypes.CDLL(self.library_path)
        library.espeak_Synth.argtypes = [
            ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        library.espeak_TextToPhonemes.restype = ctypes.c_char_p
        library.espeak_TextToPhonemes.argtypes = [
            ctypes.POINTER(ctypes.c_void_p), ctypes.c_int, ctypes.c_int,
        ]  # fmt: skip
        rate = library.espeak_Initialize(
            _SYNCHRONOUS, 0, str(self.data_path).encode(), _PHONEME_EVENTS
        )
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"eSpeak NG initialisation returned {rate}, expected {ESPEAK_RATE}")
        library.espeak_SetSynthCallback(self._callback)
        self.library = library
        return library

    @classmethod
    def get(cls) -> Espeak:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _receive(self, samples, count, events) -> int:  # noqa: ANN001 (ctypes callback)
        if samples and count > 0:
            self._chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
        index = 0
        while events[index].type != _EVENT_LIST_END:
            event = events[index]
            if event.type == _EVENT_PHONEME:
                mnemonic = event.id.string.decode("ascii", "replace").lstrip("',")
                self._events.append(PhonemeEvent(mnemonic, event.sample, event.text_position))
            index += 1
        return 0

    def phoneme_count(self, word: str, accent: Accent) -> int:
        """How many phonemes eSpeak gives ``word`` said alone in ``accent`` (cached)."""
        key = (accent.espeak_voice, word)
        if key not in self._counts:
            with self._lock:
                library = self.library or self._load()
                library.espeak_SetVoiceByName(accent.espeak_voice.encode())
                buffer = ctypes.create_string_buffer(word.encode("utf-8"))
                pointer = ctypes.c_void_p(ctypes.addressof(buffer))
                phonemes = b""
                while pointer.value:
                    phonemes += (
                        library.espeak_TextToPhonemes(
                            ctypes.byref(pointer), _CHARS_UTF8, _PHONEME_SEPARATOR
                        )
                        + b"|"
                    )
            names = phonemes.decode("ascii", "replace").replace(" ", "|").split("|")
            self._counts[key] = sum(
                1 for name in names if name.lstrip("',") and name not in SILENT_MARKERS
            )
        return self._counts[key]

    def synthesize(self, text: str, voice: Voice) -> tuple[np.ndarray, list[PhonemeEvent]]:
        """Speak ``text``: int16 samples at 22050 Hz and the phoneme events."""
        # eSpeak quietly ignores an unknown variant, so look for its file ourselves
        if not (self.data_path / "voices" / "!v" / voice.variant).is_file():
            raise ValueError(f"eSpeak NG has no voice variant {voice.variant!r} (voices/!v)")
        with self._lock:
            library = self._load()
            # breath noise: eSpeak's own generator (seeded from the clock at initialisation),
            # or the C library's rand() in older eSpeak builds
            library.espeak_ng_SetRandSeed(ctypes.c_long(0))
            _C_LIBRARY.srand(0)
            if library.espeak_SetVoiceByName(voice.espeak_name.encode()) != 0:
                raise ValueError(f"eSpeak NG has no voice {voice.espeak_name!r}")
            for parameter, value in (
                (_PARAMETER_RATE, voice.rate),
                (_PARAMETER_PITCH, voice.pitch),
                (_PARAMETER_RANGE, voice.pitch_range),
            ):
                library.espeak_SetParameter(parameter, value, 0)
            self._chunks, self._events = [], []
            encoded = text.encode("utf-8")
            status = library.espeak_Synth(
                encoded, len(encoded) + 1, 0, 0, 0, _CHARS_UTF8, None, None
            )
            if status != 0:
                raise RuntimeError(f"eSpeak NG failed ({status}) on {text!r}")
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            return samples.astype(np.int16), self._events
