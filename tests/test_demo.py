"""`make demo` end to end at tiny scale, the instant rerun, and the analysis notebook run headless.

Real processes all the way: eSpeak corpus -> prep -> sweep -> cache, train, evaluate pipelines
-> analysis; then the notebook executed by nbclient against those results.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from speechbed.reports.tensorboard import read_scalars

ROOT = Path(__file__).resolve().parent.parent
NAME = "e2e_tiny_demo"

# experiments/demo.yml shrunk to seconds: same corpus recipe, sweep shape and reports.
TINY_CHANGES = {
    "model": {
        "window_size": 4, "window_stride": 3, "convolutional_layers": 1,
        "convolutional_initial_channels": 2, "recurrent_size": 8, "recurrent_layers": 1,
    },
    "training": {"num_epochs": 1},
    "evaluation": {"beam_width": 2},
    "report": {"tensorboard": True, "comet": False, "google_sheet": True},
}  # fmt: skip


def _tiny_experiment(folder: Path) -> Path:
    experiment = yaml.safe_load((ROOT / "experiments" / "demo.yml").read_text())
    for section, values in TINY_CHANGES.items():
        experiment[section].update(values)
    path = folder / f"{NAME}.yml"
    path.write_text(yaml.safe_dump(experiment, sort_keys=False))
    return path


def _demo_command(experiment: Path, storage: Path, **variables: str) -> dict[str, object]:
    environment = {
        **os.environ,
        "DATA_DIRECTORY": str(storage / "data"),
        "CACHE_DIRECTORY": str(storage / "cache"),
        "ARTIFACTS_DIRECTORY": str(storage / "artifacts"),
        "SYNTHETIC_SCALE": "tiny",
        "PATH_TO_GOOGLE_CREDENTIALS": str(storage / "no_credentials.json"),
        **variables,
    }
    return {
        "args": ["make", "--no-print-directory", "-o", "install", "demo",
                 f"demo_experiment={experiment}"],
        "cwd": ROOT, "env": environment, "text": True,
    }  # fmt: skip


def _make_demo(
    experiment: Path, storage: Path, **variables: str
) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(
        **_demo_command(experiment, storage, **variables), capture_output=True, timeout=900
    )
    return result, time.monotonic() - started


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    storage = tmp_path_factory.mktemp("demo_storage")
    experiment = _tiny_experiment(storage)

    def stamps() -> dict[Path, int]:
        return {
            path: path.stat().st_mtime_ns
            for pattern in ("*/results.json", "*/model.pt", "*/hist.csv")
            for path in (storage / "artifacts" / NAME).glob(pattern)
        }

    try:
        first = _make_demo(experiment, storage)
        after_first = stamps()
        second = _make_demo(experiment, storage)
        assert stamps() == after_first, "a complete demo must not train or evaluate again"
        yield storage, first, second
    finally:
        shutil.rmtree(ROOT / "experiments" / "out" / NAME, ignore_errors=True)


def test_demo_runs_every_step_and_prints_the_table(demo):
    storage, (first, seconds), _ = demo
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    artifacts = storage / "artifacts" / NAME
    runs = pd.read_csv(artifacts / "analysis" / "runs.csv")
    assert len(runs) == 4 and sorted(runs["seed"]) == [1, 1, 2, 2]
    assert set(runs["condition"]) == {"lcorr", "mcorr"}  # demo.yml's labels
    assert runs["test_per"].between(0, 1000).all() and runs["dev_per"].between(0, 1000).all()
    statistics = pd.read_csv(artifacts / "analysis" / "statistics.csv")
    assert sorted(statistics["n"]) == [2, 2, 2, 2]
    for partition in ("dev", "test"):  # the means are the runs' means, condition by condition
        for condition, group in runs.groupby("condition"):
            row = statistics[
                (statistics["condition"] == condition) & (statistics["partition"] == partition)
            ]
            assert row["mean"].item() == pytest.approx(group[f"{partition}_per"].mean())
    assert "PER (%) per condition and partition" in first.stdout
    assert first.stdout.count("| lcorr |") + first.stdout.count("| mcorr |") >= 4  # a row each
    assert str(artifacts / "analysis" / "per_by_condition.png") in first.stdout
    assert "skipped: no Google credentials" in first.stdout
    for run_dir in runs["run_dir"]:
        assert (Path(run_dir) / "config.yml").is_file() and (
            Path(run_dir) / "results.json"
        ).is_file()
    print(f"tiny demo: {seconds:.1f} s")


def test_training_curves_are_readable_by_tensorboard(demo):
    storage, _, _ = demo
    runs = pd.read_csv(storage / "artifacts" / NAME / "analysis" / "runs.csv")
    for run_dir in map(Path, runs["run_dir"]):
        scalars = read_scalars(run_dir)
        history = pd.read_csv(run_dir / "hist.csv")
        dev = scalars[scalars["tag"] == "dev_per"].sort_values("step")
        assert dev["step"].tolist() == history["epoch"].tolist()
        # PER in percent in TensorBoard, as in every table (hist.csv keeps fractions)
        assert dev["value"].tolist() == pytest.approx((history["dev_per"] * 100).tolist(), rel=1e-5)
    named = storage / "artifacts" / "tensorboard" / NAME
    assert sorted(path.name for path in named.iterdir()) == ["lcorr", "mcorr"]
    for run in runs.itertuples():
        link = named / run.condition / f"seed={run.seed}"
        assert link.resolve() == (Path(run.run_dir) / "tensorboard").resolve()
        tags = set(read_scalars(link)["tag"])
        assert {"dev_per", "final/dev_per", "final/test_per"} <= tags


def test_rerun_of_a_complete_demo_only_prints(demo):
    _, (first, first_seconds), (second, second_seconds) = demo
    assert second.returncode == 0, second.stderr[-3000:]
    assert "PER (%) per condition and partition" in second.stdout
    assert second_seconds < first_seconds
    assert "skipped" in second.stdout  # (the fixture checked no run file was rewritten)


def test_analysis_notebook_runs_headless_and_draws_its_figures(demo, monkeypatch):
    from nbclient import NotebookClient

    storage, _, _ = demo
    notebook = nbformat.read(ROOT / "notebooks" / "analysis.ipynb", as_version=4)
    monkeypatch.setenv("SPEECHBED_EXPERIMENTS", NAME)  # the kernel inherits the environment
    # the demo's storage folders (the runs' ${CACHE_DIRECTORY} is the cache they trained on,
    # not the checkout's own storage/cache, which the reports would find changed: stale)
    for variable, folder in (("DATA", "data"), ("CACHE", "cache"), ("ARTIFACTS", "artifacts")):
        monkeypatch.setenv(f"{variable}_DIRECTORY", str(storage / folder))
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()
    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    assert not [output for output in outputs if output.output_type == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 2
    tables = "".join(output.get("data", {}).get("text/plain", "") for output in outputs)
    assert "mcorr" in tables and "partition" in tables


# These run last: the first changes the module's demo (seed 7).


def _store_utterances(store: Path) -> int:
    import zarr

    return int(zarr.open_group(str(store), mode="r")["utt_ids"].shape[0])


def _manifest_lines(manifest: Path) -> int:
    return len(manifest.read_text().splitlines())


def test_a_new_corpus_seed_redoes_everything_downstream_and_keeps_the_old_runs(demo):
    """Issue 10, seen 1: SYNTHETIC_SEED=7 after a complete demo must not report old results."""
    storage, _, _ = demo
    experiment = storage / f"{NAME}.yml"
    artifacts = storage / "artifacts" / NAME
    before = pd.read_csv(artifacts / "analysis" / "runs.csv")
    old_models = {
        Path(run_dir): (Path(run_dir) / "model.pt").read_bytes() for run_dir in before["run_dir"]
    }
    result, _ = _make_demo(experiment, storage, SYNTHETIC_SEED="7")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = pd.read_csv(artifacts / "analysis" / "runs.csv")
    assert len(after) == 4
    for run_dir, old_model in old_models.items():
        assert (run_dir / "model.pt").read_bytes() != old_model, f"{run_dir} was not retrained"
        kept = list(run_dir.parent.glob(f"{run_dir.name}.stale-*"))
        assert len(kept) == 1 and (kept[0] / "model.pt").read_bytes() == old_model
        new_data = json.loads((run_dir / "results.json").read_text())["data_fingerprints"]
        old_data = json.loads((kept[0] / "results.json").read_text())["data_fingerprints"]
        assert new_data["train"] != old_data["train"] and new_data["test"] != old_data["test"]
    cache = storage / "cache" / "synthetic_timit"
    for partition in ("train", "dev", "test"):
        assert _store_utterances(cache / "fbank-81-10ms" / f"{partition}.zarr") == (
            _manifest_lines(cache / "manifests" / f"{partition}.jsonl")
        )


def test_two_demos_at_once_in_one_storage_end_with_one_correct_result(tmp_path):
    """Issue 10, seen 2: both exit 0; the corpus, caches and runs are whole."""
    experiment = _tiny_experiment(tmp_path)
    storage = tmp_path / "storage"
    with open(tmp_path / "a.log", "w") as log_a, open(tmp_path / "b.log", "w") as log_b:
        first = subprocess.Popen(
            **_demo_command(experiment, storage), stdout=log_a, stderr=subprocess.STDOUT
        )
        second = subprocess.Popen(
            **_demo_command(experiment, storage), stdout=log_b, stderr=subprocess.STDOUT
        )
        try:
            codes = [first.wait(timeout=900), second.wait(timeout=900)]
        finally:
            for process in (first, second):
                if process.poll() is None:
                    process.kill()
                    process.wait()
            shutil.rmtree(ROOT / "experiments" / "out" / NAME, ignore_errors=True)
    assert codes == [0, 0], (tmp_path / "a.log").read_text()[-3000:] + (
        tmp_path / "b.log"
    ).read_text()[-3000:]
    cache = storage / "cache" / "synthetic_timit"
    for partition in ("train", "dev", "test"):
        assert _store_utterances(cache / "fbank-81-10ms" / f"{partition}.zarr") == (
            _manifest_lines(cache / "manifests" / f"{partition}.jsonl")
        )
    runs = pd.read_csv(storage / "artifacts" / NAME / "analysis" / "runs.csv")
    assert len(runs) == 4 and runs["test_per"].notna().all()
    leftovers = [path for path in storage.rglob(".*partial-*")]
    assert leftovers == []
    # and a third demo afterwards only prints
    third, _ = _make_demo(experiment, storage)
    assert third.returncode == 0 and "PER (%) per condition and partition" in third.stdout
