"""The perf benchmark compares like with like: its bare loop does the harness's SGD steps (no timing here)."""

import os
import subprocess
import sys

import torch

from bench.config import apply_overrides, validate_config
from bench.fed.engine import Simulation
from bench.fed.executors import SerialExecutor
from bench.perf.loops import (
    COMPILED_VARIANTS,
    EAGER,
    HARNESS,
    HARNESS_COMPILED,
    BareLoop,
    SideBySideExecutor,
    bare_loops,
)
from bench.perf.memory import FIXED_MMAP_THRESHOLD, nested_nbytes, peak_rss, reset_peak_rss
from bench.perf.report import PerfReport
from bench.perf.timing import can_sample_utilization


def assert_same_weights(bare: BareLoop, sim: Simulation) -> None:
    for key, value in sim.state.server["model"].items():
        if value.is_floating_point():
            torch.testing.assert_close(bare.global_state[key], value, rtol=1e-5, atol=1e-6)


def test_bare_loop_reaches_the_same_weights_as_a_fedavg_round(tiny_config_data):
    sim = Simulation(validate_config(apply_overrides(tiny_config_data, ["train.local_epochs=1"])))
    bare = BareLoop(sim)
    sim.run_round(SerialExecutor(sim.fed), 0)
    bare.round(0)
    assert_same_weights(bare, sim)
    assert not torch.equal(bare.global_state["exits.0.weight"],
                           Simulation(sim.config).state.server["model"]["exits.0.weight"])


def test_side_by_side_rounds_leave_harness_and_bare_loop_in_step(tiny_config_data):
    sim = Simulation(validate_config(apply_overrides(tiny_config_data, ["train.local_epochs=1"])))
    bares, loops = bare_loops(sim, compiled=False)
    executor = SideBySideExecutor(sim.fed, loops)
    for r in range(2):
        sim.run_round(executor, r)
        bares[EAGER.name].aggregate()
        assert_same_weights(bares[EAGER.name], sim)
    assert set(executor.seconds) == {HARNESS, EAGER.name} and min(executor.seconds.values()) > 0


def test_channels_last_bare_loop_takes_the_same_step(tiny_config_data):
    # one SGD step a client (a batch holds its whole train split): other convolution kernels round differently, and
    # over many steps those differences grow far past rounding
    sim = Simulation(validate_config(apply_overrides(tiny_config_data, ["train.local_epochs=1",
                                                                        "train.batch_size=512",
                                                                        "run.channels_last=false"])))
    assert sim.fed.new_model().stages[0][0].weight.is_contiguous()  # the harness in the contiguous format
    bare = BareLoop(sim, COMPILED_VARIANTS[2])
    assert bare.variant.channels_last and not bare.variant.compile_model
    sim.run_round(SerialExecutor(sim.fed), 0)
    bare.round(0)
    assert bare.model.stages[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert_same_weights(bare, sim)


def test_compile_lines_compare_each_loop_with_its_eager_twin():
    report = PerfReport("cpu", "x", 10.0, 8.0, 1.25, 1.0, 1.0, 1.0, 1.0, 1.0, None, None,
                        loops={HARNESS: 10.0, EAGER.name: 8.0, HARNESS_COMPILED: 8.0, COMPILED_VARIANTS[0].name: 10.0},
                        first_round={HARNESS: 11.0, EAGER.name: 9.0, HARNESS_COMPILED: 49.0,
                                     COMPILED_VARIANTS[0].name: 40.0})
    lines = report.compile_lines()
    # harness compiled: 2 s a round faster; first round 41 s over its median, less the eager harness's 1 s: 40 s
    assert "1.250x harness; first round +40.0 s: repaid after 20 rounds" in lines[0]
    assert "0.800x bare loop; first round +29.0 s: never repaid" in lines[1]


def test_nested_state_bytes_by_hand():
    state = {"heads": {"w": torch.zeros(3, 4), "b": torch.zeros(3)}, "extra": [torch.zeros(2, dtype=torch.float64)]}
    assert nested_nbytes(state) == 12 * 4 + 3 * 4 + 2 * 8


def test_peak_rss_sees_a_freed_allocation_and_reset_forgets_it():
    start = reset_peak_rss()
    block = torch.ones(64 * 2**20, dtype=torch.uint8)  # 64 MiB, every page touched
    del block
    assert peak_rss() - start >= 60 * 2**20
    after = reset_peak_rss()
    assert after - start < 16 * 2**20
    assert peak_rss() - after < 16 * 2**20


FREED_HEAP_PROBE = """
import ctypes
from bench.perf.memory import _proc_status
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(2**20))  # glibc's default raises its mmap threshold above 1 MiB here
start = _proc_status("VmRSS")
blocks = [libc.malloc(2**20) for _ in range(48)]
for block in blocks:
    ctypes.memset(block, 1, 2**20)  # touched: 1 MiB of RSS each
libc.malloc(2**18)  # a live block above them keeps the heap from shrinking once they are freed
for block in blocks:
    libc.free(block)
print(_proc_status("VmRSS") - start)
"""


def test_a_fixed_mmap_threshold_returns_freed_blocks_that_the_default_heap_keeps():
    """Why the probe's peak RSS runs with FIXED_MMAP_THRESHOLD: free heap no longer counts in it."""

    def growth(env: dict[str, str]) -> int:
        proc = subprocess.run([sys.executable, "-c", FREED_HEAP_PROBE], capture_output=True, text=True, check=True,
                              env={**os.environ, **env})
        return int(proc.stdout.split()[-1])

    kept, returned = growth({}), growth(FIXED_MMAP_THRESHOLD)
    assert kept > 24 * 2**20 and returned < kept / 4


def test_gpu_figures_are_reported_where_measured():
    args = dict(round_harness_s=2.0, round_bare_s=2.0, round_overhead=1.0, harness_images_per_s=500.0,
                bare_images_per_s=500.0, eval_100_s=1.0, eval_1_s=1.0, eval_ratio=1.0, memory=None, memory_ratio=None)
    gpu = PerfReport("cuda:0", "NVIDIA X", **args, gpu_busy=0.85, peak_gpu_bytes=3 * 2**30).lines()
    assert gpu[0] == "device           cuda:0 (NVIDIA X)"
    assert "GPU              busy 85% while training (target >= 80%), peak memory 3,072 MiB" in gpu
    unknown = PerfReport("cuda:0", "NVIDIA X", **args, peak_gpu_bytes=2**20).lines()
    assert "GPU              busy unknown (needs pynvml) while training (target >= 80%), peak memory 1 MiB" in unknown
    assert not any(line.startswith("GPU") for line in PerfReport("cpu", "cpu", **args).lines())
    assert not can_sample_utilization(torch.device("cpu"))
