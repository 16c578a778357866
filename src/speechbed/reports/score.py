"""The score an experiment is analysed by: its key, label, direction and unit (PER by default).

Read from each run's ``results.json`` (``"score"``, written by speechbed.training.evaluation) by
``speechbed.reports.results``; every table, statistic, plot and report of the analysis names and
converts the score through it. Results written before scores were recorded are PER.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from speechbed.errors import UserInputError
from speechbed.tasks import TASKS
from speechbed.training.config import run_config_class

#: How each known score key reads in a text (the others read as their key).
_NAMES = {"per": "PER", "wer": "WER", "cer": "CER", "accuracy": "accuracy", "si_sdri": "SI-SDRi"}
#: Units of the known scores that are not rates (rates are shown in %).
_UNITS = {"si_sdri": "dB", "si_sdr": "dB", "sdri": "dB"}
#: The analysis folder's record of the score its tables hold (read back by scripts/report.py).
SCORE_FILE = "score.json"


@dataclass(frozen=True)
class Score:
    """A task's headline score as the reports show it.

    ``key`` names it in results.json (``<role>_<key>``, ``{<role>: {<key>: ...}}``), in hist.csv
    (``dev_<key>``) and in the analysis tables (``dev_<key>``, ``test_<key>``); a percent score
    is stored as a fraction and shown times 100.
    """

    key: str = "per"
    lower_is_better: bool = True
    is_percent: bool = True

    @property
    def name(self) -> str:
        """The score in words: "PER", "accuracy", "SI-SDRi"."""
        return _NAMES.get(self.key, self.key)

    @property
    def unit(self) -> str:
        return "%" if self.is_percent else _UNITS.get(self.key, "")

    @property
    def label(self) -> str:
        """Axis and heading text: "PER (%)", "accuracy (%)", "SI-SDRi (dB)"."""
        return f"{self.name} ({self.unit})" if self.unit else self.name

    @property
    def better(self) -> str:
        """ "lower" or "higher": which values are better."""
        return "lower" if self.lower_is_better else "higher"

    def column(self, partition: str) -> str:
        """The table, results.json and hist.csv column of a partition: ``dev_per``."""
        return f"{partition}_{self.key}"

    def partition_of(self, column: str) -> str:
        """The partition a score column holds (``dev_si_sdri`` -> ``dev``)."""
        return column.removesuffix(f"_{self.key}")

    def shown(self, value: float) -> float:
        """A stored value as the tables show it (a fraction as a percentage)."""
        return float(value) * 100.0 if self.is_percent else float(value)

    def describe(self) -> str:
        """ "accuracy (%), higher is better" (error messages, the analysis summary)."""
        return f"{self.label}, {self.better} is better"


PER = Score()


def known_scores() -> dict[str, Score]:
    """``{key: score}`` of the registered tasks, as their run configs state them (a history
    without results names its score by its ``dev_<key>`` column)."""
    scores = {}
    for task in TASKS:
        config = run_config_class(task)
        score = Score(config.score_key, config.lower_is_better, config.score_is_percent)
        scores[score.key] = score
    return scores


def score_of_results(results: Mapping[str, Any], source: str | Path = "results.json") -> Score:
    """The score results.json records (``"score": {"key", "lower_is_better", "is_percent"}``);
    PER when it records none (results of older code). A malformed entry is a UserInputError
    naming ``source``."""
    entry = results.get("score")
    if entry is None:
        return PER
    if not isinstance(entry, Mapping):
        raise UserInputError(f"{source}: 'score' is not a mapping ({entry!r})")
    key, lower, percent = (entry.get(k) for k in ("key", "lower_is_better", "is_percent"))
    if not isinstance(key, str) or not key or not isinstance(lower, bool):
        raise UserInputError(
            f"{source}: 'score' needs a 'key' (text) and 'lower_is_better' (true or false); "
            f"found {dict(entry)!r}"
        )
    if not isinstance(percent, bool):
        percent = True  # (the task interface's default)
    return Score(key, lower, percent)


def score_of_history(columns: Iterable[str]) -> Score | None:
    """A known score whose dev column (``dev_<key>``) a hist.csv holds, else None."""
    scores = known_scores()
    for column in columns:
        column = str(column)
        if column.startswith("dev_") and column.removeprefix("dev_") in scores:
            return scores[column.removeprefix("dev_")]
    return None


def common_score(found: Mapping[str, Mapping[Score, list[str]]]) -> Score:
    """The one score of every experiment: ``found`` maps an experiment to {score: its runs}.

    PER when nothing says (no run evaluated or trained yet); a UserInputError naming the
    experiments (and runs) when their scores differ, since their tables cannot be put together.
    """
    scores = {score for by_score in found.values() for score in by_score}
    if len(scores) <= 1:
        return next(iter(scores), PER)
    mixed = [name for name, by_score in found.items() if len(by_score) > 1]
    if mixed:
        name = mixed[0]
        listed = "; ".join(
            f"{score.describe()}: {', '.join(sorted(runs))}"
            for score, runs in sorted(found[name].items(), key=lambda item: item[0].key)
        )
        raise UserInputError(
            f"experiment '{name}' has runs scored differently ({listed}); analyse runs of one "
            "score together (the job's 'runs' picks them)"
        )
    listed = "; ".join(
        f"{name}: {next(iter(by_score)).describe()}" for name, by_score in found.items() if by_score
    )
    raise UserInputError(
        f"cannot analyse these experiments together, their scores differ ({listed}); "
        "analyse each score's experiments on their own"
    )


def score_record(score: Score) -> str:
    """``score.json``: the score and its label, for readers of the analysis folder."""
    return json.dumps({**asdict(score), "label": score.label}, indent=2) + "\n"


def read_score_record(folder: Path) -> Score:
    """The score an analysis folder's tables hold (PER for folders written before it was
    recorded, or when the record cannot be read)."""
    path = folder / SCORE_FILE
    try:
        return score_of_results({"score": json.loads(path.read_text(encoding="utf-8"))}, path)
    except (OSError, ValueError, UserInputError):
        return PER
