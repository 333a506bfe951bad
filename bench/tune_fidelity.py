"""The multi-fidelity measurement: does tuning by successive halving over rounds choose as well as full-fidelity
tuning of the same cost?

    nox -s tune_fidelity -- [--trials 6] [--pruner successive_halving:2:3] [--workers 2] [key=value ...]
    python -m bench.tune_fidelity --help

For every method of a sweep preset (default ``quick/tables``: Fashion-MNIST, its five methods, α 0.1 and 0.3) it runs,
on the preset's tuning seed and with the same shared candidates, two studies per method and α:

* *full fidelity*: ``--trials`` trials that run every round (cost: that many full-run equivalents);
* *multi-fidelity* (``--pruner``): candidates until it has spent as much, i.e. the longest prefix of candidates whose
  cost in full-run equivalents does not pass the full study's. Trial ``k`` of a study depends only on the trials
  before it, so that prefix is exactly what a tune stage with ``pruner`` and ``trials`` = its length would run.

Each choice (the best completed trial by validation accuracy) then runs on the preset's test seeds. Printed: per
method and α the candidates each study tried, its cost and the cost ratio, the chosen settings, and the final
validation and test accuracy (``val/acc/mean``, ``test/acc/mean``) of each choice as mean ± sd over the test seeds;
then the totals. The same table goes to ``OUT/tune_fidelity.json``. Everything runs as sweeps into one MLflow
experiment and one Optuna storage, so running the command again continues where it stopped, and a choice both
fidelities made runs on the test seeds once.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import yaml
from mlflow.tracking import MlflowClient

from bench.record_names import OBJECTIVE, TEST_ACCURACY, TUNED_TAG
from bench.sweep import Sweep, load_sweep, run_sweep
from bench.sweep.launchers import local_cores, make_launcher, run_jobs
from bench.sweep.spec import base_config, read_sweep_file
from bench.sweep.tune_stage import StudySpec, run_study_spec, study_specs
from bench.track.locations import absolute_tracking_uri
from bench.track.mlflow_tracker import tracking_uri
from bench.tune import prepare_storage, with_params
from bench.tune_candidates import FINISHED_STATES, PRUNER_KINDS, trial_cost

log = logging.getLogger(__name__)
FIDELITIES = ("full", "multi")


@dataclass
class Choice:
    """What one study chose and how its choice did on the test seeds."""

    method: str
    alpha: float
    fidelity: str  # full | multi
    trials: int  # candidates tried (the ``trials`` of a tune stage that makes the same choice)
    pruned: int
    cost: float  # full-run equivalents
    params: dict[str, Any]
    val: list[float]  # final val/acc/mean per test seed
    test: list[float]  # final test/acc/mean per test seed


def sweep_files(out: Path, preset: str, methods: Sequence[str] | None, alphas: Sequence[float] | None,
                test_seeds: Sequence[int] | None, trials: int, pruner: dict[str, Any], experiment: str,
                storage: str) -> tuple[Path, Path]:
    """The full- and multi-fidelity sweep files: the preset's base and ``set``, a grid of methods x α x test seeds,
    and its tune stage's seeds and shared ranges with ``trials`` (full) or ``pruner`` (multi)."""
    name, spec, folder = read_sweep_file(preset)
    grid = dict(spec.get("grid") or {})
    tune = dict(spec.get("tune") or {})
    grid = {"method.name": list(methods or grid.get("method.name") or []),
            "data.alpha": list(alphas or grid.get("data.alpha") or []),
            "seed": list(test_seeds or grid.get("seed") or [])}
    empty = [k for k, v in grid.items() if not v]
    if empty:
        raise ValueError(f"preset {preset} gives no {', '.join(empty)}: name them (--methods, --alphas, --test-seeds)")
    common = {"base": base_config(spec.get("base"), folder, name), "experiment": experiment,
              "set": dict(spec.get("set") or {}), "grid": grid}
    stage = {"seeds": list(tune.get("seeds") or [100]), "ranges": dict(tune.get("ranges") or {}), "storage": storage}
    out.mkdir(parents=True, exist_ok=True)
    full, multi = out / "tune-fidelity-full.yaml", out / "tune-fidelity-multi.yaml"
    full.write_text(yaml.safe_dump({**common, "tune": {**stage, "trials": trials}}, sort_keys=False))
    # trials: a ceiling only; run_to_cost stops each multi-fidelity study at the full study's cost
    multi.write_text(yaml.safe_dump({**common, "tune": {**stage, "trials": trials, "pruner": pruner}},
                                    sort_keys=False))
    return full, multi


