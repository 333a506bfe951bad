"""The figures of ``cafebench perf`` in words (one line a figure) and as JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass

from bench.perf.loops import EAGER, HARNESS
from bench.perf.memory import MemoryFigures


@dataclass
class PerfReport:
    device: str
    device_name: str
    round_harness_s: float
    round_bare_s: float
    round_overhead: float
    harness_images_per_s: float
    bare_images_per_s: float
    eval_100_s: float
    eval_1_s: float
    eval_ratio: float
    memory: MemoryFigures | None
    memory_ratio: float | None  # MemoryFigures.ratio
    gpu_busy: float | None = None  # mean GPU utilisation (0..1) while the rounds trained
    peak_gpu_bytes: int | None = None  # peak GPU memory allocated by the rounds and evaluations
    loops: dict[str, float] = dataclasses.field(default_factory=dict)  # median round seconds of every loop
    first_round: dict[str, float] = dataclasses.field(default_factory=dict)  # first-round seconds of every loop

    def compile_lines(self) -> list[str]:
        """Each compiled or ``channels_last`` loop against its eager twin: round seconds, speed-up, the first round's
        extra time (compiling) and the rounds it takes the speed-up to repay it."""
        out = []
        for name, seconds in self.loops.items():
            if name in (HARNESS, EAGER.name):
                continue
            twin = HARNESS if name.startswith(HARNESS) else EAGER.name
            saving = self.loops[twin] - seconds
            extra = (self.first_round[name] - seconds) - (self.first_round[twin] - self.loops[twin])
            repaid = f"repaid after {extra / saving:,.0f} rounds" if saving > 0 else "never repaid"
            out.append(f"  {name:<27} {seconds:6.2f} s a round, {self.loops[twin] / seconds:.3f}x {twin}; first "
                       f"round +{extra:.1f} s: {repaid}")
        return out

    def lines(self) -> list[str]:
        out = [
            f"device           {self.device} ({self.device_name})",
            f"round overhead   {self.round_overhead:.3f}  (harness {self.round_harness_s:.2f} s, bare loop "
            f"{self.round_bare_s:.2f} s; target <= 1.05)",
            f"throughput       harness {self.harness_images_per_s:,.0f} img/s, bare loop "
            f"{self.bare_images_per_s:,.0f} img/s",
            f"evaluation       {self.eval_ratio:.3f}  (100 thresholds {self.eval_100_s:.2f} s, 1 threshold "
            f"{self.eval_1_s:.2f} s; target <= 1.05)",
        ]
        if len(self.loops) > 2:
            out += ["compiled         (each loop against its eager twin, side by side)", *self.compile_lines()]
        if self.peak_gpu_bytes is not None:
            busy = "unknown (needs pynvml)" if self.gpu_busy is None else f"{self.gpu_busy:.0%}"
            out.append(f"GPU              busy {busy} while training (target >= 80%), peak memory "
                       f"{self.peak_gpu_bytes / 2**20:,.0f} MiB")
        if self.memory is not None:
            m = self.memory
            out.append(f"memory           {self.memory_ratio:.2f}  (per client: {m.held_per_client:,.0f} B of RSS held "
                       f"after the run, {m.peak_per_client:,.0f} B of peak RSS growth")
            out.append(f"                 (noise between identical runs {m.peak_spread:,.0f} B), against "
                       f"{m.personal_state:,} B of personal state; target <= 1.5)")
        return out


def report_json(report: PerfReport) -> str:
    return json.dumps(asdict(report), indent=2)
