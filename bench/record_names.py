"""What a run records, by name: its metrics, its tags, its artifacts, and the report's default threshold.

Every writer (the engine, the measures, the tracker, a sweep, a study) and every reader (the report, the CLI, the
MLflow views) names a record through this module, so that a name is spelled once. It imports nothing, so that the
command line's help can name its defaults without loading a library.

Metrics of a run (``split`` is ``test`` or ``val``; a run that also evaluates each client's own local model logs the
same names under ``local/``):

* ``{split}/acc/exit_{k}`` and ``{split}/acc/exit_{k}/client_std`` — exit ``k``'s accuracy, mean and standard
  deviation over clients; ``{split}/acc/mean`` — the mean over clients of each client's mean over its exits;
* ``comm/bytes_up``, ``comm/bytes_down`` per round, ``comm/cum_bytes_*`` so far, ``comm/total_bytes_*`` at the end;
* ``macs/exit_{k}``, ``params/exit_{k}``, ``macs/static`` — the full model's cost to each exit and to its last;
* ``dyn/{quantity}_at_{threshold}`` — the dynamic-inference results at an exit threshold;
* ``train/...`` — what a method reports from local training (``train/loss`` at least);
* ``acc/test_mean``, ``acc/val_mean`` — the headline accuracies again, for the MLflow runs view's columns.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# -- metrics ---------------------------------------------------------------------------------------------------------
TEST, VAL = "test", "val"
LOCAL = "local/"  # prefix of the metrics of each client's own local model


def accuracy_mean(split: str = TEST) -> str:
    """The mean over clients of each client's accuracy averaged over exits."""
    return f"{split}/acc/mean"


def exit_accuracy(k: int, split: str = TEST) -> str:
    """Exit ``k``'s accuracy, mean over clients."""
    return f"{split}/acc/exit_{k}"


def exit_accuracy_spread(k: int, split: str = TEST) -> str:
    """Exit ``k``'s accuracy, standard deviation over clients."""
    return f"{exit_accuracy(k, split)}/client_std"


EXIT_ACCURACY_PATTERN = re.compile(r"^test/acc/exit_(\d+)$")  # exit k's test accuracy; group 1 is k


def exits_logged(metrics: Iterable[str]) -> list[int]:
    """The exits whose test accuracy is among the metric names ``metrics`` holds, in order."""
    return sorted(int(m.group(1)) for m in map(EXIT_ACCURACY_PATTERN.match, metrics) if m)


TEST_ACCURACY = accuracy_mean(TEST)
VAL_ACCURACY = accuracy_mean(VAL)
LOCAL_TEST_ACCURACY = LOCAL + TEST_ACCURACY
OBJECTIVE = VAL_ACCURACY  # the metric a study maximizes, its trials' final value

TRAIN_LOSS = "train/loss"


def train_metric(quantity: str) -> str:
    """A quantity a method reports from its local training beside ``train/loss`` (the round logs its mean over the
    clients), e.g. ``train_metric("head_loss")``."""
    return f"train/{quantity}"


UPLOAD, DOWNLOAD = "up", "down"


def bytes_sent(direction: str) -> str:
    """Bytes sent this round, ``direction`` ``up`` (clients to server) or ``down``."""
    return f"comm/bytes_{direction}"


def bytes_so_far(direction: str) -> str:
    return f"comm/cum_bytes_{direction}"


def bytes_total(direction: str) -> str:
    return f"comm/total_bytes_{direction}"


BYTES_UP, BYTES_DOWN = bytes_sent(UPLOAD), bytes_sent(DOWNLOAD)
PARTICIPATING = "clients/participating"
TRAIN_SECONDS, EVAL_SECONDS = "time/train_s", "time/eval_s"
STATIC_MACS = "macs/static"


def exit_macs(k: int) -> str:
    return f"macs/exit_{k}"


def exit_params(k: int) -> str:
    return f"params/exit_{k}"


DYNAMIC_PREFIX = "dyn/"


def dynamic(quantity: str, threshold: float) -> str:
    """A dynamic-inference result at an exit threshold: ``acc``, ``macs``, ``cost_reduction`` or ``acc_drop``."""
    return f"{DYNAMIC_PREFIX}{quantity}_at_{threshold:g}"


def dynamic_thresholds(metrics: Iterable[str], quantity: str = "acc") -> list[float]:
    """The thresholds at which ``metrics`` (names) holds ``quantity``, in order."""
    prefix = f"{DYNAMIC_PREFIX}{quantity}_at_"
    return sorted(float(k.removeprefix(prefix)) for k in metrics if k.startswith(prefix))


RUNS_VIEW_COLUMNS = {TEST_ACCURACY: "acc/test_mean", VAL_ACCURACY: "acc/val_mean"}  # headline copies, view columns

