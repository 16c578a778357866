"""CTC training of the acoustic models: run config, loop, checkpoints, augmentation.

``scripts/train.py`` calls ``train_run``; the sweep validates runs against ``config.RunConfig``.
"""
