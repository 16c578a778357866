"""Corpora: the TIMIT LDC layout (SPHERE audio, .PHN/.WRD/.TXT), phone sets and manifests.

Used by scripts/make_synthetic_timit.py, scripts/prep_timit.py and the feature cache.
"""
