"""Search order for dataset files.

The search order is:

1. the explicit ``data_dir`` of the config,
2. the folder in the environment variable ``HMLC_DATA_DIR``,
3. the default folder ``~/.cache/hmlc/data``,
4. a system location, where one exists for the dataset (Debian's
   ``dataset-fashion-mnist`` installs ``/usr/share/datasets/fashion-mnist``).

Each base folder is tried as it is and with the dataset's usual subfolder names
(for example ``<base>/cifar-100-python``). The first folder that contains all of the
dataset's required files wins, even when an earlier folder contains some of them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from hmlc_core.data.errors import DataNotFoundError

logger = logging.getLogger(__name__)

DATA_DIR_ENV = "HMLC_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/hmlc/data")
SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}


def base_dirs(name: str, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    """Return the base folders to search for dataset ``name``, in search order."""
    bases: list[Path] = []
    if data_dir is not None:
        bases.append(Path(data_dir).expanduser())
    env_dir = os.environ.get(DATA_DIR_ENV)
    if env_dir:
        bases.append(Path(env_dir).expanduser())
    bases.append(DEFAULT_DATA_DIR.expanduser())
    bases.extend(SYSTEM_DIRS.get(name, ()))
    return bases


def download_root(data_dir: str | os.PathLike[str] | None) -> Path:
    """Return the folder a download writes into: the first writable choice of the search order."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    env_dir = os.environ.get(DATA_DIR_ENV)
    if env_dir:
        return Path(env_dir).expanduser()
    return DEFAULT_DATA_DIR.expanduser()


def find_dataset_dir(
    name: str,
    data_dir: str | os.PathLike[str] | None,
    subfolders: Sequence[str],
    required: Sequence[str | Sequence[str]],
    how_to_supply: str,
) -> Path:
    """Return the first folder that contains all ``required`` files of dataset ``name``.

    Args:
        name: dataset name, used for the system location and in messages.
        data_dir: explicit folder from the config, searched first.
        subfolders: subfolder names tried below each base folder (the base itself first).
        required: file names that must all exist. An entry that is a sequence of names
            is satisfied by any one of them (for example a file with or without ``.gz``).
        how_to_supply: the end of the error message, saying how to get the files.

    Raises:
        DataNotFoundError: no searched folder contains the files. The message lists every
            folder that was searched.
    """
    searched: list[Path] = []
    for base in base_dirs(name, data_dir):
        for candidate in [base, *(base / sub for sub in subfolders)]:
            if candidate in searched:
                continue
            searched.append(candidate)
            if _has_all(candidate, required):
                logger.info("reading %s from %s", name, candidate)
                return candidate
    expected = ", ".join(_describe(entry) for entry in required)
    looked = "\n  ".join(str(path) for path in searched)
    raise DataNotFoundError(
        f"{name} files not found: expected {expected} in one of these folders:\n  {looked}\n"
        f"Set data_dir (or the {DATA_DIR_ENV} environment variable) to the folder that contains "
        f"them. {how_to_supply}"
    )


def _has_all(folder: Path, required: Sequence[str | Sequence[str]]) -> bool:
    for entry in required:
        options = [entry] if isinstance(entry, str) else list(entry)
        if not any((folder / option).is_file() for option in options):
            return False
    return True


def _describe(entry: str | Sequence[str]) -> str:
    return entry if isinstance(entry, str) else " or ".join(entry)
