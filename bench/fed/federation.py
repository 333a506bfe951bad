"""Everything an experiment is made of, built deterministically from its config.

The server loop and every worker (serial, process or Ray) build the same :class:`Federation` from the same
config, so a local update sees identical data, model shapes and method settings wherever it runs.
Everything a local update or an evaluation touches lives on the federation's device: the whole dataset (uint8
images or token ids), every client's index tensors and the models.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.config import ExperimentConfig, import_plugins
from bench.data.batching import BatchMaker, default_augment
from bench.data.dataset import Dataset
from bench.data.partition import SPLIT_NAMES, ClientIndices, Partition, PartitionSpec, load_or_create_partition
from bench.data.sources import load_dataset
from bench.data.subset import subsample
from bench.fed.device import compile_model, place_model, resolve_device
from bench.ground.rng import derive_seed
from bench.methods.api import ClientData, Method, MethodContext, TrainSettings
from bench.methods.registry import get_method
from bench.models import build_model
from bench.models.base import EarlyExitNet

log = logging.getLogger(__name__)


@dataclass
class Federation:
    config: ExperimentConfig
    dataset: Dataset
    partition: Partition
    batches: BatchMaker
    method: Method
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    indices: dict[str, ClientIndices] = field(init=False)

    def __post_init__(self) -> None:
        # The partition itself stays on the host (cache file, histograms); its index tensors are copied once.
        self.indices = {split: ClientIndices(self.partition.split_indices(split).flat.to(self.device),
                                             self.partition.split_indices(split).sizes()) for split in SPLIT_NAMES}

    @property
    def num_clients(self) -> int:
        return self.config.data.clients

    def client_data(self, client: int) -> ClientData:
        i = self.indices
        return ClientData(client, self.batches, i["train"][client], i["val"][client], i["test"][client])

    def new_model(self, width: float | None = None) -> EarlyExitNet:
        """A freshly initialised model on the device; the same seed always gives the same weights."""
        return make_model(self.config, self.dataset, width, self.device)

    def work_model(self) -> EarlyExitNet:
        """A scratch model for local updates and evaluation, compiled when ``run.compile`` is set."""
        model = self.new_model()
        return compile_model(model, self.device) if self.config.run.compile else model


def make_model(config: ExperimentConfig, dataset: Dataset, width: float | None = None,
               device: torch.device | None = None) -> EarlyExitNet:
    """The config's model, initialised on the CPU from the seed (the same weights for every device), then moved to
    ``device`` (default CPU)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "model-init"))
        model = build_model(config.model.name, dataset.input_shape, dataset.num_classes,
                            vocab_size=dataset.vocab_size, width=config.model.width if width is None else width)
    return model if device is None else place_model(model, device, config.run.channels_last)


def load_config_dataset(config: ExperimentConfig) -> Dataset:
    """The config's dataset, cut to ``data.max_samples`` where set (:func:`~bench.data.subset.subsample`)."""
    dataset = load_dataset(config.data.dataset, config.data.root, **config.data.options)
    return subsample(dataset, config.data.max_samples)


def partition_spec(config: ExperimentConfig) -> PartitionSpec:
    d = config.data
    options = json.dumps(d.options, sort_keys=True) if d.options else ""
    subset = f"[max_samples={d.max_samples}]" if d.max_samples is not None else ""  # unset: the partition as before
    return PartitionSpec(dataset=d.dataset + options + subset, num_clients=d.clients, alpha=d.alpha, seed=config.seed,
                         min_samples=d.min_samples, balance_cap=d.balance_cap, split=tuple(d.split))


def build_federation(config: ExperimentConfig, dataset: Dataset | None = None,
                     device: torch.device | None = None) -> Federation:
    """Load the data, partition it, and instantiate the method (``dataset``, already cut to ``data.max_samples``,
    may be passed in to share it).

    ``device`` defaults to the one ``run.device`` names (:func:`~bench.fed.device.resolve_device`).
    """
    import_plugins(config.plugins)
    device = resolve_device(config.run.device) if device is None else device
    if dataset is None:
        dataset = load_config_dataset(config)
    partition = load_or_create_partition(dataset.y, dataset.num_classes, partition_spec(config),
                                         Path(config.run.cache_dir) / "partitions")
    augment = default_augment(dataset) if config.data.augment else None
    batches = BatchMaker(dataset, augment, device)
    method_cls = get_method(config.method.name)
    probe = make_model(config, dataset)
    ctx = MethodContext(
        num_clients=config.data.clients,
        num_classes=dataset.num_classes,
        num_exits=probe.num_exits,
        rounds=config.train.rounds,
        train=TrainSettings.from_section(config.train),
        client_train_sizes=[int(i.numel()) for i in partition.train],
        seed=config.seed,
        build_model=lambda width=None: make_model(config, dataset, width, device),
    )
    method = method_cls(config.method_hparams(), ctx)
    return Federation(config, dataset, partition, batches, method, device)
