"""Every device path a CPU can run: run.device resolution and its errors, precision, compile's fallback, pinned
states, GPU assignment of workers, out-of-memory messages, system metrics, the executors' import structure."""

import ast
import logging
import math
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

import bench.sweep.runs as sweep_runs
from bench.config import ConfigError, apply_overrides, validate_config
from bench.fed.device import (
    CompiledForward,
    DeviceError,
    place_model,
    resolve_device,
    use_device,
    uses_channels_last,
    worker_devices,
)
from bench.fed.engine import Simulation
from bench.ground.precision import autocast, grad_scaler
from bench.measure.dynamic import ClientRecords
from bench.models import build_model
from bench.sweep import load_sweep, run_sweep
from bench.track.runner import run_experiment
from bench.track.system_metrics import start_system_metrics, wants_system_metrics
from tests.helpers import RecordingLauncher, write_sweep


@pytest.fixture(autouse=True)
def no_gpu(monkeypatch):
    """This machine as one without CUDA or MPS, whatever it has; deterministic mode off again afterwards."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("bench.fed.device.mps_available", lambda: False)
    yield
    use_device(torch.device("cpu"), deterministic=False)


def config(data: dict, *overrides: str):
    return validate_config(apply_overrides(data, list(overrides)))


def one_round(data: dict, *overrides: str) -> Simulation:
    sim = Simulation(config(data, "train.rounds=1", "train.local_epochs=1", *overrides))
    sim.run()
    return sim


def test_cpu_and_auto_resolve_to_the_cpu():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("spec, message", [
    ("cuda", "run.device=cuda: this machine has no CUDA device"),
    ("cuda:1", "run.device=cuda:1: this machine has no CUDA device"),
    ("mps", "run.device=mps: MPS (Apple GPU) is not available here"),
])
def test_a_device_this_machine_lacks_is_a_one_line_error(spec, message):
    with pytest.raises(DeviceError, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        resolve_device(spec)
    assert "\n" not in str(caught.value)


def test_a_misspelt_device_is_rejected_with_its_key(tiny_config_data):
    with pytest.raises(ConfigError, match="run.device: Value error, 'gpu' is not a device: use auto, cpu, cuda"):
        config(tiny_config_data, "run.device=gpu")


def test_a_missing_device_stops_before_any_mlflow_run(tiny_config_data, tracking_uri):
    with pytest.raises(DeviceError, match="no CUDA device"):
        run_experiment(config(tiny_config_data, "run.device=cuda"))
    assert MlflowClient().get_experiment_by_name("test") is None  # no experiment, so no run


def test_device_stays_out_of_the_hash_precision_goes_in(tiny_config_data):
    base = config(tiny_config_data)
    assert config(tiny_config_data, "run.device=cuda:3").content_hash() == base.content_hash()
    assert config(tiny_config_data, "train.precision=bf16").content_hash() != base.content_hash()


def test_run_on_the_cpu_is_tagged_with_its_device(tiny_config_data, tracking_uri):
    result = run_experiment(config(tiny_config_data, "train.rounds=1", "run.device=auto", "run.checkpoint_every=0"))
    tags = MlflowClient().get_run(result.run_id).data.tags
    assert (tags["device"], tags["device_name"]) == ("cpu", "cpu")


def test_bf16_autocasts_the_forward_pass_fp16_gets_a_scaler():
    model = build_model("conv3", (1, 16, 16), 10, width=0.5)
    with autocast("cpu", "bf16"):
        assert model(torch.zeros(2, 1, 16, 16))[-1].dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert model(torch.zeros(2, 1, 16, 16))[-1].dtype == torch.float32
    assert isinstance(grad_scaler("cpu", "fp16"), torch.amp.GradScaler)
    assert grad_scaler("cpu", "bf16") is None and grad_scaler("cpu", "fp32") is None


def test_bf16_and_fp16_rounds_on_the_cpu_train_and_differ_from_fp32(tiny_config_data):
    fp32 = one_round(tiny_config_data)
    bf16 = one_round(tiny_config_data, "train.precision=bf16")
    loss32, loss16 = fp32.history[0]["train/loss"], bf16.history[0]["train/loss"]
    assert math.isfinite(loss16) and abs(loss16 - loss32) < 0.05 * loss32  # the same training, rounded differently
    assert loss16 != loss32
    assert bf16.last_eval.metrics["test/acc/mean"] > 0.1  # 10 classes: above chance after one round
    fp16 = one_round(tiny_config_data, "train.precision=fp16")  # with the gradient scaler
    assert abs(fp16.history[0]["train/loss"] - loss32) < 0.05 * loss32


def test_compile_that_fails_warns_once_and_runs_eagerly(monkeypatch, caplog):
    def broken_compile(fn, mode=None):
        def compiled(*args, **kwargs):
            raise RuntimeError("no backend for this operator\nlong trace")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = build_model("conv3", (1, 16, 16), 10, width=0.5).eval()
    x = torch.randn(3, 1, 16, 16)
    expected = model(x)[-1]
    forward = CompiledForward(model.forward, torch.device("cpu"))
    with caplog.at_level(logging.WARNING, logger="bench.fed.device"):
        torch.testing.assert_close(forward(x)[-1], expected, rtol=0, atol=0)
        forward(x)
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["run.compile: torch.compile failed (RuntimeError: no backend for this operator); "
                        "running the model eagerly"]


def test_run_compile_compiles_the_work_models_and_falls_back_to_the_same_metrics(tiny_config_data, monkeypatch):
    calls = []

    def failing_compile(fn, mode=None):
        calls.append(mode)

        def compiled(*args, **kwargs):
            raise RuntimeError("compiler missing")
        return compiled

    monkeypatch.setattr(torch, "compile", failing_compile)
    compiled = one_round(tiny_config_data, "run.compile=true")
    assert isinstance(compiled.eval_model.forward, CompiledForward) and calls == [None, None]  # eval + serial
    assert compiled.history[0]["train/loss"] == one_round(tiny_config_data).history[0]["train/loss"]


def test_pinned_states_on_the_cpu_are_host_states_with_the_same_results(tiny_config_data):
    data = apply_overrides(tiny_config_data, ["method.name=fedper"])
    pinned = one_round(data, "run.state_device=pinned")
    assert not pinned.state.clients.pinned  # nothing to pin for: the CPU computes on host memory
    on_device = one_round(data, "run.state_device=device")
    assert pinned.history[0]["train/loss"] == on_device.history[0]["train/loss"]
    assert pinned.last_eval.metrics == on_device.last_eval.metrics


def test_deterministic_mode_runs_on_the_cpu_with_the_usual_results(tiny_config_data):
    strict = one_round(tiny_config_data, "run.deterministic=true")
    assert torch.are_deterministic_algorithms_enabled()
    assert strict.last_eval.metrics == one_round(tiny_config_data).last_eval.metrics
    assert not torch.are_deterministic_algorithms_enabled()


def conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.ndim == 4]


def test_conv_models_go_channels_last_by_default_on_the_cpu_and_stay_contiguous_when_told():
    cpu = torch.device("cpu")
    model = place_model(build_model("conv3", (3, 16, 16), 10, width=0.5), cpu)
    assert conv_weights(model) and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                                       for w in conv_weights(model))
    off = place_model(build_model("conv3", (3, 16, 16), 10, width=0.5), cpu, channels_last=False)
    assert all(w.is_contiguous() for w in conv_weights(off))
    assert not uses_channels_last(model, torch.device("mps"), None)  # off on MPS unless asked
    text = build_model("transformer4", (16,), 4, vocab_size=50)
    assert not uses_channels_last(text, cpu, True)  # nothing to lay out


def test_channels_last_runs_repeat_bitwise_and_round_like_contiguous_ones(tiny_config_data):
    assert one_round(tiny_config_data).fed.new_model().stages[0][0].weight.is_contiguous(
        memory_format=torch.channels_last)
    last = one_round(tiny_config_data).last_eval.metrics
    assert last == one_round(tiny_config_data, "run.channels_last=true").last_eval.metrics
    contiguous = one_round(tiny_config_data, "run.channels_last=false").last_eval.metrics
    assert math.isclose(contiguous["test/acc/mean"], last["test/acc/mean"], abs_tol=0.05)
    config = validate_config(apply_overrides(tiny_config_data, ["run.channels_last=false"]))
    assert config.content_hash() == validate_config(tiny_config_data).content_hash()


@pytest.mark.parametrize("spec, workers, gpus, expected", [
    ("auto", 5, 2, ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]),
    ("cuda", 3, 4, ["cuda:0", "cuda:1", "cuda:2"]),
    ("cuda:1", 3, 4, ["cuda:1"] * 3),
    ("cpu", 2, 8, ["cpu", "cpu"]),
    ("auto", 2, 0, ["auto", "auto"]),
])
def test_workers_get_gpus_round_robin(spec, workers, gpus, expected):
    assert worker_devices(spec, workers, gpus) == expected


def test_local_sweep_gives_concurrent_runs_their_own_gpus(tmp_path, tracking_uri, monkeypatch):
    launcher = RecordingLauncher()
    monkeypatch.setattr(sweep_runs, "make_launcher", lambda *args: launcher)
    path = write_sweep(tmp_path, "gpus", experiment="gpus", grid={"seed": [0, 1, 2, 3, 4]})
    assert run_sweep(load_sweep(path, ["run.device=auto"]), workers=3, gpus=2).done == 5
    # three at a time on slots 0, 1, 2 → cuda:0, cuda:1, cuda:0; the two after them take the freed slots 0 and 1
    assert launcher.jobs == [("run", d) for d in ["cuda:0", "cuda:1", "cuda:0", "cuda:0", "cuda:1"]]
    run_sweep(load_sweep(path, ["run.device=cpu"]), workers=3, gpus=2)
    assert launcher.jobs[5:] == [("run", "cpu")] * 5  # an explicit device is kept


def test_gpus_per_run_is_for_ray_only(tmp_path, tracking_uri):
    path = write_sweep(tmp_path, "g", experiment="g", grid={"seed": [0]})
    with pytest.raises(ValueError, match="--gpus-per-run is for the ray backend"):
        run_sweep(load_sweep(path), gpus_per_run=0.25)


def test_out_of_memory_names_the_settings_to_lower(tiny_config_data, monkeypatch):
    def no_memory(self, round, jobs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr("bench.fed.executors.SerialExecutor.run_round", no_memory)
    with pytest.raises(RuntimeError, match=r"out of memory on cpu \(cpu\): lower train.batch_size \(now 32\) or keep "
                                           r"clients' personal states in host memory with run.state_device=pinned "
                                           r"\(now device\)"):
        Simulation(config(tiny_config_data)).run()


def test_client_records_refuse_records_of_another_shape():
    records = ClientRecords({0: (4, 2)})
    with pytest.raises(ValueError, match=r"client 0 holds 4 samples × 2 exits, got records of shape \(4, 3\)"):
        records.write(0, torch.zeros(4, 3), torch.zeros(4, 3, dtype=torch.bool))
    records.write(0, torch.full((4, 2), 0.5), torch.ones(4, 2, dtype=torch.bool))
    assert records[0].exit_accuracy.tolist() == [1.0, 1.0] and records[0].confidence.sum() == 4.0


def test_system_metrics_default_on_for_gpus_and_warn_once_without_psutil(monkeypatch, caplog):
    assert wants_system_metrics(None, torch.device("cuda", 0)) and not wants_system_metrics(None, torch.device("cpu"))
    assert wants_system_metrics(True, torch.device("cpu")) and not wants_system_metrics(False, torch.device("cuda"))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    monkeypatch.setattr("bench.track.system_metrics._warned", set())
    with caplog.at_level(logging.WARNING, logger="bench.track.system_metrics"):
        assert start_system_metrics("run", "sqlite:///x.db", torch.device("cpu"), resume=False) is None
        assert start_system_metrics("run", "sqlite:///x.db", torch.device("cpu"), resume=False) is None
    assert len(caplog.records) == 1 and "MLflow needs psutil" in caplog.records[0].getMessage()


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_executors_import_one_way():
    fed = Path(__file__).parent.parent / "bench" / "fed"
    assert "bench.fed.ray_executor" not in imported_modules(fed / "executors.py")
    assert "bench.fed.executors" not in imported_modules(fed / "ray_executor.py")
    assert not {"bench.fed.executors", "bench.fed.ray_executor", "bench.fed.engine"} & imported_modules(
        fed / "local_update.py")
