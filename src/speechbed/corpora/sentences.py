"""Prompts for the synthetic corpus: a small English grammar over word lists of this project's own.

Called by speechbed.corpora.synthetic, which reads them out with eSpeak NG. No TIMIT prompt is used.

Sentences are 5 to 12 words, plain letters only (no digits, hyphens or apostrophes, so each
written word is exactly one eSpeak word event). ``SHARED_PROMPTS`` play the role of TIMIT's
SA1/SA2: every speaker reads both.
"""

from __future__ import annotations

import random

#: The two sentences every speaker reads (the synthetic SA1 and SA2).
SHARED_PROMPTS = (
    "Ruth found a yellow bag of sharp shells beneath the cheap wooden chair.",
    "Please ask Joe to bring the thick rug and measure its width again.",
)

DETERMINERS = "the a this that every each some my your our their his her one".split()
ADJECTIVES = """
old young small big quiet bright dark heavy gentle careful angry happy tired busy lazy
clever brave shy proud calm strange yellow purple orange silver golden green brown gray
white black red blue wooden broken empty tiny huge narrow wide warm cold frozen sweet bitter
sour smooth rough noisy lucky honest patient curious friendly famous ancient modern simple
""".split()
NOUNS = """
farmer teacher doctor sailor painter baker driver singer dancer soldier student nurse pilot
lawyer miner tailor fisherman gardener neighbor stranger child woman man girl boy king queen
horse rabbit turtle monkey tiger donkey eagle pigeon goat puppy kitten camel lizard spider
letter basket ladder pencil blanket candle bottle jacket wagon hammer kettle mirror pillow
ribbon saddle shovel violin whistle engine window carpet lantern bucket package umbrella
orange lemon potato cookie sandwich pumpkin onion cabbage pepper melon noodle biscuit
""".split()
PLACES = """
garden river kitchen market village forest station harbor valley meadow library tunnel
bridge castle cottage island orchard stable cellar attic theater museum bakery hospital
canyon desert mountain village office courtyard hallway balcony garage
""".split()
NAMES = """
Alice Bernard Carmen Daniel Edith Felix Gloria Harold Irene Julian Karen Leonard Martha
Nathan Olivia Peter Rosa Samuel Theresa Victor Wendy Arthur Beverly Calvin Dorothy Eugene
""".split()
#: (base form, past tense)
TRANSITIVE_VERBS = [
    ("carry", "carried"), ("paint", "painted"), ("borrow", "borrowed"), ("follow", "followed"),
    ("push", "pushed"), ("pull", "pulled"), ("wash", "washed"), ("fix", "fixed"),
    ("find", "found"), ("lose", "lost"), ("bring", "brought"), ("catch", "caught"),
    ("throw", "threw"), ("hide", "hid"), ("sell", "sold"), ("buy", "bought"),
    ("draw", "drew"), ("watch", "watched"), ("visit", "visited"), ("thank", "thanked"),
    ("chase", "chased"), ("greet", "greeted"), ("measure", "measured"), ("open", "opened"),
    ("close", "closed"), ("cover", "covered"), ("deliver", "delivered"), ("polish", "polished"),
    ("remember", "remembered"), ("forget", "forgot"), ("answer", "answered"),
    ("study", "studied"), ("guard", "guarded"), ("lift", "lifted"), ("drop", "dropped"),
    ("kick", "kicked"), ("touch", "touched"), ("weigh", "weighed"), ("share", "shared"),
]  # fmt: skip
INTRANSITIVE_VERBS = [
    ("sleep", "slept"), ("laugh", "laughed"), ("wait", "waited"), ("arrive", "arrived"),
    ("sing", "sang"), ("dance", "danced"), ("shout", "shouted"), ("whisper", "whispered"),
    ("run", "ran"), ("walk", "walked"), ("swim", "swam"), ("climb", "climbed"),
    ("rest", "rested"), ("travel", "traveled"), ("smile", "smiled"), ("cough", "coughed"),
    ("yawn", "yawned"), ("jump", "jumped"), ("listen", "listened"), ("vanish", "vanished"),
]  # fmt: skip
ADVERBS = """
slowly quickly quietly loudly happily sadly gently suddenly often rarely early late
carefully badly easily proudly calmly nervously politely eagerly
""".split()
PREPOSITIONS = "in near behind beside under over through across inside outside toward past".split()
TIMES = """
yesterday today tonight tomorrow
""".split()
TIME_PHRASES = [
    "last winter", "every morning", "after dinner", "before sunrise", "on Sunday",
    "at midnight", "in the spring", "during the storm", "next summer", "by noon",
]  # fmt: skip
CONJUNCTIONS = "and but because while before after although since until".split()

