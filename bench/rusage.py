"""Run a command and record the peak RSS of it and of every descendant it reaped.

    python -m bench.rusage OUT.json -- rq worker ...

Writes {"pid": <the command's pid>} to OUT.json when the command starts and
{"pid": ..., "returncode": ..., "maxrss_kb": ...} when it ends. maxrss_kb is
getrusage(RUSAGE_CHILDREN).ru_maxrss: the largest RSS that the command (here an RQ worker)
or any process it waited for (its work horses, its scheduler) ever reached.

Why a wrapper: Linux carries a process's peak RSS across fork and exec, so a worker spawned
straight from the benchmark (a big process) would report the benchmark's own peak. This
wrapper is small, so the figure it reports belongs to the worker. Signals sent to the process
group reach the command directly; the wrapper only waits for it.
"""

import json
import os
import resource
import signal
import subprocess
import sys


def main(argv: list[str]) -> int:
    out, command = argv[0], argv[argv.index("--") + 1:]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: None)  # the group's signal is for the command
    proc = subprocess.Popen(command, preexec_fn=_terminate_with_parent)
    _write(out, {"pid": proc.pid})
    returncode = proc.wait()
    maxrss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    _write(out, {"pid": proc.pid, "returncode": returncode, "maxrss_kb": maxrss_kb})
    return returncode


def _terminate_with_parent() -> None:
    """In the command's process, before exec: SIGTERM when this wrapper dies (Linux)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _write(path: str, data: dict) -> None:
    with open(path + ".part", "w") as f:
        json.dump(data, f)
    os.replace(path + ".part", path)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
