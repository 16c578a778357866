"""Sweep grammar and experiment expansion: products, dotted/bare keys, bundles, run ids, outputs."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from speechbed.errors import UserInputError
from speechbed.jobs import load_config, load_jobs
from speechbed.sweep.expansion import expand, run_id_of
from speechbed.sweep.experiment import check_inputs, load_experiment, write_experiment

ROOT = Path(__file__).resolve().parent.parent

BASE = {
    "info": {"seed": 0},
    "data": {"cache_directory": "/c/fbank", "feature": "fbank"},
    "model": {"recurrent_size": 16, "seed": 0, "window_size": 5},
    "training": {"num_epochs": 2},
}


def test_product_of_list_valued_keys_covers_every_combination():
    experiment = {**BASE, "sweep": [{"model.recurrent_size": [8, 16], "num_epochs": [1, 2, 3]}]}
    runs = expand(experiment).runs
    got = sorted(
        (r.config["model"]["recurrent_size"], r.config["training"]["num_epochs"]) for r in runs
    )
    assert got == sorted(itertools.product([8, 16], [1, 2, 3]))
    assert len({r.run_id for r in runs}) == 6


def test_scalar_values_in_an_entry_are_fixed_settings():
    runs = expand({**BASE, "sweep": [{"window_size": 9, "num_epochs": [1, 2]}]}).runs
    assert [r.config["model"]["window_size"] for r in runs] == [9, 9]


def test_dotted_key_sets_one_path_and_bare_key_sets_every_key_of_that_name():
    dotted = expand({**BASE, "sweep": [{"model.seed": [7]}]}).runs[0].config
    assert dotted["model"]["seed"] == 7 and dotted["info"]["seed"] == 0
    bare = expand({**BASE, "sweep": [{"seed": [7]}]}).runs[0].config
    assert bare["model"]["seed"] == 7 and bare["info"]["seed"] == 7
    # the base experiment is never modified
    assert BASE["model"]["seed"] == 0


@pytest.mark.parametrize("key", ["model.recurent_size", "recurent_size", "nothing.at.all"])
def test_a_key_that_matches_nothing_is_an_error_naming_it(key):
    with pytest.raises(UserInputError) as caught:
        expand({**BASE, "sweep": [{key: [1, 2]}]}, source="exp.yml")
    message = str(caught.value)
    assert f"'{key}'" in message and "exp.yml" in message and "sweep entry 0" in message
    if "recurent" in key:
        assert "recurrent_size" in message  # the suggestion


def test_keys_known_to_the_schema_but_absent_from_the_file_are_accepted():
    known = {("training", "noise_eps"), ("training",)}
    config = expand({**BASE, "sweep": [{"noise_eps": [0.1]}]}, known_paths=known).runs[0].config
    assert config["training"]["noise_eps"] == 0.1
    config = (
        expand({**BASE, "sweep": [{"training.noise_eps": 0.2}]}, known_paths=known).runs[0].config
    )
    assert config["training"]["noise_eps"] == 0.2


def test_multiple_parameters_bundles_vary_together_and_multiply_with_other_keys():
    bundles = [
        {"feature": "fbank", "cache_directory": "/c/fbank"},
        {"feature": "sigbank", "cache_directory": "/c/sigbank"},
    ]
    runs = expand(
        {**BASE, "sweep": [{"multiple_parameters_feature": bundles, "seed": [1, 2, 3]}]}
    ).runs
    assert len(runs) == 6
    for run in runs:
        assert run.config["data"]["cache_directory"] == "/c/" + run.config["data"]["feature"]
    pairs = sorted((r.config["data"]["feature"], r.config["info"]["seed"]) for r in runs)
    assert pairs == sorted(itertools.product(["fbank", "sigbank"], [1, 2, 3]))
    # the condition names a bundle by its first setting, and never shows the seed
    assert {r.condition() for r in runs} == {"feature=fbank", "feature=sigbank"}
    assert sorted(r.seed() for r in runs) == [1, 1, 2, 2, 3, 3]


def test_a_bundle_that_is_not_a_list_of_mappings_is_an_error():
    with pytest.raises(UserInputError, match="multiple_parameters_x"):
        expand({**BASE, "sweep": [{"multiple_parameters_x": [1, 2]}]})


def test_no_sweep_is_one_run_with_the_base_settings():
    for experiment in (dict(BASE), {**BASE, "sweep": []}):
        runs = expand(experiment).runs
        assert len(runs) == 1
        assert runs[0].config == {key: BASE[key] for key in BASE}
        assert runs[0].condition() == "base"


def test_entries_are_concatenated_and_identical_runs_appear_once():
    experiment = {**BASE, "sweep": [{"seed": [1, 2]}, {"seed": [2, 3]}]}
    runs = expand(experiment).runs
    assert sorted(r.config["info"]["seed"] for r in runs) == [1, 2, 3]


def test_run_ids_are_stable_short_hashes_of_the_resolved_config():
    experiment = {**BASE, "sweep": [{"seed": [1, 2], "num_epochs": [3]}]}
    first = [r.run_id for r in expand(experiment).runs]
    second = [r.run_id for r in expand(experiment).runs]
    assert first == second and len(set(first)) == 2
    assert all(len(run_id) == 10 and int(run_id, 16) >= 0 for run_id in first)
    # key order and the derived run folder do not change the id; a setting does
    config = expand(experiment).runs[0].config
    reordered = {key: config[key] for key in reversed(list(config))}
    assert run_id_of(reordered) == first[0]
    moved = {**config, "info": {**config["info"], "run_dir": "/elsewhere"}}
    assert run_id_of(moved) == first[0]
    changed = {**config, "training": {"num_epochs": 4}}
    assert run_id_of(changed) != first[0]


def test_populate_cache_is_a_flag_not_a_setting():
    expansion = expand({**BASE, "sweep": [{"seed": [1], "populate_cache": True}]})
    assert expansion.populate_cache
    assert "populate_cache" not in str(expansion.runs[0].config)


# --------------------------------------------------------------------------- experiment files

EXPERIMENT = """
info: {seed: 0}
data: {cache_directory: "${CACHE_DIRECTORY}/corpus/fbank-81-10ms", feature: fbank-81-10ms}
model: {recurrent_size: 8, recurrent_layers: 1, convolutional_layers: 1}
training: {num_epochs: 1}
report: {comet: false}
sweep:
  - multiple_parameters_model:
      - {convolutional_mellin: false}
      - {convolutional_mellin: true}
    seed: [1, 2]
    populate_cache: true