MIN_WORDS = 5
MAX_WORDS = 12


class SentenceGenerator:
    """Draws sentences from the grammar; the same seed gives the same sentences."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)

    def _pick(self, words: list[str]) -> str:
        return self.random.choice(words)

    def _determined(self, determiners: list[str], adjective_chance: float, nouns: list[str]):
        """Determiner, maybe an adjective, then a noun; "a" becomes "an" before a vowel."""
        words = [self._pick(determiners)]
        if self.random.random() < adjective_chance:
            words.append(self._pick(ADJECTIVES))
        words.append(self._pick(nouns))
        if words[0] == "a" and words[1][0] in "aeiou":
            words[0] = "an"
        return words

    def noun_phrase(self, allow_name: bool = True) -> list[str]:
        if allow_name and self.random.random() < 0.2:
            return [self._pick(NAMES)]
        return self._determined(DETERMINERS, 0.6, NOUNS)

    def place_phrase(self) -> list[str]:
        preposition = self._pick(PREPOSITIONS)
        return [preposition] + self._determined(["the", "a", "our", "their", "that"], 0.3, PLACES)

    def time_phrase(self) -> list[str]:
        if self.random.random() < 0.4:
            return [self._pick(TIMES)]
        return self._pick(TIME_PHRASES).split()

    def clause(self) -> list[str]:
        subject = self.noun_phrase()
        if self.random.random() < 0.6:
            verb = self.random.choice(TRANSITIVE_VERBS)[1]
            rest = self.noun_phrase()
            if self.random.random() < 0.5:
                rest += self.place_phrase()
        else:
            verb = self.random.choice(INTRANSITIVE_VERBS)[1]
            rest = [self._pick(ADVERBS)] if self.random.random() < 0.5 else []
            if self.random.random() < 0.6:
                rest += self.place_phrase()
        return subject + [verb] + rest

    def question(self) -> list[str]:
        verb = self.random.choice(TRANSITIVE_VERBS)[0]
        opener = self._pick(["did", "why did", "when did", "where did", "how did"]).split()
        return opener + self.noun_phrase() + [verb] + self.noun_phrase()

    def words(self) -> tuple[list[str], str]:
        """One sentence as (words, final punctuation); commas are not words."""
        roll = self.random.random()
        if roll < 0.15:
            return self.question(), "?"
        if roll < 0.35:
            return self.clause() + [self._pick(CONJUNCTIONS)] + self.clause(), "."
        if roll < 0.5:
            return self.time_phrase() + [","] + self.clause(), "."
        if roll < 0.6:
            return self.clause() + self.time_phrase(), "."
        return self.clause(), "."

    def sentence(self) -> str:
        """A sentence of MIN_WORDS..MAX_WORDS words, capitalized and punctuated like TIMIT's .TXT."""
        while True:
            words, end = self.words()
            count = sum(word != "," for word in words)
            if MIN_WORDS <= count <= MAX_WORDS:
                break
        text = " ".join(words).replace(" ,", ",") + end
        return text[0].upper() + text[1:]

    def unique_sentences(self, count: int, exclude: set[str] | None = None) -> list[str]:
        """``count`` distinct sentences, none of them in ``exclude``."""
        seen = set(exclude or ())
        sentences = []
        while len(sentences) < count:
            sentence = self.sentence()
            if sentence not in seen:
                seen.add(sentence)
                sentences.append(sentence)
        return sentences


def sentence_words(sentence: str) -> list[tuple[int, str]]:
    """The words of a sentence with their character offsets, lowercase, punctuation stripped."""
    words = []
    position = 0
    for token in sentence.split(" "):
        stripped = token.strip(",.?!")
        offset = position + token.index(stripped) if stripped else position
        if stripped:
            words.append((offset, stripped.lower()))
        position += len(token) + 1
    return words
