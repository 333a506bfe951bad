"""On a CUDA GPU (``nox -s gpu``; skipped elsewhere): fedavg and cafedistill rounds with ResNet-18 on CIFAR-shaped
synthetic data, no host-device sync per batch, determinism, pinned client states, mixed precision."""

import warnings

import pytest
import torch

from bench.config import apply_overrides, validate_config
from bench.fed.engine import Simulation
from bench.fed.executors import SerialExecutor

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none on this machine)")]


def cifar_shaped(tmp_path, *overrides: str) -> Simulation:
    """4 clients on 3×32×32 synthetic images, resnet18 at width 0.5, one round of one epoch in batches of 16."""
    data = {
        "data": {"dataset": "synthetic", "options": {"num_samples": 1600, "image_size": 32, "channels": 3},
                 "clients": 4, "alpha": 0.5, "min_samples": 40},
        "model": {"name": "resnet18", "width": 0.5},
        "train": {"rounds": 1, "local_epochs": 1, "batch_size": 16},
        "eval": {"batch_size": 256},
        "run": {"device": "cuda", "checkpoint_every": 0, "cache_dir": str(tmp_path / "cache"), "threads": 1},
    }
    return Simulation(validate_config(apply_overrides(data, list(overrides))))


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history]


@pytest.mark.parametrize("method", ["fedavg", "cafedistill"])
def test_a_round_runs_on_the_gpu(tmp_path, method):
    sim = cifar_shaped(tmp_path, f"method.name={method}")
    evaluation = sim.run()
    assert sim.device.type == "cuda"
    assert all(p.device.type == "cuda" for p in sim.eval_model.parameters())
    assert sim.fed.batches.x.device.type == "cuda"
    assert 0.0 <= evaluation.metrics["test/acc/mean"] <= 1.0
    assert torch.isfinite(torch.tensor(sim.history[0]["train/loss"]))


def test_no_sync_per_batch_in_a_round(tmp_path):
    """A round syncs once per client update (its mean loss) and a few times per evaluation (the records copied to the
    host once per split), never per batch: each client trains on far more batches than the syncs allowed."""
    sim = cifar_shaped(tmp_path, "eval.every=1")
    executor = SerialExecutor(sim.fed)
    sim.run_round(executor, 0)  # warm-up: kernels, allocator
    batches = sum(-(-n // 16) for n in sim.fed.method.ctx.client_train_sizes)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            sim.run_round(executor, 1)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchronizing" in str(w.message)]
    allowed = sim.fed.num_clients + 8
    assert batches > 4 * allowed
    assert len(syncs) <= allowed, [str(w.message) for w in syncs[:5]]


def test_deterministic_mode_repeats_bitwise(tmp_path):
    first = cifar_shaped(tmp_path, "run.deterministic=true")
    first.run()
    second = cifar_shaped(tmp_path, "run.deterministic=true")
    second.run()
    assert without_timings(first.history) == without_timings(second.history)


def test_pinned_states_give_the_results_of_device_states(tmp_path):
    pinned = cifar_shaped(tmp_path, "method.name=fedper", "run.state_device=pinned", "run.deterministic=true")
    pinned.run()
    assert pinned.state.clients.pinned
    on_device = cifar_shaped(tmp_path, "method.name=fedper", "run.deterministic=true")
    on_device.run()
    assert without_timings(pinned.history) == without_timings(on_device.history)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains(tmp_path, precision):
    sim = cifar_shaped(tmp_path, f"train.precision={precision}")
    sim.run()
    assert torch.isfinite(torch.tensor(sim.history[0]["train/loss"]))
