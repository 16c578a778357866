"""Acoustic models: windowed CNN (linear or Mellin) + RNN giving per-window class logits.

Tasks (speechbed.tasks) build them with ``build_model`` from plain numbers; nothing here knows
a label set, a loss or a job file.
"""

from speechbed.models.acoustic import AcousticModel, AcousticModelSettings, build_model

__all__ = ["AcousticModel", "AcousticModelSettings", "build_model"]
