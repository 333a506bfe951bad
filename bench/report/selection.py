"""Which runs fill each cell of a table: settings, switches, and model selection on validation accuracy.

* A run's *setting* is its config without the seed, the dataset, alpha and the ``run`` section (which does not
  change results). Runs of one setting and different seeds are the repetitions a cell averages; a seed run
  twice in one setting counts once (the latest run).
* A method's *switches* are its categorical hyperparameters (``method.hparams.*`` whose values are not
  numbers, e.g. ``cross_client``, ``teacher_mode``); numeric ones (``mu``, ``tau``) are tuned.
* A sweep tags each run with its *role* (:mod:`bench.record_names`): ``main`` (the grid point's own, tuned
  setting), ``ablation`` or ``sensitivity`` (a row that fixes a hyperparameter the tune stage searches, e.g.
  ``mu: 0.1``). Main cells come from ``main`` runs only; sensitivity runs have their own table and are never a
  candidate for a main cell, an ablation row or a claim about the method. Runs without a role tag (run outside a
  sweep) count as main when they have the method's default switches (its registered ``Hparams`` defaults), so
  CAFEDistill's ablation variants never stand in for the full method.
* Where several main settings remain in a cell (runs of two sweeps in one experiment), the one with the highest
  mean validation accuracy (``val/acc/mean``) over its seeds: model selection on validation data, never on test
  data.
"""

from __future__ import annotations

import json
import logging

import pandas as pd

from bench.methods.registry import available_methods
from bench.record_names import MAIN, SENSITIVITY, VAL_ACCURACY
from bench.report.aggregate import CELL

log = logging.getLogger(__name__)

HPARAM_PREFIX = "method.hparams."
SELECTION_METRIC = VAL_ACCURACY
MU = "mu"  # the hyperparameter a sensitivity table and claim (f) vary
MU_PARAM = f"{HPARAM_PREFIX}{MU}"
DEFAULT_LABEL = "default"


def is_number(text: object) -> bool:
    if isinstance(text, bool):
        return False
    try:
        float(str(text))
    except ValueError:
        return False
    return True


def not_setting_param(key: str) -> bool:
    return key in ("seed", "data.dataset", "data.alpha") or key.startswith("run.")


def setting_keys(params: pd.DataFrame) -> pd.Series:
    """One string per run that is equal for runs of the same setting."""
    kept = [c for c in params.columns if not not_setting_param(c)]
    return params[kept].fillna("").apply(lambda row: json.dumps(row.to_dict(), sort_keys=True), axis=1)


def switch_columns(params: pd.DataFrame) -> list[str]:
    """The hyperparameters of these runs (of one method) none of whose values is a number."""
    columns = [c for c in params.columns if c.startswith(HPARAM_PREFIX)]
    return sorted(c for c in columns if not params[c].dropna().map(is_number).any())


def default_switches(method: str) -> dict[str, str] | None:
    """The method's registered default hyperparameters as MLflow param strings; None when unknown."""
    cls = available_methods().get(method)
    if cls is None:
        return None
    try:
        defaults = cls.Hparams().model_dump(mode="json")
    except ValueError:  # a hyperparameter without default
        return None
    return {f"{HPARAM_PREFIX}{k}": str(v) for k, v in defaults.items()}


def switch_example(method: str) -> str | None:
    """A variant of ``method`` a person could run, as an example: its first on/off switch turned the other way
    (``method.hparams.NAME=false``); None when it has none or is not registered here."""
    cls = available_methods().get(method)
    try:
        defaults = cls.Hparams().model_dump(mode="json") if cls is not None else {}
    except ValueError:  # a hyperparameter without default
        defaults = {}
    flags = [f"{HPARAM_PREFIX}{k}={str(not v).lower()}" for k, v in defaults.items() if isinstance(v, bool)]
    return flags[0] if flags else None


def hyperparameter_names(method: str, params: pd.DataFrame) -> set[str]:
    """The names of ``method``'s hyperparameters: its registered ``Hparams`` fields, else (a method not registered
    here) the ``method.hparams.*`` that ``params`` (its runs') record."""
    cls = available_methods().get(method)
    if cls is not None:
        return set(cls.Hparams.model_fields)
    recorded = params.dropna(axis=1, how="all").columns
    return {c.removeprefix(HPARAM_PREFIX) for c in recorded if c.startswith(HPARAM_PREFIX)}


