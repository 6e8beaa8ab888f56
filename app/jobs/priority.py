"""The CPU priority a job runs at (WORKER_CPU_PRIORITY): lowered, so that exports take only
the CPU the web processes leave over, or not.

  idle    Linux SCHED_IDLE: the job runs when nothing else wants the CPU. Not a hard stop:
          the kernel still gives it a small share (a weight of 3 against 1,024 for a normal
          process), so a web that keeps the CPU busy slows an export down, but never stops it.
          The default (docs/performance.md §3: on a quiet host two exports running left the
          pages' p99 within 1.2 x of idle, against ~3 x at normal, for exports as fast while
          the web is idle).
  batch   Linux SCHED_BATCH and nice 19: a small share (a weight of 15 against 1,024) and no
          preempting of interactive processes when it wakes.
  normal  as the worker: what plain `rq worker` does. For a machine whose other programs keep
          the CPU busy: at idle or batch, exports wait for them too (3-4 x slower measured).

Two levels, because Linux shares the CPU first between groups of processes, then within a
group. A process's policy only counts within its group:

- the job: AppWorker sets the policy in each work horse (the process that runs one job) as it
  forks (`apply`), never in the worker itself, so the worker's heartbeat and its watch over
  the horse come before the job within their group, and a slow job is not declared dead;
- the group: under systemd and in containers, the group is the service's or container's
  cgroup, to be weighted by the unit (CPUWeight=1) or compose (cpu_shares: 2). Elsewhere, `make run`
  for one, the kernel's "autogroups" make each session one group (honcho starts each
  process in a session of its own), and a web and a worker share the CPU half and half
  whatever their processes' policies. AppWorker therefore gives its own session the lowest
  weight (nice 19: 15 against 1,024; `lower_own_session`) when the session is the worker's
  own: led by the worker or by the process that started it, and with no terminal. A worker
  started in a terminal's session is left alone, as that would lower the terminal's shell
  too. (Inside a service's or container's cgroup the kernel ignores autogroups: harmless.)

Elsewhere than Linux, `idle` and `batch` set nice 19 on the job only.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

PRIORITIES = ("idle", "batch", "normal")
LOWEST_NICE = 19
AUTOGROUP = Path("/proc/self/autogroup")
AUTOGROUP_ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")

log = logging.getLogger(__name__)


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
        log.warning("WORKER_CPU_PRIORITY=%s not applied: %s", name, exc)


def lower_own_session(value: str) -> bool:
    """For a worker (not a job) at priority `value` other than normal: give its session's
    autogroup the lowest weight if the session is the worker's own (see above). True if it
    did."""
    if check(value) == "normal" or not _owns_autogroup():
        return False
    try:
        AUTOGROUP.write_text(str(LOWEST_NICE))
    except OSError as exc:
        log.warning("WORKER_CPU_PRIORITY=%s: session not lowered: %s", value, exc)
        return False
    return True


def _owns_autogroup() -> bool:
    try:
        if AUTOGROUP_ENABLED.read_text().strip() != "1" or session_nice() is None:
            return False
        stat = Path("/proc/self/stat").read_text()
    except OSError:
        return False
    terminal = int(stat.rsplit(")", 1)[1].split()[4])  # tty_nr, after the command name
    return terminal == 0 and os.getsid(0) in (os.getpid(), os.getppid())


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


def session_nice(pid: int = 0) -> int | None:
    """The nice value of process `pid`'s autogroup (None without autogroups)."""
    try:
        text = Path(f"/proc/{pid or 'self'}/autogroup").read_text()
    except OSError:
        return None
    return autogroup_nice(text)


def autogroup_nice(text: str) -> int | None:
    """The nice value in the text of /proc/PID/autogroup ("/autogroup-85 nice 0"); None when
    the file is empty, as the kernel leaves it for a process in the root group (a session
    started before autogroups, such as init's and a CI runner's under it)."""
    _, found, nice = text.partition(" nice ")
    return int(nice) if found else None
