"""Transcripts in the 28-character set of English speech recognition: a-z, apostrophe, space.

Called by the LibriSpeech and CommonVoice readers (unless told to keep transcripts raw), by the
tokenizer step and by the RNN-T task when it normalises raw transcripts on the fly.

``normalize_transcript`` does, in order:

1. Typographic apostrophes (’ ‘ ʼ ′ `) become ``'``; letters lose their accents (é -> e)
   and a few letters spell out (æ -> ae, œ -> oe, ß -> ss, ø -> o, ł -> l); lower case.
2. Numbers are spoken: cardinals (``42`` -> forty two, ``1,000`` -> one thousand), decimals
   (``3.14`` -> three point one four), ordinals (``21st`` -> twenty first), and four-digit
   numbers from 1100 to 1999 the way read English says years (``1984`` -> nineteen eighty
   four, ``1900`` -> nineteen hundred, ``1905`` -> nineteen oh five).
3. A few symbols become words: ``%`` percent, ``&`` and, ``+`` plus, ``@`` at, ``=`` equals;
   ``$``/``£``/``€`` before a number become dollars/pounds/euros after it (dollar after one).
4. Punctuation, other symbols and white space separate words (U.S.A. -> u s a, well-known
   -> well known); letters that have no a-z form (Cyrillic, CJK) are dropped. Apostrophes are kept inside words (don't, o'clock) and dropped at word
   edges, where they are quotation marks ('tis -> tis, boys' -> boys).
5. Runs of spaces become one; no space at either end. The result may be empty.
"""

from __future__ import annotations

import re
import unicodedata

#: The 28 characters of a normalised transcript.
CHARACTERS = (" ", *"abcdefghijklmnopqrstuvwxyz", "'")

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip
_CURRENCIES = {"$": "dollars", "£": "pounds", "€": "euros"}
_SYMBOLS = {"%": " percent ", "&": " and ", "+": " plus ", "@": " at ", "=": " equals "}
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "′": "'", "`": "'"})
_SPELLED = str.maketrans({"æ": "ae", "œ": "oe", "ß": "ss", "ø": "o", "ł": "l", "đ": "d"})
_NUMBER = re.compile(
    r"(?P<currency>[$£€])?\s?(?P<number>\d+(?:,\d{3})+(?!\d)|\d+)(?P<decimals>\.\d+)?"
    r"(?P<ordinal>(?:st|nd|rd|th)(?![a-z]))?"
)
_KEPT = frozenset(CHARACTERS)
_EDGE_APOSTROPHES = re.compile(r"(?<![a-z])'+|'+(?![a-z])")


def _below_thousand(number: int) -> list[str]:
    words = []
    hundreds, rest = divmod(number, 100)
    if hundreds:
        words += [_ONES[hundreds], "hundred"]
    if rest >= 20:
        words.append(_TENS[rest // 10])
        if rest % 10:
            words.append(_ONES[rest % 10])
    elif rest or not words:
        words.append(_ONES[rest])
    return words


def number_to_words(number: int) -> str:
    """A whole number >= 0 as English words: 1234 -> one thousand two hundred thirty four."""
    if number < 0:
        raise ValueError(f"number_to_words takes numbers >= 0, got {number}")
    words: list[str] = []
    for scale, name in _SCALES:
        if number >= scale:
            count, number = divmod(number, scale)
            words += number_to_words(count).split() + [name]
    if number or not words:
        words += _below_thousand(number)
    return " ".join(words)


def year_to_words(number: int) -> str:
    """A year from 1100 to 1999 as read aloud: 1984 -> nineteen eighty four."""
    century, rest = divmod(number, 100)
    if rest == 0:
        return f"{number_to_words(century)} hundred"
    if rest < 10:
        return f"{number_to_words(century)} oh {_ONES[rest]}"
    return f"{number_to_words(century)} {number_to_words(rest)}"


def ordinal_words(cardinal: str) -> str:
    """The ordinal of a cardinal in words: twenty one -> twenty first."""
    *head, last = cardinal.split()
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def _speak_number(match: re.Match[str]) -> str:
    digits = match["number"].replace(",", "")
    value = int(digits)
    if match["decimals"]:
        decimals = " ".join(_ONES[int(digit)] for digit in match["decimals"][1:])
        spoken = f"{number_to_words(value)} point {decimals}"
    elif 1100 <= value <= 1999 and "," not in match["number"] and not match["ordinal"]:
        spoken = year_to_words(value)
    else:
        spoken = number_to_words(value)
    if match["ordinal"] and not match["decimals"]:
        spoken = ordinal_words(spoken)
    if match["currency"]:
        unit = _CURRENCIES[match["currency"]]
        spoken += " " + (unit[:-1] if value == 1 and not match["decimals"] else unit)
    return f" {spoken} "


def _kept(character: str) -> str:
    """A character of the set as it is; punctuation, symbols, spaces a space; the rest nothing."""
    if character in _KEPT:
        return character
    return " " if unicodedata.category(character)[0] in "PSZC" else ""


def normalize_transcript(text: str) -> str:
    """``text`` in the 28-character set (see the module docstring for the rules)."""
    text = text.translate(_APOSTROPHES).lower().translate(_SPELLED)
    text = "".join(
        character
        for character in unicodedata.normalize("NFKD", text)
        if not unicodedata.combining(character)
    )
    text = _NUMBER.sub(_speak_number, text)
    for symbol, word in _SYMBOLS.items():
        text = text.replace(symbol, word)
    text = "".join(_kept(character) for character in text)
    text = " ".join(_EDGE_APOSTROPHES.sub("", word) for word in text.split())
    return " ".join(text.split())


def is_normalized(text: str) -> bool:
    """Whether ``text`` is already in the 28-character set with single inner spaces."""
    return normalize_transcript(text) == text
