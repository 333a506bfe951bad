"""``cafebench perf``: the harness against the bare PyTorch loop (round overhead, evaluation, memory, throughput)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("perf", help="measure the harness's overhead against the bare PyTorch loop")
    p.add_argument("--repeats", type=int, default=3, help="timed repetitions (median reported)")
    p.add_argument("--no-memory", action="store_true", help="skip the 100 vs 1,000 clients memory probe")
    p.add_argument("--no-compile", action="store_true",
                   help="skip the compiled and channels_last loops (they compile for a minute or more on a CPU)")
    p.add_argument("--memory-method", default="fedper", help="method whose per-client memory is measured")
    p.add_argument("--device", default="cpu",
                   help="cpu (default), cuda, cuda:N, mps or auto: where the rounds and evaluations run; on a GPU "
                        "also its utilisation and peak memory (the memory probe runs on the CPU only)")
    p.add_argument("overrides", nargs="*",
                   help="key.path=value changes to the round's config, e.g. model.name=resnet18 data.dataset=cifar10")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bench.perf.benchmark import run_perf
    from bench.perf.report import report_json

    report = run_perf(args.repeats, memory=not args.no_memory, memory_method=args.memory_method,
                      device=args.device, overrides=args.overrides, compiled=not args.no_compile)
    print(report_json(report) if args.json else "\n".join(report.lines()))
    return 0
