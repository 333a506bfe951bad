"""Progress inside a round: the engine tells its callbacks of every client update as it finishes (serial and process
executors), the CLI's bar shows clients done and samples/s, the results do not change with a callback attached; a
sweep's line shows each finished run's accuracy and an ETA weighted by the runs' workloads."""

from __future__ import annotations

import io
import itertools
from dataclasses import replace

import pytest
import yaml
from mlflow.tracking import MlflowClient

from bench.cli import main
from bench.cli.estimate import run_estimate
from bench.cli.progress import ProgressBar, SweepStatus, clock_time
from bench.config import apply_overrides, validate_config
from bench.fed.engine import Callback, ClientProgress, Simulation
from bench.ground.rng import sample_clients
from bench.measure.workload import CPU_IMAGES_PER_S
from bench.sweep import load_sweep, run_sweep
from bench.sweep.outcomes import RunOutcome, SweepProgress
from tests.helpers import tiny_base, write_sweep


class Record(Callback):
    def __init__(self):
        self.progress: list[ClientProgress] = []

    def on_client_end(self, sim, progress):
        self.progress.append(progress)


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if not k.startswith("time/")} for h in history]


def test_the_engine_reports_every_client_update_of_every_round(tiny_config_data):
    config = validate_config(tiny_config_data)  # 4 clients, 3 rounds, 2 local epochs
    record = Record()
    sim = Simulation(config, [record])
    sim.run()
    sizes = sim.fed.method.ctx.client_train_sizes
    assert [(p.round, p.client, p.done, p.total) for p in record.progress] == [
        (r, c, c + 1, 4) for r in (1, 2, 3) for c in range(4)]
    assert [p.samples for p in record.progress] == [2 * sizes[c] for _ in range(3) for c in range(4)]


def test_with_partial_participation_the_round_counts_its_sampled_clients(tiny_config_data):
    config = validate_config(apply_overrides(tiny_config_data, ["train.participation=0.5"]))
    record = Record()
    Simulation(config, [record]).run()
    for r in (1, 2, 3):
        chosen = sample_clients(config.seed, r - 1, 4, 0.5)
        assert [(p.client, p.done, p.total) for p in record.progress if p.round == r] == [
            (c, i + 1, 2) for i, c in enumerate(chosen)]


def test_metrics_are_bitwise_identical_with_and_without_progress(tiny_config_data):
    config = validate_config(tiny_config_data)
    plain = Simulation(config)
    plain.run()
    watched = Simulation(config, [Record(), ProgressBar("x", stream=io.StringIO())])
    watched.run()
    assert without_timings(watched.history) == without_timings(plain.history)
    assert watched.last_eval.metrics == plain.last_eval.metrics


def test_the_process_executor_reports_each_update_and_keeps_the_results(tiny_config_data):
    data = apply_overrides(tiny_config_data, ["train.rounds=2"])
    serial = Simulation(validate_config(data))
    serial.run()
    record = Record()
    pooled = Simulation(validate_config(apply_overrides(data, ["run.executor=process", "run.workers=2"])), [record])
    pooled.run()
    assert without_timings(pooled.history) == without_timings(serial.history)
    for r in (1, 2):
        done = [p for p in record.progress if p.round == r]
        assert [p.done for p in done] == [1, 2, 3, 4] and {p.total for p in done} == {4}
        assert sorted(p.client for p in done) == [0, 1, 2, 3]  # in the order they finished


def test_the_bar_shows_round_clients_samples_per_second_and_accuracy(tiny_config_data):
    sim = Simulation(validate_config(tiny_config_data))
    ticks = itertools.count(0.0, 2.0)  # every reading of the clock is 2 s after the last
    bar = ProgressBar("fedavg", stream=io.StringIO(), clock=lambda: next(ticks))
    bar.on_start(sim)  # t = 0
    assert bar.bar.total == 12 and bar.bar.n == 0
    bar.on_client_end(sim, ClientProgress(1, 0, 1, 4, 300))  # t = 2
    assert bar.bar.postfix == "round 1/3 client 1/4, 150 samples/s"
    bar.on_client_end(sim, ClientProgress(1, 1, 2, 4, 500))  # t = 4: 800 samples in 4 s
    assert bar.bar.postfix == "round 1/3 client 2/4, 200 samples/s" and bar.bar.n == 2
    bar.on_round_end(sim, 1, {"test/acc/mean": 0.61234})  # t = 6: the next round counts from here
    assert bar.bar.postfix == "round 1/3 done, test acc 0.6123"
    bar.on_client_end(sim, ClientProgress(2, 0, 1, 4, 100))  # t = 8
    assert bar.bar.postfix == "round 2/3 client 1/4, 50 samples/s, test acc 0.6123"
    bar.on_end(sim)