# -- artifacts -------------------------------------------------------------------------------------------------------
CONFIG_ARTIFACT = "config.yaml"
CURVE_ARTIFACT = "dynamic/curve.json"  # the dynamic-inference curve, read back by the report
LEGACY_CURVE_ARTIFACT = "dynamic/dynamic_curve.csv"  # what runs before curve.json stored instead
HEATMAP_ARTIFACT = "partition/partition_heatmap.png"
PER_CLIENT_ARTIFACT = "results/per_client.csv"
MACS_ARTIFACT = "costs/macs.csv"  # the full model's cost to each exit
UNSUPPORTED_OPS_ARTIFACT = "costs/unsupported_ops.csv"  # the operators the MAC count leaves out, how often each ran
BUDGETS_ARTIFACT = "dynamic/budgeted_accuracy.csv"  # each client's test accuracy under MAC budgets
CURVE_PLOT_ARTIFACT = "dynamic/dynamic_curve.png"
HISTOGRAM_ARTIFACT = "partition/partition_histogram.csv"  # each client's samples per class

# -- tags ------------------------------------------------------------------------------------------------------------
# The run layout, set by the tracker on every run and required by the report.
METHOD_TAG, FAMILY_TAG, DATASET_TAG, ALPHA_TAG, SEED_TAG = "method", "family", "dataset", "alpha", "seed"
RUN_LAYOUT_TAGS = (METHOD_TAG, FAMILY_TAG, DATASET_TAG, ALPHA_TAG, SEED_TAG)
MODEL_TAG = "model"
CONFIG_HASH_TAG, PARTITION_HASH_TAG, CODE_VERSION_TAG = "config_hash", "partition_hash", "code_version"
ERROR_TAG = "error"
DEVICE_TAG, DEVICE_NAME_TAG = "device", "device_name"  # where the run trained (a resumed run: where it resumed)
RESUMED_AFTER_TAG = "resumed_after"  # on a resumed run: what had stopped it
NOTE_TAG = "mlflow.note.content"  # MLflow's run description: a run's Markdown summary (bench.track.description)
OWNER_TAG = "owner"  # the process that holds a RUNNING run (bench.track.owner.this_process of its last process)
CHECKPOINT_TAG = "checkpoint_dir"  # where a run's checkpoints are, for a resume
# What a sweep sets on its runs and the report reads back:
# * ``tuned``: the JSON of the parameters the sweep's tune stage chose for the run (empty when none did);
# * ``role``: ``main`` (the grid point's own setting: a main-table cell), ``ablation`` (a row that changes one of the
#   method's switches) or ``sensitivity`` (a row that fixes a hyperparameter the method or the tune stage would
#   search; tag ``sensitivity`` names it), which never stands for a method in the main tables;
# * ``optuna_candidate``: on a tuning run, the candidate index of its trial: trial ``k`` of every study of a sweep is
#   offered the same shared-range values.
TUNED_TAG = "tuned"
ROLE_TAG = "role"
SENSITIVITY_TAG = "sensitivity"
MAIN, ABLATION, SENSITIVITY = "main", "ablation", "sensitivity"
CANDIDATE_TAG = "optuna_candidate"
# Runs that are not benchmark runs say so: ``cafebench.parent`` on the parent run of a sweep or a study
# (``sweep:NAME`` or ``study:NAME``), ``optuna_study`` on a study's parent run and its tuning runs, ``cafebench.report``
# on the run a report is logged to.
PARENT_TAG = "cafebench.parent"
STUDY_TAG = "optuna_study"
REPORT_TAG = "cafebench.report"

# -- what sweeps and studies record on their parent and tuning runs ---------------------------------------------------
SWEEP_TAG = "sweep"  # on a sweep's runs, studies and tuning runs: the sweep's name
MLFLOW_PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag that nests a run beneath another
TRIAL_TAG = "optuna_trial"  # on a tuning run: its trial's number
BEST_PARAMS_TAG, BEST_TRIAL_TAG = "best_params", "best_trial"  # on a study's parent run: the JSON of the best
# parameters, the best trial's number
PRUNED_TAG = "pruned"  # "true" on the (KILLED) run of a pruned trial
TUNE_COST = "tune/full_run_equivalents"  # a study's (or a sweep's tune stage's) cost: rounds run / train.rounds, summed
BEST_OBJECTIVE = f"best/{OBJECTIVE}"  # on a study's parent run: the best trial's value

# -- the report ------------------------------------------------------------------------------------------------------
REPORT_THRESHOLD = 0.6  # the exit threshold of the report's dynamic-inference table and of the headline dyn/* metrics
