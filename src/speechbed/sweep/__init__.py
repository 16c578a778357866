"""Experiment sweeps: the sweep grammar and the expansion into run configs and pipelines.

Used by ``scripts/sweep_experiment.py``; launches scripts only, never imports the ML code.
"""
