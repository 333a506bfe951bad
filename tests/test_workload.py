"""The estimate before a run (sample passes, training MACs, rough CPU time) and the subsample option
``data.max_samples``: what it keeps, where it enters the partition, and that it joins the config hash only when set."""

from __future__ import annotations

import pytest
import torch

from bench.cli.estimate import describe_run
from bench.config import apply_overrides, validate_config
from bench.data.sources import load_dataset
from bench.data.subset import subsample
from bench.fed.engine import Callback, Simulation
from bench.fed.federation import build_federation, partition_spec
from bench.measure.flops import exit_costs
from bench.measure.workload import CPU_IMAGES_PER_S, cpu_seconds, workload
from bench.models import build_model

# A config written before data.max_samples existed, and its content hash computed by the code of that time
# (commit d58c816): leaving the new key unset must keep it, or every finished run would be run again by sweeps.
EXISTING = {"seed": 3, "data": {"dataset": "digits", "clients": 4, "alpha": 0.5}, "method": {"name": "local"},
            "train": {"rounds": 2}}
EXISTING_HASH = "896163c2fc02385b"


def digits(tmp_path, *overrides: str):
    data = {"data": {"dataset": "digits", "clients": 4, "alpha": 0.5, "augment": False},
            "model": {"name": "conv3", "width": 0.25}, "train": {"rounds": 2, "batch_size": 64},
            "eval": {"thresholds": [0.5]},
            "run": {"checkpoint_every": 0, "cache_dir": str(tmp_path / "cache"), "threads": 1, "device": "cpu"}}
    return validate_config(apply_overrides(data, list(overrides)))


def test_an_existing_config_keeps_its_hash_and_setting_max_samples_changes_it():
    config = validate_config(EXISTING)
    assert config.data.max_samples is None
    assert config.content_hash() == EXISTING_HASH
    assert validate_config(apply_overrides(EXISTING, ["data.max_samples=null"])).content_hash() == EXISTING_HASH
    subset = validate_config(apply_overrides(EXISTING, ["data.max_samples=500"]))
    other = validate_config(apply_overrides(EXISTING, ["data.max_samples=600"]))
    assert len({EXISTING_HASH, subset.content_hash(), other.content_hash()}) == 3


def test_max_samples_enters_the_partition_spec_only_when_set(tmp_path):
    unset, subset = digits(tmp_path), digits(tmp_path, "data.max_samples=500")
    assert partition_spec(unset).dataset == "digits"  # the partition (and its cache file) of existing configs
    assert partition_spec(subset).dataset == "digits[max_samples=500]"
    assert partition_spec(unset).content_hash() != partition_spec(subset).content_hash()


def test_max_samples_must_be_positive():
    with pytest.raises(ValueError, match="data.max_samples"):
        validate_config(apply_overrides(EXISTING, ["data.max_samples=0"]))


def test_subsample_keeps_a_fixed_class_balanced_nested_subset():
    full = load_dataset("digits")
    small, larger = subsample(full, 500), subsample(full, 800)
    assert len(small) == 500 and len(larger) == 800
    assert torch.bincount(small.y).tolist() == [50] * 10
    assert torch.equal(subsample(full, 500).x, small.x)  # a fixed draw
    rows = {tuple(x.flatten().tolist()) for x in larger.x}
    assert all(tuple(x.flatten().tolist()) in rows for x in small.x)  # a smaller subset lies in a larger one
    assert (small.mean, small.std) == (full.mean, full.std)  # normalised as the whole dataset
    assert subsample(full, 5000) is full and subsample(full, None) is full


def test_subsample_refuses_fewer_samples_than_classes():
    with pytest.raises(ValueError, match=r"data.max_samples=9 is fewer than the 10 classes of 'digits'"):
        subsample(load_dataset("digits"), 9)


def test_a_federation_partitions_only_the_subset(tmp_path):
    fed = build_federation(digits(tmp_path, "data.max_samples=500"))
    assert len(fed.dataset) == 500
    assert sum(fed.partition.sizes().sum(axis=1)) == 500


