"""Transcribe WAV or FLAC files with a trained RNN-T: a run's model.pt, or a deployment checkpoint.

    scripts/transcribe.py --model RUN_DIR/deployment.pt a.flac b.wav
    scripts/transcribe.py --model RUN_DIR/model.pt [--weights RUN_DIR/checkpoints/epoch-3.pt] a.wav

A deployment checkpoint (written by evaluation when data.mel_statistics is set) needs no other
file: streaming normalisation from its statistics, carried from one file to the next in the
order given (--reset-stream-stats: from the statistics again for each file). A model.pt
normalises each file by its own statistics, as training did; --weights takes an epoch's
checkpoint's weights (its EMA ones when kept) instead of model.pt's. Prints ``path<TAB>text``
per file; audio is read as 16 kHz mono (resampled, channels averaged).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from speechbed.corpora.asr_manifest import read_audio_16k
from speechbed.errors import UserInputError


def transcriber_for(arguments: argparse.Namespace):
    from speechbed.deployment.rnnt_checkpoint import (
        FORMAT,
        DeployedTranscriber,
        load_deployment_checkpoint,
    )

    try:
        saved = torch.load(arguments.model, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise UserInputError(f"{arguments.model}: not found") from None
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise UserInputError(f"{arguments.model}: cannot read: {error}") from None
    if isinstance(saved, dict) and saved.get("format") == FORMAT:
        if arguments.weights:
            raise UserInputError("--weights goes with a run's model.pt, not a deployment file")
        checkpoint = load_deployment_checkpoint(arguments.model)
    else:
        from speechbed.tasks.rnnt.task import deployment_from_record

        checkpoint = deployment_from_record(saved, str(arguments.model), arguments.weights)
    return DeployedTranscriber(
        checkpoint,
        reset_stream_stats=arguments.reset_stream_stats,
        max_symbols_per_step=arguments.max_symbols_per_step,
        device=arguments.device,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("audio", nargs="+", type=Path, help="WAV or FLAC files")
    parser.add_argument("--model", required=True, type=Path, help="deployment.pt or model.pt")
    parser.add_argument("--weights", type=Path, help="a checkpoint's weights (with model.pt)")
    parser.add_argument("--reset-stream-stats", action="store_true", help="per-file statistics")
    parser.add_argument("--max-symbols-per-step", type=int, default=30)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    arguments = parser.parse_args(argv)
    try:
        transcriber = transcriber_for(arguments)
        for path in arguments.audio:
            (text,) = transcriber.transcribe([torch.from_numpy(read_audio_16k(path))])
            print(f"{path}\t{text}", flush=True)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
