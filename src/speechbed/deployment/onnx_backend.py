"""ONNX export of a clip classifier, ONNX Runtime inference, and int8 static quantization.

Used by speechbed.deployment.backends and scripts/export.py. The model takes
``features`` (batch, frames, dims) float32 and gives ``logits`` (batch, classes); the batch
axis is dynamic. Quantization is ONNX Runtime's static QDQ scheme (int8 weights per channel,
uint8 activations) after its pre-processing (shape inference, graph optimisation), with
activation ranges calibrated on training features.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from speechbed.outputs import atomic_output

INPUT_NAME, OUTPUT_NAME = "features", "logits"
OPSET = 17


def export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> Path:
    """Write ``model`` (in eval mode, batch norms folded) as ONNX at ``path``, atomically."""
    model = model.eval().cpu()
    with atomic_output(path) as temporary, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on shape checks in forward
        torch.onnx.export(
            model,
            (example[:1].cpu(),),
            str(temporary),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def open_session(path: Path, num_threads: int = 1):  # noqa: ANN201 (onnxruntime's type)
    """A CPU ONNX Runtime session of ``num_threads`` threads."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session: object, features: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of ``features`` (clips, frames, dims) through an ONNX Runtime session."""
    pieces = [
        session.run(
            [OUTPUT_NAME],
            {INPUT_NAME: np.ascontiguousarray(features[start : start + batch_size], np.float32)},
        )[0]
        for start in range(0, len(features), batch_size)
    ]
    return np.concatenate(pieces)


def quantize_int8(
    float_path: Path, int8_path: Path, calibration: np.ndarray, batch_size: int = 32
) -> Path:
    """Static int8 quantization of ``float_path`` calibrated on ``calibration`` features."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(
                {
                    INPUT_NAME: np.ascontiguousarray(
                        calibration[start : start + batch_size], np.float32
                    )
                }
                for start in range(0, len(calibration), batch_size)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, which we do
    try:
        with atomic_output(int8_path) as temporary:
            prepared = temporary.with_name(temporary.name + ".prepared.onnx")
            try:
                quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
                quantize_static(
                    str(prepared),
                    str(temporary),
                    Batches(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                )
            finally:
                prepared.unlink(missing_ok=True)
    finally:
        logging.getLogger().setLevel(level)
    return int8_path
