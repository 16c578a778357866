"""Reports on finished runs: result tables, statistics, plots, TensorBoard, comet.ml, Google Sheets.

Used by ``scripts/analyze.py`` and ``notebooks/analysis.ipynb``.
"""
