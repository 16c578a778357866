"""comet.ml report: one comet experiment per finished run (parameters, epochs, final PER, config).

Called by ``scripts/analyze.py`` when the experiment's ``report.comet`` is on. With
``COMET_API_KEY`` set the experiment goes online; otherwise ``comet_ml.OfflineExperiment``
writes an archive into ``<run_dir>/comet/`` that ``comet upload`` sends later. The key is
only ever handed to comet_ml itself: it is never logged, written to a config or an archive.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

MARKER_NAME = "comet.json"
ARCHIVE_FOLDER = "comet"
# Everything comet would otherwise collect on its own (environment, code, git, stdout) is off:
# the report holds what we log and nothing else.
_QUIET = dict(
    auto_metric_logging=False,
    auto_param_logging=False,
    auto_histogram_weight_logging=False,
    auto_output_logging=False,
    log_code=False,
    log_graph=False,
    log_env_details=False,
    log_env_gpu=False,
    log_env_host=False,
    log_env_cpu=False,
    log_env_network=False,
    log_env_disk=False,
    log_git_metadata=False,
    log_git_patch=False,
    parse_args=False,
    display_summary_level=0,
)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"size": 3}}`` -> ``{"model.size": 3}`` (lists stay values)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _fingerprint(payload: Mapping[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def log_run(
    run_dir: Path,
    run_id: str,
    experiment_name: str,
    config: Mapping[str, Any],
    history: pd.DataFrame | None,
    final_metrics: Mapping[str, float],
    project_name: str = "speechbed",
    workspace: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Log one run; returns ``"online"``, ``"offline: ARCHIVE"`` or ``"up to date"``.

    A marker in the run folder remembers what was logged, so re-running the analysis
    does not create a second comet experiment for the same results.
    """
    import comet_ml  # imported here: it is slow to import and only needed for this report

    environ = os.environ if environ is None else environ
    api_key = environ.get("COMET_API_KEY", "").strip()
    mode = "online" if api_key else "offline"
    payload = {
        "run_id": run_id,
        "config": config,
        "history": None if history is None else history.to_dict("list"),
        "final": dict(final_metrics),
        "mode": mode,
    }
    fingerprint = _fingerprint(payload)
    marker = run_dir / MARKER_NAME
    if marker.is_file():
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if previous.get("fingerprint") == fingerprint:
            return "up to date"
    if mode == "online":
        experiment = comet_ml.Experiment(
            api_key=api_key, project_name=project_name, workspace=workspace, **_QUIET
        )
    else:
        archive_folder = run_dir / ARCHIVE_FOLDER
        archive_folder.mkdir(parents=True, exist_ok=True)
        experiment = comet_ml.OfflineExperiment(
            offline_directory=str(archive_folder),
            project_name=project_name,
            workspace=workspace,
            **_QUIET,
        )
    experiment.set_name(f"{experiment_name}-{run_id}")
    experiment.log_other("run_id", run_id)
    experiment.log_other("experiment", experiment_name)
    experiment.log_parameters(flatten(config))
    if history is not None:
        for record in history.to_dict("records"):
            epoch = int(record["epoch"])
            for column, value in record.items():
                if column != "epoch" and pd.notna(value):
                    experiment.log_metric(column, float(value), step=epoch, epoch=epoch)
    experiment.log_metrics({name: float(value) for name, value in final_metrics.items()})
    experiment.log_text(json.dumps(config, indent=2, sort_keys=True, default=str))
    key = experiment.get_key()
    experiment.end()
    where = "online"
    if mode == "offline":
        archive = run_dir / ARCHIVE_FOLDER / f"{key}.zip"
        where = f"offline: {archive}"
    temporary = marker.with_name(marker.name + ".tmp")
    temporary.write_text(
        json.dumps({"fingerprint": fingerprint, "mode": mode, "experiment_key": key}),
        encoding="utf-8",
    )
    temporary.replace(marker)
    return where
