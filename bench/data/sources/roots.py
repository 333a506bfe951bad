"""Where datasets are searched for, and the search itself."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from bench.data.sources.errors import DataNotFoundError

log = logging.getLogger(__name__)

DATA_ENV = "CAFEBENCH_DATA"
NO_DOWNLOAD_ENV = "CAFEBENCH_NO_DOWNLOAD"


def data_roots(root: str | os.PathLike | None = None) -> list[Path]:
    """The general data roots in search order: ``root``, ``$CAFEBENCH_DATA``, ``./datasets``.

    Loaders search each root (and dataset-specific subfolders of it), then their own system
    directories. Downloads land in the first root.
    """
    candidates = [root, os.environ.get(DATA_ENV) or None, Path.cwd() / "datasets"]
    roots: list[Path] = []
    for candidate in candidates:
        if candidate is None:
            continue
        path = Path(candidate).expanduser().resolve()
        if path not in roots:
            roots.append(path)
    return roots


def require_root(root: str | os.PathLike) -> Path:
    """The explicit data root as a resolved folder.

    Raises:
        DataNotFoundError: ``root`` is not an existing folder (it would otherwise be skipped silently, and a dataset
            found in a later root or a system folder used in its place).
    """
    path = Path(root).expanduser()
    if not path.is_dir():
        problem = "is not a folder" if path.exists() else "does not exist"
        raise DataNotFoundError(f"data root {str(root)!r} (data.root) {problem}; give the folder that holds the data "
                                f"(create it first for a download), or leave data.root unset to search "
                                f"${DATA_ENV} and ./datasets")
    return path.resolve()


def downloads_enabled(download: bool) -> bool:
    """Whether a loader may download: its ``download`` option, unless ``CAFEBENCH_NO_DOWNLOAD`` is set."""
    vetoed = os.environ.get(NO_DOWNLOAD_ENV, "").strip().lower() in ("1", "true", "yes")
    return download and not vetoed


def candidate_dirs(
    root: str | os.PathLike | None, subdirs: Iterable[str], system_dirs: Iterable[Path] = ()
) -> list[Path]:
    """Every directory to search: each subfolder of each data root, then the system directories."""
    subdirs = list(subdirs)
    dirs = [base / sub for base in data_roots(root) for sub in subdirs]
    return dirs + [Path(d) for d in system_dirs]


def locate(
    dataset: str,
    candidates: list[Path],
    holds_dataset: Callable[[Path], bool],
    expected: str,
    how_to_get: str,
    fetch: Callable[[], Path] | None = None,
) -> Path:
    """Return the first candidate directory that ``holds_dataset``, else the directory ``fetch`` downloads to.

    ``expected`` describes the files looked for and ``how_to_get`` how a user obtains them; both go
    into the error message. ``fetch`` is None where downloads are disabled or not offered.

    Raises:
        DataNotFoundError: nothing found and no successful download; the message lists every
            directory looked in and how to get the data.
    """
    for directory in candidates:
        if holds_dataset(directory):
            log.debug("dataset %s found in %s", dataset, directory)
            return directory
    download_note = "no download attempted"
    if fetch is not None:
        try:
            fetched = fetch()
        except (OSError, RuntimeError) as err:
            download_note = f"download failed: {err}"
        else:
            if holds_dataset(fetched):
                return fetched
            download_note = f"download finished but {fetched} lacks the expected files"
    looked = "\n".join(f"  - {d}" for d in candidates)
    raise DataNotFoundError(
        f"dataset {dataset!r} not found: looked for {expected} in\n{looked}\n"
        f"({download_note}).\nHow to get it: {how_to_get}"
    )
