"""One data-parallel rank of a pipeline job: ``python -m speechbed.pipeline.data_parallel SCRIPT ARGS...``.

Started by torchrun for each rank of a job with ``processes`` > 1 (``launch.step_command``).

torchrun starts every rank in a session of its own, so the runner's signal to the job's
process group, and the watchdog's, reach torchrun only. torchrun passes SIGTERM and SIGINT
on to its ranks, but a torchrun killed outright (the runner's SIGKILL after its grace
period) would leave its ranks running, holding GPUs past the job's lease. So each rank asks
Linux to kill it when its parent, torchrun, is gone (``PR_SET_PDEATHSIG``, kept across
exec), then becomes ``python SCRIPT ARGS...``.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Be killed when the parent process ends (Linux; elsewhere nothing happens)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # torchrun ended before the request took effect
        os._exit(1)


def main(argv: Sequence[str] | None = None) -> int:
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print(
            "usage: python -m speechbed.pipeline.data_parallel SCRIPT [ARGS...] "
            "(one rank of a pipeline job started by torchrun)",
            file=sys.stderr,
        )
        return 2
    die_with_parent()
    os.execv(sys.executable, [sys.executable, *command])
    return 1  # not reached: execv replaces this process or raises


if __name__ == "__main__":
    sys.exit(main())
