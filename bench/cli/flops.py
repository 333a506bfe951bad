"""``cafebench flops MODEL --dataset D``: the per-exit cost table (MACs, parameters, share of the full model)."""

from __future__ import annotations

import argparse

from bench.config import ModelConfig, read_source

DEFAULT_WIDTH = ModelConfig.model_fields["width"].default  # a config's model.width when it sets none
PARAMS_MEANING = ("params: the parameters an inference that stops at exit k uses: stages 1..k, exit heads 1..k and "
                  "anything outside the stages (the last row is the whole network)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flops", help="per-exit MACs (fvcore) and parameters of a model on a dataset's input")
    p.add_argument("model", help="conv3 | resnet8 | resnet20 | resnet18 | transformer4")
    p.add_argument("--dataset", default="fmnist", help="dataset whose input shape and classes to use")
    p.add_argument("--width", type=float, default=None,
                   help=f"width multiplier (default {DEFAULT_WIDTH:g}, model.width's default; the demo preset's "
                        "model runs at its own width, which the output names)")
    p.set_defaults(func=run)


def width_note(model: str, width: float | None) -> tuple[float, str]:
    """The width to count and a note on where it comes from; the note names the demo preset's width for its model
    when that differs, since a user comparing with the demo's ``macs/*`` metrics needs it."""
    if width is not None:
        return width, "given with --width"
    demo = ModelConfig.model_validate(read_source("demo").get("model") or {})
    note = "model.width's default, --width W for another"
    if demo.name == model and demo.width != DEFAULT_WIDTH:
        note += f"; the demo preset runs {model} at width {demo.width:g}: --width {demo.width:g}"
    return DEFAULT_WIDTH, note


def run(args: argparse.Namespace) -> int:
    from bench.data.sources import dataset_shape
    from bench.measure.flops import exit_costs
    from bench.models import build_model

    width, note = width_note(args.model, args.width)
    shape = dataset_shape(args.dataset)
    model = build_model(args.model, shape.input_shape, shape.num_classes, vocab_size=shape.vocab_size, width=width)
    table = exit_costs(model, shape.input_shape)
    print(f"{args.model} at width {width:g} ({note}) on {args.dataset} input {shape.input_shape}, "
          f"{shape.num_classes} classes; MACs of one sample, cumulative up to each exit (earlier heads included)")
    print(table.to_markdown())
    print(PARAMS_MEANING)
    if table.unsupported_ops:
        print("operators fvcore does not count: " + ", ".join(f"{k}×{v}" for k, v in table.unsupported_ops.items()))
    return 0
