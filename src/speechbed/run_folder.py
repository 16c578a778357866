"""The files of a run folder and of an experiment folder, each name spelled once.

Written by training, evaluation and the sweep; read by the reports and the analysis step.

An experiment folder (``${ARTIFACTS_DIRECTORY}/<experiment>/``) holds ``runs.json`` (every
run's condition and seed, by run id), one run folder per run id and ``analysis/``. A run
folder holds the run's job file ``config.yml``, ``hist.csv`` (one row per epoch),
``tensorboard/``, ``checkpoints/epoch-NNNN.pt``, the best epoch's ``model.pt`` and the
evaluation's ``results.json`` and transcripts (``<role>.hyp.trn``, ``<role>.ref.trn``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_CONFIG = "config.yml"
HISTORY = "hist.csv"
MODEL = "model.pt"
RESULTS = "results.json"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
RUN_INDEX = "runs.json"
ANALYSIS = "analysis"


@dataclass(frozen=True)
class RunFolder:
    """One run's folder and the paths of its files."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / RUN_CONFIG

    @property
    def history(self) -> Path:
        return self.path / HISTORY

    @property
    def model(self) -> Path:
        return self.path / MODEL

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    def checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:04d}.pt"

    def transcript(self, role: str, side: str) -> Path:
        """``<role>.<side>.trn``: a scored partition's (dev, test) hypotheses or references."""
        return self.path / f"{role}.{side}.trn"


@dataclass(frozen=True)
class ExperimentFolder:
    """One experiment's folder: its run index, its runs and its analysis."""

    path: Path

    @property
    def index(self) -> Path:
        return self.path / RUN_INDEX

    @property
    def analysis(self) -> Path:
        return self.path / ANALYSIS

    def run(self, run_id: str) -> RunFolder:
        return RunFolder(self.path / run_id)

    def read_index(self) -> dict[str, dict[str, Any]]:
        """The runs by id (``runs.json``; without it, one entry per folder with a config.yml)."""
        if self.index.is_file():
            return json.loads(self.index.read_text(encoding="utf-8"))
        return {
            path.parent.name: {"condition": "base", "seed": None, "settings": {}}
            for path in sorted(self.path.glob(f"*/{RUN_CONFIG}"))
        }


SEARCH = "search"


@dataclass(frozen=True)
class StudyFolder:
    """One search study's folder, ``${ARTIFACTS_DIRECTORY}/search/<study>/``: the embedded
    study store ``journal.log``, the workers' ``pipeline.yml``, one run folder per trial and the
    report (``trials.csv``, ``best_trials.csv`` and figures, ``speechbed.search.report``)."""

    path: Path

    @classmethod
    def of(cls, artifacts: Path, study: str) -> StudyFolder:
        return cls(artifacts / SEARCH / study)

    @property
    def journal(self) -> Path:
        return self.path / "journal.log"

    @property
    def pipeline(self) -> Path:
        return self.path / "pipeline.yml"

    @property
    def trials_table(self) -> Path:
        return self.path / "trials.csv"

    @property
    def best_trials_table(self) -> Path:
        return self.path / "best_trials.csv"

    @property
    def history_figure(self) -> Path:
        return self.path / "optimization_history.png"

    @property
    def importance_figure(self) -> Path:
        return self.path / "param_importances.png"

    def trial(self, number: int) -> RunFolder:
        return RunFolder(self.path / "trials" / f"{number:04d}")
