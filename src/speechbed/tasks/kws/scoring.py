"""Scores of the kws task: accuracy, per-class precision and recall, the confusion matrix.

Used by speechbed.tasks.kws.task (dev metric and evaluation) and speechbed.deployment.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from speechbed.outputs import write_bytes_atomic, write_text_atomic


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``counts[true, predicted]``."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels), np.asarray(predictions)), 1)
    return counts


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(np.asarray(labels) == np.asarray(predictions))) if len(labels) else 0.0


def per_class_scores(counts: np.ndarray, classes: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Precision, recall and support per class (a class never predicted has precision 0)."""
    scores = {}
    for index, name in enumerate(classes):
        hits = int(counts[index, index])
        predicted, support = int(counts[:, index].sum()), int(counts[index].sum())
        scores[name] = {
            "precision": hits / predicted if predicted else 0.0,
            "recall": hits / support if support else 0.0,
            "support": support,
        }
    return scores


def write_confusion_csv(path: Path, counts: np.ndarray, classes: Sequence[str]) -> None:
    """Rows: true class; columns: predicted class."""
    lines = ["true\\predicted," + ",".join(classes)]
    lines += [
        f"{name}," + ",".join(str(int(v)) for v in row)
        for name, row in zip(classes, counts, strict=True)
    ]
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_confusion_png(path: Path, counts: np.ndarray, classes: Sequence[str], title: str) -> None:
    """The confusion matrix as an image, rows normalised (recall on the diagonal)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    figure, axes = pyplot.subplots(figsize=(1 + 0.55 * len(classes), 1 + 0.5 * len(classes)))
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    for (row, column), value in np.ndenumerate(counts):
        if value:
            colour = "white" if shares[row, column] > 0.5 else "black"
            axes.text(
                column, row, str(int(value)), ha="center", va="center", fontsize=7, color=colour
            )
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    write_bytes_atomic(path, buffer.getvalue())
