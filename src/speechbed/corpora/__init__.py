"""Corpora: readers of the layouts users have (TIMIT, LibriSpeech, Common Voice, Speech
Commands, wsj0-2mix, Libri2Mix), the synthetic corpora spoken offline in those layouts, phone
sets, manifests (JSON Lines for TIMIT, the RNN-T JSON format for ASR) and the sentencepiece
tokenizer.

Used by the data preparation scripts (scripts/make_synthetic_*.py, scripts/prep_*.py,
scripts/train_tokenizer.py), the feature caches and the tasks that read manifests.
"""
