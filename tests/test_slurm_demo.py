"""``make demo`` at tiny corpus scale, on the host and with ``run_in=slurm``: the same table.

The demo study's steps (synthetic corpus, manifests, the sweep's cache, training and
evaluation pipelines, analysis) run once on the host and once with ``SPEECHBED_RUN_IN=slurm``
on the one-node test cluster (tests/slurm_cluster.py), each with its own artifacts. Training is
deterministic on CPU with one thread, so every run must end with the same PER. One seed
per condition keeps it near a minute and a half on a shared 2-core machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import yaml
from slurm_cluster import slurm
from test_slurm import cluster  # noqa: F401
from test_slurm import pytestmark as needs_slurm

ROOT = Path(__file__).resolve().parent.parent
NAME = "e2e_slurm_demo"
pytestmark = needs_slurm

# experiments/demo.yml shrunk to seconds, as in tests/test_demo.py
TINY_CHANGES = {
    "model": {
        "window_size": 4, "window_stride": 3, "convolutional_layers": 1,
        "convolutional_initial_channels": 2, "recurrent_size": 8, "recurrent_layers": 1,
    },
    "training": {"num_epochs": 1},
    "evaluation": {"beam_width": 2},
    "report": {"tensorboard": False, "comet": False, "google_sheet": False},
}  # fmt: skip


def _demo(experiment: Path, storage: Path, artifacts: Path, **variables: str) -> tuple[str, float]:
    environment = {
        **{key: value for key, value in os.environ.items() if not key.startswith("SPEECHBED_")},
        "DATA_DIRECTORY": str(storage / "data"),
        "CACHE_DIRECTORY": str(storage / "cache"),
        "ARTIFACTS_DIRECTORY": str(artifacts),
        "SYNTHETIC_SCALE": "tiny",
        **variables,
    }
    started = time.monotonic()
    result = subprocess.run(
        ["make", "--no-print-directory", "-o", "install", "demo", f"demo_experiment={experiment}"],
        cwd=ROOT, env=environment, text=True, capture_output=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    return result.stdout, time.monotonic() - started


def test_the_demo_on_slurm_gives_the_hosts_table(tmp_path, cluster):  # noqa: F811
    experiment = yaml.safe_load((ROOT / "experiments" / "demo.yml").read_text())
    for section, values in TINY_CHANGES.items():
        experiment[section].update(values)
    experiment["sweep"][0]["seed"] = [1]  # lcorr and mcorr: two runs per step, one array
    path = tmp_path / f"{NAME}.yml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    try:
        host_output, host_seconds = _demo(path, tmp_path, tmp_path / "host")
        slurm_output, slurm_seconds = _demo(
            path,
            tmp_path,  # the same corpus and feature cache; the runs' own folders apart
            tmp_path / "slurm",
            SPEECHBED_RUN_IN="slurm",
            SLURM_CONF=str(cluster),
            SPEECHBED_SLURM_POLL_SECONDS="0.2",
        )
    finally:
        shutil.rmtree(ROOT / "experiments" / "out" / NAME, ignore_errors=True)
    tables = []
    for storage in ("host", "slurm"):
        runs = pd.read_csv(tmp_path / storage / NAME / "analysis" / "runs.csv")
        tables.append(runs.set_index(["condition", "seed"]).sort_index())
    host, on_slurm = tables
    assert len(host) == 2 and list(host.index) == list(on_slurm.index)
    for column in ("dev_per", "test_per"):
        assert on_slurm[column].tolist() == host[column].tolist(), (host, on_slurm)
    # every training and evaluation job ran on the cluster, as arrays of the sweep's runs
    assert "submitted as element" in slurm_output and "submitted as" not in host_output
    names = set(slurm("squeue", "--noheader", "--me", "--states=all", "--format=%j").split())
    assert any(name.endswith("[2]") for name in names), names
    assert "PER (%) per condition and partition" in slurm_output
    print(f"tiny demo: host {host_seconds:.1f} s, slurm {slurm_seconds:.1f} s")
