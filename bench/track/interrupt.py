"""SIGTERM as an interrupt, with no heavy import: the command line installs it before it knows which command runs."""

from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler ending the job) raised as an interrupt: the MLflow run it stops is marked
    KILLED, not left RUNNING, and resumes from its last checkpoint like one stopped with Ctrl-C."""


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in this process's main thread."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated("terminated by SIGTERM")

    signal.signal(signal.SIGTERM, handler)
