"""What a user sees of a run's or a sweep's progress (CLI only): a bar that moves as each client's update finishes,
and a sweep's status line with an ETA weighted by each run's workload (its estimate: :mod:`bench.cli.estimate`)."""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from bench.cli.estimate import describe_sweep, estimated
from bench.fed.engine import Callback, ClientProgress, Simulation
from bench.record_names import TEST_ACCURACY

if TYPE_CHECKING:
    from bench.sweep import Sweep
    from bench.sweep.outcomes import SweepProgress


class ProgressBar(Callback):
    """A bar over every client update of the run (all rounds), with ETA, the round and client, the training
    throughput of the round so far (sample passes per second, evaluation excluded) and the latest mean test
    accuracy. ``leave=False`` clears it at the end (a sweep's runs)."""

    def __init__(self, description: str = "", position: int | None = None, stream: TextIO | None = None,
                 leave: bool = True, clock: Callable[[], float] = time.perf_counter):
        self.description = description
        self.position = position
        self.stream = stream
        self.leave = leave
        self.clock = clock
        self.bar: tqdm | None = None
        self.accuracy: float | None = None
        self.round_started = 0.0
        self.round_samples = 0

    def on_start(self, sim: Simulation) -> None:
        total = sum(sim.clients_in_round(r) for r in range(sim.rounds))
        done = sum(sim.clients_in_round(r) for r in range(sim.state.next_round))
        self.bar = tqdm(total=total, initial=done, desc=self.description or None, unit="client",
                        position=self.position, dynamic_ncols=True, file=self.stream, leave=self.leave)
        self.round_started, self.round_samples = self.clock(), 0

    def on_client_end(self, sim: Simulation, progress: ClientProgress) -> None:
        assert self.bar is not None
        self.round_samples += progress.samples
        elapsed = self.clock() - self.round_started
        rate = f", {self.round_samples / elapsed:,.0f} samples/s" if elapsed > 0 else ""
        self.bar.set_postfix_str(f"round {progress.round}/{sim.rounds} client {progress.done}/{progress.total}"
                                 f"{rate}{self.accuracy_text()}", refresh=False)
        self.bar.update(1)

    def on_round_end(self, sim: Simulation, round: int, metrics: dict[str, float]) -> None:
        assert self.bar is not None
        self.accuracy = metrics.get(TEST_ACCURACY, self.accuracy)
        self.bar.set_postfix_str(f"round {round}/{sim.rounds} done{self.accuracy_text()}")
        self.round_started, self.round_samples = self.clock(), 0

    def accuracy_text(self) -> str:
        return "" if self.accuracy is None else f", test acc {self.accuracy:.4f}"

    def on_end(self, sim: Simulation) -> None:
        if self.bar is not None:
            self.bar.close()


