"""What every table and figure shares: the annotated runs, the main-table selection, row and column order.

Rows are methods in four groups, by the family the method registry gives each (a run's ``family`` tag for a
method that is not registered here): the reference points (family ``base``: FedAvg and local training, the two ends
every personalized method sits between), the PFL-EE baselines (the PFL methods extended to the early-exit network),
the federated early-exit baselines (DepthFL, ScaleFL, InclusiveFL), then ours.
Columns are (dataset, α): the paper's datasets first in its order, others alphabetically; α ascending.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.methods.registry import available_methods
from bench.report.collect import RunData
from bench.report.selection import annotate, main_runs

REFERENCE_GROUP = "References"
GROUP_OF_FAMILY = {"base": REFERENCE_GROUP, "pfl": "PFL-EE baselines", "fee": "Federated EE baselines",
                   "ours": "Ours"}
GROUP_ORDER = (REFERENCE_GROUP, "PFL-EE baselines", "Federated EE baselines", "Ours")
OTHER_GROUP = "Other"
METHOD_ORDER = ("fedavg", "local", "fedprox", "fedper", "fedrep", "fedbabu", "fedamp", "pfedgraph", "fedrod",
                "ditto", "fedpac", "depthfl", "scalefl", "inclusivefl", "cafedistill")
DATASET_ORDER = ("cifar10", "cifar100", "tinyimagenet", "agnews")
OURS = "ours"

Column = tuple[str, str]  # (dataset, alpha label)


def alpha_label(alpha: float) -> str:
    return f"{alpha:g}"


def ordered(values: set[str], canonical: tuple[str, ...]) -> list[str]:
    """``values`` in ``canonical`` order, the others after them alphabetically."""
    rank = {v: i for i, v in enumerate(canonical)}
    return sorted(values, key=lambda v: (rank.get(v, len(rank)), v))


def column_of(frame: pd.DataFrame, column: Column) -> pd.DataFrame:
    """The rows of ``frame`` (with dataset and alpha columns) that belong to one (dataset, α) column."""
    dataset, alpha = column
    return frame[(frame["dataset"] == dataset) & (frame["alpha"].map(alpha_label) == alpha)]


@dataclass
class Context:
    data: RunData
    runs: pd.DataFrame  # annotated runs (selection.annotate)
    main: pd.DataFrame  # the runs behind the main tables (selection.main_runs)
    methods: list[str]
    columns: list[Column]
    family: dict[str, str]

    def group(self, method: str) -> str:
        return GROUP_OF_FAMILY.get(self.family[method], OTHER_GROUP)

    def groups(self) -> pd.Series:
        return pd.Series({m: self.group(m) for m in self.methods})


def registered_families(tagged: dict[str, str]) -> dict[str, str]:
    """Method -> its family: the registry's, else (a method not registered here) the family its runs carry."""
    registry = available_methods()
    return {method: registry[method].family if method in registry else tag for method, tag in tagged.items()}


def make_context(data: RunData) -> Context:
    runs = annotate(data.runs, data.params, data.metrics)
    family = registered_families(runs.groupby("method")["family"].first().to_dict())
    group_rank = {g: i for i, g in enumerate((*GROUP_ORDER, OTHER_GROUP))}
    method_rank = {m: i for i, m in enumerate(ordered(set(family), METHOD_ORDER))}
    methods = sorted(family, key=lambda m: (group_rank[GROUP_OF_FAMILY.get(family[m], OTHER_GROUP)],
                                            method_rank[m]))
    columns = [(d, alpha_label(a)) for d in ordered(set(runs["dataset"]), DATASET_ORDER)
               for a in sorted(runs.loc[runs["dataset"] == d, "alpha"].unique())]
    main = main_runs(runs)
    if main.empty:
        raise ValueError(f"experiment {data.experiment!r} has no finished run with its method's default switches "
                         "(method.hparams): the main tables would be empty; run the methods' defaults too")
    return Context(data, runs, main, methods, columns, family)
