"""End-to-end word recognition with an RNN transducer (the MLPerf/Myrtle.ai RNN-T recipe).

The task ``rnnt``: ``speechbed.tasks.rnnt.task.RnntTask`` with its run config
``speechbed.tasks.rnnt.config.RnntRunConfig`` (this package imports neither, so the sweep
reads the config without torch).
"""
