"""Slurm: ``run_in: slurm`` jobs, each one ``sbatch`` job watched by a small local process.

``settings`` reads the environment file's cluster settings and a job's ``slurm:`` mapping,
``commands`` builds the sbatch/squeue/scontrol/scancel command lines and reads their
answers, ``executor`` is the executor the registry makes by name, ``watcher`` is the
process the runner starts per job (``python -m speechbed.pipeline.slurm.watcher``) and
``batch`` runs on the compute node.
"""
