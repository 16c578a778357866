"""eSpeak NG English phonemes as TIMIT phones, per accent: the tables and the accents that use them.

Called by speechbed.corpora.synthesis (alignment) and speechbed.corpora.espeak (voices).
"""

from __future__ import annotations

from dataclasses import dataclass

#: eSpeak NG English phoneme mnemonic (stress marks removed) -> TIMIT labels, for American
#: (en-us, en-US-nyc) voices. A stop maps to its release; its closure is found in the audio.
ESPEAK_TO_TIMIT: dict[str, tuple[str, ...]] = {
    # stops and affricates (release; closure cut from the audio before it)
    "p": ("p",), "b": ("b",), "t": ("t",), "d": ("d",), "k": ("k",), "g": ("g",),
    "t[": ("t",),  # dental t (Caribbean)
    "tS": ("ch",), "dZ": ("jh",),
    "t#": ("dx",),  # flap, as in "bitter"
    "?": ("q",),  # glottal stop (deleted on folding, like TIMIT's q)
    # fricatives
    "f": ("f",), "v": ("v",), "T": ("th",), "D": ("dh",), "s": ("s",), "z": ("z",),
    "S": ("sh",), "Z": ("zh",), "h": ("hh",),
    # nasals, liquids, glides
    "m": ("m",), "n": ("n",), "N": ("ng",), "n-": ("en",), "m-": ("em",), "@L": ("el",),
    "l": ("l",), "r": ("r",), "r-": ("r",), "w": ("w",), "w#": ("w",), "j": ("y",),
    # vowels
    "i": ("iy",), "i:": ("iy",), "I": ("ih",), "I#": ("ix",), "I2": ("ix",),
    "E": ("eh",), "a": ("ae",), "aa": ("ae",), "a#": ("ax",),
    "A:": ("aa",), "0": ("aa",), "O:": ("ao",), "O2": ("ao",), "O": ("ao",),
    "V": ("ah",), "U": ("uh",), "u:": ("uw",), "@": ("ax",), "@2": ("ax",), "@5": ("ax",),
    "3": ("axr",), "3:": ("er",), "IR": ("er",), "VR": ("er",),
    "eI": ("ey",), "aI": ("ay",), "aI2": ("ay",), "OI": ("oy",), "aU": ("aw",), "oU": ("ow",),
    # vowels with r or schwa in one eSpeak phoneme
    "A@": ("aa", "r"), "O@": ("ao", "r"), "o@": ("ao", "r"), "e@": ("eh", "r"),
    "i@3": ("ih", "r"), "U@": ("uh", "r"), "aI3": ("ay", "er"),
    "i@": ("iy", "ax"), "aI@": ("ay", "ax"), "aU@": ("aw", "ax"),
}  # fmt: skip

#: Accents that are not American: the open vowels sound British.
NOT_AMERICAN_OVERRIDES: dict[str, tuple[str, ...]] = {"aa": ("aa",), "0": ("ao",)}
#: Accents that drop r after vowels.
NOT_RHOTIC_OVERRIDES: dict[str, tuple[str, ...]] = {
    "3": ("ax",), "A@": ("aa",), "O@": ("ao",), "o@": ("ao",), "e@": ("eh",),
    "i@3": ("ih", "ax"), "U@": ("uh", "ax"), "aI3": ("ay", "ax"),
}  # fmt: skip
#: Mnemonics that mark something other than a sound (linking); they get no segment.
SILENT_MARKERS = frozenset({";", "|", "||"})
#: eSpeak pauses.
PAUSES = frozenset({"_", "_:", "_!", "_;"})
#: TIMIT closure label of each stop or affricate release.
CLOSURE_OF = {
    "p": "pcl", "t": "tcl", "k": "kcl", "b": "bcl", "d": "dcl", "g": "gcl",
    "ch": "tcl", "jh": "dcl",
}  # fmt: skip


@dataclass(frozen=True)
class Accent:
    """An eSpeak English voice used as a dialect-region accent."""

    espeak_voice: str
    american: bool
    rhotic: bool

    def timit_labels(self, mnemonic: str) -> tuple[str, ...]:
        """The TIMIT labels of an eSpeak phoneme in this accent; KeyError if it has none."""
        if not self.rhotic and mnemonic in NOT_RHOTIC_OVERRIDES:
            return NOT_RHOTIC_OVERRIDES[mnemonic]
        if not self.american and mnemonic in NOT_AMERICAN_OVERRIDES:
            return NOT_AMERICAN_OVERRIDES[mnemonic]
        return ESPEAK_TO_TIMIT[mnemonic]


ACCENTS: dict[str, Accent] = {
    "en-us": Accent("en-us", american=True, rhotic=True),
    "en-US-nyc": Accent("en-US-nyc", american=True, rhotic=True),
    "en-GB-x-rp": Accent("en-GB-x-rp", american=False, rhotic=False),
    "en-GB-x-gbcwmd": Accent("en-GB-x-gbcwmd", american=False, rhotic=False),
    "en-GB-x-gbclan": Accent("en-GB-x-gbclan", american=False, rhotic=False),
    "en-GB-scotland": Accent("en-GB-scotland", american=False, rhotic=True),
    "en-029": Accent("en-029", american=False, rhotic=False),
    "en": Accent("en", american=False, rhotic=False),
}
