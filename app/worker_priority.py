"""The CPU priority a job runs at (WORKER_CPU_PRIORITY), so that exports take only the CPU
the web processes leave over.

AppWorker applies it in each work horse (the process that runs one job), never in the worker
itself: the worker's heartbeat and its watch over the horse stay at normal priority, so a
job is not declared dead because its worker could not get the CPU.

  idle    Linux SCHED_IDLE: the job runs when nothing else on the machine wants the CPU.
          Not a hard stop: the kernel still gives it a small share (a weight of 3 against
          1,024 for a normal process), so a web that keeps the CPU busy for minutes slows an
          export down many times over, but never stops it.
  batch   Linux SCHED_BATCH and nice 19: a low share (a weight of 15 against 1,024) and no
          preempting of interactive processes when it wakes.
  normal  as the worker: what plain `rq worker` does.

Elsewhere (macOS) `idle` and `batch` set nice 19 only. Processes a job starts inherit its
priority. Scheduling policies work within one cgroup: where the web and the workers each run
in their own (systemd services, containers), the unit or compose file weights the groups
(docs/deployment.md).
"""

from __future__ import annotations

import logging
import os
import sys

PRIORITIES = ("idle", "batch", "normal")
LOWEST_NICE = 19


def check(value: str) -> str:
    """`value` as a priority name; ValueError naming the setting and the choices if it is
    not one."""
    name = value.strip().lower()
    if name not in PRIORITIES:
        raise ValueError(f"WORKER_CPU_PRIORITY must be one of {', '.join(PRIORITIES)}; "
                         f"got {value!r}")
    return name


def apply(value: str) -> None:
    """Put the calling process (a work horse, just forked) at priority `value`. Only ever
    lowers it: an unprivileged process cannot raise it again, which a horse never needs."""
    name = check(value)
    if name == "normal":
        return
    try:
        if hasattr(os, "sched_setscheduler"):  # Linux
            policy = os.SCHED_IDLE if name == "idle" else os.SCHED_BATCH
            os.sched_setscheduler(0, policy, os.sched_param(0))
        if name == "batch" or not hasattr(os, "sched_setscheduler"):
            os.setpriority(os.PRIO_PROCESS, 0, LOWEST_NICE)  # SCHED_IDLE ignores nice
    except OSError as exc:  # a sandbox that forbids it: the job runs, at normal priority
        logging.getLogger(__name__).warning(
            "WORKER_CPU_PRIORITY=%s not applied: %s", name, exc)


def current(pid: int = 0) -> str:
    """The priority of process `pid` (0: this one), as WORKER_CPU_PRIORITY spells it:
    "idle", "batch" or "normal" (another Linux policy by its number; elsewhere "nice N"
    unless the nice value is 0)."""
    if not sys.platform.startswith("linux"):
        nice = os.getpriority(os.PRIO_PROCESS, pid)
        return f"nice {nice}" if nice else "normal"
    policy = os.sched_getscheduler(pid)
    names = {os.SCHED_IDLE: "idle", os.SCHED_BATCH: "batch", os.SCHED_OTHER: "normal"}
    return names.get(policy, str(policy))