class CountSamples(Callback):
    def __init__(self):
        self.samples = 0

    def on_client_end(self, sim, progress):
        self.samples += progress.samples


@pytest.mark.parametrize("overrides, epochs", [((), 1), (("method.name=ditto",), 2),
                                               (("method.name=fedrep", "method.hparams.head_epochs=3"), 4),
                                               (("train.local_epochs=2", "train.participation=0.5"), 2)])
def test_the_estimate_counts_what_the_run_trains(tmp_path, overrides, epochs):
    config = digits(tmp_path, *overrides)
    load = workload(config)
    share = 0.5 if "train.participation=0.5" in overrides else 1.0
    assert (load.samples, load.epochs_per_round, load.participation) == (1797, epochs, share)
    assert load.sample_passes == pytest.approx(1797 * 0.7 * share * epochs * 2)
    counted = CountSamples()
    Simulation(config, [counted]).run()
    # the clients' train splits add up to 70% of the data, up to rounding; with participation 0.5, half the clients
    assert counted.samples == pytest.approx(load.sample_passes, rel=0.1 if share < 1 else 0.005)


def test_training_macs_are_three_forward_passes_per_sample_pass(tmp_path):
    load = workload(digits(tmp_path, "data.max_samples=500"))
    model = build_model("conv3", (1, 8, 8), 10, width=0.25)
    assert load.forward_macs == exit_costs(model, (1, 8, 8)).exits[-1].macs
    assert load.samples == 500 and load.dataset_samples == 1797
    assert load.training_macs == pytest.approx(3 * load.forward_macs * 500 * 0.7 * 2)


def reference_config():
    """EXISTING on what ``cafebench perf`` measured: conv3 at width 0.5 on Fashion-MNIST, batch 64."""
    return validate_config(apply_overrides(EXISTING, ["data.dataset=fmnist", "model.name=conv3", "model.width=0.5",
                                                      "train.batch_size=64"]))


def test_cpu_seconds_come_from_the_measured_throughput(tmp_path):
    load = workload(reference_config())
    assert load.sample_passes == pytest.approx(70_000 * 0.7 * 2)
    assert cpu_seconds(load) == pytest.approx(load.sample_passes / CPU_IMAGES_PER_S)  # the reference itself
    wider = workload(validate_config(apply_overrides(EXISTING, ["data.dataset=fmnist", "model.width=1.0"])))
    assert cpu_seconds(wider) / cpu_seconds(load) == pytest.approx(wider.forward_macs / load.forward_macs)
    smaller = workload(validate_config(apply_overrides(EXISTING, ["data.dataset=fmnist", "model.width=0.25",
                                                                  "train.batch_size=32"])))
    assert smaller.forward_macs < load.forward_macs / 2  # yet not faster than a reference step: twice its steps
    assert cpu_seconds(smaller) == pytest.approx(2 * cpu_seconds(load))


def test_the_estimate_line_names_the_whole_dataset_and_the_subset_option(tmp_path):
    load = workload(validate_config(apply_overrides(EXISTING, ["data.dataset=fmnist", "data.clients=5"])))
    line = describe_run(load, True)
    assert line.startswith("estimate: fmnist, all 70,000 samples split among 5 clients (70% train) × 1 epoch a "
                           "round × 2 rounds = 98,000 sample passes × 3 × ")
    assert "; roughly " in line and "of training on a CPU like the 2-core one" in line
    assert line.endswith("data.max_samples=N trains on a class-balanced subset")
    subset = workload(digits(tmp_path, "data.max_samples=500"))
    line = describe_run(subset, False)
    assert "500 of 1,797 samples (data.max_samples)" in line and "no time estimate off the CPU" in line
    assert subset.forward_macs < 0.1 * workload(reference_config()).forward_macs  # 8×8 digits, conv3 width 0.25
    # so small a model is bound by per-batch overhead: its steps at the reference's seconds a step, not its MACs
    assert cpu_seconds(subset) == pytest.approx(500 * 0.7 * 2 / 64 * 64 / CPU_IMAGES_PER_S)
    assert "; roughly under 1 s of training" in describe_run(subset, True)
