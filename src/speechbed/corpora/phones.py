"""TIMIT phone sets and the Lee & Hon folding 61 -> 48 -> 39 (``q`` is deleted).

Used by corpus preparation (manifests carry all three sets) and decoding (PER on 39 phones).
"""

from __future__ import annotations

from collections.abc import Iterable

from speechbed import PACKAGE_DATA


def _read_map() -> tuple[dict[str, str | None], dict[str, str]]:
    to_48: dict[str, str | None] = {}
    to_39: dict[str, str] = {}
    for line in (PACKAGE_DATA / "phones.map").read_text().splitlines():
        columns = line.split()
        if not columns:
            continue
        if len(columns) == 1:  # a label with no mapping (q): deleted
            to_48[columns[0]] = None
            continue
        label, folded_48, folded_39 = columns
        to_48[label] = folded_48
        to_39[folded_48] = folded_39
    return to_48, to_39


_TO_48, _TO_39 = _read_map()

#: TIMIT's 61 labels. The map also lists the 48-set names cl, vcl and sil (mapping to themselves);
#: they are not TIMIT transcription labels.
PHONES_61: tuple[str, ...] = tuple(sorted(set(_TO_48) - {"cl", "vcl", "sil"}))
#: The 48-phone training set, sorted; a phone's index here is its token id (CTC blank is 48).
PHONES_48: tuple[str, ...] = tuple(sorted({phone for phone in _TO_48.values() if phone}))
#: The 39-phone scoring set, sorted.
PHONES_39: tuple[str, ...] = tuple(sorted(set(_TO_39.values())))


def fold_61_to_48(labels: Iterable[str]) -> list[str]:
    """Fold TIMIT labels to the 48-phone set, deleting ``q``; unknown labels raise KeyError."""
    folded = (_TO_48[label] for label in labels)  # KeyError names the unknown label
    return [phone for phone in folded if phone is not None]


def fold_48_to_39(labels: Iterable[str]) -> list[str]:
    """Fold 48-phone labels to the 39-phone scoring set; unknown labels raise KeyError."""
    return [_TO_39[label] for label in labels]


def fold_61_to_39(labels: Iterable[str]) -> list[str]:
    """Fold TIMIT labels straight to the 39-phone scoring set, deleting ``q``."""
    return fold_48_to_39(fold_61_to_48(labels))
