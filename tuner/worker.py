"""The measurement worker: ``python -m convtune.tuner.worker [plugin modules...]``.

Reads (workload, config, options) requests from stdin and answers each with a
``MeasureResult`` on stdout, in multiprocessing's Connection framing. Its own
prints (and any C library's) go to stderr so they cannot corrupt the replies.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
from multiprocessing.connection import Connection


def _die_with_parent() -> None:
    """On Linux, have the kernel kill this worker when the tuner dies (even
    by SIGKILL), so a killed tuning run leaves no candidate running on."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def main() -> None:
    _die_with_parent()
    # Ctrl-C in a terminal reaches the whole process group; the tuner decides
    # when this worker stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = Connection(os.dup(0), writable=False)
    replies = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    for module in sys.argv[1:]:
        importlib.import_module(module)
    from convtune.tuner.measure import measure_here

    import convtune.codegen  # noqa: F401 - pay numba's import before the first deadline

    replies.send("ready")
    while True:
        try:
            request = requests.recv()
        except EOFError:
            return
        if request is None:
            return
        replies.send(measure_here(*request))


if __name__ == "__main__":
    main()
