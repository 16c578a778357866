"""Deployment backends of trained classifiers: ONNX export, ONNX Runtime, int8, costs, latency.

Called by the kws task's evaluation (when ``evaluation.backend`` asks, imported only then)
and by scripts/export.py; imports the models layer below it, never the trainer.
"""
