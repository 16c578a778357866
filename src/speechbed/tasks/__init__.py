"""Recipes, one package each implementing speechbed.training.task.Task, registered by name.

The run config's ``task`` names one of ``TASKS``: the entry gives the task's class (imported
only when a run trains or is scored: ``speechbed.training.task.make_task`` through
``task_class``) and its run config class (imported when a run config is validated, by
``speechbed.training.config.run_config_class``; a config module imports only pydantic and the
training layer's config, so the sweep reads it without torch). A task imports the layers below
it (models, decoding, features, the training layer's config, data and task interface); nothing
imports a task module but through this registry, and this module imports no other.
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches
from typing import NamedTuple


class TaskEntry(NamedTuple):
    """Where a task lives: ``module:class`` of its Task and of its RunConfig subclass."""

    task: str
    config: str


#: Task name (the run config's ``task``) -> where its implementation and run config are.
TASKS: dict[str, TaskEntry] = {
    "ctc_phones": TaskEntry(
        task="speechbed.tasks.ctc_phones.task:CtcPhonesTask",
        config="speechbed.tasks.ctc_phones.config:CtcPhonesRunConfig",
    ),
    "separation": TaskEntry(
        task="speechbed.tasks.separation.task:SeparationTask",
        config="speechbed.tasks.separation.config:SeparationRunConfig",
    ),
    "kws": TaskEntry(
        task="speechbed.tasks.kws.task:KwsTask", config="speechbed.tasks.kws.config:KwsRunConfig"
    ),
    "rnnt": TaskEntry(
        task="speechbed.tasks.rnnt.task:RnntTask",
        config="speechbed.tasks.rnnt.config:RnntRunConfig",
    ),
}
DEFAULT_TASK = "ctc_phones"


def unknown_task(name: str) -> str | None:
    """None for a registered task; else what is wrong, naming the known tasks."""
    if name in TASKS:
        return None
    close = get_close_matches(name, TASKS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{name!r} is not a task (known: {', '.join(sorted(TASKS))}){hint}"


def task_entry(name: str) -> TaskEntry:
    """The registry entry of ``name``; ValueError naming the known tasks when unknown."""
    problem = unknown_task(name)
    if problem is not None:
        raise ValueError(problem)
    return TASKS[name]


def task_class(name: str) -> type:
    """The Task class registered as ``name`` (its module imported now); ValueError when unknown."""
    module, attribute = task_entry(name).task.split(":")
    return getattr(importlib.import_module(module), attribute)
