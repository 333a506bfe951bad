"""A per-round progress bar with ETA and the current mean test accuracy (CLI only)."""

from __future__ import annotations

from tqdm import tqdm

from bench.fed.engine import Callback, Simulation


class ProgressBar(Callback):
    def __init__(self, description: str = "", position: int | None = None):
        self.description = description
        self.position = position
        self.bar: tqdm | None = None

    def on_start(self, sim: Simulation) -> None:
        self.bar = tqdm(total=sim.rounds, initial=sim.state.next_round, desc=self.description or None,
                        unit="round", position=self.position, dynamic_ncols=True)

    def on_round_end(self, sim: Simulation, round: int, metrics: dict[str, float]) -> None:
        assert self.bar is not None
        acc = metrics.get("test/acc/mean")
        if acc is not None:
            self.bar.set_postfix_str(f"test acc {acc:.4f}")
        self.bar.update(1)

    def on_end(self, sim: Simulation) -> None:
        if self.bar is not None:
            self.bar.close()
