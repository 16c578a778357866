"""TensorBoard names runs by experiment, condition and seed, and shows their settings as hparams."""

from __future__ import annotations

import json
import os

from speechbed.reports import tensorboard
from speechbed.reports.tensorboard_view import run_name, view_folder
from speechbed.services import service_argv
from speechbed.sweep.experiment import load_experiment, write_experiment

EXPERIMENT = """
info: {seed: 0}
data: {cache_directory: "${CACHE_DIRECTORY}/corpus/fbank-81-10ms", feature: fbank-81-10ms}
model: {recurrent_size: 8, recurrent_layers: 1, convolutional_layers: 1}
training: {num_epochs: 1}
sweep:
  - multiple_parameters_model:
      lcorr: {convolutional_mellin: false}
      mcorr: {convolutional_mellin: true}
    seed: [1, 2]
"""


def test_expansion_links_each_run_under_its_name_and_the_service_serves_that_view(tmp_path):
    path = tmp_path / "named.yml"
    path.write_text(EXPERIMENT)
    experiment = load_experiment(path)
    artifacts = tmp_path / "artifacts"
    write_experiment(experiment, tmp_path / "repo", artifacts)
    for run in experiment.runs:
        link = view_folder(artifacts) / run_name("named", run.condition(), run.seed())
        assert link.is_symlink() and not os.path.isabs(os.readlink(link))
        assert link.resolve() == (artifacts / "named" / run.run_id / "tensorboard").resolve()
    assert sorted(p.name for p in (view_folder(artifacts) / "named" / "mcorr").iterdir()) == [
        "seed=1",
        "seed=2",
    ]
    write_experiment(experiment, tmp_path / "repo", artifacts)  # again: links replaced, no error
    argv = service_argv("tensorboard", "python", "127.0.0.1", 6006, tmp_path, artifacts)
    assert f"--logdir={artifacts / 'tensorboard'}" in argv


def test_describe_run_writes_hparams_and_final_per_in_percent(tmp_path):
    path = tmp_path / "named.yml"
    path.write_text(EXPERIMENT)
    experiment = load_experiment(path)
    artifacts = tmp_path / "artifacts"
    write_experiment(experiment, tmp_path / "repo", artifacts)
    run = experiment.runs[-1]
    run_dir = artifacts / "named" / run.run_id
    for _ in range(2):  # a second analysis replaces the first one's file
        link = tensorboard.describe_run(run_dir, {"dev_per": 21.5, "test_per": 23.0})
    files = [p for p in (run_dir / "tensorboard").iterdir() if p.name.endswith(".hparams")]
    assert len(files) == 1
    scalars = tensorboard.read_scalars(link)
    finals = dict(zip(scalars["tag"], scalars["value"], strict=True))
    assert finals["final/dev_per"] == 21.5 and finals["final/test_per"] == 23.0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(link))
    accumulator.Reload()
    plugin = accumulator.PluginTagToContent("hparams")
    assert plugin  # the hparams view's session info
    content = b"".join(plugin.values())
    assert b"mcorr" in content and b"convolutional_mellin" in content
    assert json.loads((artifacts / "named" / "runs.json").read_text())[run.run_id]["seed"] == 2
