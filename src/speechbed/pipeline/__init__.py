"""The GPU-aware pipeline runner: schema, GPU inventory, leases, executors, scheduler, state.

``scripts/pipeline.py`` is the command line; other packages only launch pipelines through it.
"""
