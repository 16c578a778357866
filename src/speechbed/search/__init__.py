"""Hyperparameter search: optuna studies over run configs, run by workers that are pipeline jobs.

``scripts/search.py`` is the command line; ``search_file`` (the job file), ``space`` (the
search-space grammar), ``storage``, ``worker``, ``results`` (best, importance) and
``workers_pipeline`` (``make search``) are the parts. Only ``worker`` imports the trainer.
"""