def clock_time(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class ForwardProgress(Callback):
    """Puts each client update of the sweep's run ``index`` on ``queue`` as ``(index, round, done, total, rounds)``:
    how a run in a worker process shows its progress in the sweep's status line."""

    def __init__(self, queue: Any, index: int):
        self.queue, self.index = queue, index

    def on_client_end(self, sim: Simulation, progress: ClientProgress) -> None:
        self.queue.put((self.index, progress.round, progress.done, progress.total, sim.rounds))


class SweepStatus:
    """A sweep's progress: a status line (rewritten in place on a terminal, printed per change otherwise), a line
    for each run that finishes with its headline accuracy, and an ETA that weights the runs by their training MACs
    (:mod:`bench.measure.workload`: a Ditto run counts twice a FedAvg run of the same size), at the rate the sweep
    has gone so far; before any progress, the CPU estimate where there is one. A run in this process draws its own
    bar (:meth:`callbacks_for`); runs in local worker processes send their progress, shown in the status line and
    counted in the ETA by the share of their rounds done (evaluation not counted); runs on Ray count once finished."""

    def __init__(self, sweep: Sweep, uri: str, stream: TextIO | None = None):
        self.name, self.labels, self.uri = sweep.name, sweep.labels, uri
        self.estimates = [estimated(config) for config in sweep.configs]
        known = [e.load.training_macs for e in self.estimates if e.load is not None]
        typical = sum(known) / len(known) if known else 1.0  # a run without an estimate weighs as an average one
        self.weights = [typical if e.load is None else e.load.training_macs for e in self.estimates]
        self.stream = stream if stream is not None else sys.stderr
        self.in_place = self.stream.isatty()
        self.reported: set[int] = set()
        self.running: dict[int, tuple[float, str]] = {}  # run in a worker -> (share of it done, where it is)
        self.last: SweepProgress | None = None
        self.lock = threading.Lock()  # the forwarded progress arrives on a thread of its own
        self.forwarding: tuple[Any, Any, threading.Thread] | None = None  # (manager, its queue, the queue's reader)

    def estimate(self) -> str:
        """The one line printed before the sweep's runs start."""
        known = [e for e in self.estimates if e.load is not None]
        unknown = [e for e in self.estimates if e.load is None]
        text = describe_sweep([e.load for e in known], [e.on_cpu for e in known]) if known else "estimate: none"
        if unknown:
            text += f"; {len(unknown)} run{'' if len(unknown) == 1 else 's'} without one (e.g. {unknown[0].problem})"
        return text

    def eta(self, p: SweepProgress) -> str:
        left = [i for i in range(len(self.weights)) if i not in p.outcomes]
        partly = sum(self.weights[i] * share for i, (share, _) in self.running.items() if i not in p.outcomes)
        ran = partly + sum(self.weights[i] for i, outcome in p.outcomes.items() if outcome.status == "done")
        if ran:
            return clock_time(p.elapsed_s * (sum(self.weights[i] for i in left) - partly) / ran)
        seconds = [self.estimates[i].seconds for i in left]
        return "?" if None in seconds else f"~{clock_time(sum(seconds))} (estimate)"  # type: ignore[arg-type]

    def headline(self, run_id: str) -> str:
        from mlflow.tracking import MlflowClient

        value = MlflowClient(tracking_uri=self.uri).get_run(run_id).data.metrics.get(TEST_ACCURACY)
        return "no test accuracy logged" if value is None else f"{TEST_ACCURACY} {value:.4f}"

    def __call__(self, p: SweepProgress) -> None:
        with self.lock:
            self.last = p
            for i in sorted(set(p.outcomes) - self.reported):
                self.reported.add(i)
                self.running.pop(i, None)
                outcome = p.outcomes[i]
                if outcome.status == "done" and outcome.run_id is not None:
                    self.write(f"sweep {self.name}: finished {self.labels[i]}: {self.headline(outcome.run_id)}", True)
                elif outcome.status == "failed":
                    self.write(f"sweep {self.name}: FAILED {self.labels[i]}: {outcome.reason}", True)
            self.draw(p)

    def draw(self, p: SweepProgress) -> None:
        where = "; ".join(f"{self.labels[i]} {text}" for i, (_, text) in sorted(self.running.items()))
        self.write(f"sweep {self.name}: {p.done + p.skipped}/{p.total} finished ({p.skipped} skipped), "
                   f"{p.running} running{f' [{where}]' if where else ''}, {p.failed} failed, ETA {self.eta(p)}",
                   False)

    def forwarded(self, index: int, round: int, done: int, total: int, rounds: int) -> None:
        """A client update of run ``index`` in a worker process has finished."""
        with self.lock:
            if index in self.reported:
                return  # a late message of a run already finished
            self.running[index] = ((round - 1 + done / total) / rounds, f"round {round}/{rounds} client {done}/{total}")
            if self.last is not None and self.in_place:  # a log gets the line when a run starts or ends, not per client
                self.draw(self.last)

    def write(self, line: str, permanent: bool) -> None:
        """A line of its own (``permanent``), or the status line drawn in place on a terminal."""
        if self.in_place:
            self.stream.write(f"\r\033[K{line}" + ("\n" if permanent else ""))
        else:
            self.stream.write(f"{line}\n")
        self.stream.flush()

    def callbacks_for(self, backend: str, workers: int) -> Callable[[int], list[Callback]] | None:
        """The ``run_callbacks`` of :func:`~bench.sweep.run_sweep` for the sweep's runs: a bar for a run in this
        process (the local backend with one worker), progress forwarded from local worker processes, none on Ray."""
        if backend != "local":
            return None
        if workers == 1:
            return lambda index: [ProgressBar(self.labels[index], stream=self.stream, leave=False)]
        manager = mp.get_context("spawn").Manager()
        queue = manager.Queue()
        reader = threading.Thread(target=self.read_forwarded, args=(queue,), daemon=True)
        reader.start()
        self.forwarding = (manager, queue, reader)
        return lambda index: [ForwardProgress(queue, index)]

    def read_forwarded(self, queue: Any) -> None:
        for item in iter(queue.get, None):
            self.forwarded(*item)

    def close(self) -> None:
        if self.forwarding is not None:
            manager, queue, reader = self.forwarding
            queue.put(None)
            reader.join()
            manager.shutdown()
            self.forwarding = None
        if self.in_place:
            self.stream.write("\n")
