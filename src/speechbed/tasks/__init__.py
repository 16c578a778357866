"""Recipes, one package each implementing speechbed.training.task.Task, registered by name.

The run config's ``task`` names one of ``TASKS`` (its schema checks the name here); the training
loop and evaluation call ``speechbed.training.task.make_task``, which imports the task's module
only then, through ``task_class``. A task imports the layers below it (models, decoding,
features, the training layer's config, data and task interface); nothing imports a task
module but through this registry, and this module imports no other.
"""

from __future__ import annotations

import importlib
from difflib import get_close_matches

#: Task name (the run config's ``task``) -> ``module:class`` of its implementation.
TASKS: dict[str, str] = {
    "ctc_phones": "speechbed.tasks.ctc_phones:CtcPhonesTask",
}
DEFAULT_TASK = "ctc_phones"


def unknown_task(name: str) -> str | None:
    """None for a registered task; else what is wrong, naming the known tasks."""
    if name in TASKS:
        return None
    close = get_close_matches(name, TASKS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{name!r} is not a task (known: {', '.join(sorted(TASKS))}){hint}"


def task_class(name: str) -> type:
    """The class registered as ``name`` (its module imported now); ValueError when unknown."""
    problem = unknown_task(name)
    if problem is not None:
        raise ValueError(problem)
    module, attribute = TASKS[name].split(":")
    return getattr(importlib.import_module(module), attribute)
