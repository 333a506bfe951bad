"""What a run will cost, from its config, before it starts: sample passes, training MACs and a rough CPU time.

The workload of a run is its **sample passes**: the samples of the dataset it uses (after ``data.max_samples``) ×
the train fraction (``data.split[0]``) × the share of clients that train each round (``train.participation``) × the
passes a local update makes over a client's train split (its method's :meth:`~bench.methods.api.Method.
epochs_per_round`, ``train.local_epochs`` unless the method trains more) × ``train.rounds``. The clients' train
splits add up to the train fraction of the data up to rounding, so with every client training each round this is
the figure the run's progress bar counts, within a fraction of a percent. **Training MACs** are 3 × the model's
forward MACs of one sample (every exit, :func:`~bench.measure.flops.exit_costs`) per sample pass: a forward and a
backward pass of twice its cost.
Evaluation is not counted, nor the fine-tuning some methods do before each evaluation (FedAvg+FT, FedBABU).

The time is a **rough estimate**, given for runs on the CPU only: the training MACs at the rate ``cafebench perf``
measured for the harness on the idle 2-core development CPU with 2 torch threads (docs/performance.md):
:data:`CPU_IMAGES_PER_S` images a second training :data:`CPU_REFERENCE`, i.e. that many × 3 × its forward MACs a
second, with a floor: no optimiser step takes less than a step of the reference did (:data:`CPU_REFERENCE_BATCH`
images in ``CPU_REFERENCE_BATCH / CPU_IMAGES_PER_S`` seconds), since a model much smaller than the reference is bound
by per-batch overhead, not arithmetic (an assumption; no small model's speed has been measured). A busy machine is
slower than the estimate.
The figure was taken before ``run.channels_last`` became the CPU default, which trained the bare loop 1.48x faster
side by side, so runs on an idle CPU may now finish sooner than estimated.
No GPU throughput has been measured, so a GPU run gets no time.

These are the figures; the command line words them (:mod:`bench.cli.estimate`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from bench.config import ExperimentConfig
from bench.data.sources import DatasetShape, get_dataset, load_dataset
from bench.ground.rng import sample_clients
from bench.methods.registry import get_method
from bench.models import build_model

# The harness's training throughput that ``cafebench perf --repeats 3 --no-memory`` measured on 2026-12-07 for
# CPU_REFERENCE in the default channels_last format (docs/performance.md, "harness, run.channels_last=true": one
# round's 49,000 images in 8.78 s).
CPU_IMAGES_PER_S = 5_580
# What it trained: (model, width, dataset): one fedavg round of the demo preset's model on Fashion-MNIST, batch 64.
CPU_REFERENCE = ("conv3", 0.5, "fmnist")
CPU_REFERENCE_BATCH = 64
BACKWARD_FACTOR = 3  # training MACs per sample pass, in forward passes: the forward, and a backward of twice its cost


@dataclass(frozen=True)
class Workload:
    """A run's workload (see the module doc); ``forward_macs`` is one sample's forward pass through every exit."""

    dataset: str
    samples: int  # of the dataset, after data.max_samples
    dataset_samples: int  # of the whole dataset
    clients: int
    train_fraction: float
    participation: float  # share of the clients training each round
    epochs_per_round: float
    rounds: int
    forward_macs: int
    batch_size: int

    @property
    def sample_passes(self) -> float:
        return self.samples * self.train_fraction * self.participation * self.epochs_per_round * self.rounds

    @property
    def training_macs(self) -> float:
        return BACKWARD_FACTOR * self.forward_macs * self.sample_passes

    @property
    def steps(self) -> float:
        """Optimiser steps, about: sample passes / batch size (a client's last batch of an epoch may be short)."""
        return self.sample_passes / self.batch_size


@lru_cache(maxsize=32)
def _dataset_facts(name: str, root: str | None, options_json: str) -> tuple[int, DatasetShape]:
    """(size, shape) of a dataset: as registered with default options, else read off the loaded data."""
    entry = get_dataset(name)
    options = json.loads(options_json)
    if not options and entry.size is not None and entry.shape is not None:
        return entry.size, entry.shape
    data = load_dataset(name, root, **options)
    return len(data), DatasetShape(data.input_shape, data.num_classes, data.vocab_size)


@lru_cache(maxsize=32)
def forward_macs(model: str, width: float, shape: DatasetShape) -> int:
    """One sample's forward MACs through every exit of ``model`` at ``width`` on inputs of ``shape`` (fvcore)."""
    from bench.measure.flops import exit_costs  # fvcore: only when an estimate is asked for

    net = build_model(model, shape.input_shape, shape.num_classes, vocab_size=shape.vocab_size, width=width)
    return exit_costs(net, shape.input_shape).exits[-1].macs


def workload(config: ExperimentConfig) -> Workload:
    """The workload of ``config`` (loads the dataset only when its options decide its size)."""
    d, t = config.data, config.train
    size, shape = _dataset_facts(d.dataset, d.root, json.dumps(d.options, sort_keys=True))
    used = size if d.max_samples is None else min(size, d.max_samples)
    participating = len(sample_clients(config.seed, 0, d.clients, t.participation))  # as many every round
    epochs = get_method(config.method.name).epochs_per_round(config.method_hparams(), t.local_epochs)
    return Workload(d.dataset, used, size, d.clients, d.split[0], participating / d.clients, epochs, t.rounds,
                    forward_macs(config.model.name, config.model.width, shape), t.batch_size)


def reference_macs() -> int:
    """One sample's forward MACs of :data:`CPU_REFERENCE`."""
    model, width, dataset = CPU_REFERENCE
    return forward_macs(model, width, _dataset_facts(dataset, None, "{}")[1])


def cpu_seconds(load: Workload) -> float:
    """Rough seconds of training on a CPU like the reference one (see the module doc): its training MACs at the
    reference's rate, or its steps at the reference's seconds a step where that is more."""
    by_arithmetic = load.training_macs / (CPU_IMAGES_PER_S * BACKWARD_FACTOR * reference_macs())
    by_steps = load.steps * CPU_REFERENCE_BATCH / CPU_IMAGES_PER_S
    return max(by_arithmetic, by_steps)
