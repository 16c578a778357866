"""Data-parallel RNN-T training from WebDataset shards: epoch time of 1 and 2 processes.

Run by ``make bench`` (benchmarks/run_all.py); ``.venv/bin/python benchmarks/run_all.py
data_parallel``. The baseline, measured in the same run, is one process reading the
training manifest (the recipe's default loader). Then one process and two data-parallel
processes (Gloo, one thread each) read the same utterances from shards, each rank its own
shards. The corpus is the RNN-T demo's (synthetic LibriSpeech ``small``, built with its
data_prep pipeline in a temporary folder, about two minutes), the model and settings are
experiments/rnnt_demo.yml's, one epoch each. Every rank scores dev itself, so the epoch
time (hist.csv) includes one dev pass whatever the number of processes; the training time
is the epoch time less the dev pass, timed alone (with evaluate.py's start-up, so the
training times shown are a little low).

Measured on the 2-core development machine, nothing else running: manifest 35.4 s an epoch,
shards 36.5 s, shards in 2 processes 21.0 s: training 1.82x faster than one process.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from speechbed.storage import repository_root

ROOT = repository_root()
SHARDS = 8


def _run(command: list[str], environ: dict[str, str]) -> None:
    done = subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )


def _train(folder: Path, name: str, data: dict, processes: int, environ: dict) -> float:
    """Train one epoch; the epoch's seconds from hist.csv."""
    config = yaml.safe_load((ROOT / "experiments" / "rnnt_demo.yml").read_text())
    for key in ("sweep", "report"):
        config.pop(key, None)
    config["info"] = {"name": name, "seed": 1, "run_dir": str(folder / name)}
    config["data"].update(data)
    config["training"].update({"num_epochs": 1, "num_threads": 1})
    path = folder / f"{name}.yml"
    path.write_text(yaml.safe_dump(config))
    train = [str(ROOT / "scripts" / "train.py"), "-y", str(path)]
    if processes == 1:
        _run([sys.executable, *train], environ)
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc-per-node={processes}"]  # fmt: skip
        _run([*launcher, *train], {**environ, "GLOO_SOCKET_IFNAME": "lo"})
    with open(folder / name / "hist.csv") as handle:
        return float(next(csv.DictReader(handle))["seconds"])


def _dev_seconds(folder: Path, environ: dict) -> float:
    """One dev pass of the trained baseline model (what every epoch adds per rank)."""
    config = yaml.safe_load((folder / "manifest-1.yml").read_text())
    config["evaluation"]["partitions"] = ["dev"]
    path = folder / "dev-only.yml"
    path.write_text(yaml.safe_dump(config))
    start = time.perf_counter()
    _run([sys.executable, str(ROOT / "scripts" / "evaluate.py"), "-y", str(path)], environ)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-data-parallel-") as name:
        folder = Path(name)
        environ = {
            **os.environ,
            "DATA_DIRECTORY": str(folder / "data"),
            "CACHE_DIRECTORY": str(folder / "cache"),
            "ARTIFACTS_DIRECTORY": str(folder / "artifacts"),
            "SYNTHETIC_LIBRISPEECH_SCALE": "small",
            "OMP_NUM_THREADS": "1",
        }
        pipeline = ROOT / "data_prep" / "synthetic_librispeech" / "pipeline.yml"
        _run([sys.executable, str(ROOT / "scripts" / "pipeline.py"), "-y", str(pipeline)], environ)
        wav = folder / "cache" / "synthetic_librispeech" / "wav"
        train = wav / "train-clean-100.json"
        utterances = len(json.loads(train.read_text()))
        shards = folder / "cache" / "synthetic_librispeech" / "shards"
        job = folder / "shards.yml"
        job.write_text(
            yaml.safe_dump(
                {
                    "manifests": [str(train)],
                    "output_path": str(shards),
                    "utterances_per_shard": -(-utterances // SHARDS),
                }
            )
        )
        _run([sys.executable, str(ROOT / "scripts" / "write_shards.py"), "-y", str(job)], environ)
        sharded = {"train_shards": str(shards), "shuffle_buffer": 100}
        epochs = {
            "manifest, 1 process": _train(folder, "manifest-1", {}, 1, environ),
            "shards, 1 process": _train(folder, "shards-1", sharded, 1, environ),
            "shards, 2 processes": _train(folder, "shards-2", sharded, 2, environ),
        }
        dev = _dev_seconds(folder, environ)
    print(
        f"RNN-T demo model, one epoch of {utterances} utterances (synthetic LibriSpeech small), "
        f"CPU, one thread a process; a dev pass {dev:.1f} s (evaluate.py, start-up included)"
    )
    print(f"{'training from':<24} {'epoch s':>8} {'train s':>8} {'speed-up':>9}")
    base = epochs["manifest, 1 process"] - dev
    for label, seconds in epochs.items():
        training = seconds - dev
        print(f"{label:<24} {seconds:8.1f} {training:8.1f} {base / training:8.2f}x")


if __name__ == "__main__":
    main()