def switch_labels(params: pd.DataFrame, defaults: dict[str, str] | None) -> pd.Series:
    """Per run: the switches that differ from the defaults (``k=v, ...``; all of them when the defaults are
    unknown), or ``default``."""
    columns = switch_columns(params)

    def label(row: pd.Series) -> str:
        diff = [f"{c.removeprefix(HPARAM_PREFIX)}={row[c]}" for c in columns
                if pd.notna(row[c]) and (defaults is None or defaults.get(c) != row[c])]
        return ", ".join(diff) or DEFAULT_LABEL

    return params.apply(label, axis=1) if len(params) else pd.Series(dtype=str)


def annotate(runs: pd.DataFrame, params: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """``runs`` plus columns ``setting``, ``switches`` (label), ``is_default`` (default switches, or the method's
    defaults are unknown), ``role`` (the sweep's tag; empty without one), ``is_main`` (see the module doc) and
    ``val``; duplicate seeds dropped."""
    role = runs["role"].fillna("") if "role" in runs else pd.Series("", index=runs.index)
    out = runs.assign(setting=setting_keys(params), switches=DEFAULT_LABEL, is_default=True, role=role,
                      val=metrics[SELECTION_METRIC] if SELECTION_METRIC in metrics else float("nan"))
    for method, group in out.groupby("method"):
        method_params = params.loc[group.index].dropna(axis=1, how="all")
        defaults = default_switches(method)
        if defaults is None:
            log.warning("method %r is not registered: its switch defaults are unknown, all its runs count as "
                        "default", method)
        labels = switch_labels(method_params, defaults)
        out.loc[group.index, "switches"] = labels
        out.loc[group.index, "is_default"] = defaults is None or labels.eq(DEFAULT_LABEL)
    out["is_main"] = out["role"].eq(MAIN) | (out["role"].eq("") & out["is_default"].astype(bool))
    out = out.sort_values("start_time")
    duplicated = out.duplicated(CELL + ["setting", "seed"], keep="last")
    if duplicated.any():
        log.info("%d runs repeat a (setting, seed) already run; the latest of each counts", int(duplicated.sum()))
    return out[~duplicated]


def select_best(runs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The runs of the setting with the highest mean validation accuracy in each ``by`` group (ties: more
    seeds, then the most recent run)."""
    if runs.empty:
        return runs
    scores = runs.groupby(by + ["setting"], dropna=False).agg(
        val=("val", "mean"), seeds=("seed", "count"), latest=("start_time", "max")).reset_index()
    scores["val"] = scores["val"].fillna(float("-inf"))
    best = scores.sort_values(["val", "seeds", "latest"]).groupby(by, dropna=False).tail(1)
    keys = best[by + ["setting"]]
    return runs.reset_index().merge(keys, on=by + ["setting"]).set_index("run_id")


def main_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs behind the main tables: main runs, best validation setting per (method, dataset, α)."""
    return select_best(runs[runs["is_main"].astype(bool)], CELL)


def sensitivity_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs a sensitivity table or claim reads: tagged ``sensitivity``, or untagged with default switches."""
    return runs[runs["role"].eq(SENSITIVITY) | (runs["role"].eq("") & runs["is_default"].astype(bool))]


def without_sensitivity(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs an ablation row may read: all but the sensitivity runs."""
    return runs[~runs["role"].eq(SENSITIVITY)]


def mu_points(runs: pd.DataFrame, params: pd.DataFrame) -> pd.DataFrame:
    """The sensitivity runs among ``runs`` (one method's) with their μ as column ``mu``, the best validation setting
    per (dataset, α, μ); none when no run records μ."""
    runs = sensitivity_runs(runs)
    if runs.empty or MU_PARAM not in params:
        return runs.iloc[:0].assign(mu=pd.Series(dtype=float))
    runs = runs.assign(mu=pd.to_numeric(params.loc[runs.index, MU_PARAM], errors="coerce"))
    return select_best(runs.dropna(subset=["mu"]), ["dataset", "alpha", "mu"])
