"""A study's report in its folder: the table of trials, the best trials and matplotlib figures.

Written by ``speechbed.search.worker`` when a worker finishes and by ``scripts/search.py
--report``. ``trials.csv`` has one row per trial (number, state, dev metric, parameters, run
folder); ``best_trials.csv`` the complete ones, best first; the figures are optuna's optimisation
history and, once enough trials are complete, the parameter importances (fANOVA).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from speechbed.outputs import atomic_output, write_text_atomic
from speechbed.run_folder import StudyFolder

#: Complete trials before importances are drawn: fewer tell nothing apart.
MIN_TRIALS_FOR_IMPORTANCE = 4
#: Rows of ``best_trials.csv``.
NUM_BEST = 5


@dataclass(frozen=True)
class StudyReport:
    files: list[Path]
    complete: int
    best_number: int | None
    best_value: float | None


def _save_figure(axes, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure = axes.figure if hasattr(axes, "figure") else axes.ravel()[0].figure
    figure.set_size_inches(8, 5)
    figure.tight_layout()
    with atomic_output(path) as partial:
        figure.savefig(partial, format="png", dpi=100)
    plt.close(figure)


def write_report(study: optuna.Study, folder: StudyFolder) -> StudyReport:
    """Write the study's tables and figures into ``folder``; each file appears whole or not at all."""
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    from optuna.visualization import matplotlib as figures

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    table = study.trials_dataframe(
        attrs=("number", "state", "value", "datetime_start", "duration", "params", "user_attrs")
    )
    written = [folder.trials_table]
    write_text_atomic(folder.trials_table, table.to_csv(index=False))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    best = sorted(complete, key=lambda t: (t.value, t.number))[:NUM_BEST]
    if not table.empty:
        rows = table.set_index("number").loc[[t.number for t in best]].reset_index()
        write_text_atomic(folder.best_trials_table, rows.to_csv(index=False))
        written.append(folder.best_trials_table)
    if complete:
        _save_figure(figures.plot_optimization_history(study), folder.history_figure)
        written.append(folder.history_figure)
    if len(complete) >= MIN_TRIALS_FOR_IMPORTANCE and any(t.params for t in complete):
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        _save_figure(
            figures.plot_param_importances(study, evaluator=evaluator), folder.importance_figure
        )
        written.append(folder.importance_figure)
    return StudyReport(
        written, len(complete), best[0].number if best else None, best[0].value if best else None
    )
