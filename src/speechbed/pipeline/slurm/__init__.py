"""Slurm: ``run_in: slurm`` jobs, each one ``sbatch`` job (or one element of a job array)
watched by a small local process.

``settings`` reads the environment file's cluster settings and a job's ``slurm:`` mapping,
``commands`` builds the sbatch/squeue/scontrol/scancel command lines and reads their
answers, ``arrays`` groups a segment's like jobs into job arrays and shares their one
submission, ``executor`` is the executor the registry makes by name, ``watcher`` is the
process the runner starts per job (``python -m speechbed.pipeline.slurm.watcher``) and
``batch`` runs on the compute node.
"""