def test_a_resumed_run_starts_its_bar_at_the_clients_already_done(tiny_config_data):
    sim = Simulation(validate_config(apply_overrides(tiny_config_data, ["train.participation=0.5"])))
    sim.state.next_round = 2
    bar = ProgressBar(stream=io.StringIO())
    bar.on_start(sim)
    assert (bar.bar.n, bar.bar.total) == (4, 6)
    bar.on_end(sim)


def test_cafebench_run_prints_the_estimate_before_it_starts(tiny_config_data, tracking_uri, tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(apply_overrides(tiny_config_data, ["train.rounds=1"])))
    assert main(["run", str(path)]) == 0
    captured = capsys.readouterr()
    first, finished = captured.out.splitlines()[:2]
    assert first.startswith("estimate: synthetic, all 800 samples split among 4 clients (70% train) × 2 epochs a "
                            "round × 1 round = 1,120 sample passes × 3 × ")
    assert finished.startswith("run ") and " finished: " in finished
    assert "4/4" in captured.err and "client" in captured.err  # the bar counted the clients


def sweep_of_two_methods(tmp_path) -> str:
    return write_sweep(tmp_path, "costs", base=tiny_base(tmp_path), grid={"method.name": ["fedavg", "ditto"]})


def test_the_sweep_eta_weights_the_runs_left_by_their_workload(tmp_path):
    sweep = load_sweep(sweep_of_two_methods(tmp_path))
    status = SweepStatus(sweep, "sqlite:///unused.db", io.StringIO())
    assert status.weights[1] == pytest.approx(2 * status.weights[0])  # Ditto trains two models a round
    fedavg_done = {0: RunOutcome(sweep.labels[0], "h", "done", "run-id")}
    assert status.eta(SweepProgress(2, 1, 1, 0, 0, 10.0, fedavg_done)) == "0:00:20"  # twice the 10 s FedAvg took
    ditto_done = {1: RunOutcome(sweep.labels[1], "h", "done", "run-id")}
    assert status.eta(SweepProgress(2, 1, 1, 0, 0, 10.0, ditto_done)) == "0:00:05"
    skipped = {0: RunOutcome(sweep.labels[0], "h", "skipped", "run-id")}
    assert status.eta(SweepProgress(2, 0, 1, 0, 1, 10.0, skipped)).endswith("(estimate)")  # no run timed yet
    status.estimates[1] = replace(status.estimates[1], seconds=None)  # a run off the CPU has no time
    assert status.eta(SweepProgress(2, 0, 1, 0, 1, 10.0, skipped)) == "?"


def test_before_any_run_has_gone_the_eta_is_the_cpu_estimate(tmp_path):
    base = apply_overrides(tiny_base(tmp_path), ["data.dataset=fmnist", "model.width=0.5", "train.batch_size=64"])
    sweep = load_sweep(write_sweep(tmp_path, "big", base=base, grid={"method.name": ["fedavg", "ditto"]}))
    status = SweepStatus(sweep, "sqlite:///unused.db", io.StringIO())
    seconds = [e.seconds for e in status.estimates]
    assert seconds[1] == pytest.approx(2 * seconds[0])
    assert seconds[0] == pytest.approx(70_000 * 0.7 * 2 / CPU_IMAGES_PER_S)
    assert status.eta(SweepProgress(2, 0, 1, 0, 0, 0.0)) == f"~{clock_time(sum(seconds))} (estimate)"
    assert status.eta(SweepProgress(2, 0, 1, 0, 1, 0.0, {0: RunOutcome(sweep.labels[0], "h", "skipped")})) == (
        f"~{clock_time(seconds[1])} (estimate)")


