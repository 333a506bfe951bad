"""What became of a sweep's runs: each run's outcome, the sweep's progress while it runs, and its result."""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from bench.track.claim import ClaimedElsewhere
from bench.track.disk_full import DiskFullError


@dataclass(frozen=True)
class SweepProgress:
    total: int
    done: int
    running: int
    failed: int
    skipped: int
    elapsed_s: float
    # config index -> the outcome of each run finished or skipped so far (not compared: equality is the counts')
    outcomes: Mapping[int, RunOutcome] = field(default_factory=dict, compare=False)

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate runs completed so far; None before the first completes."""
        completed = self.done + self.failed
        if not completed:
            return None
        return self.elapsed_s / completed * (self.total - self.skipped - completed)


@dataclass(frozen=True)
class RunOutcome:
    label: str
    config_hash: str
    status: Literal["done", "skipped", "elsewhere", "failed"]  # elsewhere: running in another process (sweep)
    run_id: str | None = None
    reason: str | None = None


@dataclass
class SweepResult:
    outcomes: list[RunOutcome]  # in the sweep's config order

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def done(self) -> int:
        return self.count("done")

    @property
    def skipped(self) -> int:
        return self.count("skipped")

    @property
    def elsewhere(self) -> int:
        """Runs left to the other process (another sweep of the same grid) that is running them."""
        return self.count("elsewhere")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def run_ids(self) -> list[str]:
        """The FINISHED runs of the sweep: those run now and those skipped as already finished."""
        return [o.run_id for o in self.outcomes if o.run_id is not None]

    @property
    def failures(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]


def summary(result: SweepResult) -> str:
    """E.g. ``3 ran, 1 skipped (already finished), 0 failed`` (and how many another sweep is running, if any)."""
    elsewhere = f", {result.elsewhere} left to another sweep running them" if result.elsewhere else ""
    return (f"{result.done} ran, {result.skipped} skipped (already finished){elsewhere}, "
            f"{result.failed} failed")


def outcome_of(future: cf.Future, label: str, digest: str) -> RunOutcome:
    """What became of a run job: done, failed, or taken by another process; a full disk is raised."""
    try:
        run_id, reason = future.result()
    except ClaimedElsewhere as taken:
        return taken_outcome(label, digest, taken)
    except DiskFullError:
        raise
    except KeyboardInterrupt as exc:  # its worker alone was sent SIGTERM: the run is KILLED, resumable
        run_id, reason = None, f"stopped by a signal ({exc}); running the sweep again resumes it"
    except Exception as exc:  # the worker itself died (killed process, lost Ray node)
        run_id, reason = None, f"{type(exc).__name__}: {exc}"
    if run_id is None:
        return RunOutcome(label, digest, "failed", reason=reason)
    return RunOutcome(label, digest, "done", run_id)


def taken_outcome(label: str, digest: str, taken: ClaimedElsewhere) -> RunOutcome:
    """A grid point another process has run (skipped, as finished) or is running (left to it)."""
    if taken.status == "FINISHED":
        return RunOutcome(label, digest, "skipped", taken.run_id)
    return RunOutcome(label, digest, "elsewhere", reason=str(taken))
