"""The MLflow tags a sweep sets on its runs and the report reads back.

* ``tuned``: the JSON of the parameters the sweep's tune stage chose for the run (empty when none did).
* ``role``: what the run is for in the sweep's tables — ``main`` (the grid point's own setting: a main-table
  cell), ``ablation`` (a row that changes one of the method's switches, e.g. ``cross_client: false``) or
  ``sensitivity`` (a row that fixes a hyperparameter the method or the tune stage would search, e.g.
  ``mu: 0.1``; tag ``sensitivity`` names it). Sensitivity runs are shown in their own table and never stand for
  a method in the main tables.
* ``optuna_candidate``: on a tuning run, the candidate index of its trial (:mod:`bench.tune`): trial ``k`` of every
  study of a sweep is offered the same shared-range values.

Runs that are not benchmark runs say so: ``cafebench.parent`` on the parent run of a sweep or a study
(``sweep:NAME`` or ``study:NAME``), ``optuna_study`` on a study's parent run and its tuning runs.
"""

TUNED_TAG = "tuned"
ROLE_TAG = "role"
SENSITIVITY_TAG = "sensitivity"
MAIN, ABLATION, SENSITIVITY = "main", "ablation", "sensitivity"
CANDIDATE_TAG = "optuna_candidate"
PARENT_TAG = "cafebench.parent"
STUDY_TAG = "optuna_study"
