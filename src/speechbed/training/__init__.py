"""The one training loop and evaluation driver for every task: run config, trainer, checkpoints.

``scripts/train.py`` calls ``loop.train_run`` and ``scripts/evaluate.py`` calls
``evaluation.evaluate_run``; the run config's ``task`` picks the recipe (registered in
``speechbed.tasks.TASKS``). The sweep validates runs against ``config.RunConfig``.
"""
