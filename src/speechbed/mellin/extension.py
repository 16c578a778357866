"""Builds (once, cached) and loads the compiled Mellin extension from csrc/, and calls its ops.

Called by speechbed.mellin.dispatch (which also checks it against the torch path); the image runs
``python -m speechbed.mellin.extension --build`` so that the first use finds it prebuilt.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path

import torch

from speechbed.outputs import write_text_atomic
from speechbed.storage import repository_root

#: Name of the torch op namespace and of the built library.
LIBRARY_NAME = "speechbed_mellin"
#: Environment variable naming the build folder (default: <repo>/build/torch_extensions).
BUILD_DIRECTORY_VARIABLE = "SPEECHBED_MELLIN_BUILD_DIR"
#: The C++/CUDA sources, next to src/ in the repository.
SOURCE_DIRECTORY = repository_root() / "csrc"
CPU_SOURCES = ("mellin_ops.cpp",)
CUDA_SOURCES = ("mellin_cuda.cu",)
HEADERS = ("mellin_index.h", "mellin_cpu.h", "mellin_rows.h")

_lock = threading.Lock()
_state: dict[str, object] = {}  # "loaded": bool, "error": str


class MellinExtensionUnavailable(RuntimeError):
    """The compiled extension could not be built or loaded; the message says why."""


def build_directory() -> Path:
    """Where the library is built and looked for."""
    configured = os.environ.get(BUILD_DIRECTORY_VARIABLE)
    if configured:
        return Path(configured)
    return repository_root() / "build" / "torch_extensions" / LIBRARY_NAME


def with_cuda() -> bool:
    """True when torch has CUDA and a CUDA toolkit is found, so the CUDA kernels are compiled."""
    from torch.utils.cpp_extension import CUDA_HOME

    return torch.version.cuda is not None and CUDA_HOME is not None


def source_fingerprint(cuda: bool) -> str:
    """Hash of the sources, torch version and CUDA choice: a prebuilt library must match it."""
    digest = hashlib.sha256(f"{torch.__version__} cuda={cuda}".encode())
    for name in CPU_SOURCES + HEADERS + (CUDA_SOURCES if cuda else ()):
        digest.update(name.encode() + b"\0" + (SOURCE_DIRECTORY / name).read_bytes())
    return digest.hexdigest()


def library_path() -> Path:
    return build_directory() / f"{LIBRARY_NAME}.so"


def stamp_path() -> Path:
    return build_directory() / f"{LIBRARY_NAME}.fingerprint"


def build(verbose: bool = False) -> Path:
    """Compiles the extension into build_directory() (a no-op when up to date); returns the library."""
    from torch.utils.cpp_extension import load

    if not (SOURCE_DIRECTORY / CPU_SOURCES[0]).is_file():
        raise MellinExtensionUnavailable(
            f"the Mellin C++ sources are missing: no {SOURCE_DIRECTORY / CPU_SOURCES[0]}"
        )
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        raise MellinExtensionUnavailable("no C++ compiler found (set CXX or install g++)")
    cuda = with_cuda()
    sources = [
        str(SOURCE_DIRECTORY / name) for name in CPU_SOURCES + (CUDA_SOURCES if cuda else ())
    ]
    flags = ["-O3", "-fopenmp"] + (["-DSPEECHBED_MELLIN_WITH_CUDA"] if cuda else [])
    directory = build_directory()
    directory.mkdir(parents=True, exist_ok=True)
    print(
        f"speechbed.mellin: building the C++ extension in {directory} (about a minute, once)",
        file=sys.stderr,
    )
    load(
        name=LIBRARY_NAME,
        sources=sources,
        extra_cflags=flags,
        extra_cuda_cflags=["-O3", "-DSPEECHBED_MELLIN_WITH_CUDA"],
        extra_ldflags=["-fopenmp"],
        extra_include_paths=[str(SOURCE_DIRECTORY)],
        build_directory=str(directory),
        is_python_module=False,
        verbose=verbose,
    )
    write_text_atomic(stamp_path(), source_fingerprint(cuda) + "\n")
    _state["loaded"] = True
    return library_path()


def is_prebuilt() -> bool:
    """True when the build folder holds a library built from the current sources."""
    try:
        stamp = stamp_path().read_text().strip()
    except OSError:
        return False
    return library_path().is_file() and stamp == source_fingerprint(with_cuda())


def load(strict: bool = False) -> bool:
    """Loads the extension (building it when no up-to-date build exists); True when its ops exist.

    When it cannot be had: with ``strict`` raises MellinExtensionUnavailable, else warns once
    and returns False (the torch path is used).
    """
    with _lock:
        if "loaded" not in _state:
            try:
                if is_prebuilt():
                    torch.ops.load_library(str(library_path()))
                    _state["loaded"] = True
                else:
                    build()
            except Exception as error:  # a failed compile surfaces as many exception types
                _state["loaded"] = False
                last_line = (str(error).strip().splitlines() or [""])[-1]
                _state["error"] = f"{type(error).__name__}: {last_line}"
                if not strict:
                    warnings.warn(
                        f"speechbed.mellin: the compiled extension is unavailable ({_state['error']}); "
                        "using the vectorized torch path",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        if strict and not _state["loaded"]:
            raise MellinExtensionUnavailable(
                f"the Mellin extension is unavailable: {_state.get('error')}"
            )
        return bool(_state["loaded"])


def supports(device: torch.device) -> bool:
    """True when the loaded extension has kernels for ``device``."""
    if device.type == "cpu":
        return True
    return device.type == "cuda" and with_cuda()


def require(device: torch.device) -> None:
    """Loads the extension or raises MellinExtensionUnavailable saying why; checks the device."""
    load(strict=True)
    if not supports(device):
        raise MellinExtensionUnavailable(f"the Mellin extension has no kernels for {device}")


def mcorrlcorr(input, weight, bias, s, d, p, output_size) -> torch.Tensor:
    return torch.ops.speechbed_mellin.mcorrlcorr(
        input, weight, bias, list(s), list(d), list(p), list(output_size)
    )


def mcorr1d(input, weight, bias, s: int, d: int, p: int, output_size: int) -> torch.Tensor:
    output = mcorrlcorr(
        input.unsqueeze(3), weight.unsqueeze(3), bias, (s, 1), (d, 1), (p, 0), (output_size, 1)
    )
    return output.squeeze(3)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="Build the compiled Mellin extension ahead of time."
    )
    parser.add_argument("--build", action="store_true", help="compile it into the build folder")
    parser.add_argument("--verbose", action="store_true", help="show the compiler's output")
    arguments = parser.parse_args()
    if not arguments.build:
        state = "up to date" if is_prebuilt() else "not built"
        print(f"{library_path()}: {state} (CUDA kernels: {with_cuda()})")
        return 0
    try:
        path = build(verbose=arguments.verbose)
    except Exception as error:
        print(f"error: building the Mellin extension failed: {error}")
        return 1
    print(f"built {path} (CUDA kernels: {with_cuda()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
