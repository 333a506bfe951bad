"""What every table and figure shares: the annotated runs, the main-table selection, row and column order, and the
method under test.

Rows are methods in four groups, by the family the method registry gives each (a run's ``family`` tag for a
method that is not registered here): the reference points (family ``base``: FedAvg and local training, the two ends
every personalized method sits between), the PFL-EE baselines (the PFL methods extended to the early-exit network),
the federated early-exit baselines (DepthFL, ScaleFL, InclusiveFL), then ours. Within a group, methods follow the
``order`` their class declares (:attr:`bench.methods.api.Method.order`); a method without one (a plugin that sets
none, or one that is not registered here) comes after those, by name.
Columns are (dataset, α): the paper's datasets first in its order, others alphabetically; α ascending.

The *method under test* — the one the paired comparison, the claims, the ablation and the μ sensitivity are about —
is the first method of family ``ours`` in that order among the runs. Another method of family ``ours`` among them
keeps its rows in the method tables and figures but is neither compared nor a baseline. With no run of family
``ours``, the first such method the registry holds is named, so that the claims say whose runs they lack.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.methods.registry import available_methods, declared_order
from bench.report.collect import RunData
from bench.report.selection import annotate, hyperparameter_names, main_runs

REFERENCE_GROUP = "References"
GROUP_OF_FAMILY = {"base": REFERENCE_GROUP, "pfl": "PFL-EE baselines", "fee": "Federated EE baselines",
                   "ours": "Ours"}
GROUP_ORDER = (REFERENCE_GROUP, "PFL-EE baselines", "Federated EE baselines", "Ours")
OTHER_GROUP = "Other"
DATASET_ORDER = ("cifar10", "cifar100", "tinyimagenet", "agnews")
OURS = "ours"
UNNAMED_METHOD_UNDER_TEST = "a method of family ours"  # what the claims name when no such method is known

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
    under_test: str  # the method under test (see the module doc)

    def group(self, method: str) -> str:
        return GROUP_OF_FAMILY.get(self.family[method], OTHER_GROUP)

    def baselines(self) -> list[str]:
        """The methods the method under test is compared with: every one not of family ``ours``, in order."""
        return [m for m in self.methods if self.family[m] != OURS]

    def groups(self) -> pd.Series:
        return pd.Series({m: self.group(m) for m in self.methods})

    def hyperparameters_under_test(self) -> set[str]:
        """The names of the method under test's hyperparameters (:func:`selection.hyperparameter_names`)."""
        runs = self.runs.index[self.runs["method"] == self.under_test]
        return hyperparameter_names(self.under_test, self.data.params.loc[runs])


def registered_families(tagged: dict[str, str]) -> dict[str, str]:
    """Method -> its family: the registry's, else (a method not registered here) the family its runs carry."""
    registry = available_methods()
    return {method: registry[method].family if method in registry else tag for method, tag in tagged.items()}


def method_order(family: dict[str, str]) -> list[str]:
    """The methods of ``family`` (method -> family) in report order (see the module doc)."""
    registry = available_methods()
    group_rank = {g: i for i, g in enumerate((*GROUP_ORDER, OTHER_GROUP))}

    def rank(method: str) -> tuple[int, bool, int, str]:
        order = declared_order(registry[method]) if method in registry else None
        return group_rank[GROUP_OF_FAMILY.get(family[method], OTHER_GROUP)], order is None, order or 0, method

    return sorted(family, key=rank)


def method_under_test(methods: list[str], family: dict[str, str]) -> str:
    """The first method of family ``ours`` among ``methods`` (in report order), else the registry's first."""
    ours = [m for m in methods if family[m] == OURS]
    if not ours:
        ours = method_order({m: cls.family for m, cls in available_methods().items() if cls.family == OURS})
    return ours[0] if ours else UNNAMED_METHOD_UNDER_TEST


def make_context(data: RunData) -> Context:
    runs = annotate(data.runs, data.params, data.metrics)
    family = registered_families(runs.groupby("method")["family"].first().to_dict())
    methods = method_order(family)
    columns = [(d, alpha_label(a)) for d in ordered(set(runs["dataset"]), DATASET_ORDER)
               for a in sorted(runs.loc[runs["dataset"] == d, "alpha"].unique())]
    main = main_runs(runs)
    if main.empty:
        raise ValueError(f"experiment {data.experiment!r} has no finished run with its method's default switches "
                         "(method.hparams): the main tables would be empty; run the methods' defaults too")
    return Context(data, runs, main, methods, columns, family, method_under_test(methods, family))