"""


def _write_experiment(folder: Path, text: str = EXPERIMENT, name: str = "study") -> Path:
    path = folder / f"{name}.yml"
    path.write_text(text, encoding="utf-8")
    return path


def test_expansion_writes_run_configs_and_pipelines_with_repository_relative_paths(tmp_path):
    experiment = load_experiment(_write_experiment(tmp_path))
    assert len(experiment.runs) == 4
    root, artifacts = tmp_path / "repo", tmp_path / "artifacts"
    written = write_experiment(experiment, root, artifacts, num_jobs=2)
    out = root / "experiments" / "out" / "study"
    assert sorted(p.name for p in out.iterdir()) == [
        "analyze.yml", "cache.yml", "evaluate.yml", "pipeline.yml", "train.yml",
    ]  # fmt: skip
    for path in out.iterdir():
        text = path.read_text()
        assert str(tmp_path) not in text, f"{path.name} holds an absolute path"
    environ = {"ARTIFACTS_DIRECTORY": str(artifacts), "CACHE_DIRECTORY": "/cache"}
    from speechbed.pipeline.schema import PipelineFile
    from speechbed.training.config import RunConfig

    pipeline = load_config(out / "pipeline.yml", PipelineFile, environ)
    assert [job.name for job in pipeline.jobs] == [
        "study-cache",
        "study-train",
        "study-evaluate",
        "study-analyze",
    ]
    assert all(job.blocking for job in pipeline.jobs)
    assert all(not job.config.is_absolute() for job in pipeline.jobs)
    train = load_config(out / "train.yml", PipelineFile, environ)
    assert train.num_jobs == 2 and len(train.jobs) == 4
    for job, run, config_path in zip(train.jobs, experiment.runs, written.run_configs, strict=True):
        assert str(job.config) == str(artifacts / "study" / run.run_id / "config.yml")
        assert config_path == artifacts / "study" / run.run_id / "config.yml"
        (config,) = load_jobs(config_path, RunConfig, environ)
        assert config.info.run_dir == artifacts / "study" / run.run_id
        assert config.data.cache_directory == Path("/cache/corpus/fbank-81-10ms")
        assert config.model.convolutional_mellin == run.config["model"]["convolutional_mellin"]
    cache = yaml.safe_load((out / "cache.yml").read_text())
    assert cache["jobs"] == [
        {
            "input_path": "${CACHE_DIRECTORY}/corpus/manifests",
            "partitions": ["train", "dev", "test"],
            "feature": "fbank-81-10ms",
            "output_path": "${CACHE_DIRECTORY}/corpus/fbank-81-10ms",
            "device": "cpu",
            "batch_size": 16,
        }
    ]
    analyze = yaml.safe_load((out / "analyze.yml").read_text())
    assert analyze["runs"] == [run.run_id for run in experiment.runs]


def test_expanding_twice_gives_the_same_files(tmp_path):
    path = _write_experiment(tmp_path)
    texts = []
    for _ in range(2):
        write_experiment(load_experiment(path), tmp_path / "repo", tmp_path / "artifacts")
        out = tmp_path / "repo" / "experiments" / "out" / "study"
        texts.append({p.name: p.read_text() for p in out.iterdir()})
    assert texts[0] == texts[1]


def test_a_value_the_run_schema_rejects_names_the_key(tmp_path):
    text = EXPERIMENT.replace("seed: [1, 2]", "recurrent_type: [LSTM, Transformer]")
    with pytest.raises(UserInputError) as caught:
        load_experiment(_write_experiment(tmp_path, text))
    assert "model.recurrent_type" in str(caught.value) and "sweep entry 0" in str(caught.value)


def test_unknown_top_level_section_is_an_error(tmp_path):
    with pytest.raises(UserInputError, match="'trainig'"):
        load_experiment(_write_experiment(tmp_path, EXPERIMENT + "trainig: {}\n"))


def test_missing_cache_inputs_are_listed(tmp_path):
    experiment = load_experiment(_write_experiment(tmp_path))
    environ = {"CACHE_DIRECTORY": str(tmp_path / "cache")}
    missing = check_inputs(experiment, environ, populate_cache=True)
    assert len(missing) == 3 and all("manifest" in item for item in missing)
    manifests = tmp_path / "cache" / "corpus" / "manifests"
    manifests.mkdir(parents=True)
    for partition in ("train", "dev"):
        (manifests / f"{partition}.jsonl").write_text("")
    assert [m.split()[1] for m in check_inputs(experiment, environ, True)] == [
        str(manifests / "test.jsonl")
    ]
    assert all(
        "feature cache" in m for m in check_inputs(experiment, environ, populate_cache=False)
    )


def _sweep_cli(args: list[str], environ: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "sweep_experiment.py"), *args],
        capture_output=True, text=True, env={**os.environ, **environ}, timeout=120,
    )  # fmt: skip


def test_command_line_fails_before_anything_runs_on_missing_inputs_or_gpus(tmp_path):
    path = _write_experiment(tmp_path, name="cli_check_study")
    environ = {
        "CACHE_DIRECTORY": str(tmp_path / "cache"),
        "ARTIFACTS_DIRECTORY": str(tmp_path / "a"),
    }
    result = _sweep_cli(["-y", str(path)], environ)
    assert result.returncode == 2
    assert "manifest" in result.stderr and "Traceback" not in result.stderr
    # the GPU check is for a run here (run=1); a bare expansion leaves it to the pipeline
    result = _sweep_cli(
        ["-y", str(path), "--num_gpus", "2", "--run"], {**environ, "SPEECHBED_GPUS": "0"}
    )
    assert result.returncode == 2 and "asks for 2 GPU(s)" in result.stderr
    assert not (tmp_path / "a").exists()
    assert not (ROOT / "experiments" / "out" / "cli_check_study").exists()


@pytest.mark.parametrize("name, mellin", [("lcorr", False), ("mcorr", True)])  # the study's names
def test_the_timit_study_is_two_features_times_twenty_seeds(name, mellin):
    experiment = load_experiment(ROOT / "experiments" / f"{name}.yml")
    assert experiment.expansion.populate_cache
    by_condition: dict[str, list[int]] = {}
    for run in experiment.runs:
        by_condition.setdefault(run.condition(), []).append(run.seed())
        assert run.config["model"]["convolutional_mellin"] is mellin
        feature = run.config["data"]["feature"]
        assert run.config["data"]["cache_directory"].endswith("/" + feature)
    assert sorted(by_condition) == [f"{name}-fbank-81-10ms", f"{name}-sigbank-41-2ms"]
    assert all(sorted(seeds) == list(range(1, 21)) for seeds in by_condition.values())


def test_cuda_runs_without_gpus_are_refused_before_anything_runs(tmp_path):
    from speechbed.sweep.experiment import check_gpus

    text = EXPERIMENT.replace(
        "training: {num_epochs: 1}", "training: {num_epochs: 1, device: cuda}"
    )
    experiment = load_experiment(_write_experiment(tmp_path, text))
    with pytest.raises(UserInputError, match="training.device: cuda, but num_gpus is 0"):
        check_gpus(0, None, {}, experiment)
    with pytest.raises(UserInputError, match="asks for 1 GPU"):
        check_gpus(1, "", {}, experiment)
    check_gpus(1, "3", {}, experiment)  # one fake GPU is enough


# --------------------------------------------------------------------------- the experiment loader


def test_a_key_given_twice_in_an_experiment_file_is_an_error_naming_its_line(tmp_path):
    text = EXPERIMENT.replace(
        "training: {num_epochs: 1}\n", "training: {num_epochs: 1}\ntraining: {num_epochs: 2}\n"
    )
    with pytest.raises(UserInputError) as caught:
        load_experiment(_write_experiment(tmp_path, text))
    message = str(caught.value)
    assert f"{tmp_path / 'study.yml'}:6:" in message
    assert "duplicate key 'training'" in message and "line 5" in message


def test_a_key_given_twice_inside_a_sweep_entry_is_an_error_naming_its_line(tmp_path):
    text = EXPERIMENT.replace("    seed: [1, 2]\n", "    seed: [1, 2]\n    seed: [3]\n")
    with pytest.raises(UserInputError, match=r"study\.yml:12: duplicate key 'seed'"):
        load_experiment(_write_experiment(tmp_path, text))


@pytest.mark.parametrize(
    "old, new, line, key, nearest",
    [
        ("report: {comet: false}", "reprot: {comet: false}", 6, "reprot", "report"),
        ("report: {comet: false}", "report: {comet: false, coment_project: x}", 6,
         "report.coment_project", "comet_project"),
        ("model: {recurrent_size: 8,", "model: {recurent_size: 8,", 4, "model.recurent_size",
         "recurrent_size"),
    ],
)  # fmt: skip
def test_an_unknown_key_names_file_line_and_the_nearest_known_key(
    tmp_path, old, new, line, key, nearest
):
    with pytest.raises(UserInputError) as caught:
        load_experiment(_write_experiment(tmp_path, EXPERIMENT.replace(old, new)))
    message = str(caught.value)
    assert f"{tmp_path / 'study.yml'}:{line}:" in message
    assert f"unknown key '{key}'" in message and f"did you mean '{nearest}'" in message


def test_a_value_a_sweep_entry_sets_is_named_at_its_line_in_the_entry(tmp_path):
    text = EXPERIMENT.replace(
        "      - {convolutional_mellin: true}\n",
        "      - {convolutional_mellin: true}\n"
        "      - {convolutional_mellin: true, recurrent_type: Transformer}\n",
    )
    with pytest.raises(UserInputError) as caught:
        load_experiment(_write_experiment(tmp_path, text))
    message = str(caught.value)
    assert f"{tmp_path / 'study.yml'}:11: sweep entry 0, run " in message
    assert "key 'model.recurrent_type'" in message and "'Transformer'" in message


def test_a_malformed_variable_reference_names_its_line_and_variables_stay_as_written(tmp_path):
    broken = EXPERIMENT.replace("${CACHE_DIRECTORY}/corpus", "${CACHE DIRECTORY}/corpus")
    with pytest.raises(UserInputError, match=r"study\.yml:3: '\$\{CACHE DIRECTORY\}'"):
        load_experiment(_write_experiment(tmp_path, broken))
    # a valid reference is kept, set or not, with its default and its escapes
    text = EXPERIMENT.replace(
        "feature: fbank-81-10ms}", "feature: fbank-81-10ms, train_partition: '${P:-train}'}"
    ).replace("report: {comet: false}", "report: {comet: false, worksheet: '$${literal}'}")
    experiment = load_experiment(_write_experiment(tmp_path, text))
    data = experiment.runs[0].config["data"]
    assert data["cache_directory"] == "${CACHE_DIRECTORY}/corpus/fbank-81-10ms"
    assert data["train_partition"] == "${P:-train}"
    assert experiment.report.worksheet == "$${literal}"


def test_an_empty_section_is_the_section_left_out(tmp_path):
    path = _write_experiment(tmp_path, EXPERIMENT.replace("report: {comet: false}", "report:"))
    from speechbed.reports.settings import ReportSettings

    assert load_experiment(path).report == ReportSettings()


def test_the_written_job_files_load_as_their_scripts_jobs(tmp_path):
    from speechbed.features.compute_job import ComputeFeaturesJob
    from speechbed.reports.analyze_job import AnalyzeJob

    experiment = load_experiment(_write_experiment(tmp_path))
    root, artifacts = tmp_path / "repo", tmp_path / "artifacts"
    write_experiment(experiment, root, artifacts)
    out = root / "experiments" / "out" / "study"
    environ = {"ARTIFACTS_DIRECTORY": str(artifacts), "CACHE_DIRECTORY": "/cache"}
    (cache,) = load_jobs(out / "cache.yml", ComputeFeaturesJob, environ)
    assert cache.input_path == Path("/cache/corpus/manifests")
    assert cache.partitions == ["train", "dev", "test"]
    (analyze,) = load_jobs(out / "analyze.yml", AnalyzeJob, environ)
    assert analyze.experiments == ["study"] and analyze.artifacts_directory == artifacts
    assert not analyze.report.comet
    assert analyze.output_folder() == artifacts / "study" / "analysis"
    index = json.loads((artifacts / "study" / "runs.json").read_text())
    assert list(index) == [run.run_id for run in experiment.runs]


def test_a_job_file_its_script_would_refuse_is_never_written(tmp_path):
    experiment = load_experiment(_write_experiment(tmp_path, name="two words"))
    with pytest.raises(UserInputError, match="two words.yml: train.yml: key 'name'"):
        write_experiment(experiment, tmp_path / "repo", tmp_path / "artifacts")
    assert not (tmp_path / "repo").exists() and not (tmp_path / "artifacts").exists()
