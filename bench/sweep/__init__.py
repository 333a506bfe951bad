"""Sweeps: many experiments expanded from one preset, run on local processes or a Ray cluster, resumable.

The package's modules, one job each: :mod:`~bench.sweep.spec` reads a preset, :mod:`~bench.sweep.tune_stage` runs its
tune stage, :mod:`~bench.sweep.runs` its runs, on the launchers of :mod:`~bench.sweep.launchers`;
:mod:`~bench.sweep.outcomes` says what became of them.

A sweep preset is a YAML file (shipped ones live in ``bench/presets/sweeps/``)::

    base: demo                 # an experiment preset name or config file, or an inline mapping of sections
    experiment: smoke          # MLflow experiment all runs go to (default: the sweep's name)
    set: {train.rounds: 3, data.dataset: digits}   # overrides applied to the base (dotted keys)
    grid:                      # the cartesian product of these axes (dotted config keys -> lists)
      method.name: [fedavg, local]
      seed: [0, 1]
    runs:                      # optional extra rows, each expanded against the grid axes it does not set
      - {method.name: cafedistill, method.hparams.cross_client: false}
    tune:                      # optional: equal tuning of every setting before the runs (see below)
      trials: 12               # Optuna trials per study, the same for every method
      seeds: [100]             # tuning seeds; none of them may be a run's seed
      ranges:                  # shared ranges searched for every method (dotted config keys)
        train.lr: {low: 0.005, high: 0.2, log: true}
        train.local_epochs: {choices: [1, 2]}
      storage: sqlite:///optuna.db   # Optuna storage (default), any RDB URL
      pruner: {kind: successive_halving, min_rounds: 2, reduction: 3}   # optional (default: none), see below

Every grid point is one run. Each ``runs`` row adds the product of the grid axes the row leaves alone, with the
row's values on top, so one preset can hold a main table and its ablations; without ``grid`` only the rows run.
Values are applied in this order: ``base``, ``set``, command-line overrides, grid point, row. Method
hyperparameters that only one method knows belong in a row (or in a grid over rows), since every config is
validated against its own method. Points that give the same config (same content hash) run once.

Every config is validated when the sweep is loaded, so a bad key fails before any run starts. A run whose
config hash already has a FINISHED run in the sweep's experiment is skipped: running an interrupted sweep
again finishes it. A run interrupted by Ctrl-C or SIGTERM (status KILLED) continues from its last checkpoint as
the same MLflow run. So does a run killed outright (SIGKILL, out of memory) on this machine: it was left RUNNING, and
as its owner process is gone the sweep first marks it KILLED. A run left RUNNING by a process on another machine, or
stopped before its first checkpoint, starts again as a new run. A failed run is reported with its reason and the
others go on. The sweep's runs are nested beneath a parent run named ``sweep NAME`` (tag
``cafebench.parent=sweep:NAME``), which a re-run reopens; its description counts the runs.

Two sweeps of one grid on one SQLite store (two terminals, two Ray drivers on this machine) run each grid point once:
a worker claims its point under a lock beside the store (:mod:`bench.track.claim`) and leaves a point that another
process has finished or is running. SIGINT or SIGTERM to the sweep stops its workers (SIGTERM, then SIGKILL after
``STOP_GRACE_S``); their runs end KILLED and their trials FAILED, so running the sweep again resumes them. A full
disk stops the sweep with one :class:`~bench.track.disk_full.DiskFullError`.

Runs log to the first config's tracking URI (a relative ``sqlite:///`` path is made absolute). On a Ray
cluster of several machines, use a tracking server or database URL that every node reaches.

The tune stage (``tune:``) makes the comparison fair: every distinct setting of the sweep (a config less its seed:
a method at a dataset and α, an ablation variant) gets its own Optuna study with the same number of trials, over
its method's declared ranges plus the shared ``ranges``, less what the grid point or row sets explicitly (a row
``method.hparams.mu: 0.1`` holds μ fixed). A trial runs the setting on every tuning seed and scores the mean final
validation accuracy (``val/acc/mean``); without a ``pruner`` nothing is pruned, so every study gets the same complete
trials. Then each run of the sweep uses its setting's best parameters (tag ``tuned``: their JSON) on its own (test)
seed. Each study is a parent MLflow run (tag ``optuna_study``, best parameters in tag ``best_params``) with its
trial runs as children; reports leave these tuning runs out. Studies live in the Optuna storage under names made
from the sweep and the setting, so running the sweep again continues unfinished studies, then skips the finished
runs. Studies run ``workers`` at a time in local processes (also with the Ray backend).

Multi-fidelity: ``pruner`` (keys ``kind``: ``successive_halving`` or ``hyperband``; ``min_rounds``: the first rung,
a positive integer; ``reduction``: an integer of at least 2, default 3) stops trials early by Optuna's successive
halving over rounds, alone or in Hyperband's brackets (:class:`bench.tune_candidates.CandidatePruner`): rungs at
``min_rounds * reduction**i`` rounds, each trial judged at the first evaluated round (``eval.every``) at or past a rung
and continued while it is in the top ``1/reduction`` there. It needs one tuning seed, and an evaluated round from
``min_rounds`` on before every run's last round. ``trials`` still counts candidates (completed or pruned), so every
study is offered the same candidates; a pruned trial counts as finished, a failed or killed one is offered again.
Cost is counted in full-run equivalents (rounds run / ``train.rounds``, summed over trials and seeds): at most
``trials`` x seeds a study, logged on each study's parent run (metric ``tune/full_run_equivalents``), summed on the
sweep's parent run and in its description; ``--dry-run`` shows the ceiling. The same for every method are the
candidates, the rule and the ceiling; what a study spends below it depends on its trials' values. No preset prunes
yet: ``docs/tuning.md`` says what the measurement (``nox -s tune_fidelity``) will decide.

GPUs: on the local backend each concurrent run whose ``run.device`` is ``auto`` or ``cuda`` gets its own GPU
(round-robin when there are more workers than GPUs); on Ray each run asks for ``--gpus-per-run`` GPUs. A run that
runs out of GPU memory fails with a message naming the settings to lower, and the sweep goes on.

Determinism: a run gives bitwise-identical metrics for the same config and the same ``run.threads``; the
sweep sets ``run.threads`` (outside the config hash) to the machine's cores divided by the concurrent runs. A
resumed run keeps the threads it started with, whatever ``--workers`` the re-run sweep has.
"""

from bench.sweep.outcomes import SweepResult, summary
from bench.sweep.runs import run_sweep
from bench.sweep.spec import Sweep, load_sweep

__all__ = ["Sweep", "SweepResult", "load_sweep", "run_sweep", "summary"]
