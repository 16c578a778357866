"""Run a pipeline YAML: its steps as processes, scheduled onto leased GPUs, with logs and resume.

Usage: python scripts/pipeline.py -y PIPELINE.yml [--gpus 0,1] [--num_jobs N] [--force]
[--dry-run] [--keep-going]   (or: make pipeline yml=PIPELINE.yml gpus=0,1 args="--force").
"""

from speechbed.pipeline.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
