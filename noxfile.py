"""nox sessions: tests, gpu, lint, demo, perf, tune_fidelity, reproduce, report (each in its own virtualenv)."""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


def install(session: nox.Session, extras: str = "test") -> None:
    session.install("-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    install(session, "test,ray")
    session.run("pytest", "-q", *session.posargs, env={"MLFLOW_DISABLE_TELEMETRY": "true"})


@nox.session
def gpu(session: nox.Session) -> None:
    """The tests marked ``gpu`` (a fedavg and a cafedistill round on the GPU, no per-batch syncs, determinism);
    they skip, saying why, where no CUDA device is."""
    install(session, "test,gpu")
    session.run("pytest", "-q", "-m", "gpu", "-rs", *session.posargs, env={"MLFLOW_DISABLE_TELEMETRY": "true"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "bench", "baselines", "tests", "noxfile.py")


@nox.session
def demo(session: nox.Session) -> None:
    install(session)
    session.run("cafebench", "demo", *session.posargs)


@nox.session
def perf(session: nox.Session) -> None:
    """The performance benchmark; ``nox -s perf -- --device cuda`` measures on the GPU."""
    install(session, "test,gpu")
    session.run("cafebench", "perf", *session.posargs)


@nox.session
def tune_fidelity(session: nox.Session) -> None:
    """The multi-fidelity measurement (docs/tuning.md): full-fidelity against successive-halving studies of equal
    cost for the quick preset's methods at both alphas, each choice tested on the test seeds; arguments go to
    ``python -m bench.tune_fidelity`` (``-- --help``; e.g. ``-- --workers 2 --trials 6``)."""
    install(session)
    session.run("python", "-m", "bench.tune_fidelity", *session.posargs, env={"MLFLOW_DISABLE_TELEMETRY": "true"})


@nox.session
def reproduce(session: nox.Session) -> None:
    """The CPU-scale reproduction of the paper's tables (about 10 hours on 2 cores); `-- quick` takes 31 minutes;
    `-- paper` is for GPUs."""
    install(session, "test,ray")
    session.run("cafebench", "reproduce", *(session.posargs or ["cpu"]))


@nox.session
def report(session: nox.Session) -> None:
    install(session)
    session.run("cafebench", "report", *(session.posargs or ["cpu"]))
