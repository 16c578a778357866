"""The staged searches of experiments/search/ (lcorr and mcorr): every stage file validates once
the stage before it has written its files, and each stage's include list and base settings are
the previous stage's --important and --best outputs, following the pipeline's own steps.

Trials are not trained here: each stage's workers are stood in for by trials drawn from the
stage's own space and told a made-up dev PER (the training is tested in test_search.py).
"""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
import yaml
from optuna.trial import TrialState

from speechbed.jobs import load_document
from speechbed.search.search_file import Search, load_search
from speechbed.search.space import tunable_names
from speechbed.search.worker import open_study
from speechbed.training.config import RunConfig, run_config_class

REPOSITORY = Path(__file__).resolve().parents[1]
#: The run-config schema of the stages' task, whose tunable settings they search.
SCHEMA = run_config_class("ctc_phones")
STAGE_TRIALS = 12


def _search_script():
    spec = importlib.util.spec_from_file_location("search_script", REPOSITORY / "scripts/search.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stand_in_for_the_workers(search: Search, seed: int) -> dict:
    """Tell STAGE_TRIALS trials of the stage's space a made-up PER; the best one's settings."""
    study = open_study(search)
    scores = random.Random(seed)
    for _ in range(STAGE_TRIALS):
        trial = study.ask()
        params = {name: spec.suggest(trial, name) for name, spec in search.settings.space.items()}
        try:  # settings the run config refuses together would fail in training: so here
            RunConfig.model_validate(search.run_config(params, "t", Path("t")))
        except pydantic.ValidationError:
            study.tell(trial, state=TrialState.FAIL)
            continue
        study.tell(trial, scores.uniform(0.2, 0.9))
    return study.best_trial.params


def _setting(config: dict, name: str):
    section, key = name.split(".", 1)
    return config[section][key]


@pytest.mark.parametrize("family", ["lcorr", "mcorr"])
def test_each_stage_reads_the_include_list_and_best_settings_of_the_one_before(
    family, tmp_path, monkeypatch
):
    monkeypatch.setenv("ARTIFACTS_DIRECTORY", str(tmp_path / "artifacts"))
    monkeypatch.setenv("CACHE_DIRECTORY", "/cache")
    monkeypatch.delenv("SEARCH_STORAGE", raising=False)
    pipeline, _ = load_document(REPOSITORY / f"experiments/search/{family}-stages.yml")
    script = _search_script()
    best: dict[str, dict] = {}
    searches: dict[str, Search] = {}
    for index, job in enumerate(pipeline["jobs"]):
        assert job["script"] == "scripts/search.py"
        stage = Path(job["config"]).stem.removeprefix(f"{family}-")
        args = [str(arg) for arg in job.get("args", [])]
        if "--worker" in args:
            if stage not in searches:  # its previous stage's files must exist by now
                searches[stage] = load_search(REPOSITORY / job["config"])
                best[stage] = _stand_in_for_the_workers(searches[stage], index)
            continue
        assert script.main(["-y", job["config"], *args]) == 0, job["name"]
    assert list(searches) == ["sm", "md", "tr"]
    folder = tmp_path / "artifacts/search"
    sm, md, tr = searches["sm"], searches["md"], searches["tr"]
    assert sm.settings.sampler == "random" and md.settings.sampler == "tpe"
    assert sm.settings.memory_limit_mib < md.settings.memory_limit_mib
    assert set(sm.settings.space) == {
        name
        for name in tunable_names(SCHEMA)
        if name.startswith("model.") and name != "model.convolutional_mellin"
    }
    # stage 2: stage 1's top 5 searched, every other setting at stage 1's best
    important = yaml.safe_load((folder / f"{family}-sm/important.yml").read_text())["include"]
    assert len(important) == 5 and set(md.settings.space) == set(important)
    md_base = md.run_config({}, "base", Path("base"))
    for name, value in best["sm"].items():
        if name not in important:
            assert _setting(md_base, name) == value, name
    assert md_base["model"]["convolutional_mellin"] is (family == "mcorr")
    # stage 3: the training settings searched, the model at stage 2's best
    assert set(tr.settings.space) == {n for n in tunable_names(SCHEMA) if n.startswith("training.")}
    tr_base = tr.run_config({}, "base", Path("base"))
    model = {**best["sm"], **best["md"]}
    assert {name: _setting(tr_base, name) for name in model} == model
    assert tr_base["training"]["num_epochs"] == 50 and md_base["training"]["num_epochs"] == 30
    # the tuned experiment: stage 3's best training settings on that model, data as written
    tuned = yaml.safe_load((folder / f"{family}-tr/best.yml").read_text())
    for name, value in {**model, **best["tr"]}.items():
        assert _setting(tuned, name) == value, name
    assert tuned["data"]["cache_directory"] == "${CACHE_DIRECTORY}/timit/fbank-81-10ms"


def test_the_stage_pipeline_plans_and_a_stage_before_its_inputs_is_refused(tmp_path):
    environ = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPOSITORY / "src"),
        "ARTIFACTS_DIRECTORY": str(tmp_path / "artifacts"),
        "SPEECHBED_LEASE_DIR": str(tmp_path / "leases"),
        "CACHE_DIRECTORY": "/cache",
        "SEARCH_GPUS": "0",
    }
    planned = subprocess.run(
        [sys.executable, "scripts/pipeline.py", "-y", "experiments/search/lcorr-stages.yml",
         "--dry-run"],
        cwd=REPOSITORY, env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "16 job(s)" in planned.stdout and "md-best" in planned.stdout
    early = subprocess.run(
        [sys.executable, "scripts/search.py", "-y", "experiments/search/lcorr-md.yml"],
        cwd=REPOSITORY, env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert early.returncode == 2
    assert (
        "lcorr-md.yml:" in early.stderr and "lcorr-sm/best.yml does not exist yet" in early.stderr
    )
