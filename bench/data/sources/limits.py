"""Bounds on dataset options and on what loading a dataset allocates, checked before anything is allocated.

Every size-like option (samples, classes, channels, image sides, sequence length, vocabulary) is an integer in a
fixed range, and what the options and the data ask for together must fit in the memory this machine has free: a
refusal is one :class:`ValueError` line naming the option and the range it may take here.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.data.sources.errors import DataTooLargeError

# Longest token sequence: the text models attend over every position (memory grows as its square), so no run could
# train far beyond this; tokens past a text's end are only padding.
MAX_SEQ_LEN = 65_536
# Largest vocabulary: the ids in use never exceed the distinct tokens of the data, and an embedding of 2^24 rows is
# already gigabytes.
MAX_VOCAB_SIZE = 1 << 24
# Largest image side: 4096×4096 RGB is 50 MB an image, far beyond the inputs of the models here.
MAX_IMAGE_SIDE = 4096
_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


def require_int(dataset: str, option: str, value: object, low: int, high: int | None) -> int:
    """``value`` when it is an integer in ``low..high`` (no upper bound when ``high`` is None; booleans are not
    integers here).

    Raises:
        ValueError: ``<dataset>: <option> must be an integer in low..high, got <value>``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        allowed = f"of at least {low:,}" if high is None else f"in {low:,}..{high:,}"
        raise ValueError(f"{dataset}: {option} must be an integer {allowed}, got {value!r}")
    return value


def require_bool(dataset: str, option: str, value: object) -> bool:
    """``value`` when it is true or false (a string such as ``"no"`` would otherwise count as true)."""
    if not isinstance(value, bool):
        raise ValueError(f"{dataset}: {option} must be true or false, got {value!r}")
    return value


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes of memory this process may still allocate: the kernel's ``MemAvailable``, lowered to what is left of a
    cgroup (container) memory limit; None where neither can be read."""
    limits = []
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                limits.append(int(line.split()[1]) * 1024)
                break
    except (OSError, ValueError, IndexError):
        pass
    cgroup_max, cgroup_used = _read_int(_CGROUP / "memory.max"), _read_int(_CGROUP / "memory.current")
    if cgroup_max is not None and cgroup_used is not None:
        limits.append(max(cgroup_max - cgroup_used, 0))
    if not limits and hasattr(os, "sysconf"):
        try:
            limits.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError):
            pass
    return min(limits) if limits else None


def gigabytes(nbytes: float) -> str:
    """A byte count in MB, GB or TB, one decimal."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 1e6:.1f} MB" if nbytes >= 1e6 else f"{nbytes:,.0f} bytes"


def require_memory(where: str, what: str, nbytes: int) -> None:
    """Refuse ``nbytes`` for ``what`` when the memory available is smaller.

    Raises:
        DataTooLargeError: ``<where>: <what> need(s) X GB, more than the Y GB of memory available``.
    """
    free = available_memory()
    if free is not None and nbytes > free:
        raise DataTooLargeError(f"{where}: {what} need {gigabytes(nbytes)}, more than the {gigabytes(free)} of "
                                "memory available")


def require_fits(dataset: str, option: str, value: int, low: int, bytes_per_unit: int, what: str) -> None:
    """Refuse an option whose ``value`` times ``bytes_per_unit`` (what one unit of the option costs, given the data
    and the other options) exceeds the memory available; the message gives the range that fits.

    Raises:
        DataTooLargeError: naming ``option`` and the range ``low..most`` it may take on this machine.
    """
    free = available_memory()
    if free is None or value * bytes_per_unit <= free:
        return
    most = free // max(bytes_per_unit, 1)
    if most < low:
        raise DataTooLargeError(f"{dataset}: {what} need {gigabytes(low * bytes_per_unit)} even at {option}={low:,}, "
                                f"more than the {gigabytes(free)} of memory available")
    raise DataTooLargeError(f"{dataset}: {option}={value:,} needs {gigabytes(value * bytes_per_unit)} for {what}, "
                            f"more than the {gigabytes(free)} of memory available; {option} may be {low:,}..{most:,} "
                            "here")
