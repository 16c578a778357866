"""Two-speaker source separation: deep clustering, mask inference and chimera networks, SI-SDRi.

The task ``separation``; see ``SeparationTask`` (task.py) and its run config
``SeparationRunConfig`` (config.py, importable without torch).
"""