def candidates(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's finished trials in candidate order (one per candidate)."""
    return sorted(study.get_trials(deepcopy=False, states=FINISHED_STATES), key=lambda t: t.user_attrs["candidate"])


def equal_cost_prefix(trials: list[optuna.trial.FrozenTrial], rounds: int, seeds: int, target: float) -> int:
    """The number of leading candidates whose cost does not pass ``target`` full-run equivalents (at least one)."""
    spent, n = 0.0, 0
    for trial in trials:
        spent += trial_cost(trial, rounds, seeds)
        if spent > target + 1e-9:
            break
        n += 1
    return max(n, 1)


def run_to_cost(spec: StudySpec, target: float) -> int:
    """Run the (multi-fidelity) study one candidate more at a time until it has spent ``target`` full-run
    equivalents; the length of its candidate prefix of at most that cost. Resumable: a finished study returns at
    once."""
    rounds, seeds = int(spec.config["train"]["rounds"]), len(spec.seeds)
    first_rung = spec.pruner.min_rounds if spec.pruner else rounds
    ceiling = int(target * rounds / first_rung) + 2  # every candidate stopped at its first rung
    for n in range(1, ceiling + 1):
        run_study_spec(replace(spec, trials=n))
        trials = candidates(optuna.load_study(study_name=spec.name, storage=spec.storage))
        if sum(trial_cost(t, rounds, seeds) for t in trials) >= target - 1e-9:
            break
    return equal_cost_prefix(trials, rounds, seeds, target)


def study_choice(spec: StudySpec, n: int) -> tuple[dict[str, Any], float, int]:
    """(parameters of the best completed trial among the first ``n`` candidates, their cost, how many were pruned)."""
    trials = candidates(optuna.load_study(study_name=spec.name, storage=spec.storage))[:n]
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(done, key=lambda t: (t.value, -t.user_attrs["candidate"]))
    rounds, seeds = int(spec.config["train"]["rounds"]), len(spec.seeds)
    return dict(best.params), sum(trial_cost(t, rounds, seeds) for t in trials), len(trials) - len(done)


def measure(full_path: Path, multi_path: Path, overrides: Sequence[str] = (), workers: int = 1,
            threads: int | None = None) -> list[Choice]:
    """Run both fidelities' studies and their choices on the test seeds (see the module doc)."""
    threads = threads or max(1, local_cores() // workers)
    full, multi = load_sweep(full_path, overrides), load_sweep(multi_path, overrides)
    uri = absolute_tracking_uri(tracking_uri(full.configs[0].run.tracking_uri))
    full_specs, full_names = study_specs(full, uri, threads)
    multi_specs, multi_names = study_specs(multi, uri, threads)
    if None in full_names:
        raise ValueError("every setting needs something to tune: give the preset's tune stage shared ranges")
    log.info("tune_fidelity: %d full-fidelity studies of %d trials", len(full_specs), full.tune.trials)
    full_result = run_sweep(full, workers=workers, threads=threads)  # its studies, then its choices on test seeds
    by_name = {s.name: s for s in [*full_specs, *multi_specs]}
    target = float(full.tune.trials * len(full.tune.seeds))  # what each full-fidelity study spent
    prepare_storage(multi_specs[0].storage)
    prefix: dict[str, int] = {}
    launcher = make_launcher("local", min(workers, len(multi_specs)), None)
    try:
        run_jobs(launcher, range(len(multi_specs)), workers,
                 lambda i, slot: (run_to_cost, (multi_specs[i], target), multi_specs[i].config["run"]["threads"]),
                 lambda i, future: prefix.__setitem__(multi_specs[i].name, future.result()))
    finally:
        launcher.close()
    chosen = {name: study_choice(by_name[name], n) for name, n in prefix.items()}
    configs, tags = [], []
    for config, name, extra in zip(multi.configs, multi_names, multi.tags, strict=True):
        params = chosen[name][0]
        configs.append(with_params(config, params, config.run.run_name))
        tags.append({**extra, TUNED_TAG: json.dumps(params, sort_keys=True)})
    multi_result = run_sweep(Sweep(multi.name, multi.experiment, configs, multi.labels, multi.fixed, None, tags),
                             workers=workers, threads=threads)
    client = MlflowClient(tracking_uri=uri)
    rows: dict[tuple[str, float, str], Choice] = {}
    for fidelity, sweep, names, result in (("full", full, full_names, full_result),
                                           ("multi", multi, multi_names, multi_result)):
        for config, name, outcome in zip(sweep.configs, names, result.outcomes, strict=True):
            key = (config.method.name, config.data.alpha, fidelity)
            if key not in rows:
                n = full.tune.trials if fidelity == "full" else prefix[name]
                _, cost, pruned = study_choice(by_name[name], n)
                rows[key] = Choice(key[0], key[1], fidelity, n, pruned, cost, {}, [], [])
            if outcome.run_id is None:
                log.warning("tune_fidelity: the test run %r failed: %s", outcome.label, outcome.reason)
                continue
            run = client.get_run(outcome.run_id)
            rows[key].params = json.loads(run.data.tags[TUNED_TAG])  # what the test runs used
            metrics = run.data.metrics
            rows[key].val.append(metrics[OBJECTIVE])
            rows[key].test.append(metrics[TEST_ACCURACY])
    return list(rows.values())


def mean_sd(values: list[float]) -> str:
    if not values:
        return "n/a"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} ± {100 * sd:.2f}"


def summary_lines(choices: list[Choice]) -> list[str]:
    """The printed table: per method and α both fidelities, their cost ratio, and the totals."""
    lines = [f"{'method':<14}{'alpha':>6}  {'fidelity':<9}{'trials':>7}{'pruned':>7}{'cost':>7}  "
             f"{'val acc (%)':>15}  {'test acc (%)':>15}  chosen settings"]
    pairs = {}
    for c in choices:
        pairs.setdefault((c.method, c.alpha), {})[c.fidelity] = c
    same = gaps = 0
    diffs = []
    for (method, alpha), pair in pairs.items():
        for fidelity in FIDELITIES:
            c = pair[fidelity]
            settings = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in
                                 sorted(c.params.items()))
            lines.append(f"{method:<14}{alpha:>6}  {fidelity:<9}{c.trials:>7}{c.pruned:>7}{c.cost:>7.2f}  "
                         f"{mean_sd(c.val):>15}  {mean_sd(c.test):>15}  {settings}")
        full, multi = pair["full"], pair["multi"]
        same += full.params == multi.params
        gaps += 1
        if full.test and multi.test:
            diffs.append(statistics.fmean(multi.test) - statistics.fmean(full.test))
        lines.append(f"{'':<20}cost ratio multi/full {multi.cost / full.cost:.2f}; multi tried "
                     f"{multi.trials / full.trials:.2f}x the candidates")
    cost = {f: sum(c.cost for c in choices if c.fidelity == f) for f in FIDELITIES}
    lines.append(f"total: {cost['full']:.2f} full-run equivalents at full fidelity, {cost['multi']:.2f} multi-fidelity "
                 f"(ratio {cost['multi'] / cost['full']:.2f}); the same choice in {same} of {gaps} settings"
                 + (f"; test accuracy multi - full: mean {100 * statistics.fmean(diffs):+.2f} points, "
                    f"worst {100 * min(diffs):+.2f}" if diffs else ""))
    return lines