def test_a_sweep_prints_each_finished_runs_accuracy_and_draws_each_runs_bar(tmp_path, tracking_uri):
    sweep = load_sweep(sweep_of_two_methods(tmp_path))
    stream = io.StringIO()
    status = SweepStatus(sweep, tracking_uri, stream)
    assert status.estimate().startswith("estimate: 2 runs, ")
    result = run_sweep(sweep, progress=status, run_callbacks=status.callbacks_for("local", 1))
    assert result.done == 2
    client = MlflowClient(tracking_uri)
    lines = stream.getvalue().splitlines()
    for label, run_id in zip(sweep.labels, result.run_ids, strict=True):
        accuracy = client.get_run(run_id).data.metrics["test/acc/mean"]
        assert f"sweep costs: finished {label}: test/acc/mean {accuracy:.4f}" in lines
    assert lines[-1].startswith("sweep costs: 2/2 finished (0 skipped), 0 running, 0 failed, ETA 0:00:00")
    assert any(line.startswith(f"{sweep.labels[1]}: ") and "6/6" in line for line in lines)  # the run's own bar


def test_a_config_that_cannot_be_inspected_gets_no_estimate_and_the_sweep_goes_on(tmp_path):
    bad = {**tiny_base(tmp_path), "data": {**tiny_base(tmp_path)["data"], "options": {"no_such_option": 1}}}
    good = load_sweep(sweep_of_two_methods(tmp_path))
    broken = load_sweep(write_sweep(tmp_path, "broken", base=bad, grid={"seed": [0]}))
    status = SweepStatus(replace(good, configs=[*good.configs, *broken.configs],
                                 labels=[*good.labels, *broken.labels]), "sqlite:///unused.db", io.StringIO())
    assert status.weights[2] == pytest.approx((status.weights[0] + status.weights[1]) / 2)
    assert status.estimate().startswith("estimate: 2 runs, ")
    assert status.estimate().endswith("; 1 run without one (e.g. ValueError: dataset 'digits' takes no "
                                      "option no_such_option; its options are: none)")
    assert run_estimate(broken.configs[0]) == ("estimate: none (ValueError: dataset 'digits' takes no option "
                                               "no_such_option; its options are: none)")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_runs_in_worker_processes_show_their_rounds_in_the_status_line(tmp_path, tracking_uri):
    sweep = load_sweep(sweep_of_two_methods(tmp_path))
    stream = Terminal()
    status = SweepStatus(sweep, tracking_uri, stream)
    try:
        result = run_sweep(sweep, workers=2, progress=status, run_callbacks=status.callbacks_for("local", 2))
    finally:
        status.close()
    assert result.done == 2
    drawn = stream.getvalue().split("\r\033[K")
    for label in sweep.labels:  # each run's client updates, forwarded from its worker
        assert any(f"{label} round " in line and " client " in line for line in drawn)
    assert drawn[-1].startswith("sweep costs: 2/2 finished (0 skipped), 0 running, 0 failed, ETA 0:00:00")
    assert status.forwarding is None  # the manager is shut down
    assert status.callbacks_for("ray", 2) is None


def test_the_eta_counts_the_rounds_a_running_run_has_done(tmp_path):
    sweep = load_sweep(sweep_of_two_methods(tmp_path))
    status = SweepStatus(sweep, "sqlite:///unused.db", io.StringIO())
    status.forwarded(1, 2, 3, 3, 4)  # Ditto, half done (2 of 4 rounds), FedAvg not started: 1 of 3 units in 10 s
    assert status.eta(SweepProgress(2, 0, 2, 0, 0, 10.0)) == "0:00:20"


def test_the_ray_executor_reports_each_update_and_keeps_the_results(tiny_config_data):
    ray = pytest.importorskip("ray")
    data = apply_overrides(tiny_config_data, ["train.rounds=2"])
    serial = Simulation(validate_config(data))
    serial.run()
    record = Record()
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        on_ray = Simulation(validate_config(apply_overrides(data, ["run.executor=ray", "run.workers=2"])), [record])
        on_ray.run()
    finally:
        ray.shutdown()
    assert without_timings(on_ray.history) == without_timings(serial.history)
    assert [(p.round, p.client, p.done, p.total) for p in record.progress] == [
        (r, c, c + 1, 4) for r in (1, 2) for c in range(4)]  # in the jobs' order, as the pool hands them back
