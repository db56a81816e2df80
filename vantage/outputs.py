"""Output folders that never overwrite a user's files without being asked."""

from __future__ import annotations

from pathlib import Path

__all__ = ["OutputExistsError", "prepare_output_dir", "next_free_dir"]


class OutputExistsError(FileExistsError):
    """The output folder already holds files and overwriting was not requested."""


def prepare_output_dir(path: str | Path, overwrite: bool = False, what: str = "output") -> Path:
    """Create ``path`` or accept it if empty; refuse a non-empty one unless ``overwrite``.

    With ``overwrite=True`` existing files are kept and replaced one by one as they are
    written: nothing is deleted wholesale.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{what} path {path} exists and is a file, not a folder")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise OutputExistsError(f"{what} folder {path} already exists and is not empty; choose another "
                                f"--out or pass --overwrite to replace its files")
    path.mkdir(parents=True, exist_ok=True)
    return path


def next_free_dir(base: str | Path) -> Path:
    """``base`` if it is free or empty, else ``base-2``, ``base-3``, ... (first free one)."""
    base = Path(base)
    candidate, k = base, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        k += 1
        candidate = base.with_name(f"{base.name}-{k}")
    return candidate
