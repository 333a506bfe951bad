"""``cafebench partition``: draw (or load) a Dirichlet partition, print its class histogram, save a heatmap."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from bench.config import load_config


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("partition", help="show the per-client class histogram of a Dirichlet partition")
    p.add_argument("config", nargs="?", default="demo", help="config file or preset (default: demo)")
    p.add_argument("overrides", nargs="*", help="key.path=value, e.g. data.alpha=0.1 data.clients=20")
    p.add_argument("--out", default=None, help="heatmap PNG path (default: reports/partition-<hash>.png)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    # imported once the config is checked, so that a config error answers without loading matplotlib
    from bench.data.partition import (
        class_histogram,
        format_histogram,
        label_entropy,
        load_or_create_partition,
    )
    from bench.fed.federation import load_config_dataset, partition_spec
    from bench.track.artifacts import plot_partition_heatmap

    dataset = load_config_dataset(config)
    spec = partition_spec(config)
    part = load_or_create_partition(dataset.y, dataset.num_classes, spec, Path(config.run.cache_dir) / "partitions")
    hist = class_histogram(part, dataset.y, dataset.num_classes)
    print(f"{config.data.dataset}: {len(dataset)} samples, {config.data.clients} clients, alpha={config.data.alpha}, "
          f"partition {part.hash}")
    print(format_histogram(hist))
    entropy = label_entropy(hist)
    print(f"mean per-client label entropy: {entropy.mean():.3f} nats (natural log; 0 = one class per client, "
          f"ln {dataset.num_classes} = {math.log(dataset.num_classes):.3f} = every class equally often)")
    out = Path(args.out or f"reports/partition-{part.hash}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_partition_heatmap(hist, out, title=f"{config.data.dataset} alpha={config.data.alpha}")
    print(f"heatmap written to {out}")
    return 0
