"""What the MLflow UI's runs table of an experiment shows when opened from a printed address: the benchmark's
training runs, flat, with their method, dataset, α, seed and headline accuracies as columns.

The MLflow UI (3.x) restores a *shared view* from an experiment tag ``mlflow.sharedViewState.KEY`` when its address
carries ``?viewStateShareKey=KEY`` (what its Share button does): the search filter and sort, the selected columns,
their order and widths. Every experiment the harness creates gets :data:`VIEW_KEY`'s view, whose filter leaves out
the parent runs of sweeps and studies and Optuna's tuning runs — the sweep's runs then stand at the top level
instead of under a collapsed parent (report runs have an experiment of their own, ``EXPERIMENT-reports``).
Metric columns sort by name in the UI (``clients/``, ``comm/`` before ``test/``), so the headline accuracies are
also logged under an ``acc/`` prefix, which sorts first; the original names stay, for the report and the tune
stage read them.
"""

from __future__ import annotations

import json
import logging

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from bench.record_names import (
    ALPHA_TAG,
    DATASET_TAG,
    FAMILY_TAG,
    METHOD_TAG,
    PARENT_TAG,
    RUNS_VIEW_COLUMNS,
    SEED_TAG,
    STUDY_TAG,
)

log = logging.getLogger(__name__)

VIEW_KEY = "cafebench-training-runs"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
TRAINING_RUNS_FILTER = " AND ".join(f"tags.`{tag}` IS NULL" for tag in (PARENT_TAG, STUDY_TAG))
RUN_TAG_COLUMNS = (METHOD_TAG, ALPHA_TAG, SEED_TAG, DATASET_TAG, FAMILY_TAG)
ORDER_BY_RUN_NAME = "tags.`mlflow.runName`"  # the UI's key for sorting by run name
RUN_NAME_COLUMN = "attributes.`Run Name`"  # the UI's id of the run-name column, always shown
RUN_NAME_WIDTH = 250  # pixels: room for a name such as cafedistill-tinyimagenet-a0.1-s4
METRIC_COLUMN_WIDTH = 150  # pixels: room for a metric's first ten digits (the UI shows them unrounded)


def with_headlines(metrics: dict[str, float]) -> dict[str, float]:
    """``metrics`` plus the ``acc/`` copy of each headline metric among them."""
    return {**metrics, **{short: metrics[key] for key, short in RUNS_VIEW_COLUMNS.items() if key in metrics}}


def view_state() -> dict:
    """The shared view: training runs only, headline metrics first, then the run-layout tags; sorted by run name
    (method, dataset, α, seed), which also keeps the UI from fetching the parents the filter leaves out (it does
    so only when the table is sorted by creation time)."""
    columns = [f"metrics.`{name}`" for name in RUNS_VIEW_COLUMNS.values()]
    columns += [f"tags.`{name}`" for name in RUN_TAG_COLUMNS]
    widths = {RUN_NAME_COLUMN: RUN_NAME_WIDTH, **{column: METRIC_COLUMN_WIDTH for column in columns
                                                  if column.startswith("metrics.")}}
    return {"searchFilter": TRAINING_RUNS_FILTER, "orderByKey": ORDER_BY_RUN_NAME, "orderByAsc": True,
            "selectedColumns": columns, "columnOrder": [RUN_NAME_COLUMN, *columns], "columnWidths": widths}


def ensure_training_view(client: MlflowClient, experiment_id: str) -> None:
    """Store the training-runs view on the experiment (once; a changed view replaces an older one). A store that
    refuses the tag (a server without write access to the experiment; a run beside this one storing it at the same
    moment) is logged, not raised: the view is a convenience, and the runs do not depend on it."""
    wanted = json.dumps(view_state(), sort_keys=True)
    if client.get_experiment(experiment_id).tags.get(VIEW_TAG) == wanted:
        return
    try:
        client.set_experiment_tag(experiment_id, VIEW_TAG, wanted)
    except MlflowException as err:
        log.warning("could not store the training-runs view on experiment %s (%s); its printed runs address opens "
                    "MLflow's default view", experiment_id, err)


def view_query() -> str:
    """The query that opens the runs table in the training-runs view."""
    return f"viewStateShareKey={VIEW_KEY}"