def parse_pruner(text: str) -> dict[str, Any]:
    """``KIND:MIN_ROUNDS[:REDUCTION]``, e.g. ``successive_halving:2:3``."""
    parts = text.split(":")
    if parts[0] not in PRUNER_KINDS or len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"--pruner must be KIND:MIN_ROUNDS[:REDUCTION] with KIND one of "
                                         f"{', '.join(PRUNER_KINDS)}, not {text!r}")
    try:
        values = [int(p) for p in parts[1:]]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pruner {text!r}: MIN_ROUNDS and REDUCTION are integers") from None
    return {"kind": parts[0], "min_rounds": values[0], **({"reduction": values[1]} if len(values) > 1 else {})}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.tune_fidelity", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="key.path=value applied to every config (a grid axis is replaced)")
    p.add_argument("--preset", default="quick/tables", help="sweep preset whose base, methods, α, test seeds, tuning "
                                                            "seed and shared ranges to use (default quick/tables)")
    p.add_argument("--methods", nargs="+", help="default: the preset's")
    p.add_argument("--alphas", nargs="+", type=float, help="default: the preset's")
    p.add_argument("--test-seeds", nargs="+", type=int, help="default: the preset's")
    p.add_argument("--trials", type=int, default=6, help="full-fidelity trials per study, i.e. the cost both "
                                                         "fidelities get in full-run equivalents (default 6)")
    p.add_argument("--pruner", type=parse_pruner, default=parse_pruner("successive_halving:2:3"),
                   help="KIND:MIN_ROUNDS[:REDUCTION] (default successive_halving:2:3)")
    p.add_argument("--workers", type=int, default=1, help="studies, then runs, at a time (default 1)")
    p.add_argument("--threads", type=int, help="torch threads per run (default: cores // workers)")
    p.add_argument("--experiment", default="tune-fidelity", help="MLflow experiment (default tune-fidelity)")
    p.add_argument("--out", type=Path, default=Path("reports/tune-fidelity"),
                   help="folder of the sweep files, the Optuna storage and tune_fidelity.json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out.resolve()
    full, multi = sweep_files(out, args.preset, args.methods, args.alphas, args.test_seeds, args.trials, args.pruner,
                              args.experiment, f"sqlite:///{out / 'optuna.db'}")
    choices = measure(full, multi, args.overrides, args.workers, args.threads)
    (out / "tune_fidelity.json").write_text(json.dumps([c.__dict__ for c in choices], indent=1))
    print("\n".join(summary_lines(choices)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
