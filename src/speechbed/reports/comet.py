"""comet.ml report: one comet experiment per finished run (parameters, epochs, final score, config).

Called by ``scripts/analyze.py`` when the experiment's ``report.comet`` is on. With
``COMET_API_KEY`` set the experiment goes online; otherwise, or when comet cannot reach its
server, ``comet_ml.OfflineExperiment`` writes ``<run_dir>/comet/<run_id>.zip``, which
``comet upload`` sends later. A run counts as online only when comet says its data was
delivered (the experiment came alive and ``flush()`` succeeded); the marker ``comet.json``
records what was sent and how, so a rerun skips what is done, retries online what fell back
to the archive, and replaces (never adds) the run's archive. The archive is built in a
hidden per-process folder and moved into place, so a killed report leaves nothing behind.
The key is only ever handed to comet_ml itself: never logged, written to a config or archive.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from speechbed.outputs import (
    OutputError,
    atomic_output,
    describe_os_error,
    partial_path,
    remove_dead_partials,
    remove_path,
    write_text_atomic,
)

MARKER_NAME = "comet.json"
ARCHIVE_FOLDER = "comet"
# Where comet builds an offline archive before it is moved to ARCHIVE_FOLDER/<run_id>.zip.
SCRATCH_NAME = "comet-offline"
ONLINE_FAILED = "offline (online connection failed)"
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


def archive_path(run_dir: Path, run_id: str) -> Path:
    """The run's one offline archive (found by run id; a rerun replaces it)."""
    return run_dir / ARCHIVE_FOLDER / f"{run_id}.zip"


def _legacy_archive(run_dir: Path, previous: Mapping[str, Any]) -> Path | None:
    """The run's archive as earlier versions named it (``<experiment key>.zip``), if any."""
    key = previous.get("experiment_key")
    if previous.get("mode") != "offline" or previous.get("archive") or not key:
        return None
    path = run_dir / ARCHIVE_FOLDER / f"{key}.zip"
    return path if path.is_file() else None


def _log_into(
    experiment: Any,
    run_id: str,
    experiment_name: str,
    config: Mapping[str, Any],
    history: pd.DataFrame | None,
    final_metrics: Mapping[str, float],
) -> None:
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


def _send_online(
    comet_ml: Any, api_key: str, project: str, workspace: str | None, log: Any
) -> str | None:
    """The experiment key when comet confirms delivery, else None (comet said why on stderr)."""
    experiment = comet_ml.Experiment(
        api_key=api_key, project_name=project, workspace=workspace, **_QUIET
    )
    try:
        if not experiment.alive:  # no connection: comet printed "will not be logged"
            return None
        log(experiment)
        delivered = experiment.flush()
        key = experiment.get_key()
    finally:
        experiment.end()
    return key if delivered else None


def _write_archive(
    comet_ml: Any, archive: Path, project: str, workspace: str | None, log: Any
) -> str:
    """Build the offline archive in a hidden per-process folder, move it to ``archive``."""
    scratch = partial_path(archive.parent.parent / SCRATCH_NAME)
    remove_dead_partials(scratch.parent / SCRATCH_NAME)
    remove_path(scratch)
    try:
        try:
            scratch.mkdir(parents=True)
        except OSError as error:
            raise OutputError(describe_os_error(error, scratch)) from None
        experiment = comet_ml.OfflineExperiment(
            offline_directory=str(scratch), project_name=project, workspace=workspace, **_QUIET
        )
        try:
            log(experiment)
            key = experiment.get_key()
        finally:
            experiment.end()
        built = scratch / f"{key}.zip"
        if not built.is_file():
            raise OutputError(f"cannot write {archive}: comet wrote no offline archive")
        with atomic_output(archive) as temporary:
            os.replace(built, temporary)
        return key
    finally:
        remove_path(scratch)


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
    try_online: bool = True,
) -> str:
    """Log one run; returns ``"online"``, ``"offline: ARCHIVE"``,
    ``"offline (online connection failed): ARCHIVE"`` or ``"up to date"``.

    ``try_online=False`` goes straight to the archive (the caller saw the connection fail).
    """
    import comet_ml  # imported here: it is slow to import and only needed for this report

    environ = os.environ if environ is None else environ
    api_key = environ.get("COMET_API_KEY", "").strip()
    wanted = "online" if api_key else "offline"
    payload = {
        "run_id": run_id,
        "config": config,
        "history": None if history is None else history.to_dict("list"),
        "final": dict(final_metrics),
    }
    fingerprint = _fingerprint(payload)
    marker = run_dir / MARKER_NAME
    archive = archive_path(run_dir, run_id)
    previous: dict[str, Any] = {}
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
    legacy = _legacy_archive(run_dir, previous)
    if legacy is not None and previous.get("fingerprint") == _fingerprint(
        {**payload, "mode": "offline"}
    ):
        # The same results in an archive of an earlier version: adopt it under the run's name.
        with atomic_output(archive) as temporary:
            os.replace(legacy, temporary)
        previous = {
            "fingerprint": fingerprint,
            "mode": "offline",
            "experiment_key": previous.get("experiment_key"),
            "archive": archive.name,
        }
        write_text_atomic(marker, json.dumps(previous) + "\n")
        legacy = None
    done = previous.get("mode") == "online" or (wanted == "offline" and archive.is_file())
    if previous.get("fingerprint") == fingerprint and done:
        return "up to date"

    def log(experiment: Any) -> None:
        _log_into(experiment, run_id, experiment_name, config, history, final_metrics)

    record: dict[str, Any] = {"fingerprint": fingerprint}
    if wanted == "online" and try_online:
        key = _send_online(comet_ml, api_key, project_name, workspace, log)
        if key is not None:
            write_text_atomic(
                marker, json.dumps({**record, "mode": "online", "experiment_key": key}) + "\n"
            )
            # The archive of an earlier fall-back would log the run a second time if uploaded.
            for earlier in (archive, legacy):
                if earlier is not None:
                    remove_path(earlier)
            return "online"
    key = _write_archive(comet_ml, archive, project_name, workspace, log)
    if legacy is not None:  # the run's archive from an earlier version, now replaced
        remove_path(legacy)
    fell_back = wanted == "online"
    record.update(mode="offline", experiment_key=key, archive=archive.name)
    if fell_back:
        record["online_failed"] = True
    write_text_atomic(marker, json.dumps(record) + "\n")
    return f"{ONLINE_FAILED if fell_back else 'offline'}: {archive}"
