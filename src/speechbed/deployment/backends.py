"""Scoring a trained clip classifier on its deployment backends: torch, ONNX Runtime, int8.

Called by the kws task's evaluation (``evaluation.backend``) and by scripts/export.py. The
files go into one folder (``model.onnx``, ``model.int8.onnx``); each backend's entry says
its accuracy, its largest logit difference from torch, its size and latency per clip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from speechbed.deployment.costs import count_macs, count_parameters, latency_per_clip
from speechbed.deployment.onnx_backend import export_onnx, open_session, quantize_int8, run_session


class BackendSettings(Protocol):
    onnx: bool
    int8: bool
    calibration_clips: int


def evenly_spaced(values: torch.Tensor | np.ndarray, count: int) -> np.ndarray:
    """``count`` items spread evenly over ``values`` (all when fewer)."""
    picked = np.unique(np.linspace(0, len(values) - 1, min(count, len(values))).astype(int))
    return np.asarray(values[picked], dtype=np.float32)


def score_backends(
    model: torch.nn.Module,
    features: torch.Tensor,
    labels: np.ndarray,
    torch_logits: np.ndarray,
    calibration: torch.Tensor,
    settings: BackendSettings,
    folder: Path,
    latency_clips: int = 0,
) -> dict[str, dict[str, Any]]:
    """``{"onnx": ..., "int8": ...}`` (those ``settings`` asks for) on ``features``/``labels``.

    ``torch_logits`` are the torch model's on the same features; ``latency_clips`` > 0 also
    times that many clips one at a time on each backend.
    """
    folder.mkdir(parents=True, exist_ok=True)
    float_path = export_onnx(model, features[:1], folder / "model.onnx")
    values = features.numpy() if isinstance(features, torch.Tensor) else features
    clips = values[:latency_clips]
    paths = {"onnx": float_path}
    if settings.int8:
        paths["int8"] = quantize_int8(
            float_path,
            folder / "model.int8.onnx",
            evenly_spaced(calibration, settings.calibration_clips),
        )
    scores = {}
    for name, path in paths.items():
        if name == "onnx" and not settings.onnx:
            continue
        session = open_session(path)
        logits = run_session(session, values)
        scores[name] = {
            "accuracy": float(np.mean(logits.argmax(axis=1) == labels)),
            "max_abs_difference": float(np.max(np.abs(logits - torch_logits))),
            "agreement_with_torch": float(
                np.mean(logits.argmax(axis=1) == torch_logits.argmax(axis=1))
            ),
            "bytes": path.stat().st_size,
        }
        if latency_clips:
            scores[name]["latency"] = latency_per_clip(
                lambda clip, session=session: session.run(None, {"features": clip}), clips
            )
    return scores


def torch_costs(
    model: torch.nn.Module, features: torch.Tensor, latency_clips: int = 0
) -> dict[str, Any]:
    """Parameters, MACs per clip, and (``latency_clips`` > 0) batch-1 latency of the torch model."""
    model = model.eval().cpu()
    costs: dict[str, Any] = {
        "parameters": count_parameters(model),
        "macs_per_clip": count_macs(model, features[:1]),
        "bytes_float32": 4 * count_parameters(model),
    }
    if latency_clips:
        with torch.no_grad():
            costs["latency"] = latency_per_clip(
                lambda clip: model(torch.from_numpy(clip)), features[:latency_clips].numpy()
            )
    return costs


def deployment_report(
    model: torch.nn.Module,
    features: torch.Tensor,
    labels: np.ndarray,
    calibration: torch.Tensor,
    settings: BackendSettings,
    folder: Path,
    latency_clips: int,
) -> dict[str, Any]:
    """Every backend on one partition: torch's accuracy, costs and latency, then ONNX's and
    int8's (``score_backends``), each with its latency on ``latency_clips`` clips."""
    model = model.eval().cpu()
    with torch.no_grad():
        logits = torch.cat(
            [model(features[i : i + 256]) for i in range(0, len(features), 256)]
        ).numpy()
    report: dict[str, Any] = {
        "clips": len(labels),
        "torch": {
            "accuracy": float(np.mean(logits.argmax(axis=1) == labels)),
            **torch_costs(model, features, latency_clips),
        },
    }
    report.update(
        score_backends(
            model, features, labels, logits, calibration, settings, folder, latency_clips
        )
    )
    return report
