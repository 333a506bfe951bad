"""Which process owns an MLflow run, and whether that process is still alive.

A run killed outright (SIGKILL, the out-of-memory killer, a machine reset) cannot close itself and stays RUNNING. Each
run therefore records its owner: host, boot id, process id and the process's start time. A later command on the same
machine can then tell such an orphan from a run that is still going, even after the process id has been reused.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of ``/proc/PID/stat``), or None if no such
    process exists (or this system has no ``/proc``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[19])  # the name in parentheses may contain spaces


def this_process() -> str:
    """The owner tag's value for this process."""
    pid = os.getpid()
    return json.dumps({"host": socket.gethostname(), "pid": pid, "boot": _boot_id(), "start": _start_ticks(pid)})


def describe(owner: str) -> str:
    try:
        fields = json.loads(owner)
        return f"process {fields['pid']} on {fields['host']}"
    except (ValueError, TypeError, KeyError):
        return f"owner {owner!r}"


def why_left_running(owner: str | None) -> str:
    """Why a run left RUNNING by its owner stopped, for its ``error`` or ``resumed_after`` tag: that the process ended
    where :func:`owner_alive` knows it, else only that it left the run RUNNING."""
    who = describe(owner) if owner else "its process"
    if owner_alive(owner) is False:
        return f"{who} ended without closing the run (killed outright, or out of memory)"
    return f"{who} left the run RUNNING"


def owner_alive(owner: str | None) -> bool | None:
    """True if the owner process is running, False if it has certainly ended (this host rebooted since, or its
    process id is free or names a process started at another time), None when that cannot be told from here
    (another host, a system without ``/proc``, a run without an owner tag)."""
    try:
        fields = json.loads(owner or "")
        host, pid, boot, start = fields["host"], int(fields["pid"]), fields["boot"], fields["start"]
    except (ValueError, TypeError, KeyError):
        return None
    boot_now = _boot_id()
    if host != socket.gethostname() or boot is None or start is None or boot_now is None:
        return None
    if boot != boot_now:
        return False
    return _start_ticks(pid) == start

