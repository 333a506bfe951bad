"""``cafebench flops MODEL --dataset D``: the per-exit cost table (MACs, parameters, share of the full model)."""

from __future__ import annotations

import argparse

from bench.data.sources import dataset_shape
from bench.measure.flops import exit_costs
from bench.models import build_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flops", help="per-exit MACs (fvcore) and parameters of a model on a dataset's input")
    p.add_argument("model", help="conv3 | resnet8 | resnet20 | resnet18 | transformer4")
    p.add_argument("--dataset", default="fmnist", help="dataset whose input shape and classes to use")
    p.add_argument("--width", type=float, default=1.0, help="width multiplier")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    shape = dataset_shape(args.dataset)
    model = build_model(args.model, shape.input_shape, shape.num_classes, vocab_size=shape.vocab_size,
                        width=args.width)
    table = exit_costs(model, shape.input_shape)
    print(f"{args.model} (width {args.width:g}) on {args.dataset} input {shape.input_shape}, "
          f"{shape.num_classes} classes; MACs of one sample, cumulative up to each exit (earlier heads included)")
    print(table.to_markdown())
    if table.unsupported_ops:
        print("operators fvcore does not count: " + ", ".join(f"{k}×{v}" for k, v in table.unsupported_ops.items()))
    return 0
