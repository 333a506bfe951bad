"""Everything an experiment is made of, built deterministically from its config.

The server loop and every worker (serial, process or Ray) build the same :class:`Federation` from the same
config, so a local update sees identical data, model shapes and method settings wherever it runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.config import ExperimentConfig, import_plugins
from bench.data.batching import BatchMaker, default_augment
from bench.data.dataset import Dataset
from bench.data.partition import Partition, PartitionSpec, load_or_create_partition
from bench.data.sources import load_dataset
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

    @property
    def num_clients(self) -> int:
        return self.config.data.clients

    def client_data(self, client: int) -> ClientData:
        p = self.partition
        return ClientData(client, self.batches, p.train[client], p.val[client], p.test[client])

    def new_model(self, width: float | None = None) -> EarlyExitNet:
        """A freshly initialised model; the same seed always gives the same weights."""
        return make_model(self.config, self.dataset, width)


def make_model(config: ExperimentConfig, dataset: Dataset, width: float | None = None) -> EarlyExitNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "model-init"))
        return build_model(config.model.name, dataset.input_shape, dataset.num_classes,
                           vocab_size=dataset.vocab_size, width=config.model.width if width is None else width)


def partition_spec(config: ExperimentConfig) -> PartitionSpec:
    d = config.data
    options = json.dumps(d.options, sort_keys=True) if d.options else ""
    return PartitionSpec(dataset=d.dataset + options, num_clients=d.clients, alpha=d.alpha, seed=config.seed,
                         min_samples=d.min_samples, balance_cap=d.balance_cap, split=tuple(d.split))


def build_federation(config: ExperimentConfig, dataset: Dataset | None = None) -> Federation:
    """Load the data, partition it, and instantiate the method (``dataset`` may be passed in to share it)."""
    import_plugins(config.plugins)
    if dataset is None:
        dataset = load_dataset(config.data.dataset, config.data.root, **config.data.options)
    partition = load_or_create_partition(dataset.y, dataset.num_classes, partition_spec(config),
                                         Path(config.run.cache_dir) / "partitions")
    augment = default_augment(dataset) if config.data.augment else None
    batches = BatchMaker(dataset, augment)
    t = config.train
    method_cls = get_method(config.method.name)
    probe = make_model(config, dataset)
    ctx = MethodContext(
        num_clients=config.data.clients,
        num_classes=dataset.num_classes,
        num_exits=probe.num_exits,
        rounds=t.rounds,
        train=TrainSettings(t.local_epochs, t.batch_size, t.lr, t.momentum, t.weight_decay),
        client_train_sizes=[int(i.numel()) for i in partition.train],
        seed=config.seed,
        build_model=lambda width=None: make_model(config, dataset, width),
    )
    method = method_cls(config.method_hparams(), ctx)
    return Federation(config, dataset, partition, batches, method)
