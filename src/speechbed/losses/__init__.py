"""Sequence losses the recipes train with, as plain torch functions (no model, no job file).

Called by tasks (speechbed.tasks) and by the benchmarks; imports nothing from speechbed.
"""

from speechbed.losses.rnnt import rnnt_loss

__all__ = ["rnnt_loss"]
