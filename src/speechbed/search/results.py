"""What a finished study gives the next step: the best settings as an experiment, or the most
important parameters as an include list.

Called by ``scripts/search.py --best`` and ``--important``.

``best_params`` is the best complete trial's settings; with ``independent``, each parameter on
its own takes the value whose complete trials have the lowest median dev metric (ties: the
value seen first). ``important_params`` ranks parameters by fANOVA (or PED-ANOVA) importance
over the complete trials.
"""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Sequence
from typing import Any

import optuna
import yaml
from optuna.trial import FrozenTrial, TrialState

from speechbed.errors import UserInputError
from speechbed.search.search_file import RUN_SECTIONS, Search, with_params


def complete_trials(study: optuna.Study) -> list[FrozenTrial]:
    trials = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not trials:
        raise UserInputError(f"study {study.study_name} has no complete trial yet")
    return trials


def best_params(study: optuna.Study, independent: bool = False) -> dict[str, Any]:
    """The best trial's settings, or each parameter's value of lowest median (``independent``)."""
    trials = complete_trials(study)
    if not independent:
        return dict(min(trials, key=lambda t: (t.value, t.number)).params)
    chosen: dict[str, Any] = {}
    names = dict.fromkeys(name for trial in trials for name in trial.params)
    for name in names:
        groups: dict[Any, list[float]] = {}
        for trial in trials:
            if name in trial.params:
                groups.setdefault(trial.params[name], []).append(float(trial.value))
        chosen[name] = min(groups, key=lambda value: statistics.median(groups[value]))
    return chosen


def _when() -> str:
    return datetime.date.today().isoformat()


def best_experiment(
    search: Search, study: optuna.Study, independent: bool, seeds: Sequence[int]
) -> str:
    """An experiment YAML (``scripts/sweep_experiment.py``) with the best settings, over seeds."""
    params = best_params(study, independent)
    trials = complete_trials(study)
    pruned = sum(t.state == TrialState.PRUNED for t in study.get_trials(deepcopy=False))
    how = (
        "each parameter at its value of lowest median dev PER (--independent)"
        if independent
        else f"the best trial, {min(trials, key=lambda t: (t.value, t.number)).number}"
    )
    numbers = ", ".join(str(t.number) for t in trials)
    header = (
        f"# Tuned by the search study '{search.study}' ({search.source}), {_when()}:\n"
        f"# {how}, from {len(trials)} complete trial(s) ({numbers}; {pruned} pruned).\n"
        f"# Settings: {', '.join(f'{k}={v!r}' for k, v in params.items())}\n"
        "#   make experiment yml=THIS_FILE run=1\n"
    )
    sections = with_params(search.written_sections, params)
    document: dict[str, Any] = {"info": {"seed": search.settings.seed}}
    if search.settings.task != "ctc_phones":
        document["task"] = search.settings.task
    for section in RUN_SECTIONS:
        if sections.get(section):
            document[section] = sections[section]
    document["sweep"] = [{"seed": list(seeds)}]
    return header + "\n" + yaml.safe_dump(document, sort_keys=False)


def important_params(study: optuna.Study, evaluator: str = "fanova") -> dict[str, float]:
    """Parameter importances over the complete trials, most important first."""
    trials = complete_trials(study)
    if len(trials) < 2:
        raise UserInputError(f"study {study.study_name}: importance needs 2 complete trials")
    if evaluator == "ped-anova":
        judge: Any = optuna.importance.PedAnovaImportanceEvaluator()
    else:
        judge = optuna.importance.FanovaImportanceEvaluator(seed=0)
    return dict(optuna.importance.get_param_importances(study, evaluator=judge))


def include_list(search: Search, study: optuna.Study, top_k: int, evaluator: str = "fanova") -> str:
    """The ``top_k`` most important names as YAML (``include:``), importances as comments."""
    importances = important_params(study, evaluator)
    kept = list(importances)[:top_k]
    lines = [
        f"# The {len(kept)} most important of {len(importances)} parameters of study "
        f"'{search.study}' ({evaluator}, {len(complete_trials(study))} complete trials), {_when()}",
        "include:",
    ]
    lines += [f"  - {name}  # importance {importances[name]:.3f}" for name in kept]
    left = [f"{name} {importances[name]:.3f}" for name in importances if name not in kept]
    if left:
        lines.append(f"# left out: {', '.join(left)}")
    return "\n".join(lines) + "\n"
