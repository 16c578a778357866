"""Recipes, one package each, implementing speechbed.training.task.Task.

Looked up by name from the run config's ``task`` (``speechbed.training.task.TASKS``) by the
training loop and evaluation; a task imports the layers below it (models, decoding, features,
the training layer's config and data helpers), never the loop.
"""
