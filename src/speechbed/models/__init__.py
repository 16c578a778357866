"""Acoustic models of the TIMIT recipe: windowed CNN (linear or Mellin) + RNN with CTC outputs.

Training and evaluation call ``build_model`` with the run config's ``model`` section.
"""

from speechbed.models.acoustic import BLANK_INDEX, NUM_CLASSES, AcousticModel, build_model

__all__ = ["BLANK_INDEX", "NUM_CLASSES", "AcousticModel", "build_model"]
